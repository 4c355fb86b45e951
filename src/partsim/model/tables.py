"""The thesis's evaluation protocols (section 4.4.2, Tables 4.1-4.5) on loaded test tracks.

* Table 4.1: track-ID prediction, kNN (k=5, majority vote, leave-one-out) in each part's
  subspace, 3/5/10-s mix segments; the signal-level baseline is the per-part networks on ideal
  stems. Segments where the part is silent (mean power < 1e-4) are left out.
* Table 4.2: part-level label prediction on test pseudo pieces: per part 10 labels x 4 pieces
  (part c of track A mixed with the other parts of 4 other tracks), 5-s segments, kNN where
  segments of the same piece are excluded from the reference.
* Table 4.3: instrument identification: an isolated stem in, the subspace with the largest
  norm out.
* Tables 4.4 / 4.5: Pearson correlation of distance matrices, stem-in vs mix-in in the same
  subspace, and across subspaces with mix input (with the per-part networks on ideal stems as
  the reference).

``THESIS`` holds the thesis's own rows, printed beside partsim's by :mod:`.report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from ..data import open_dataset
from ..errors import InvalidArgument
from .features import SILENCE_POWER, mean_power
from .inference import Embedder, TorchEmbedder

SR = 44100

THESIS: dict[str, Any] = {
    "table_4_1": {
        "3": {"drums": 84.73, "bass": 51.01, "piano": 77.21, "guitar": 76.50, "others": 82.84},
        "5": {"drums": 86.84, "bass": 59.20, "piano": 82.00, "guitar": 80.18, "others": 83.34},
        "10": {"drums": 88.91, "bass": 64.87, "piano": 84.30, "guitar": 82.70, "others": 82.20},
    },
    "table_4_2": {"drums": 95.80, "bass": 61.91, "piano": 67.37, "guitar": 57.32, "others": 80.69},
    "table_4_3": {"drums": 84.48, "bass": 96.04, "piano": 90.27, "guitar": 76.85, "others": 92.24},
    "table_4_4": {"drums": 0.6159, "bass": 0.4782, "piano": 0.3608, "guitar": 0.4115, "others": 0.3243},
}


@dataclass
class TestTrack:
    id: str
    stems: np.ndarray  # (P, n) float32
    tempo_class: int

    @property
    def mix(self) -> np.ndarray:
        return self.stems.sum(axis=0)


def load_test_tracks(
    corpus: str | Path, parts: list[str], split: str = "test", limit: int | None = None
) -> list[TestTrack]:
    ds = open_dataset(corpus)
    tracks = ds.tracks(split)
    if not tracks:
        raise InvalidArgument(f"corpus {corpus} has no tracks in split {split!r}")
    out = []
    for t in tracks[:limit]:
        stems = t.load_stems()
        out.append(TestTrack(t.id, np.stack([stems[p] for p in parts]), int(t.tempo_class or 0)))
    return out


def segments(x: np.ndarray, seg: int) -> np.ndarray:
    """Non-overlapping full segments of the last axis: ``(..., n)`` -> ``(..., k, seg)``."""
    k = x.shape[-1] // seg
    return x[..., : k * seg].reshape(*x.shape[:-1], k, seg)


def knn_accuracy(x: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, k: int = 5) -> float:
    """Leave-one-out kNN (Euclidean) majority vote; ``groups`` also excludes same-group references.

    Ties go to the label whose nearest member is closest.
    """
    n = len(x)
    if n < 2:
        return float("nan")
    d = _sq_dist(x)
    np.fill_diagonal(d, np.inf)
    if groups is not None:
        d[groups[:, None] == groups[None, :]] = np.inf
    nearest = np.argsort(d, axis=1)[:, :k]
    correct = 0
    for i in range(n):
        cand = [j for j in nearest[i] if np.isfinite(d[i, j])]
        if not cand:
            continue
        votes: dict[int, list[int]] = {}
        for rank, j in enumerate(cand):
            votes.setdefault(int(labels[j]), []).append(rank)
        best = max(votes.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))[0]
        correct += best == labels[i]
    return 100.0 * correct / n


def _pearson_upper(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices(len(a), 1)
    x, y = a[iu], b[iu]
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _sq_dist(x: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of the rows of ``x``."""
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)


def _pdist(x: np.ndarray) -> np.ndarray:
    return np.sqrt(_sq_dist(x))


def _has_partnets(model: Embedder) -> TypeGuard[TorchEmbedder]:
    """The ideal-stem baselines need per-part networks (a model fine-tuned with --init has none)."""
    return isinstance(model, TorchEmbedder) and model.partnets is not None


def track_id_table(model: Embedder, tracks: list[TestTrack], seconds=(3, 5, 10)) -> dict:
    parts = model.parts
    out: dict = {"proposed": {}, "baseline_ideal_stems": {}}
    for s in seconds:
        seg = s * SR
        mixes, stems, labels = [], [], []
        for i, t in enumerate(tracks):
            segs = segments(t.stems, seg)  # (P, k, seg)
            if segs.shape[1] == 0:
                continue
            stems.append(segs)
            mixes.append(segs.sum(axis=0))
            labels += [i] * segs.shape[1]
        if not mixes:
            continue
        mix = np.concatenate(mixes)
        stem = np.concatenate(stems, axis=1)  # (P, N, seg)
        labels_a = np.array(labels)
        emb = model.embed(mix)
        out["proposed"][str(s)], out["baseline_ideal_stems"][str(s)] = {}, {}
        for j, part in enumerate(parts):
            keep = mean_power(stem[j]) >= SILENCE_POWER
            out["proposed"][str(s)][part] = knn_accuracy(emb[keep, j], labels_a[keep])
            if _has_partnets(model) and keep.sum() > 1:
                base = model.embed_stems(j, stem[j][keep])
                out["baseline_ideal_stems"][str(s)][part] = knn_accuracy(base, labels_a[keep])
    return out


def pseudo_piece_table(
    model: Embedder,
    tracks: list[TestTrack],
    labels_per_part: int = 10,
    pieces_per_label: int = 4,
    seconds: int = 5,
    seed: int = 0,
    return_embeddings=False,
):
    """Table 4.2 protocol. Returns accuracy per part (and, optionally, what the figures need)."""
    rng = np.random.default_rng(seed)
    seg = seconds * SR
    result, figure_data = {}, {}
    for c, part in enumerate(model.parts):
        with_c = [
            i for i, t in enumerate(tracks) if (mean_power(segments(t.stems[c], seg)) >= SILENCE_POWER).sum() >= 1
        ]
        if len(with_c) < 2 or len(tracks) < 3:
            result[part] = float("nan")
            continue
        label_tracks = list(rng.choice(with_c, size=min(labels_per_part, len(with_c)), replace=False))
        audio, labels, groups = [], [], []
        piece = 0
        for a in label_tracks:
            others = [i for i in range(len(tracks)) if i != a]
            same_class = [i for i in others if tracks[i].tempo_class // 4 == tracks[a].tempo_class // 4]
            pool = same_class if len(same_class) >= pieces_per_label else others
            for y in rng.choice(pool, size=min(pieces_per_label, len(pool)), replace=False):
                n = min(tracks[a].stems.shape[1], tracks[y].stems.shape[1])
                part_c = tracks[a].stems[c, :n]
                rest = np.delete(tracks[y].stems[:, :n], c, axis=0).sum(axis=0)
                segs_c, segs_mix = segments(part_c, seg), segments(part_c + rest, seg)
                keep = mean_power(segs_c) >= SILENCE_POWER
                audio.append(segs_mix[keep])
                labels += [a] * int(keep.sum())
                groups += [piece] * int(keep.sum())
                piece += 1
        x = np.concatenate(audio)
        emb = model.embed(x)
        result[part] = knn_accuracy(emb[:, c], np.array(labels), np.array(groups))
        figure_data[part] = (emb[:, c], np.array(labels), np.array(groups))
    return (result, figure_data) if return_embeddings else result


def identification_table(model: Embedder, tracks: list[TestTrack], seconds: int = 5, per_track: int = 4):
    """Table 4.3: isolated stems in, argmax of subspace norms out. Also returns the embeddings (Fig. 4.10)."""
    seg = seconds * SR
    result, stacks = {}, {}
    for j, part in enumerate(model.parts):
        chunks = []
        for t in tracks:
            s = segments(t.stems[j], seg)
            s = s[mean_power(s) >= SILENCE_POWER][:per_track]
            if len(s):
                chunks.append(s)
        if not chunks:
            result[part] = float("nan")
            continue
        emb = model.embed(np.concatenate(chunks))
        norms = np.linalg.norm(emb, axis=2)
        result[part] = 100.0 * float(np.mean(norms.argmax(axis=1) == j))
        stacks[part] = emb.reshape(len(emb), -1)
    return result, stacks


def correlation_tables(model: Embedder, tracks: list[TestTrack], seconds: int = 5, max_segments: int = 400):
    """Tables 4.4 and 4.5 (and the matrices of Fig. 4.11 for the first part)."""
    seg = seconds * SR
    parts = model.parts
    stem_segs = np.concatenate([segments(t.stems, seg) for t in tracks], axis=1)[:, :max_segments]  # (P, N, seg)
    mix_segs = stem_segs.sum(axis=0)
    present = mean_power(stem_segs) >= SILENCE_POWER  # (P, N)
    mix_emb = model.embed(mix_segs)
    same, matrices = {}, {}
    for j, part in enumerate(parts):
        keep = present[j]
        if keep.sum() < 3:
            same[part] = float("nan")
            continue
        stem_emb = model.embed(stem_segs[j][keep])
        d_stem, d_mix = _pdist(stem_emb[:, j]), _pdist(mix_emb[keep, j])
        same[part] = _pearson_upper(d_stem, d_mix)
        matrices[part] = (d_stem, d_mix)
    across, reference = {}, {}
    dists = {j: _pdist(mix_emb[:, j]) for j in range(len(parts))}
    for j in range(len(parts)):
        for k in range(j + 1, len(parts)):
            across[f"{parts[j]}-{parts[k]}"] = _pearson_upper(dists[j], dists[k])
            both = present[j] & present[k]
            if _has_partnets(model) and both.sum() >= 3:
                gj = model.embed_stems(j, stem_segs[j][both])
                gk = model.embed_stems(k, stem_segs[k][both])
                reference[f"{parts[j]}-{parts[k]}"] = _pearson_upper(_pdist(gj), _pdist(gk))
    return {"same_subspace": same, "across_subspaces": across, "across_reference_ideal": reference}, matrices
