"""One song: compose it (with its composer), render every part alone, level, write atomically.

Both composers (:func:`.compose.compose` and :func:`.mma.compose_mma`) give a
:class:`~.compose.Song`; everything after composition is shared: a SoundFont per part, one
FluidSynth render per part, levelling per part, one scale for all stems, the mix as the
integer sum of the 16-bit stems, active time ranges and metadata.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..audio import SAMPLE_RATE, write_flac_pcm16
from ..data.taxonomy import PARTS
from ..errors import PartsimError
from .compose import compose
from .config import (
    AUGMENTATION_NOTE,
    FADE_OUT_SECONDS,
    GENERATOR,
    MIX_PEAK,
    PART_RMS_DB,
    PARTSIM_LICENSE,
    CorpusConfig,
    composer_for,
    song_id,
    tempo_class_for,
)
from .midi import write_midi
from .render import Renderer, Voice
from .song import DRUM_KITS, Song


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
        m[int(start * sr) : int(end * sr)] = True
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
    return (
        song,
        {
            "composer": "partsim",
            "program": f"partsim {__version__} procedural composer",
            "generator": GENERATOR,
            "license": PARTSIM_LICENSE,
        },
        {},
    )


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
    fade[n - k :] = np.linspace(1.0, 0.0, k)

    stems: dict[str, np.ndarray] = {}
    gains_db: dict[str, float] = {}
    actives: dict[str, list[list[float]]] = {}
    for part in PARTS:
        part_voices = voices_of[part]
        audio = renderer.render(part_voices, song.tempo, n).astype(np.float64) if part_voices else np.zeros(n)
        audio *= fade
        actives[part] = _active_ranges(song, part, cfg.seconds) if part_voices else []
        region = audio[_mask(actives[part], n, sr)]
        rms = float(np.sqrt(np.mean(region**2))) if region.size else 0.0
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
        names = {
            v["channel"]: f"{p}: {v['preset']} ({v['style']})"
            for p, info in metadata["parts"].items()
            for v in info["instruments"]
        }
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
            part: {
                "soundfonts": sorted({i["soundfont"] for i in info["instruments"]}),
                "programs": [i["program"] for i in info["instruments"]],
                "augmentation": info.get("augmentation"),
            }
            for part, info in metadata["parts"].items()
        },
    }
    if summary["composer"] == "mma":
        summary["source"] = {
            "families": source.get("families", []),
            "grooves": list(dict.fromkeys(g["groove"] for g in source.get("grooves", []))),
            "mma_version": source.get("mma_version"),
        }
    return summary
