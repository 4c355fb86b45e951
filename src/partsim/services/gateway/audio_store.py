"""The indexed tracks' audio, kept so that ``GetStems`` can separate a segment on demand.

One file per track under a folder (a volume in production), named by the sha256 of the track
id, holding the serialised ``partsim.v1.Audio`` message as uploaded (encoded bytes or raw PCM).
Writes are atomic (temporary file + rename); re-indexing replaces, deleting a track deletes it.
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

    def _path(self, track_id: str) -> Path:
        return self.folder / (hashlib.sha256(track_id.encode()).hexdigest() + ".audio")

    def put(self, track_id: str, audio: types_pb2.Audio) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(audio.SerializeToString())
            os.replace(tmp, self._path(track_id))
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise storage_error(exc, f"cannot store the audio of {track_id}") from None  # disk full: STORAGE_FULL

    def get(self, track_id: str) -> types_pb2.Audio | None:
        try:
            data = self._path(track_id).read_bytes()
        except FileNotFoundError:
            return None
        return types_pb2.Audio.FromString(data)

    def delete(self, track_id: str) -> None:
        self._path(track_id).unlink(missing_ok=True)
