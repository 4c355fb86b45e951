"""The rhythm section of a composed song: drum grooves with fills, and bass lines.

The drums play one groove per song (4/4 or 3/4 grids, some swung) with crashes at section
starts and fills into the next section; the bass follows the chords in one of
``BASS_STYLES``, and the ``locked`` style follows the kick drum the drums played in that bar.
"""

from __future__ import annotations

import numpy as np

from .song import STEP, Instrument, PartContext, add_note
from .theory import pitch_in_range

# General MIDI percussion keys.
KICK, RIM, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
FLOOR_TOM, LOW_TOM, MID_TOM, HIGH_TOM = 43, 45, 47, 50
CRASH, RIDE, RIDE_BELL, TAMBOURINE, COWBELL, SHAKER, CONGA_HI, CONGA_LO = 49, 51, 53, 54, 56, 70, 63, 64

# Drum grooves on a 16-step (4/4) grid: "x" hit, "o" soft hit (ghost), "." rest.
GROOVES: dict[str, dict[int, str]] = {
    "rock": {KICK: "x.......x.x.....", SNARE: "....x.......x...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "pop": {KICK: "x.....x...x.....", SNARE: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "funk": {KICK: "x..x..x...x..x..", SNARE: "....x..o.o..x..o", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "disco": {
        KICK: "x...x...x...x...",
        SNARE: "....x.......x...",
        OPEN_HAT: "..x...x...x...x.",
        CLOSED_HAT: "x.o.x.o.x.o.x.o.",
    },
    "halftime": {KICK: "x.........x.....", SNARE: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "breakbeat": {KICK: "x.........x.x...", SNARE: "....x..o.o..x...", CLOSED_HAT: "x.xxx.x.x.xxx.x."},
    "electronic": {
        KICK: "x...x...x...x...",
        CLAP: "....x.......x...",
        OPEN_HAT: "..x...x...x...x.",
        SHAKER: "oxoxoxoxoxoxoxox",
    },
    "bossa": {KICK: "x..xx..xx..xx..x", RIM: "x..x..x...x..x..", SHAKER: "xoxoxoxoxoxoxoxo"},
    "jazz": {RIDE: "x...x.xox...x.xo", PEDAL_HAT: "....x.......x...", KICK: "x.........o....."},
    "shuffle": {KICK: "x.....x.x.....x.", SNARE: "....x.......x...", CLOSED_HAT: "x.xox.xox.xox.xo"},
}
# 3/4 grooves on a 12-step grid.
GROOVES_34: dict[str, dict[int, str]] = {
    "waltz": {KICK: "x...........", SNARE: "....x...x...", CLOSED_HAT: "x.x.x.x.x.x."},
    "jazz_waltz": {RIDE: "x...x.xox...", PEDAL_HAT: "....x...x...", KICK: "x..........."},
    "rock34": {KICK: "x.....x.....", SNARE: "....x.....x.", CLOSED_HAT: "x.x.x.x.x.x."},
}
SWUNG_GROOVES = {"jazz", "shuffle", "jazz_waltz"}

BASS_STYLES = ("root8", "root_fifth", "walking", "octave", "locked", "sustained", "arpeggio")
BASS_PROGRAMS = tuple(range(32, 40))


def drums(ctx: PartContext) -> Instrument:
    rng, song = ctx.rng, ctx.song
    grooves = GROOVES if song.beats_per_bar == 4 else GROOVES_34
    style = list(grooves)[int(rng.integers(len(grooves)))]
    if style in SWUNG_GROOVES and song.swing == 0.0:
        song.swing = float(rng.uniform(0.6, 1.0))
    kit_choices = {"jazz": (32, 40, 0), "jazz_waltz": (32, 40), "electronic": (24, 25), "bossa": (0, 8, 32)}
    kits = kit_choices.get(style, (0, 8, 16, 0, 8))
    inst = Instrument("drums", int(kits[int(rng.integers(len(kits)))]), True, style)
    groove = grooves[style]
    steps = song.steps_per_bar
    base_vel = rng.uniform(85, 110)
    prev_section = None
    for sec, bar in ctx.bars("drums"):
        is_last = bar == sec.start_bar + sec.bars - 1 and sec is not song.sections[-1]
        fill_from = steps if not (is_last and rng.random() < 0.75) else steps - (4 if rng.random() < 0.6 else 8)
        ctx.kick_steps[bar] = set()
        if sec is not prev_section and rng.random() < 0.8:
            add_note(inst, ctx.tick(bar, 0), STEP * 8, CRASH, ctx.vel(base_vel + 5))
        prev_section = sec
        for key_, pattern in groove.items():
            for step, ch in enumerate(pattern[:steps]):
                if step >= fill_from or ch == ".":
                    continue
                if key_ in (CLOSED_HAT, SHAKER, OPEN_HAT) and rng.random() < 0.04:
                    continue  # humanised drop-outs
                vel = base_vel * (0.45 if ch == "o" else 1.0) * (1.08 if step % 4 == 0 else 1.0)
                add_note(inst, ctx.tick(bar, step), STEP, key_, ctx.vel(vel, 6))
                if key_ == KICK:
                    ctx.kick_steps[bar].add(step)
        # occasional extra ghost kick / snare variation
        if rng.random() < 0.25:
            step = int(rng.integers(steps))
            if step < fill_from:
                add_note(
                    inst, ctx.tick(bar, step), STEP, SNARE if rng.random() < 0.5 else KICK, ctx.vel(base_vel * 0.5)
                )
        if fill_from < steps:
            toms = [HIGH_TOM, MID_TOM, LOW_TOM, FLOOR_TOM, SNARE]
            kind = rng.integers(3)
            for i, step in enumerate(range(fill_from, steps)):
                if kind == 0:
                    note = SNARE
                elif kind == 1:
                    note = toms[min(i * len(toms) // (steps - fill_from), len(toms) - 1)]
                else:
                    note = SNARE if i % 2 == 0 else toms[int(rng.integers(4))]
                add_note(
                    inst, ctx.tick(bar, step), STEP, note, ctx.vel(base_vel * (0.7 + 0.3 * i / (steps - fill_from)))
                )
            add_note(inst, ctx.tick(bar, fill_from), STEP, KICK, ctx.vel(base_vel))
    return inst


def bass(ctx: PartContext) -> Instrument:
    rng, song = ctx.rng, ctx.song
    style = BASS_STYLES[int(rng.integers(len(BASS_STYLES)))]
    if style == "walking" and song.swing == 0.0 and rng.random() < 0.5:
        style = "root_fifth"
    inst = Instrument("bass", int(BASS_PROGRAMS[int(rng.integers(len(BASS_PROGRAMS)))]), False, style)
    steps = song.steps_per_bar
    beats = song.beats_per_bar
    low, high = 28, 52
    base_vel = rng.uniform(80, 105)
    prev = 40
    for sec, bar in ctx.bars("bass"):
        for beat in range(beats):
            step = beat * 4
            chord = sec.chord_at(bar, step)
            root = pitch_in_range(chord.root, low, low + 11)
            fifth = root + chord.intervals[2]
            third = root + chord.intervals[1]
            if style == "root8":
                for half in (0, 2):
                    add_note(
                        inst, ctx.tick(bar, step + half), int(STEP * 1.8), root, ctx.vel(base_vel - 6 * (half > 0))
                    )
            elif style == "root_fifth":
                pitch = root if beat % 2 == 0 else (fifth if fifth <= high else fifth - 12)
                add_note(inst, ctx.tick(bar, step), int(STEP * 3.6), pitch, ctx.vel(base_vel))
            elif style == "walking":
                tones = [root, third, fifth, root + 12 if root + 12 <= high else third]
                pitch = (
                    tones[beat % 4]
                    if beat == 0 or rng.random() < 0.7
                    else int(np.clip(prev + rng.choice([-2, -1, 1, 2]), low, high))
                )
                add_note(inst, ctx.tick(bar, step), int(STEP * 3.7), pitch, ctx.vel(base_vel))
                prev = pitch
            elif style == "octave":
                for half, pitch in ((0, root), (2, root + 12)):
                    add_note(
                        inst, ctx.tick(bar, step + half), int(STEP * 1.5), pitch, ctx.vel(base_vel - 10 * (half > 0))
                    )
            elif style == "locked":
                kicks = ctx.kick_steps.get(bar) or {0, 6, 10}
                for s in range(step, step + 4):
                    if s in kicks or (s == step and beat == 0):
                        add_note(inst, ctx.tick(bar, s), int(STEP * 1.8), root, ctx.vel(base_vel))
                    elif s % 4 == 3 and rng.random() < 0.15:
                        add_note(
                            inst,
                            ctx.tick(bar, s),
                            STEP,
                            root + 12 if root + 12 <= high else fifth,
                            ctx.vel(base_vel - 15),
                        )
            elif style == "sustained":
                if beat == 0 or (step in [s for s, _ in sec.chords[bar - sec.start_bar]]):
                    span = next((s for s, _ in sec.chords[bar - sec.start_bar] if s > step), steps) - step
                    add_note(inst, ctx.tick(bar, step), int(STEP * span * 0.95), root, ctx.vel(base_vel))
            elif style == "arpeggio":
                tones = [root, third, fifth, third]
                for half in (0, 2):
                    add_note(
                        inst,
                        ctx.tick(bar, step + half),
                        int(STEP * 1.8),
                        tones[(beat * 2 + half // 2) % 4],
                        ctx.vel(base_vel),
                    )
    return inst
