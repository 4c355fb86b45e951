"""The indexed tracks' audio, kept so that ``GetStems`` can separate a segment on demand.

One file per track version under a folder (a volume in production), named by the sha256 of the
track id and of the version (the upload id the searcher keeps as ``Track.version``), holding the
serialised ``partsim.v1.Audio`` message as uploaded (encoded bytes or raw PCM). Writes are atomic
(temporary file + rename). A new version's file is written beside the old one; the indexer deletes
the version the catalog replaced (or its own, when its write failed), so a reader that takes the
version from the catalog always finds that upload's audio (see :mod:`.ingest`). Version ``""`` is
the one file per track of stores written before versions were kept.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from partsim.errors import Unavailable, storage_error
from partsim.v1 import types_pb2


class AudioStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create the audio store {self.folder}: {exc.strerror}") from None

    def _path(self, track_id: str, version: str = "") -> Path:
        name = hashlib.sha256(track_id.encode()).hexdigest()
        if version:  # any string is safe: only its hash names the file
            name += "." + hashlib.sha256(version.encode()).hexdigest()[:16]
        return self.folder / (name + ".audio")

    def put(self, track_id: str, audio: types_pb2.Audio, version: str = "") -> None:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")  # can fail too (no inodes left, EIO)
            with os.fdopen(fd, "wb") as f:
                f.write(audio.SerializeToString())
            os.replace(tmp, self._path(track_id, version))
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise storage_error(exc, f"cannot store the audio of {track_id}") from None  # disk full: STORAGE_FULL

    def has(self, track_id: str, version: str = "") -> bool:
        """Whether the audio of this upload is kept (one ``stat``; nothing is read)."""
        return self._path(track_id, version).is_file()

    def get(self, track_id: str, version: str = "") -> types_pb2.Audio | None:
        try:
            data = self._path(track_id, version).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, f"cannot read the audio of {track_id}") from None
        return types_pb2.Audio.FromString(data)

    def delete(self, track_id: str, version: str = "") -> None:
        self._path(track_id, version).unlink(missing_ok=True)
