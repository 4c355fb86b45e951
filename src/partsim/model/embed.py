"""``partsim embed``: files in, per-segment per-part vectors out (a contract other tools rely on).

The ``.npz`` holds exactly: ``parts`` (str [P]), ``vectors`` (float32 [N, P, D], raw subspace
vectors, not normalised), ``file_index`` (int64 [N]), ``start`` (float64 [N], seconds) and
``files`` (str [F]).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..errors import InvalidArgument
from .features import segment_starts
from .inference import Embedder


def file_segments(audio: np.ndarray, sr: int, segment_s: float, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` -> segments ``(k, seg)`` and their start times (s); a short tail is dropped."""
    seg, hop = int(round(segment_s * sr)), int(round(hop_s * sr))
    starts = segment_starts(len(audio), seg, hop)
    idx = starts[:, None] + np.arange(seg)[None, :]
    return audio[idx], starts / sr


def embed_files(
    embedder: Embedder, paths: list[str | os.PathLike], segment_s: float | None = None, hop_s: float | None = None
) -> dict[str, np.ndarray]:
    segment_s = float(segment_s if segment_s is not None else embedder.segment_seconds)
    hop_s = float(hop_s if hop_s is not None else segment_s)
    sr = embedder.features.cfg.sample_rate
    min_s = 32 * embedder.features.cfg.hop_length / sr
    if not min_s <= segment_s <= 600:
        raise InvalidArgument(f"--segment-seconds must be within {min_s:.2f}..600, got {segment_s:g}")
    if not 0 < hop_s <= 600:
        raise InvalidArgument(f"--hop-seconds must be within 0..600, got {hop_s:g}")
    if not paths:
        raise InvalidArgument("no audio files given")
    vectors, file_index, starts = [], [], []
    for i, path in enumerate(paths):
        audio = load_audio(path, sr=sr, mono=True)
        if audio.size == 0:
            raise InvalidArgument(f"audio file {path} is empty")
        if not np.all(np.isfinite(audio)):
            raise InvalidArgument(f"audio file {path} contains NaN or infinite samples")
        segs, t = file_segments(audio, sr, segment_s, hop_s)
        if len(segs) == 0:
            raise InvalidArgument(
                f"audio file {path} lasts {len(audio) / sr:.2f} s, shorter than one {segment_s:g}-s segment"
            )
        vectors.append(embedder.embed(segs))
        file_index.append(np.full(len(segs), i, dtype=np.int64))
        starts.append(t.astype(np.float64))
    return {
        "parts": np.array(embedder.parts, dtype=str),
        "vectors": np.concatenate(vectors).astype(np.float32),
        "file_index": np.concatenate(file_index),
        "start": np.concatenate(starts),
        "files": np.array([str(p) for p in paths], dtype=str),
    }


def write_npz(arrays: dict[str, np.ndarray], out: str | os.PathLike) -> None:
    out = Path(out)
    if out.suffix != ".npz":
        raise InvalidArgument(f"output must be an .npz file, got {out}")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npz")
    try:
        # allow_pickle is numpy's default, named so that the type checker knows **arrays cannot fill it
        np.savez(tmp, allow_pickle=True, **arrays)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidArgument(f"cannot write {out}: {exc.strerror or exc}") from None
