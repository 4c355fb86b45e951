"""Procedural multitrack composition.

A song is tempo + key + metre, a list of sections (intro, verse, chorus, bridge, outro) each
with a chord progression and the set of parts that play in it, and per part one or more
instruments whose notes follow a style (drum grooves with fills, bass lines, piano and guitar
comping, lead melodies and pads). Everything is decided by one ``numpy.random.Generator``, so
a song is a pure function of its seed.

Times are MIDI ticks (``TICKS_PER_BEAT`` per quarter note); the renderer and the MIDI writer
use the same ticks, so the audio and ``song.mid`` agree note for note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..data.taxonomy import PARTS
from ..data.tempo import tempo_class_range
from .theory import (
    MODE_WEIGHTS,
    PROGRESSIONS,
    Chord,
    Key,
    pitch_in_range,
    progression_family,
    voice_chord,
)

TICKS_PER_BEAT = 480
STEP = TICKS_PER_BEAT // 4  # one sixteenth note
DRUM_CHANNEL = 9

# General MIDI percussion keys.
KICK, RIM, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
FLOOR_TOM, LOW_TOM, MID_TOM, HIGH_TOM = 43, 45, 47, 50
CRASH, RIDE, RIDE_BELL, TAMBOURINE, COWBELL, SHAKER, CONGA_HI, CONGA_LO = 49, 51, 53, 54, 56, 70, 63, 64

# GM drum kits (bank 128): program -> name. The renderer keeps only those a SoundFont has.
DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz", 40: "Brush"}

# Drum grooves on a 16-step (4/4) grid: "x" hit, "o" soft hit (ghost), "." rest.
GROOVES: dict[str, dict[int, str]] = {
    "rock": {KICK: "x.......x.x.....", SNARE: "....x.......x...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "pop": {KICK: "x.....x...x.....", SNARE: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "funk": {KICK: "x..x..x...x..x..", SNARE: "....x..o.o..x..o", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "disco": {KICK: "x...x...x...x...", SNARE: "....x.......x...", OPEN_HAT: "..x...x...x...x.",
              CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "halftime": {KICK: "x.........x.....", SNARE: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "breakbeat": {KICK: "x.........x.x...", SNARE: "....x..o.o..x...", CLOSED_HAT: "x.xxx.x.x.xxx.x."},
    "electronic": {KICK: "x...x...x...x...", CLAP: "....x.......x...", OPEN_HAT: "..x...x...x...x.",
                   SHAKER: "oxoxoxoxoxoxoxox"},
    "bossa": {KICK: "x..xx..xx..xx..x", RIM: "x..x..x...x..x..",
              SHAKER: "xoxoxoxoxoxoxoxo"},
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
PIANO_STYLES = ("block", "arpeggio", "stabs", "ballad", "alberti")
GUITAR_STYLES = ("strum", "picking", "power", "funk", "sustained")

PIANO_PROGRAMS = tuple(range(0, 8))
BASS_PROGRAMS = tuple(range(32, 40))
GUITAR_PROGRAMS_BY_STYLE = {
    "strum": (24, 25, 26, 27), "picking": (24, 25, 26, 27), "power": (29, 30),
    "funk": (27, 28, 26), "sustained": (26, 27, 24, 29),
}
LEAD_PROGRAMS = (11, 12, 13, 40, 56, 57, 65, 66, 68, 71, 73, 74, 80, 81, 82, 84, 87, 16, 17, 22, 105)
PAD_PROGRAMS = (48, 49, 50, 52, 61, 19, 20, 89, 90, 91, 92, 94, 95, 44)

SECTION_PARTS_ALWAYS = {"chorus"}


@dataclass
class Note:
    """One note: onset and duration in ticks, MIDI pitch and velocity (1..127)."""

    start: int
    duration: int
    pitch: int
    velocity: int


@dataclass
class Instrument:
    """One MIDI instrument (one channel) of a part."""

    part: str
    program: int
    is_drum: bool
    style: str
    role: str = ""
    channel: int = 0
    notes: list[Note] = field(default_factory=list)


@dataclass
class Section:
    """Bars [start_bar, start_bar + bars) with one chord per ``chord_steps`` and the parts playing."""

    name: str
    start_bar: int
    bars: int
    chords: list[list[tuple[int, Chord]]]  # per bar: (start step within bar, chord)
    parts: set[str]

    def chord_at(self, bar: int, step: int) -> Chord:
        current = self.chords[bar - self.start_bar][0][1]
        for start, chord in self.chords[bar - self.start_bar]:
            if start <= step:
                current = chord
        return current


@dataclass
class Song:
    """A composed song: everything the renderer and the MIDI writer need."""

    tempo: float
    beats_per_bar: int
    key: Key
    swing: float
    sections: list[Section]
    instruments: list[Instrument]
    present: dict[str, bool]
    num_bars: int

    @property
    def steps_per_bar(self) -> int:
        return self.beats_per_bar * 4

    @property
    def bar_ticks(self) -> int:
        return self.beats_per_bar * TICKS_PER_BEAT

    def seconds_per_tick(self) -> float:
        return 60.0 / (self.tempo * TICKS_PER_BEAT)

    def bar_seconds(self) -> float:
        return self.bar_ticks * self.seconds_per_tick()


def min_seconds_for_one_bar() -> float:
    """Shortest song length that holds one 4/4 bar at the slowest tempo (60 BPM)."""
    low, _ = tempo_class_range(0)
    return 4 * 60.0 / low


class _Ctx:
    """Shared state the part generators read: song, rng, timing helpers."""

    def __init__(self, song: Song, rng: np.random.Generator):
        self.song = song
        self.rng = rng
        self.kick_steps: dict[int, set[int]] = {}  # bar -> steps with a kick (bass locks to it)

    def tick(self, bar: int, step: float, swing: bool = True) -> int:
        s = self.song
        base = bar * s.bar_ticks + step * STEP
        if swing and s.swing > 0:
            pos = int(step) % 4
            if pos == 2:
                base += s.swing * (TICKS_PER_BEAT / 6)  # delayed off-beat eighth
            elif pos in (1, 3):
                base += s.swing * (TICKS_PER_BEAT / 12)
        jitter = self.rng.normal(0, 4)
        return max(0, int(round(base + jitter)))

    def bars(self, part: str):
        """(section, bar) for every bar in which ``part`` plays."""
        for sec in self.song.sections:
            if part in sec.parts:
                for bar in range(sec.start_bar, sec.start_bar + sec.bars):
                    yield sec, bar

    def vel(self, base: float, spread: float = 8) -> int:
        return int(np.clip(round(base + self.rng.normal(0, spread)), 1, 127))


# --------------------------------------------------------------------------------------------
# Song structure


def compose(rng: np.random.Generator, seconds: float, tempo_class: int) -> Song:
    """Compose a song of at least ``seconds`` seconds whose tempo lies in ``tempo_class``."""
    low, high = tempo_class_range(tempo_class)
    tempo = round(float(rng.uniform(low, high)), 2)
    tempo = min(tempo, high - 0.01)
    beats = 3 if rng.random() < 0.12 else 4
    modes = list(MODE_WEIGHTS)
    mode = modes[rng.choice(len(modes), p=np.array(list(MODE_WEIGHTS.values())))]
    key = Key(int(rng.integers(12)), mode)
    swing = float(rng.uniform(0.5, 1.0)) if rng.random() < 0.15 else 0.0
    bar_seconds = beats * 60.0 / tempo
    num_bars = max(1, math.ceil(seconds / bar_seconds - 1e-9))

    present = _choose_present_parts(rng)
    sections = _plan_sections(rng, key, num_bars, beats, present)
    song = Song(tempo, beats, key, swing, sections, [], present, num_bars)
    ctx = _Ctx(song, rng)
    insts: list[Instrument] = []
    if present["drums"]:
        insts.append(_drums(ctx))
    if present["bass"]:
        insts.append(_bass(ctx))
    if present["piano"]:
        insts.append(_piano(ctx))
    if present["guitar"]:
        insts.extend(_guitars(ctx))
    if present["others"]:
        insts.extend(_others(ctx))
    _assign_channels(insts)
    song.instruments = insts
    return song


def _choose_present_parts(rng: np.random.Generator) -> dict[str, bool]:
    """Which parts a song has at all. Some songs lack parts (absence must be represented)."""
    p_absent = {"drums": 0.1, "bass": 0.1, "piano": 0.3, "guitar": 0.3, "others": 0.2}
    present = {p: bool(rng.random() >= p_absent[p]) for p in PARTS}
    while sum(present.values()) < 2:
        present[PARTS[int(rng.integers(len(PARTS)))]] = True
    return present


def _plan_sections(rng, key: Key, num_bars: int, beats: int, present: dict[str, bool]) -> list[Section]:
    family = progression_family(key.mode)
    progs = PROGRESSIONS[family]
    sevenths = rng.random() < 0.35
    prog_for = {name: progs[int(rng.integers(len(progs)))] for name in ("intro", "verse", "chorus", "bridge", "outro")}
    prog_for["intro"] = prog_for["verse"] if rng.random() < 0.5 else prog_for["chorus"]
    prog_for["outro"] = prog_for["chorus"]
    two_chords_per_bar = rng.random() < 0.2
    section_bars = 8 if rng.random() < 0.4 else 4

    names: list[tuple[str, int]] = []
    template = ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"]
    if num_bars <= 4:
        names = [("chorus", num_bars)]
    else:
        bars_left = num_bars
        i = 0
        while bars_left > 0:
            name = template[i % len(template)] if i < len(template) else ("verse", "chorus")[i % 2]
            n = 2 if name in ("intro", "outro") and section_bars == 4 else (4 if name in ("intro", "outro") else section_bars)
            n = min(n, bars_left)
            names.append((name, n))
            bars_left -= n
            i += 1

    present_parts = [p for p in PARTS if present[p]]
    sections: list[Section] = []
    bar = 0
    steps = beats * 4
    for name, n in names:
        prog = prog_for[name]
        chords = []
        for b in range(n):
            if two_chords_per_bar:
                d1, d2 = prog[(2 * b) % len(prog)], prog[(2 * b + 1) % len(prog)]
                chords.append([(0, key.diatonic_chord(d1, sevenths)), (steps // 2, key.diatonic_chord(d2, sevenths))])
            else:
                chords.append([(0, key.diatonic_chord(prog[b % len(prog)], sevenths))])
        sections.append(Section(name, bar, n, chords, _section_parts(rng, name, present_parts)))
        bar += n
    # Every present part must play somewhere: the first chorus (or the longest section) has all.
    if not any(set(present_parts) <= s.parts for s in sections):
        longest = max(sections, key=lambda s: (s.name == "chorus", s.bars))
        longest.parts = set(present_parts)
    return sections


def _section_parts(rng, name: str, present_parts: list[str]) -> set[str]:
    if name in SECTION_PARTS_ALWAYS or len(present_parts) <= 2:
        return set(present_parts)
    keep_prob = {"intro": 0.45, "verse": 0.75, "bridge": 0.6, "outro": 0.5}[name]
    parts = {p for p in present_parts if rng.random() < keep_prob}
    if not parts:
        parts = {present_parts[int(rng.integers(len(present_parts)))]}
    return parts


def _assign_channels(insts: list[Instrument]) -> None:
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    for inst in insts:
        inst.channel = DRUM_CHANNEL if inst.is_drum else free.pop(0)


def _add(inst: Instrument, start: int, duration: int, pitch: int, velocity: int) -> None:
    if duration > 0 and 0 <= pitch <= 127:
        inst.notes.append(Note(int(start), int(duration), int(pitch), int(velocity)))


# --------------------------------------------------------------------------------------------
# Drums


def _drums(ctx: _Ctx) -> Instrument:
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
            _add(inst, ctx.tick(bar, 0), STEP * 8, CRASH, ctx.vel(base_vel + 5))
        prev_section = sec
        for key_, pattern in groove.items():
            for step, ch in enumerate(pattern[:steps]):
                if step >= fill_from or ch == ".":
                    continue
                if key_ in (CLOSED_HAT, SHAKER, OPEN_HAT) and rng.random() < 0.04:
                    continue  # humanised drop-outs
                vel = base_vel * (0.45 if ch == "o" else 1.0) * (1.08 if step % 4 == 0 else 1.0)
                _add(inst, ctx.tick(bar, step), STEP, key_, ctx.vel(vel, 6))
                if key_ == KICK:
                    ctx.kick_steps[bar].add(step)
        # occasional extra ghost kick / snare variation
        if rng.random() < 0.25:
            step = int(rng.integers(steps))
            if step < fill_from:
                _add(inst, ctx.tick(bar, step), STEP, SNARE if rng.random() < 0.5 else KICK, ctx.vel(base_vel * 0.5))
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
                _add(inst, ctx.tick(bar, step), STEP, note, ctx.vel(base_vel * (0.7 + 0.3 * i / (steps - fill_from))))
            _add(inst, ctx.tick(bar, fill_from), STEP, KICK, ctx.vel(base_vel))
    return inst


# --------------------------------------------------------------------------------------------
# Bass


def _bass(ctx: _Ctx) -> Instrument:
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
                    _add(inst, ctx.tick(bar, step + half), int(STEP * 1.8), root, ctx.vel(base_vel - 6 * (half > 0)))
            elif style == "root_fifth":
                pitch = root if beat % 2 == 0 else (fifth if fifth <= high else fifth - 12)
                _add(inst, ctx.tick(bar, step), int(STEP * 3.6), pitch, ctx.vel(base_vel))
            elif style == "walking":
                tones = [root, third, fifth, root + 12 if root + 12 <= high else third]
                pitch = tones[beat % 4] if beat == 0 or rng.random() < 0.7 else int(np.clip(prev + rng.choice([-2, -1, 1, 2]), low, high))
                _add(inst, ctx.tick(bar, step), int(STEP * 3.7), pitch, ctx.vel(base_vel))
                prev = pitch
            elif style == "octave":
                for half, pitch in ((0, root), (2, root + 12)):
                    _add(inst, ctx.tick(bar, step + half), int(STEP * 1.5), pitch, ctx.vel(base_vel - 10 * (half > 0)))
            elif style == "locked":
                kicks = ctx.kick_steps.get(bar) or {0, 6, 10}
                for s in range(step, step + 4):
                    if s in kicks or (s == step and beat == 0):
                        _add(inst, ctx.tick(bar, s), int(STEP * 1.8), root, ctx.vel(base_vel))
                    elif s % 4 == 3 and rng.random() < 0.15:
                        _add(inst, ctx.tick(bar, s), STEP, root + 12 if root + 12 <= high else fifth, ctx.vel(base_vel - 15))
            elif style == "sustained":
                if beat == 0 or (step in [s for s, _ in sec.chords[bar - sec.start_bar]]):
                    span = next((s for s, _ in sec.chords[bar - sec.start_bar] if s > step), steps) - step
                    _add(inst, ctx.tick(bar, step), int(STEP * span * 0.95), root, ctx.vel(base_vel))
            elif style == "arpeggio":
                tones = [root, third, fifth, third]
                for half in (0, 2):
                    _add(inst, ctx.tick(bar, step + half), int(STEP * 1.8), tones[(beat * 2 + half // 2) % 4], ctx.vel(base_vel))
    return inst


# --------------------------------------------------------------------------------------------
# Piano and guitar


def _chord_spans(ctx: _Ctx, sec: Section, bar: int):
    """(start step, length in steps, chord) for each chord of a bar."""
    starts = sec.chords[bar - sec.start_bar]
    for i, (start, chord) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else ctx.song.steps_per_bar
        yield start, end - start, chord


def _piano(ctx: _Ctx) -> Instrument:
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
                        _add(inst, ctx.tick(bar, s), int(STEP * 3.5), p, ctx.vel(base_vel - 8 * (s % 8 != 0)))
                _add(inst, ctx.tick(bar, start), int(STEP * length * 0.95), bass_note, ctx.vel(base_vel - 5))
            elif style == "arpeggio":
                seq = [bass_note] + voicing + voicing[-2:0:-1]
                for i, s in enumerate(range(start, start + length, 2)):
                    _add(inst, ctx.tick(bar, s), int(STEP * 3), seq[i % len(seq)], ctx.vel(base_vel - 5))
            elif style == "stabs":
                for s in range(start + 2, start + length, 4):
                    for p in voicing:
                        _add(inst, ctx.tick(bar, s), int(STEP * 1.2), p, ctx.vel(base_vel + 5))
            elif style == "ballad":
                for p in voicing:
                    _add(inst, ctx.tick(bar, start), int(STEP * length * 0.98), p, ctx.vel(base_vel - 10))
                _add(inst, ctx.tick(bar, start), int(STEP * length * 0.98), bass_note, ctx.vel(base_vel - 5))
                top = ctx.song.key.scale_pitches(voicing[-1] + 1, voicing[-1] + 10)
                for s in range(start + 4, start + length, 4):
                    if top and rng.random() < 0.6:
                        _add(inst, ctx.tick(bar, s), int(STEP * 3.5), int(rng.choice(top)), ctx.vel(base_vel))
            else:  # alberti: low, high, middle, high in sixteenths or eighths
                low_, mid, high_ = voicing[0], voicing[len(voicing) // 2], voicing[-1]
                for i, s in enumerate(range(start, start + length, 2)):
                    _add(inst, ctx.tick(bar, s), int(STEP * 2), (low_, high_, mid, high_)[i % 4], ctx.vel(base_vel - 8))
                _add(inst, ctx.tick(bar, start), int(STEP * length * 0.95), bass_note, ctx.vel(base_vel - 10))
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


def _guitars(ctx: _Ctx) -> list[Instrument]:
    rng = ctx.rng
    n = 2 if rng.random() < 0.25 else 1
    styles = list(rng.choice(GUITAR_STYLES, size=n, replace=False))
    return [_guitar(ctx, str(style), role) for style, role in zip(styles, ("rhythm", "second"))]


def _guitar(ctx: _Ctx, style: str, role: str) -> Instrument:
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
                for i, s in enumerate(range(start, start + length, 2)):
                    sym = pattern[(s // 2) % len(pattern)]
                    if sym == ".":
                        continue
                    strings = voicing if sym == "D" else voicing[::-1][:4]
                    t0 = ctx.tick(bar, s)
                    for k, p in enumerate(strings):
                        _add(inst, t0 + k * strum_gap, int(STEP * 2.2), p, ctx.vel(base_vel - 12 * (sym == "U")))
            elif style == "picking":
                order = [0, 2, 1, 3, 2, 4, 3, 1]
                for i, s in enumerate(range(start, start + length, 2)):
                    p = voicing[order[i % len(order)] % len(voicing)]
                    _add(inst, ctx.tick(bar, s), int(STEP * 3), p, ctx.vel(base_vel - 5))
            elif style == "power":
                for s in range(start, start + length, 2):
                    for p in voicing:
                        _add(inst, ctx.tick(bar, s), int(STEP * 1.1), p, ctx.vel(base_vel))
            elif style == "funk":
                top = [p for p in voicing if p >= 52][:3] or voicing[-3:]
                for s in range(start, start + length):
                    if s % 4 in (1, 2, 3) and rng.random() < 0.55:
                        for p in top:
                            _add(inst, ctx.tick(bar, s), int(STEP * 0.6), p, ctx.vel(base_vel - 5 * (s % 2)))
            else:  # sustained
                t0 = ctx.tick(bar, start)
                for k, p in enumerate(voicing):
                    _add(inst, t0 + k * strum_gap * 2, int(STEP * length * 0.95), p, ctx.vel(base_vel - 10))
    return inst


# --------------------------------------------------------------------------------------------
# Others: lead melodies and pads


def _others(ctx: _Ctx) -> list[Instrument]:
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


def _lead(ctx: _Ctx) -> Instrument:
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
            _add(inst, ctx.tick(bar, onset), int(STEP * (end - onset) * 0.9), pitch, ctx.vel(base_vel))
    return inst


def _pad(ctx: _Ctx) -> Instrument:
    rng = ctx.rng
    inst = Instrument("others", int(PAD_PROGRAMS[int(rng.integers(len(PAD_PROGRAMS)))]), False, "pad", "pad")
    base_vel = rng.uniform(60, 85)
    prev = None
    for sec, bar in ctx.bars("others"):
        for start, length, chord in _chord_spans(ctx, sec, bar):
            voicing = voice_chord(chord, 52, 76, 3, prev, rng)
            prev = voicing
            for p in voicing:
                _add(inst, ctx.tick(bar, start, swing=False), int(STEP * length * 0.98), p, ctx.vel(base_vel, 4))
    return inst
