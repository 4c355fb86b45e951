"""The second composer: songs arranged by Debian's MMA from random chord charts.

A song is a chord chart partsim writes (random diatonic progressions in a random key and mode,
with common substitutions: secondary dominants, tritone substitutes, borrowed iv and bVII,
suspended dominants), a tempo inside the song's tempo class, and sections of 2–8 bars, each
with an MMA groove: the home family's main grooves for verses and choruses, its intro, fill
and ending grooves where they exist, and now and then a groove of another family with the same
metre (bridges most often). ``mma`` renders the chart to MIDI in a temporary folder; partsim
reads it back with mido and classes every note by its channel's General MIDI program (channel
10 is drums), so a groove's "Bass" track played on a jazz guitar is guitar, as in Slakh's
recipe. Programs are then redrawn inside each part's GM range (program variety), whole parts
are left out of some songs and parts drop out of some sections, exactly as the procedural
composer does. The result is an ordinary :class:`~partsim.corpus.compose.Song`, rendered and
written by :mod:`partsim.corpus.make` like any other.

Everything random is drawn from the song's generator, and MMA's own randomness (velocity and
timing humanisation) is seeded from it with ``RndSeed``, so a song is a pure function of its
seed and the installed MMA library.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass

import mido
import numpy as np

from ..data.taxonomy import PARTS, part_for_program
from ..data.tempo import tempo_class_range
from ..errors import PartsimError
from .compose import section_parts
from .mma_library import MMA_COMPOSER, MMA_LICENSE, Groove, families, mma_version, run_mma
from .song import DRUM_CHANNEL, DRUM_KITS, TICKS_PER_BEAT, Instrument, Note, Section, Song
from .theory import MODE_WEIGHTS, NOTE_NAMES, PROGRESSIONS, Chord, Key, progression_family

# Programs each part may be redrawn to. "others" leaves out GM's sound effects (120-127) and
# percussive presets (112-119), which are not accompaniment instruments.
PART_PROGRAMS: dict[str, tuple[int, ...]] = {
    "piano": tuple(range(0, 8)),
    "guitar": tuple(range(24, 32)),
    "bass": tuple(range(32, 40)),
    "others": tuple(range(8, 24)) + tuple(range(40, 112)),
}
KEEP_PROGRAM = 0.25  # chance to keep the groove's own program
KEEP_KIT = 0.5
PART_ABSENT = {"drums": 0.08, "bass": 0.08, "piano": 0.2, "guitar": 0.2, "others": 0.2}
MMA_SUFFIX = {
    "maj": "",
    "min": "m",
    "dim": "dim",
    "aug": "aug",
    "sus4": "sus4",
    "maj7": "maj7",
    "min7": "m7",
    "7": "7",
    "m7b5": "m7b5",
}
TEMPLATE = ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro")
MAX_MELODIC = 15  # MIDI channels left beside drums
ATTEMPTS = 12


@dataclass
class MmaSong:
    song: Song
    chart: str  # the .mma file given to mma
    source: dict  # grooves and families used, MMA version, licence


# --------------------------------------------------------------------------------------------
# Chart


def _substitute(key: Key, chords: list[Chord], rng: np.random.Generator) -> list[Chord]:
    """Common substitutions on a diatonic progression (one pass, each with a small chance)."""
    out = list(chords)
    major = key.mode in ("major", "mixolydian")
    for i, c in enumerate(chords):
        nxt = chords[(i + 1) % len(chords)]
        r = rng.random()
        if r < 0.12 and nxt.root != c.root:  # secondary dominant of the next chord
            out[i] = Chord((nxt.root + 7) % 12, "7", -1)
        elif r < 0.18 and c.quality == "7":  # tritone substitute
            out[i] = Chord((c.root + 6) % 12, "7", -1)
        elif r < 0.28 and major and c.degree == 3:  # borrowed iv
            out[i] = Chord(c.root, "min7" if c.quality == "maj7" else "min", -1)
        elif r < 0.33 and major and c.degree == 3:  # bVII instead of IV
            out[i] = Chord((key.tonic + 10) % 12, "maj", -1)
        elif r < 0.40 and c.degree == 4 and c.quality in ("maj", "7"):  # suspended dominant
            out[i] = Chord(c.root, "sus4", c.degree)
    return out


def _progression(key: Key, rng: np.random.Generator, sevenths: bool) -> list[Chord]:
    progs = PROGRESSIONS[progression_family(key.mode)]
    degrees = progs[int(rng.integers(len(progs)))]
    return _substitute(key, [key.diatonic_chord(d, sevenths) for d in degrees], rng)


def _chord_token(c: Chord) -> str:
    return NOTE_NAMES[c.root] + MMA_SUFFIX[c.quality]


def _plan_bars(num_bars: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    if num_bars <= 4:
        return [("chorus", num_bars)]
    section_bars = 8 if rng.random() < 0.4 else 4
    names: list[tuple[str, int]] = []
    left, i = num_bars, 0
    while left > 0:
        name = TEMPLATE[i] if i < len(TEMPLATE) else ("verse", "chorus")[i % 2]
        n = (2 if section_bars == 4 else 4) if name in ("intro", "outro") else section_bars
        names.append((name, min(n, left)))
        left -= min(n, left)
        i += 1
    return names


def _pick(rng: np.random.Generator, items) -> object:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _choose_grooves(
    rng: np.random.Generator, fams: dict[str, tuple[Groove, ...]], home: str, plan: list[tuple[str, int]]
) -> list[list[Groove]]:
    """One groove per bar, per section."""
    by_kind = lambda fam, kind: [g for g in fams[fam] if g.kind == kind]  # noqa: E731
    beats = fams[home][0].beats
    others = [f for f in fams if f != home and fams[f][0].beats == beats]
    mains = by_kind(home, "main")
    base = _pick(rng, mains)
    chorus_fam = _pick(rng, others) if others and rng.random() < 0.15 else home
    chorus = _pick(rng, by_kind(chorus_fam, "main")) if chorus_fam != home or rng.random() < 0.7 else base
    bridge_fam = _pick(rng, others) if others and rng.random() < 0.35 else home
    bridge = _pick(rng, by_kind(bridge_fam, "main"))
    main_for = {"intro": base, "verse": base, "chorus": chorus, "bridge": bridge, "outro": chorus}
    out = []
    for s, (name, bars) in enumerate(plan):
        main = main_for[name]
        fam = main.family
        row = [main] * bars
        intros, ends, fills = by_kind(fam, "intro"), by_kind(fam, "end"), by_kind(fam, "fill")
        if name == "intro" and intros and rng.random() < 0.5:
            row = [_pick(rng, intros)] * bars
        elif name == "outro" and ends and rng.random() < 0.5:
            k = min(bars, 2)
            row = [main] * (bars - k) + [_pick(rng, ends)] * k
        elif bars >= 2 and fills and s < len(plan) - 1 and rng.random() < 0.3:
            row[-1] = _pick(rng, fills)
        out.append(row)
    return out


def write_chart(tempo: float, beats: int, mma_seed: int, sections: list[Section], grooves: list[list[Groove]]) -> str:
    lines = ["// partsim mma composer: chord chart (MMA syntax)", f"RndSeed {mma_seed}", f"Tempo {tempo:g}"]
    used: set[str] = set()
    current = None
    for sec, row in zip(sections, grooves):
        lines.append(f"// {sec.name}, bars {sec.start_bar + 1}-{sec.start_bar + sec.bars}")
        for b, groove in enumerate(row):
            if groove.family not in used:
                lines.append(f"Use stdlib/{groove.family}")
                used.add(groove.family)
            if groove != current:
                lines.append(f"Groove {groove.name}")
                current = groove
            tokens = ["/"] * beats
            for step, chord in sec.chords[b]:
                tokens[step // 4] = _chord_token(chord)
            lines.append(f"{sec.start_bar + b + 1} " + " ".join(tokens))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# MIDI back to instruments


@dataclass
class _RawNote:
    start: int  # ticks at TICKS_PER_BEAT
    end: int
    channel: int
    program: int
    pitch: int
    velocity: int
    track: str


def read_notes(midi: bytes) -> list[_RawNote]:
    """Every note of an MMA MIDI file with its channel's program when it starts."""
    mid = mido.MidiFile(file=io.BytesIO(midi))
    scale = TICKS_PER_BEAT / mid.ticks_per_beat
    notes: list[_RawNote] = []
    for track in mid.tracks:
        now = 0
        program: dict[int, int] = {}
        sounding: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for msg in track:
            now += msg.time
            if msg.type == "program_change":
                program[msg.channel] = msg.program
            elif msg.type == "note_on" and msg.velocity > 0:
                sounding[(msg.channel, msg.note)].append((now, msg.velocity, program.get(msg.channel, 0)))
            elif msg.type in ("note_off", "note_on"):
                if sounding.get((msg.channel, msg.note)):
                    start, vel, prog = sounding[(msg.channel, msg.note)].pop(0)
                    s, e = int(round(start * scale)), int(round(now * scale))
                    notes.append(_RawNote(s, max(e, s + 1), msg.channel, prog, msg.note, vel, track.name))
    notes.sort(key=lambda n: (n.start, n.channel, n.pitch))
    return notes


def _part_of(n: _RawNote) -> str:
    return part_for_program(n.program, n.channel == DRUM_CHANNEL)


def _instruments(notes: list[_RawNote], rng: np.random.Generator) -> list[Instrument]:
    """Group notes by (part, channel, program); redraw programs inside each part's range."""
    groups: dict[tuple[str, int, int], list[_RawNote]] = defaultdict(list)
    for n in notes:
        key = ("drums", DRUM_CHANNEL, 0) if n.channel == DRUM_CHANNEL else (_part_of(n), n.channel, n.program)
        groups[key].append(n)
    # Too many melodic groups for 15 channels: fold the smallest into the largest of its part.
    while sum(1 for k in groups if k[0] != "drums") > MAX_MELODIC:
        melodic = sorted((k for k in groups if k[0] != "drums"), key=lambda k: (len(groups[k]), k))
        small = melodic[0]
        same = [k for k in melodic[1:] if k[0] == small[0]]
        moved = groups.pop(small)
        if same:
            groups[max(same, key=lambda k: (len(groups[k]), k))].extend(moved)
    insts = []
    for key in sorted(groups, key=lambda k: (PARTS.index(k[0]), k[1], k[2])):
        part, _, orig = key
        raw = sorted(groups[key], key=lambda n: (n.start, n.pitch))
        if part == "drums":
            first = next((n.program for n in raw), 0)
            kit = first if first in DRUM_KITS and rng.random() < KEEP_KIT else int(_pick(rng, sorted(DRUM_KITS)))
            program, style = kit, "mma kit"
        else:
            program = orig if rng.random() < KEEP_PROGRAM else int(_pick(rng, PART_PROGRAMS[part]))
            style = f"mma {raw[0].track or 'track'}"
        inst = Instrument(part, program, part == "drums", style, role=f"gm{raw[0].program}")
        inst.notes = [Note(n.start, n.end - n.start, n.pitch, int(np.clip(n.velocity, 1, 127))) for n in raw]
        insts.append(inst)
    return insts


def _drop_parts(song: Song, rng: np.random.Generator) -> None:
    """Leave whole parts out of some songs and out of some sections (silence is data too)."""
    parts = [p for p in PARTS if any(i.part == p and i.notes for i in song.instruments)]
    keep = [p for p in parts if rng.random() >= PART_ABSENT[p]]
    while len(keep) < min(2, len(parts)):
        keep.append(_pick(rng, [p for p in parts if p not in keep]))
    keep = [p for p in PARTS if p in keep]
    for sec in song.sections:
        sec.parts = section_parts(rng, sec.name, keep) if len(song.sections) > 1 else set(keep)
    if not any(set(keep) <= s.parts for s in song.sections):
        max(song.sections, key=lambda s: (s.name == "chorus", s.bars)).parts = set(keep)
    bar = song.bar_ticks
    bounds = [(s.start_bar * bar, (s.start_bar + s.bars) * bar, s) for s in song.sections]
    for inst in song.instruments:
        kept = []
        for n in inst.notes:
            i = min(max(0, n.start // bar), song.num_bars - 1)
            k = next(j for j, (lo, hi, _) in enumerate(bounds) if lo <= i * bar < hi)
            lo, hi, sec = bounds[k]
            if inst.part not in sec.parts:
                continue
            if k + 1 < len(bounds) and inst.part not in bounds[k + 1][2].parts:
                n.duration = max(1, min(n.duration, hi - n.start))  # no tail into a silent section
            kept.append(n)
        inst.notes = kept
    song.instruments = [i for i in song.instruments if i.notes]
    playing = {i.part for i in song.instruments}
    for sec in song.sections:  # a section lists a part only if it has notes there
        lo, hi = sec.start_bar * bar, (sec.start_bar + sec.bars) * bar
        sec.parts = {
            i.part for i in song.instruments if i.part in sec.parts and any(lo <= n.start < hi for n in i.notes)
        }
    song.present = {p: p in playing for p in PARTS}


def _assign_channels(insts: list[Instrument]) -> None:
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    for inst in insts:
        inst.channel = DRUM_CHANNEL if inst.is_drum else free.pop(0)


# --------------------------------------------------------------------------------------------
# Song


def compose_mma(rng: np.random.Generator, seconds: float, tempo_class: int, grooves: str = "train") -> MmaSong:
    """Compose a song of at least ``seconds`` seconds in ``tempo_class`` with MMA grooves of the given set."""
    fams = families(grooves)
    low, high = tempo_class_range(tempo_class)
    tempo = min(round(float(rng.uniform(low, high)), 2), high - 0.01)
    for _ in range(ATTEMPTS):
        home = str(_pick(rng, sorted(fams)))
        beats = fams[home][0].beats
        modes = list(MODE_WEIGHTS)
        key = Key(int(rng.integers(12)), modes[rng.choice(len(modes), p=np.array(list(MODE_WEIGHTS.values())))])
        num_bars = max(1, math.ceil(seconds / (beats * 60.0 / tempo) - 1e-9))
        plan = _plan_bars(num_bars, rng)
        sevenths = rng.random() < 0.45
        two_per_bar = beats % 2 == 0 and rng.random() < 0.2
        prog_for = {name: _progression(key, rng, sevenths) for name in ("verse", "chorus", "bridge")}
        prog_for["intro"] = prog_for["verse"] if rng.random() < 0.5 else prog_for["chorus"]
        prog_for["outro"] = prog_for["chorus"]
        sections, bar = [], 0
        for name, n in plan:
            prog = prog_for[name]
            if two_per_bar:
                chords = [
                    [(0, prog[(2 * b) % len(prog)]), (beats * 2, prog[(2 * b + 1) % len(prog)])] for b in range(n)
                ]
            else:
                chords = [[(0, prog[b % len(prog)])] for b in range(n)]
            sections.append(Section(name, bar, n, chords, set()))
            bar += n
        rows = _choose_grooves(rng, fams, home, plan)
        chart = write_chart(tempo, beats, int(rng.integers(1, 2**31 - 1)), sections, rows)
        notes = read_notes(run_mma(chart))
        song = Song(tempo, beats, key, 0.0, sections, _instruments(notes, rng), {}, num_bars)
        _drop_parts(song, rng)
        if sum(song.present.values()) >= 2:
            _assign_channels(song.instruments)
            used = [g for row in rows for g in row]
            source = {
                "composer": "mma",
                "generator": MMA_COMPOSER,
                "program": f"MMA {mma_version()} (Musical MIDI Accompaniment, Debian package mma)",
                "mma_version": mma_version(),
                "library": "stdlib",
                "grooves_set": grooves,
                "families": list(dict.fromkeys(g.family for g in used)),
                "style_files": [f"stdlib/{f}.mma" for f in dict.fromkeys(g.family for g in used)],
                "grooves": [
                    {"section": s.name, "bar": s.start_bar + b, "groove": g.name, "family": g.family}
                    for s, row in zip(sections, rows)
                    for b, g in enumerate(row)
                    if b == 0 or g != row[b - 1]
                ],
                "chart": "song.mma",
                "license": MMA_LICENSE,
            }
            return MmaSong(song, chart, source)
    raise PartsimError(f"mma composer: no groove of the {grooves!r} set gave two parts in {ATTEMPTS} tries")
