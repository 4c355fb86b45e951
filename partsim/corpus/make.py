"""``partsim corpus make``: compose, render and write a Slakh-style multitrack corpus.

Layout (read back by :func:`partsim.data.open_dataset`)::

    DIR/index.json                 config, part list, train/validation/test split, per-song summary
    DIR/<song_id>/mix.flac         16-bit mono 44.1 kHz; exactly the sum of the stems
    DIR/<song_id>/stems/<part>.flac  one per part; an absent part is all zeros
    DIR/<song_id>/song.mid
    DIR/<song_id>/metadata.json

Two composers make songs: partsim's own procedural composer (:mod:`.compose`) and Debian's MMA
(:mod:`.mma`, grooves from its style library); ``--composer mixed`` draws each song's composer
from its index, half and half. Both give a :class:`~.compose.Song`, which one code path
renders, levels and writes. Song *i* of seed *K* is a pure function of (K, i, seconds,
SoundFonts, composer, groove set): a corpus of N songs
is a prefix of a corpus of M > N songs made with the same settings, and an interrupted run
resumes where it stopped. Each song is written into ``DIR/.tmp-<id>-<pid>`` and renamed into
place when complete; ``index.json`` is written last, through a temporary name too.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..audio import SAMPLE_RATE, write_flac_pcm16
from ..data.taxonomy import PARTS
from ..data.tempo import NUM_TEMPO_CLASSES
from ..errors import InvalidArgument, PartsimError
from .compose import DRUM_KITS, Song, compose, min_seconds_for_one_bar
from .midi import write_midi
from .mma_library import GROOVE_SETS, MMA_LICENSE, mma_path, mma_version
from .render import Renderer, Voice
from .soundfonts import SoundFont, default_soundfonts

GENERATOR = "partsim-corpus/1"  # bump when a seed no longer yields the same songs
MAX_SECONDS = 1800.0
MIX_PEAK = 0.89  # headroom below full scale after quantisation of every stem
FADE_OUT_SECONDS = 0.05
# Target loudness of each stem (RMS over the bars where it plays), dBFS, before one scale for
# all stems brings the mix peak to at most MIX_PEAK.
PART_RMS_DB = {"drums": -17.0, "bass": -19.0, "piano": -21.0, "guitar": -21.0, "others": -21.0}
SPLITS = ("train", "validation", "test")
STATE_FILE = ".partsim-corpus.json"
COMPOSERS = ("partsim", "mma", "mixed")
PARTSIM_LICENSE = "Apache-2.0"  # partsim's own procedural songs: the project's licence
AUGMENTATION_NOTE = ("stems are written unaugmented (augmentation: null); the trainer augments each stem "
                     "at training time, deterministically under its seed")


@dataclass
class CorpusConfig:
    out: Path
    songs: int
    seconds: float
    seed: int
    soundfonts: list[SoundFont] = field(default_factory=list)
    workers: int = 1
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    composer: str = "partsim"  # partsim, mma or mixed
    grooves: str = "train"  # MMA groove families: train or heldout (see mma_library.HELDOUT_FAMILIES)

    def validate(self) -> None:
        if self.composer not in COMPOSERS:
            raise InvalidArgument(f"unknown --composer {self.composer!r}; choose one of {', '.join(COMPOSERS)}")
        if self.grooves not in GROOVE_SETS:
            raise InvalidArgument(f"unknown --grooves {self.grooves!r}; choose one of {', '.join(GROOVE_SETS)}")
        if self.grooves != "train" and self.composer == "partsim":
            raise InvalidArgument(f"--grooves {self.grooves} selects MMA groove families; it needs --composer mma or mixed")
        if self.songs <= 0:
            raise InvalidArgument(f"--songs must be at least 1, got {self.songs}")
        if not math.isfinite(self.seconds) or self.seconds <= 0:
            raise InvalidArgument(f"--seconds must be a positive number, got {self.seconds}")
        shortest = min_seconds_for_one_bar()
        if self.seconds < shortest:
            raise InvalidArgument(
                f"--seconds {self.seconds:g} is too short for one bar (a 4/4 bar at the slowest tempo, "
                f"60 BPM, lasts {shortest:g} s)"
            )
        if self.seconds > MAX_SECONDS:
            raise InvalidArgument(f"--seconds {self.seconds:g} exceeds the maximum of {MAX_SECONDS:g}")
        if self.seed < 0:
            raise InvalidArgument(f"--seed must be a non-negative integer, got {self.seed}")
        if self.workers <= 0:
            raise InvalidArgument(f"--workers must be at least 1, got {self.workers}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise InvalidArgument(f"--split must be three non-negative fractions summing to 1, got {self.split}")
        if self.composer != "partsim":
            mma_path()  # MmaError (exit 2) when mma is not installed

    def identity(self) -> dict:
        """What decides the songs: a folder made with another identity cannot be resumed."""
        return {
            "generator": GENERATOR,
            "seed": self.seed,
            "seconds": self.seconds,
            "sample_rate": SAMPLE_RATE,
            "soundfonts": [sf.name for sf in self.soundfonts],
            "composer": self.composer,
            # the groove set and the MMA library decide MMA songs too
            **({"grooves": self.grooves, "mma_version": mma_version()} if self.composer != "partsim" else {}),
        }


def composer_for(seed: int, index: int, composer: str) -> str:
    """The composer of song ``index``; ``mixed`` deals partsim and mma in shuffled pairs (exactly half each)."""
    if composer != "mixed":
        return composer
    block, pos = divmod(index, 2)
    return ("partsim", "mma")[int(np.random.default_rng([seed, 2, block]).permutation(2)[pos])]


def song_id(index: int) -> str:
    return f"song{index:05d}"


def tempo_class_for(seed: int, index: int) -> int:
    """Tempo classes are dealt in shuffled rounds of 36 so every class is populated evenly."""
    block, pos = divmod(index, NUM_TEMPO_CLASSES)
    return int(np.random.default_rng([seed, 36, block]).permutation(NUM_TEMPO_CLASSES)[pos])


def assign_splits(ids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[str]]:
    """Disjoint train/validation/test lists; validation and test get at least one song when N >= 3."""
    order = list(np.random.default_rng([seed, 7]).permutation(len(ids)))
    n = len(ids)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
    n_train = n - n_test - n_val
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "validation": sorted(shuffled[n_train:n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val:]),
    }


# --------------------------------------------------------------------------------------------
# One song


def _choose_voices(song: Song, rng: np.random.Generator, renderer: Renderer) -> list[Voice]:
    """Pick a SoundFont per part (and a kit for drums) among those that have the preset."""
    names = renderer.soundfont_names
    voices = []
    per_part_sf = {p: names[int(rng.integers(len(names)))] for p in PARTS}
    for inst in song.instruments:
        bank = 128 if inst.is_drum else 0
        candidates = [per_part_sf[inst.part]] + [n for n in names if n != per_part_sf[inst.part]]
        chosen = None
        for sf in candidates:
            if renderer.preset_name(sf, bank, inst.program):
                chosen = sf
                break
        if chosen is None:
            # every SoundFont lacks this preset: fall back to the first program of the family
            inst.program = 0 if inst.is_drum else inst.program - inst.program % 8
            chosen = next((sf for sf in candidates if renderer.preset_name(sf, bank, inst.program)), None)
            if chosen is None:
                raise PartsimError(f"no SoundFont has a preset for bank {bank} program {inst.program}")
        voices.append(Voice(inst, chosen, bank, inst.program))
    return voices


def _active_ranges(song: Song, part: str, seconds: float) -> list[list[float]]:
    bar_s = song.bar_seconds()
    ranges: list[list[float]] = []
    for sec in song.sections:
        if part not in sec.parts:
            continue
        start, end = sec.start_bar * bar_s, min((sec.start_bar + sec.bars) * bar_s, seconds)
        if start >= seconds:
            continue
        if ranges and abs(ranges[-1][1] - start) < 1e-3:
            ranges[-1][1] = round(end, 4)
        else:
            ranges.append([round(start, 4), round(end, 4)])
    return ranges


def _mask(ranges: list[list[float]], n: int, sr: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for start, end in ranges:
        m[int(start * sr):int(end * sr)] = True
    return m


@dataclass
class BuiltSong:
    metadata: dict
    stems: dict[str, np.ndarray]  # int16 (n,) per part
    mix: np.ndarray  # int16 (n,), the integer sum of the stems
    song: Song
    files: dict[str, str] = field(default_factory=dict)  # extra text files for the song folder


def _compose(index: int, cfg: CorpusConfig, rng: np.random.Generator) -> tuple[Song, dict, dict[str, str]]:
    """The song ``index`` by its composer: (song, source metadata, extra files)."""
    composer = composer_for(cfg.seed, index, cfg.composer)
    tclass = tempo_class_for(cfg.seed, index)
    if composer == "mma":
        from .mma import compose_mma  # imports mido; only MMA corpora need it

        made = compose_mma(rng, cfg.seconds, tclass, cfg.grooves)
        return made.song, made.source, {"song.mma": made.chart}
    song = compose(rng, cfg.seconds, tclass)
    return song, {"composer": "partsim", "program": f"partsim {__version__} procedural composer",
                  "generator": GENERATOR, "license": PARTSIM_LICENSE}, {}


def build_song(index: int, cfg: CorpusConfig, renderer: Renderer) -> BuiltSong:
    """Compose song ``index`` (with its composer) and render it: stems levelled, mix = sum of stems."""
    rng = np.random.default_rng([cfg.seed, index])
    song, source, files = _compose(index, cfg, rng)
    voices = _choose_voices(song, rng, renderer)
    voices_of = {p: [v for v in voices if v.instrument.part == p] for p in PARTS}
    sr = SAMPLE_RATE
    n = int(round(cfg.seconds * sr))
    fade = np.ones(n, dtype=np.float64)
    k = min(n, int(FADE_OUT_SECONDS * sr))
    fade[n - k:] = np.linspace(1.0, 0.0, k)

    stems: dict[str, np.ndarray] = {}
    gains_db: dict[str, float] = {}
    actives: dict[str, list[list[float]]] = {}
    for part in PARTS:
        part_voices = voices_of[part]
        audio = renderer.render(part_voices, song.tempo, n).astype(np.float64) if part_voices else np.zeros(n)
        audio *= fade
        actives[part] = _active_ranges(song, part, cfg.seconds) if part_voices else []
        region = audio[_mask(actives[part], n, sr)]
        rms = float(np.sqrt(np.mean(region ** 2))) if region.size else 0.0
        if part_voices and rms < 1e-7:
            raise PartsimError(f"song {song_id(index)}: part {part} rendered silent; SoundFont presets missing?")
        if rms > 0:
            gains_db[part] = PART_RMS_DB[part] + float(rng.uniform(-3, 3))
            audio *= 10 ** (gains_db[part] / 20) / rms
        stems[part] = audio

    # One scale for every stem so the mix keeps headroom, then quantise stems; the mix is the
    # integer sum of the quantised stems, so mix == sum(stems) exactly when read back.
    peak = float(np.max(np.abs(sum(stems.values())))) or 1.0
    scale = min(1.0, MIX_PEAK / peak)
    q_stems = {p: np.round(a * scale * 32767).astype(np.int32) for p, a in stems.items()}
    mix32 = sum(q_stems.values())
    if np.max(np.abs(mix32)) > 32767:
        raise AssertionError("mix overflowed int16 after quantisation")  # cannot happen: MIX_PEAK < 1
    out_stems = {p: a.astype(np.int16) for p, a in q_stems.items()}
    mix = mix32.astype(np.int16)

    metadata = {
        "format": "partsim-song",
        "version": 1,
        "generator": GENERATOR,
        "partsim_version": __version__,
        "song_id": song_id(index),
        "seed": {"corpus_seed": cfg.seed, "index": index},
        "composer": source["composer"],
        "source": source,
        "license": source["license"],
        "sample_rate": sr,
        "seconds": cfg.seconds,
        "num_samples": n,
        "tempo": song.tempo,
        "tempo_class": tempo_class_for(cfg.seed, index),
        "time_signature": [song.beats_per_bar, 4],
        "key": {"tonic": song.key.name.split()[0], "mode": song.key.mode, "name": song.key.name},
        "swing": round(song.swing, 3),
        "sections": [
            {
                "name": s.name,
                "start": round(s.start_bar * song.bar_seconds(), 4),
                "end": round((s.start_bar + s.bars) * song.bar_seconds(), 4),
                "bars": s.bars,
                "chords": [[c.name for _, c in bar] for bar in s.chords],
                "parts": [p for p in PARTS if p in s.parts],
            }
            for s in song.sections
        ],
        "parts": {},
        "present": [],
        "mix": "mix.flac",
        "midi": "song.mid",
    }
    for part in PARTS:
        part_voices = voices_of[part]
        present = bool(part_voices)
        metadata["parts"][part] = {
            "present": present,
            "stem": f"stems/{part}.flac",
            # the drawn target loudness, not the measured one: metadata must not depend on render bits
            "loudness_db": round(gains_db[part], 3) if present else None,
            "active": actives[part],
            "soundfonts": sorted({v.soundfont for v in part_voices}),
            "augmentation": None,  # applied per stem by the trainer at training time, never here
            "instruments": [
                {
                    "program": v.program,
                    "bank": v.bank,
                    "is_drum": v.instrument.is_drum,
                    "preset": renderer.preset_name(v.soundfont, v.bank, v.program),
                    "kit": DRUM_KITS.get(v.program) if v.instrument.is_drum else None,
                    "soundfont": v.soundfont,
                    "style": v.instrument.style,
                    "role": v.instrument.role,
                    "channel": v.instrument.channel,
                    "notes": len(v.instrument.notes),
                }
                for v in part_voices
            ],
        }
        if present:
            metadata["present"].append(part)
    metadata["augmentation_note"] = AUGMENTATION_NOTE
    return BuiltSong(metadata, out_stems, mix, song, files)


def write_song(index: int, cfg: CorpusConfig, renderer: Renderer) -> dict:
    """Build song ``index`` and write it atomically; returns its index.json summary."""
    sid = song_id(index)
    final = cfg.out / sid
    if (final / "metadata.json").is_file():  # written by an earlier run with the same identity
        return _summary(json.loads((final / "metadata.json").read_text()))
    built = build_song(index, cfg, renderer)
    metadata, stems, mix, song = built.metadata, built.stems, built.mix, built.song
    tmp = cfg.out / f".tmp-{sid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "stems").mkdir(parents=True)
        for part, audio in stems.items():
            write_flac_pcm16(tmp / "stems" / f"{part}.flac", audio)
        write_flac_pcm16(tmp / "mix.flac", mix)
        names = {v["channel"]: f"{p}: {v['preset']} ({v['style']})"
                 for p, info in metadata["parts"].items() for v in info["instruments"]}
        write_midi(song, tmp / "song.mid", names)
        for name, text in built.files.items():
            (tmp / name).write_text(text)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)  # an incomplete folder without metadata.json
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _summary(metadata)


def _summary(metadata: dict) -> dict:
    """index.json's line for a song (songs written before composers existed are partsim's)."""
    source = metadata.get("source", {})
    summary = {
        "tempo": metadata["tempo"],
        "tempo_class": metadata["tempo_class"],
        "key": metadata["key"]["name"],
        "present": metadata["present"],
        "composer": metadata.get("composer", "partsim"),
        "license": metadata.get("license", PARTSIM_LICENSE),
        "stems": {
            part: {"soundfonts": sorted({i["soundfont"] for i in info["instruments"]}),
                   "programs": [i["program"] for i in info["instruments"]],
                   "augmentation": info.get("augmentation")}
            for part, info in metadata["parts"].items()
        },
    }
    if summary["composer"] == "mma":
        summary["source"] = {"families": source.get("families", []),
                             "grooves": list(dict.fromkeys(g["groove"] for g in source.get("grooves", []))),
                             "mma_version": source.get("mma_version")}
    return summary


# --------------------------------------------------------------------------------------------
# Whole corpus


def prepare_output(cfg: CorpusConfig) -> None:
    """Create (or reopen for resuming) the output folder; refuse a folder we cannot own."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"output path exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidArgument(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    state = out / STATE_FILE
    identity = cfg.identity()
    if state.is_file():
        try:
            previous = json.loads(state.read_text())
        except ValueError:
            previous = None
        if isinstance(previous, dict):
            previous.setdefault("composer", "partsim")
        if previous != identity:
            diff = ", ".join(f"{k} {previous.get(k)!r} vs {v!r}" for k, v in identity.items()
                             if isinstance(previous, dict) and previous.get(k) != v) or "unreadable state file"
            raise InvalidArgument(f"{out} holds a corpus made with other settings ({diff}); choose another folder")
    elif any(p.name != STATE_FILE for p in out.iterdir()):
        raise InvalidArgument(f"output folder {out} is not empty and holds no partsim corpus; choose an empty or new folder")
    for leftover in out.glob(".tmp-*"):  # from an interrupted run
        shutil.rmtree(leftover, ignore_errors=True)
    state.write_text(json.dumps(identity, indent=1) + "\n")


_worker_renderer: Renderer | None = None
_worker_cfg: CorpusConfig | None = None


def _init_worker(cfg: CorpusConfig) -> None:
    global _worker_renderer, _worker_cfg
    _worker_renderer = Renderer(cfg.soundfonts)
    _worker_cfg = cfg


def _work(index: int) -> tuple[int, dict]:
    assert _worker_renderer is not None and _worker_cfg is not None
    return index, write_song(index, _worker_cfg, _worker_renderer)


def make_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    """Write the corpus described by ``cfg``; returns the index (also written to index.json)."""
    if not cfg.soundfonts:
        cfg.soundfonts = default_soundfonts()
    cfg.validate()
    prepare_output(cfg)
    started = time.monotonic()
    summaries: dict[int, dict] = {}
    bar = tqdm(total=cfg.songs, desc="songs", unit="song", disable=not progress, dynamic_ncols=True)
    try:
        if cfg.workers == 1 or cfg.songs == 1:
            renderer = Renderer(cfg.soundfonts)
            try:
                for i in range(cfg.songs):
                    summaries[i] = write_song(i, cfg, renderer)
                    bar.update()
            finally:
                renderer.close()
        else:
            # spawn, not fork: a forked child inherits FluidSynth/GLib locks held by other threads.
            with ProcessPoolExecutor(max_workers=min(cfg.workers, cfg.songs), initializer=_init_worker,
                                     initargs=(cfg,), mp_context=multiprocessing.get_context("spawn")) as pool:
                try:
                    for i, summary in pool.map(_work, range(cfg.songs), chunksize=1):
                        summaries[i] = summary
                        bar.update()
                except BrokenProcessPool:
                    raise PartsimError(
                        f"a render worker died (out of memory? each holds its SoundFonts); finished songs "
                        f"are kept in {cfg.out}; rerun the same command with fewer --workers to resume"
                    ) from None
    finally:
        bar.close()
    ids = [song_id(i) for i in range(cfg.songs)]
    splits = assign_splits(ids, cfg.seed, cfg.split)
    split_of = {sid: name for name, members in splits.items() for sid in members}
    index = {
        "format": "partsim-corpus",
        "version": 1,
        "parts": list(PARTS),
        "config": {
            **cfg.identity(),
            "songs": cfg.songs,
            "split": list(cfg.split),
            "soundfont_sha256": {sf.name: sf.sha256() for sf in cfg.soundfonts},
            "licenses": {"partsim": PARTSIM_LICENSE, "mma": f"{MMA_LICENSE} (MMA and its groove library)"},
            "augmentation": AUGMENTATION_NOTE,
        },
        "splits": splits,
        "songs": {sid: {"split": split_of[sid], **summaries[i]} for i, sid in enumerate(ids)},
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    tmp = cfg.out / f".index.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, cfg.out / "index.json")
    return index
