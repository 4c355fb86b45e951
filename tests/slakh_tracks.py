"""Tiny hand-written Slakh-style track folders (tests/test_dataset.py, tests/test_cli.py): stems of tones
and noise, a mix, ``metadata.yaml`` and a MIDI file carrying the tempo."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import yaml

SR = 44100
SECONDS = 0.25

# stem id -> (metadata entry, signal kind). S04 is not rendered: it has no audio file.
STEMS = {
    "S00": ({"inst_class": "Guitar", "is_drum": False, "program_num": 30}, 330.0),
    "S01": ({"inst_class": "Drums", "is_drum": True, "program_num": 128}, "noise"),
    "S02": ({"inst_class": "Strings", "is_drum": False, "program_num": 48}, 440.0),
    "S03": ({"inst_class": "Brass", "is_drum": False, "program_num": 61}, 550.0),
    "S04": ({"inst_class": "Bass", "is_drum": False, "program_num": 33, "audio_rendered": False}, None),
}


def stem_signal(kind, n: int, sr: int, seed: int) -> np.ndarray:
    """``n`` samples of a stem: a sine of ``kind`` Hz, or stereo noise for ``kind == "noise"``."""
    if kind == "noise":  # stereo, to exercise the down-mix
        return np.random.default_rng(seed).uniform(-0.2, 0.2, (n, 2)).astype(np.float32)
    return (0.2 * np.sin(2 * np.pi * kind * np.arange(n) / sr)).astype(np.float32)


def write_tempo_midi(path: Path, bpm: float) -> None:
    """A one-note MIDI file whose tempo is ``bpm``."""
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    mid.tracks.append(track)
    mid.save(str(path))


def make_slakh_track(folder: Path, ext: str = ".flac", sr: int = SR, bpm: float | None = 100.0, seed: int = 0):
    """One Slakh track folder; returns the (n,) or (n, 2) signals written per stem id."""
    (folder / "stems").mkdir(parents=True)
    n = int(SECONDS * sr)
    meta = {"UUID": f"uuid{seed}", "audio_dir": "stems", "midi_dir": "MIDI", "normalized": True, "stems": {}}
    written = {}
    for sid, (entry, kind) in STEMS.items():
        meta["stems"][sid] = {"audio_rendered": True, "midi_saved": True, **entry}
        if kind is not None:
            written[sid] = stem_signal(kind, n, sr, seed)
            sf.write(str(folder / "stems" / f"{sid}{ext}"), written[sid], sr, subtype="PCM_24")
    mix = sum(x if x.ndim == 1 else x.mean(axis=1) for x in written.values())
    sf.write(str(folder / f"mix{ext}"), mix, sr, subtype="PCM_24")
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=True))
    if bpm is not None:
        write_tempo_midi(folder / "all_src.mid", bpm)
    return written
