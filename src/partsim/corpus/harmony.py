"""The harmony and melody parts of a composed song: piano and guitar comping, lead melodies and pads.

Each follows the section's chords: the piano in one of ``PIANO_STYLES`` with voice-led
voicings, one or two guitars in ``GUITAR_STYLES``, and the "others" part as a lead melody
(a one-bar motif varied over the song), a pad, or both.
"""

from __future__ import annotations

import numpy as np

from .song import STEP, Instrument, PartContext, Section, add_note
from .theory import Chord, pitch_in_range, voice_chord

PIANO_STYLES = ("block", "arpeggio", "stabs", "ballad", "alberti")
GUITAR_STYLES = ("strum", "picking", "power", "funk", "sustained")

PIANO_PROGRAMS = tuple(range(0, 8))
GUITAR_PROGRAMS_BY_STYLE = {
    "strum": (24, 25, 26, 27),
    "picking": (24, 25, 26, 27),
    "power": (29, 30),
    "funk": (27, 28, 26),
    "sustained": (26, 27, 24, 29),
}
LEAD_PROGRAMS = (11, 12, 13, 40, 56, 57, 65, 66, 68, 71, 73, 74, 80, 81, 82, 84, 87, 16, 17, 22, 105)
PAD_PROGRAMS = (48, 49, 50, 52, 61, 19, 20, 89, 90, 91, 92, 94, 95, 44)


def _chord_spans(ctx: PartContext, sec: Section, bar: int):
    """(start step, length in steps, chord) for each chord of a bar."""
    starts = sec.chords[bar - sec.start_bar]
    for i, (start, chord) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else ctx.song.steps_per_bar
        yield start, end - start, chord


def piano(ctx: PartContext) -> Instrument:
    rng = ctx.rng
    style = PIANO_STYLES[int(rng.integers(len(PIANO_STYLES)))]
    program = int(PIANO_PROGRAMS[int(rng.choice(8, p=[0.35, 0.15, 0.1, 0.05, 0.15, 0.1, 0.05, 0.05]))])
    inst = Instrument("piano", program, False, style)
    base_vel = rng.uniform(70, 95)
    prev: list[int] | None = None
    for sec, bar in ctx.bars("piano"):
        for start, length, chord in _chord_spans(ctx, sec, bar):
            voicing = voice_chord(chord, 55, 79, 4 if len(chord.intervals) > 3 else 3, prev, rng)
            prev = voicing
            bass_note = pitch_in_range(chord.root, 36, 47)
            if style == "block":
                for s in range(start, start + length, 4):
                    for p in voicing:
                        add_note(inst, ctx.tick(bar, s), int(STEP * 3.5), p, ctx.vel(base_vel - 8 * (s % 8 != 0)))
                add_note(inst, ctx.tick(bar, start), int(STEP * length * 0.95), bass_note, ctx.vel(base_vel - 5))
            elif style == "arpeggio":
                seq = [bass_note] + voicing + voicing[-2:0:-1]
                for i, s in enumerate(range(start, start + length, 2)):
                    add_note(inst, ctx.tick(bar, s), int(STEP * 3), seq[i % len(seq)], ctx.vel(base_vel - 5))
            elif style == "stabs":
                for s in range(start + 2, start + length, 4):
                    for p in voicing:
                        add_note(inst, ctx.tick(bar, s), int(STEP * 1.2), p, ctx.vel(base_vel + 5))
            elif style == "ballad":
                for p in voicing:
                    add_note(inst, ctx.tick(bar, start), int(STEP * length * 0.98), p, ctx.vel(base_vel - 10))
                add_note(inst, ctx.tick(bar, start), int(STEP * length * 0.98), bass_note, ctx.vel(base_vel - 5))
                top = ctx.song.key.scale_pitches(voicing[-1] + 1, voicing[-1] + 10)
                for s in range(start + 4, start + length, 4):
                    if top and rng.random() < 0.6:
                        add_note(inst, ctx.tick(bar, s), int(STEP * 3.5), int(rng.choice(top)), ctx.vel(base_vel))
            else:  # alberti: low, high, middle, high in sixteenths or eighths
                low_, mid, high_ = voicing[0], voicing[len(voicing) // 2], voicing[-1]
                for i, s in enumerate(range(start, start + length, 2)):
                    add_note(
                        inst, ctx.tick(bar, s), int(STEP * 2), (low_, high_, mid, high_)[i % 4], ctx.vel(base_vel - 8)
                    )
                add_note(inst, ctx.tick(bar, start), int(STEP * length * 0.95), bass_note, ctx.vel(base_vel - 10))
    return inst


def _guitar_voicing(chord: Chord, power: bool) -> list[int]:
    root = pitch_in_range(chord.root, 40, 51)
    if power:
        return [root, root + 7, root + 12]
    pcs = chord.pitch_classes
    notes = [root, root + 7 if 7 in chord.intervals else root + chord.intervals[2]]
    for target in (root + 12, root + 12 + chord.intervals[1], root + 12 + chord.intervals[2], root + 24):
        notes.append(target)
    if len(pcs) > 3:
        notes[-1] = root + 12 + chord.intervals[3]
    return sorted(set(n for n in notes if n <= 80))


def guitars(ctx: PartContext) -> list[Instrument]:
    rng = ctx.rng
    n = 2 if rng.random() < 0.25 else 1
    styles = list(rng.choice(GUITAR_STYLES, size=n, replace=False))
    return [_guitar(ctx, str(style), role) for style, role in zip(styles, ("rhythm", "second"))]


def _guitar(ctx: PartContext, style: str, role: str) -> Instrument:
    rng = ctx.rng
    programs = GUITAR_PROGRAMS_BY_STYLE[style]
    inst = Instrument("guitar", int(programs[int(rng.integers(len(programs)))]), False, style, role)
    base_vel = rng.uniform(70, 100)
    strum_gap = int(rng.integers(6, 18))  # ticks between strings of a strum
    pattern = ["D.DU.UDU", "D.D.D.D.", "D..UD.DU", "D.DUDUDU"][int(rng.integers(4))]
    for sec, bar in ctx.bars("guitar"):
        for start, length, chord in _chord_spans(ctx, sec, bar):
            voicing = _guitar_voicing(chord, power=style == "power")
            if style == "strum":
                for s in range(start, start + length, 2):
                    sym = pattern[(s // 2) % len(pattern)]
                    if sym == ".":
                        continue
                    strings = voicing if sym == "D" else voicing[::-1][:4]
                    t0 = ctx.tick(bar, s)
                    for k, p in enumerate(strings):
                        add_note(inst, t0 + k * strum_gap, int(STEP * 2.2), p, ctx.vel(base_vel - 12 * (sym == "U")))
            elif style == "picking":
                order = [0, 2, 1, 3, 2, 4, 3, 1]
                for i, s in enumerate(range(start, start + length, 2)):
                    p = voicing[order[i % len(order)] % len(voicing)]
                    add_note(inst, ctx.tick(bar, s), int(STEP * 3), p, ctx.vel(base_vel - 5))
            elif style == "power":
                for s in range(start, start + length, 2):
                    for p in voicing:
                        add_note(inst, ctx.tick(bar, s), int(STEP * 1.1), p, ctx.vel(base_vel))
            elif style == "funk":
                top = [p for p in voicing if p >= 52][:3] or voicing[-3:]
                for s in range(start, start + length):
                    if s % 4 in (1, 2, 3) and rng.random() < 0.55:
                        for p in top:
                            add_note(inst, ctx.tick(bar, s), int(STEP * 0.6), p, ctx.vel(base_vel - 5 * (s % 2)))
            else:  # sustained
                t0 = ctx.tick(bar, start)
                for k, p in enumerate(voicing):
                    add_note(inst, t0 + k * strum_gap * 2, int(STEP * length * 0.95), p, ctx.vel(base_vel - 10))
    return inst


def others(ctx: PartContext) -> list[Instrument]:
    rng = ctx.rng
    roll = rng.random()
    roles = ["lead"] if roll < 0.35 else (["pad"] if roll < 0.6 else ["lead", "pad"])
    insts = []
    for role in roles:
        if role == "lead":
            insts.append(_lead(ctx))
        else:
            insts.append(_pad(ctx))
    return insts


def _lead(ctx: PartContext) -> Instrument:
    rng, song = ctx.rng, ctx.song
    inst = Instrument("others", int(LEAD_PROGRAMS[int(rng.integers(len(LEAD_PROGRAMS)))]), False, "melody", "lead")
    steps = song.steps_per_bar
    low = int(rng.integers(60, 68))
    scale = song.key.scale_pitches(low, low + 16)
    base_vel = rng.uniform(80, 105)
    # A one-bar rhythmic motif (onset steps with lengths) and a contour, repeated with variation.
    onsets = sorted(set([0] + list(rng.choice(np.arange(1, steps), size=int(rng.integers(2, 6)), replace=False))))
    contour = list(rng.integers(-2, 3, size=len(onsets)))
    idx = len(scale) // 2
    for sec, bar in ctx.bars("others"):
        if (bar - sec.start_bar) % 4 == 3 and rng.random() < 0.5:
            continue  # breathe
        for j, onset in enumerate(onsets):
            chord = sec.chord_at(bar, onset)
            move = contour[j] + (int(rng.integers(-1, 2)) if rng.random() < 0.3 else 0)
            idx = int(np.clip(idx + move, 0, len(scale) - 1))
            pitch = scale[idx]
            if onset % 4 == 0:  # strong beats land on chord tones
                tones = [p for p in scale if p % 12 in chord.pitch_classes]
                pitch = min(tones, key=lambda p: abs(p - pitch))
                idx = scale.index(pitch)
            end = onsets[j + 1] if j + 1 < len(onsets) else steps
            add_note(inst, ctx.tick(bar, onset), int(STEP * (end - onset) * 0.9), pitch, ctx.vel(base_vel))
    return inst


def _pad(ctx: PartContext) -> Instrument:
    rng = ctx.rng
    inst = Instrument("others", int(PAD_PROGRAMS[int(rng.integers(len(PAD_PROGRAMS)))]), False, "pad", "pad")
    base_vel = rng.uniform(60, 85)
    prev = None
    for sec, bar in ctx.bars("others"):
        for start, length, chord in _chord_spans(ctx, sec, bar):
            voicing = voice_chord(chord, 52, 76, 3, prev, rng)
            prev = voicing
            for p in voicing:
                add_note(inst, ctx.tick(bar, start, swing=False), int(STEP * length * 0.98), p, ctx.vel(base_vel, 4))
    return inst
