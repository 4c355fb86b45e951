"""One multitrack data set API over two on-disk layouts.

* ``"partsim"``: a corpus written by ``partsim corpus make``: ``ROOT/index.json`` (format
  ``partsim-corpus``) and per song ``ROOT/<id>/{mix.flac, stems/<part>.flac, song.mid,
  metadata.json}``; every part has a stem file, absent parts are all-zero files.
* ``"slakh"``: Slakh2100 or babyslakh (see :mod:`partsim.data.slakh`); a part is the sum of
  the stems Slakh's ``inst_class`` assigns to it.

:func:`open_dataset` detects the layout, reads all metadata and checks that every referenced
file exists; audio is only decoded on demand. All audio comes back as mono float32 at the
requested rate, and every array of one track has the same length: :meth:`Track.num_samples`
(the mix file's length, else the longest stem's).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, _one_line, audio_info, load_audio
from ..errors import DatasetError, InvalidArgument, NotFound
from . import slakh
from .taxonomy import PARTS
from .tempo import tempo_class as _tempo_class_of

_UNREAD = object()  # Track._tempo before the MIDI file has been read


@dataclass(eq=False)
class Track:
    """One song: where its files are and what its metadata says.

    ``present`` and ``stem_files`` have one entry per part; ``stem_files[part]`` is empty when
    the part is absent. ``metadata`` is the raw per-song metadata (Slakh: the parsed
    metadata.yaml plus ``stems_by_part``). The tempo of a Slakh track is read from
    ``all_src.mid`` on first access (None when there is no such file).
    """

    id: str
    split: str | None
    present: dict[str, bool]
    stem_files: dict[str, list[Path]]
    mix_file: Path | None
    metadata: dict = field(repr=False)
    midi_file: Path | None = None
    silent_files: list[Path] = field(default_factory=list, repr=False)  # stems declared absent (partsim layout)
    _tempo: Any = field(default=_UNREAD, repr=False)
    _tempo_class: int | None = field(default=None, repr=False)

    @property
    def tempo(self) -> float | None:
        """Tempo in BPM, or None when unknown."""
        if self._tempo is _UNREAD:
            self._tempo = slakh.midi_tempo(self.midi_file) if self.midi_file else None
        return self._tempo

    @property
    def tempo_class(self) -> int | None:
        """Tempo class 0..35 (:func:`partsim.data.tempo.tempo_class`), or None when unknown."""
        if self._tempo_class is None and self.tempo is not None:
            self._tempo_class = _tempo_class_of(self.tempo)
        return self._tempo_class

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.stem_files)

    def num_samples(self, sr: int = SAMPLE_RATE) -> int:
        """Length at ``sr`` of every array the ``load_*`` methods return (read from headers)."""
        files = [self.mix_file] if self.mix_file else self._all_stem_files()
        return max((_resampled_frames(f, sr) for f in files), default=0)

    def load_stem(self, part: str, sr: int = SAMPLE_RATE) -> np.ndarray:
        """``(num_samples(sr),)`` float32 mono: the sum of the part's stem files; zeros when absent.

        Raises:
            InvalidArgument: ``part`` is not one of the track's parts.
            DatasetError: a file is missing or cannot be decoded (the message names it).
        """
        if part not in self.stem_files:
            raise InvalidArgument(f"unknown part {part!r} (parts: {', '.join(self.stem_files)})")
        return _sum(self.stem_files[part], self.num_samples(sr), sr)

    def load_stems(self, sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
        """Part -> ``(num_samples(sr),)`` float32 mono, for every part (zeros when absent)."""
        n = self.num_samples(sr)
        return {part: _sum(files, n, sr) for part, files in self.stem_files.items()}

    def load_mix(self, sr: int = SAMPLE_RATE) -> np.ndarray:
        """``(num_samples(sr),)`` float32 mono: the mix file, else the sum of all stems."""
        n = self.num_samples(sr)
        return _sum([self.mix_file] if self.mix_file else self._all_stem_files(), n, sr)

    def _all_stem_files(self) -> list[Path]:
        return [f for files in self.stem_files.values() for f in files]


class MultitrackDataset:
    """The tracks of one data set, sorted by id. Build it with :func:`open_dataset`."""

    def __init__(self, root: Path, layout: str, parts: tuple[str, ...], tracks: list[Track]):
        self.root = root
        self.layout = layout
        self.parts = parts
        self._tracks = sorted(tracks, key=lambda t: t.id)
        self._by_id = {t.id: t for t in self._tracks}
        if len(self._by_id) != len(self._tracks):
            dup = next(a.id for a, b in zip(self._tracks, self._tracks[1:]) if a.id == b.id)
            raise DatasetError(f"data set {root} holds track {dup} more than once")

    def tracks(self, split: str | None = None) -> list[Track]:
        """All tracks (``split=None``) or those of one split, sorted by id.

        Raises:
            InvalidArgument: ``split`` is not train, validation, test or omitted.
        """
        if split is None:
            return list(self._tracks)
        known = set(slakh.SPLITS) | set(self.splits())
        if split not in known:
            raise InvalidArgument(f"unknown split {split!r} (splits: {', '.join(slakh.SPLITS)})")
        return [t for t in self._tracks if t.split == split]

    def splits(self) -> dict[str, list[str]]:
        """Split name -> ids of its tracks (sorted); tracks without a split are left out."""
        out: dict[str, list[str]] = {}
        for t in self._tracks:
            if t.split is not None:
                out.setdefault(t.split, []).append(t.id)
        order = {name: i for i, name in enumerate(slakh.SPLITS)}  # train, validation, test, omitted
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def check(self, decode: bool = False) -> dict:
        """Check that every referenced audio file exists and has a readable header.

        With ``decode=True`` each file is also decoded in full (and its length compared with
        its header) and each track's MIDI tempo is read.

        Returns:
            ``{"tracks": int, "files": int, "seconds": float}`` (seconds: total track length).

        Raises:
            DatasetError: naming the first bad file.
        """
        files, seconds = 0, 0.0
        for track in self._tracks:
            longest = 0.0
            decoded: dict[Path, np.ndarray] = {}
            for path in ([track.mix_file] if track.mix_file else []) + track._all_stem_files() + track.silent_files:
                info = _info(path)
                if decode:
                    decoded[path] = _load(path, info.samplerate)
                    if len(decoded[path]) != info.frames:
                        raise DatasetError(
                            f"audio file {path} decodes to {len(decoded[path])} frames, its header says {info.frames}"
                        )
                longest = max(longest, info.frames / info.samplerate)
                files += 1
            if decode:
                track.tempo  # noqa: B018 - parses the MIDI file
                self._check_partsim_sums(track, decoded)
            seconds += longest
        return {"tracks": len(self._tracks), "files": files, "seconds": seconds}

    def _check_partsim_sums(self, track: Track, decoded: dict[Path, np.ndarray]) -> None:
        """partsim corpora promise: absent stems are silent and the mix is the sum of the stems."""
        if self.layout != "partsim":
            return
        for path in track.silent_files:
            if decoded[path].any():
                raise DatasetError(f"track {track.id}: {path} belongs to a part declared absent but is not silent")
        stems = [decoded[p] for p in track._all_stem_files()]
        if track.mix_file is not None and stems:
            if any(len(x) != len(decoded[track.mix_file]) for x in stems):
                raise DatasetError(f"track {track.id}: stems and mix differ in length")
            error = float(np.max(np.abs(decoded[track.mix_file].astype(np.float64) - np.sum(stems, axis=0))))
            if error > 1e-6:
                raise DatasetError(f"track {track.id}: mix differs from the sum of its stems by up to {error:.2g}")

    def __len__(self) -> int:
        return len(self._tracks)

    def __iter__(self) -> Iterator[Track]:
        return iter(self._tracks)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._by_id

    def __getitem__(self, track_id: str) -> Track:
        try:
            return self._by_id[track_id]
        except KeyError:
            raise NotFound(f"no track {track_id!r} in data set {self.root}") from None

    def __repr__(self) -> str:
        return f"MultitrackDataset({str(self.root)!r}, layout={self.layout!r}, tracks={len(self)})"


def open_dataset(root: str | Path) -> MultitrackDataset:
    """Open a partsim corpus or a Slakh2100/babyslakh folder (the layout is detected).

    Raises:
        NotFound: ``root`` does not exist.
        DatasetError: ``root`` is neither layout, or its metadata is unreadable, or a file it
            references is missing (the one-line message names the path).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise NotFound(f"data set folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"data set path is not a folder: {root}")
    if (root / "index.json").is_file():
        return MultitrackDataset(root, "partsim", *_read_partsim(root))
    folders = slakh.find_track_folders(root)
    if not folders:
        raise DatasetError(
            f"{root} is neither a partsim corpus (no index.json) nor a Slakh2100 folder (no TrackNNNNN/metadata.yaml)"
        )
    return MultitrackDataset(root, "slakh", PARTS, [Track(**slakh.read_track(d, s)) for d, s in folders])


def _read_partsim(root: Path) -> tuple[tuple[str, ...], list[Track]]:
    index_path = root / "index.json"
    index = _read_json(index_path)
    if not isinstance(index, dict) or index.get("format") != "partsim-corpus":
        fmt = index.get("format") if isinstance(index, dict) else None
        raise DatasetError(f"{index_path} is not a partsim corpus index (format {fmt!r})")
    if index.get("version") != 1:
        raise DatasetError(f"{index_path}: unsupported corpus version {index.get('version')!r}")
    try:
        parts = tuple(str(p) for p in index.get("parts") or PARTS)
        split_of = {sid: split for split, ids in (index.get("splits") or {}).items() for sid in ids}
        songs = index.get("songs") or {}
        ids = sorted(sid for sid in set(songs) | set(split_of) if not sid.startswith("."))
    except (AttributeError, TypeError) as exc:
        raise DatasetError(f"{index_path} is malformed: {_one_line(exc)}") from None
    return parts, [_read_partsim_song(root, sid, songs.get(sid) or {}, split_of.get(sid), parts) for sid in ids]


def _read_partsim_song(root: Path, sid: str, entry: dict, split: str | None, parts) -> Track:
    folder = root / sid
    if not folder.is_dir():
        raise DatasetError(f"partsim corpus {root}: song folder listed in index.json is missing: {folder}")
    meta_path = folder / "metadata.json"
    meta = _read_json(meta_path)
    try:
        present, stem_files, silent = {}, {}, []
        for part in parts:
            pmeta = (meta.get("parts") or {}).get(part) or {}
            path = folder / pmeta.get("stem", f"stems/{part}.flac")
            if not path.is_file():
                raise DatasetError(f"partsim song {sid}: stem file of {part} is missing: {path}")
            present[part] = bool(pmeta["present"]) if "present" in pmeta else part in entry.get("present", ())
            stem_files[part] = [path] if present[part] else []
            if not present[part]:
                silent.append(path)
        mix = folder / meta.get("mix", "mix.flac")
        midi = folder / meta.get("midi", "song.mid")
        tempo = meta.get("tempo", entry.get("tempo"))
        tclass = meta.get("tempo_class", entry.get("tempo_class"))
        track = Track(
            id=sid,
            split=split or entry.get("split"),
            present=present,
            stem_files=stem_files,
            mix_file=mix,
            metadata=meta,
            midi_file=midi if midi.is_file() else None,
            silent_files=silent,
            _tempo=None if tempo is None else float(tempo),
            _tempo_class=None if tclass is None else int(tclass),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{meta_path} is malformed: {_one_line(exc)}") from None
    if not mix.is_file():
        raise DatasetError(f"partsim song {sid}: mix file is missing: {mix}")
    return track


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"file is missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot parse {path}: {_one_line(exc)}") from None


def _info(path: Path):
    try:
        return audio_info(path)
    except NotFound:
        raise DatasetError(f"audio file is missing: {path}") from None


def _load(path: Path, sr: int) -> np.ndarray:
    try:
        return load_audio(path, sr=sr, mono=True)
    except NotFound:
        raise DatasetError(f"audio file is missing: {path}") from None


def _resampled_frames(path: Path, sr: int) -> int:
    """Frames of ``path`` after resampling to ``sr`` (soxr rounds to nearest)."""
    info = _info(path)
    if info.samplerate == sr:
        return info.frames
    return (2 * info.frames * sr + info.samplerate) // (2 * info.samplerate)


def _sum(files: list[Path], n: int, sr: int) -> np.ndarray:
    """``(n,)`` float32: the sum of the files at ``sr``, each zero-padded or trimmed to ``n``."""
    out = np.zeros(n, dtype=np.float32)
    for path in files:
        x = _load(path, sr)
        m = min(n, len(x))
        out[:m] += x[:m]
    return out
