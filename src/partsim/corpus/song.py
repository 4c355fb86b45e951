"""A composed song as data: notes, instruments, sections, and the tick grid they sit on.

Times are MIDI ticks (``TICKS_PER_BEAT`` per quarter note); the renderer and the MIDI writer
use the same ticks, so the audio and ``song.mid`` agree note for note. Both composers
(:mod:`.compose` and :mod:`.mma`) produce a :class:`Song`; :class:`PartContext` is what the part
generators (:mod:`.rhythm`, :mod:`.harmony`) place their notes with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .theory import Chord, Key

TICKS_PER_BEAT = 480
STEP = TICKS_PER_BEAT // 4  # one sixteenth note
DRUM_CHANNEL = 9

# GM drum kits (bank 128): program -> name. The renderer keeps only those a SoundFont has.
DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz", 40: "Brush"}


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


class PartContext:
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


def add_note(inst: Instrument, start: int, duration: int, pitch: int, velocity: int) -> None:
    """Append a note to ``inst`` unless it has no length or its pitch is outside MIDI's 0..127."""
    if duration > 0 and 0 <= pitch <= 127:
        inst.notes.append(Note(int(start), int(duration), int(pitch), int(velocity)))
