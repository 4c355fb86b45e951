"""Procedural multitrack composition: the song's plan.

A song is tempo + key + metre, a list of sections (intro, verse, chorus, bridge, outro) each
with a chord progression and the set of parts that play in it, and per part one or more
instruments whose notes follow a style: drum grooves with fills and bass lines
(:mod:`.rhythm`), piano and guitar comping, lead melodies and pads (:mod:`.harmony`).
Everything is decided by one ``numpy.random.Generator``, so a song is a pure function of its
seed. The song's data types and tick grid are in :mod:`.song`.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.taxonomy import PARTS
from ..data.tempo import tempo_class_range
from .harmony import guitars, others, piano
from .rhythm import bass, drums
from .song import DRUM_CHANNEL, Instrument, PartContext, Section, Song
from .theory import MODE_WEIGHTS, PROGRESSIONS, Key, progression_family

SECTION_PARTS_ALWAYS = {"chorus"}


def min_seconds_for_one_bar() -> float:
    """Shortest song length that holds one 4/4 bar at the slowest tempo (60 BPM)."""
    low, _ = tempo_class_range(0)
    return 4 * 60.0 / low


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
    ctx = PartContext(song, rng)
    insts: list[Instrument] = []
    if present["drums"]:
        insts.append(drums(ctx))
    if present["bass"]:
        insts.append(bass(ctx))
    if present["piano"]:
        insts.append(piano(ctx))
    if present["guitar"]:
        insts.extend(guitars(ctx))
    if present["others"]:
        insts.extend(others(ctx))
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
            n = (
                2
                if name in ("intro", "outro") and section_bars == 4
                else (4 if name in ("intro", "outro") else section_bars)
            )
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
        sections.append(Section(name, bar, n, chords, section_parts(rng, name, present_parts)))
        bar += n
    # Every present part must play somewhere: the first chorus (or the longest section) has all.
    if not any(set(present_parts) <= s.parts for s in sections):
        longest = max(sections, key=lambda s: (s.name == "chorus", s.bars))
        longest.parts = set(present_parts)
    return sections


def section_parts(rng, name: str, present_parts: list[str]) -> set[str]:
    """The parts that play in a section named ``name`` (a chorus, or a song of two parts: all of them)."""
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
