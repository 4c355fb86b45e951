"""Just enough music theory to compose: scales, diatonic chords, progressions, voicings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
MODE_WEIGHTS = {"major": 0.5, "minor": 0.35, "dorian": 0.08, "mixolydian": 0.07}

# Intervals above the root of each chord quality.
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus4": (0, 5, 7),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "7": (0, 4, 7, 10),
    "m7b5": (0, 3, 6, 10),
}

# Progressions as 0-based scale degrees, per mode family.
PROGRESSIONS: dict[str, list[tuple[int, ...]]] = {
    "major": [
        (0, 4, 5, 3),
        (0, 5, 3, 4),
        (0, 3, 4, 3),
        (5, 3, 0, 4),
        (0, 3, 0, 4),
        (1, 4, 0, 0),
        (0, 0, 3, 4),
        (0, 2, 3, 4),
        (3, 4, 2, 5),
        (0, 5, 1, 4),
    ],
    "minor": [
        (0, 5, 2, 6),
        (0, 3, 4, 0),
        (0, 6, 5, 6),
        (0, 5, 3, 4),
        (0, 3, 6, 2),
        (0, 0, 5, 4),
        (5, 6, 0, 0),
        (0, 2, 6, 3),
    ],
}


@dataclass(frozen=True)
class Chord:
    """A chord: root pitch class (0-11), quality name and scale degree it was built on."""

    root: int
    quality: str
    degree: int

    @property
    def intervals(self) -> tuple[int, ...]:
        return QUALITIES[self.quality]

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in self.intervals)

    @property
    def name(self) -> str:
        return NOTE_NAMES[self.root] + ("" if self.quality == "maj" else self.quality)


@dataclass(frozen=True)
class Key:
    tonic: int
    mode: str

    @property
    def scale(self) -> tuple[int, ...]:
        """Pitch classes of the scale, degree order."""
        return tuple((self.tonic + i) % 12 for i in MODES[self.mode])

    @property
    def name(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    def diatonic_chord(self, degree: int, sevenths: bool = False) -> Chord:
        """Chord stacked in thirds from the scale on ``degree`` (0-based)."""
        steps = MODES[self.mode]
        d = degree % 7
        root = steps[d]
        third = (steps[(d + 2) % 7] - root) % 12
        fifth = (steps[(d + 4) % 7] - root) % 12
        seventh = (steps[(d + 6) % 7] - root) % 12
        triad = {(4, 7): "maj", (3, 7): "min", (3, 6): "dim", (4, 8): "aug"}[(third, fifth)]
        # Minor keys borrow the major dominant (harmonic minor) as most songs do.
        if self.mode == "minor" and d == 4:
            triad, seventh = "maj", 10
        quality = triad
        if sevenths:
            quality = {
                ("maj", 11): "maj7",
                ("maj", 10): "7",
                ("min", 10): "min7",
                ("dim", 10): "m7b5",
            }.get((triad, seventh), triad)
        return Chord((self.tonic + root) % 12, quality, d)

    def scale_pitches(self, low: int, high: int) -> list[int]:
        """All MIDI pitches of the scale within [low, high]."""
        pcs = set(self.scale)
        return [p for p in range(low, high + 1) if p % 12 in pcs]


def progression_family(mode: str) -> str:
    return "major" if mode in ("major", "mixolydian") else "minor"


def pitch_in_range(pc: int, low: int, high: int, near: int | None = None) -> int:
    """The MIDI pitch of pitch class ``pc`` in [low, high], nearest to ``near`` (or lowest)."""
    candidates = [p for p in range(low, high + 1) if p % 12 == pc % 12]
    if not candidates:
        raise ValueError(f"no pitch of class {pc} in {low}..{high}")
    if near is None:
        return candidates[0]
    return min(candidates, key=lambda p: (abs(p - near), p))


def voice_chord(
    chord: Chord, low: int, high: int, n_voices: int, previous: list[int] | None, rng: np.random.Generator
) -> list[int]:
    """A close voicing of ``chord`` with ``n_voices`` notes in [low, high].

    Picks the inversion whose centre is nearest the previous voicing (smooth voice leading).
    """
    pcs = list(chord.pitch_classes)
    best: list[int] | None = None
    best_cost = float("inf")
    centre_prev = np.mean(previous) if previous else (low + high) / 2 + rng.uniform(-3, 3)
    for inversion in range(len(pcs)):
        order = pcs[inversion:] + pcs[:inversion]
        for start in range(low, high + 1):
            if start % 12 != order[0]:
                continue
            notes = [start]
            i = 1
            while len(notes) < n_voices:
                pc = order[i % len(order)]
                nxt = notes[-1] + 1
                while nxt % 12 != pc:
                    nxt += 1
                notes.append(nxt)
                i += 1
            if notes[-1] > high:
                continue
            cost = abs(np.mean(notes) - centre_prev)
            if cost < best_cost:
                best, best_cost = notes, cost
    if best is None:  # range too narrow for the voicing: fall back to stacked pitch classes
        best = sorted(pitch_in_range(pc, low, high) for pc in pcs)[:n_voices]
    return best
