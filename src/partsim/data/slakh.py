"""The Slakh2100 on-disk layout (and babyslakh's), parsed into plain track records.

Slakh2100 is ``ROOT/{train,validation,test,omitted}/TrackNNNNN/``; babyslakh is
``ROOT/TrackNNNNN/``; ROOT may also be one split folder of Slakh2100. Each track folder holds
``metadata.yaml`` (one entry per stem: ``inst_class``, ``is_drum``, ``program_num``,
``audio_rendered``...), ``mix.flac`` (``.wav`` in babyslakh), ``stems/SNN.flac`` and, optionally,
``all_src.mid``. Stems are grouped into parts with :func:`part_for_slakh_stem`; a stem with
``audio_rendered: false`` has no audio and is skipped.

This module only reads the layout; :mod:`partsim.data.dataset` turns the records into tracks.
"""

from __future__ import annotations

import re
from pathlib import Path

import mido
import yaml

from ..audio import _one_line
from ..errors import DatasetError
from .taxonomy import PARTS, part_for_slakh_stem

SPLITS: tuple[str, ...] = ("train", "validation", "test", "omitted")
_TRACK_NAME = re.compile(r"Track\d+$")
_AUDIO_EXTS = (".flac", ".wav")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find_track_folders(root: Path) -> list[tuple[Path, str | None]]:
    """``(track folder, split)`` of every TrackNNNNN folder under ``root``; empty when none.

    The split is the name of the split folder holding the track, or ``root``'s own name when
    ``root`` is a split folder, else None (babyslakh).
    """
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        return [(d, s.name) for s in split_dirs for d in _track_dirs(s)]
    split = root.name if root.name in SPLITS else None
    return [(d, split) for d in _track_dirs(root)]


def read_track(folder: Path, split: str | None) -> dict:
    """Parse one track folder into the keyword arguments of :class:`~partsim.data.Track`.

    Raises:
        DatasetError: metadata.yaml is missing or unparseable, a stem cannot be classed, or a
            rendered stem's audio file is missing.
    """
    name = folder.name
    meta_path = folder / "metadata.yaml"
    if not meta_path.is_file():
        raise DatasetError(f"Slakh track {name}: metadata.yaml is missing: {meta_path}")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = yaml.load(f, Loader=_YAML_LOADER)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot parse {meta_path}: {_one_line(exc)}") from None
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(stems, (dict, type(None))):
        raise DatasetError(f"{meta_path} is not a Slakh metadata file (no 'stems' mapping)")

    mix = _audio_file(folder / "mix")
    audio_dir = folder / str(meta.get("audio_dir") or "stems")
    ext = mix.suffix if mix else ".flac"
    stems_by_part: dict[str, list[str]] = {p: [] for p in PARTS}
    stem_files: dict[str, list[Path]] = {p: [] for p in PARTS}
    for stem_id, stem in sorted((stems or {}).items()):
        stem = stem if isinstance(stem, dict) else {}
        try:
            part = part_for_slakh_stem(stem)
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"Slakh track {name}: stem {stem_id}: {exc} ({meta_path})") from None
        if stem.get("audio_rendered") is False:
            continue
        path = _audio_file(audio_dir / str(stem_id))
        if path is None:
            label = stem.get("inst_class") or part
            missing = audio_dir / f"{stem_id}{ext}"
            raise DatasetError(f"Slakh track {name}: stem {stem_id} ({label}) is missing: {missing}")
        stems_by_part[part].append(str(stem_id))
        stem_files[part].append(path)

    midi = folder / "all_src.mid"
    return dict(
        id=name,
        split=split,
        present={p: bool(files) for p, files in stem_files.items()},
        stem_files=stem_files,
        mix_file=mix,
        metadata={**meta, "stems_by_part": stems_by_part},
        midi_file=midi if midi.is_file() else None,
    )


def midi_tempo(path: Path) -> float:
    """Tempo in BPM of a MIDI file: its first ``set_tempo`` message, else MIDI's default 120.

    Raises:
        DatasetError: the file cannot be parsed (the message names it).
    """
    try:
        mid = mido.MidiFile(str(path))
    except Exception as exc:  # noqa: BLE001 mido raises OSError, EOFError, ValueError, KeyError... for bad files
        raise DatasetError(f"cannot parse MIDI file {path}: {_one_line(exc)}") from None
    for msg in mido.merge_tracks(mid.tracks):
        if msg.type == "set_tempo":
            return float(mido.tempo2bpm(msg.tempo))
    return 120.0


def _track_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and _TRACK_NAME.match(d.name))


def _audio_file(stem: Path) -> Path | None:
    """``stem`` + .flac or .wav, whichever exists (flac first); None when neither does."""
    for ext in _AUDIO_EXTS:
        path = stem.with_name(stem.name + ext)
        if path.is_file():
            return path
    return None
