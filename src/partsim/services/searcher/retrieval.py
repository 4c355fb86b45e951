"""The retrieval function of MixQuery (thesis eq. 6.1, 6.2), in NumPy: the one place for it.

Catalog side: per part a matrix of UNIT vectors, one row per (track, segment); a part that is
absent in a segment is a zero row, so its cosine is 0 and its distance term is 1.

Query side: per query part the mean of its query embeddings (eq. 6.1, done by the caller) and
a weight. A segment's distance is the weighted mean of the per-part cosine distances

    D(s) = sum_i w_i (1 - cos(y_i, v_i(s))) / sum_i w_i          (eq. 6.2 when all w_i are equal)

a song's distance is the minimum over its segments (the hit carries that best segment), songs
rank ascending. Similar-stem search is the same with one part and no grouping by song.

Ties are broken deterministically: songs by track id, segments by (track id, segment index).
The store's exact path and the approximate path's re-rank both call these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def unit(vector: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``vector / ||vector||`` as float32, or a zero vector when its norm is (nearly) zero."""
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > eps else np.zeros_like(v)


def unit_rows(matrix: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise :func:`unit` of a 2-D array (zero rows stay zero)."""
    m = np.asarray(matrix, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(n > eps, m / np.maximum(n, eps), 0.0).astype(np.float32)


@dataclass(frozen=True)
class Query:
    """One query part: its (mean) vector, any norm, and its weight (> 0)."""

    part: str
    vector: np.ndarray
    weight: float = 1.0


def segment_distances(queries: Sequence[Query], matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6.2 for every catalog row.

    Args:
        queries: the query parts (weights > 0).
        matrices: for each query, in the same order, the catalog's (N, D) unit-vector matrix of
            that query's part (zero rows where the part is absent).

    Returns:
        ``(total, per_part)``: total (N,) float64 weighted mean distance, per_part (len(queries), N)
        float64 cosine distance of each query part.
    """
    if len(queries) != len(matrices) or not queries:
        raise ValueError("need one catalog matrix per query part, and at least one query part")
    n = matrices[0].shape[0]
    per_part = np.empty((len(queries), n), dtype=np.float64)
    weights = np.array([q.weight for q in queries], dtype=np.float64)
    if np.any(weights <= 0):
        raise ValueError("weights must be positive")
    for i, (q, m) in enumerate(zip(queries, matrices)):
        per_part[i] = np.clip(
            1.0 - (m @ unit(q.vector)), 0.0, 2.0
        )  # 1 - cos of unit vectors: rounding can leave [0, 2]
    total = weights @ per_part / weights.sum()
    return total, per_part


def _order_rows(
    rows: np.ndarray, dist: np.ndarray, track_names: Sequence[str], segment: np.ndarray, track: np.ndarray
) -> np.ndarray:
    """``rows`` sorted by (distance, track id, segment index)."""
    keyed = sorted(rows.tolist(), key=lambda r: (float(dist[r]), track_names[int(track[r])], int(segment[r])))
    return np.asarray(keyed, dtype=np.int64)


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of every value <= the k-th smallest (all ties at the boundary kept)."""
    if values.size <= k:
        return np.arange(values.size)
    kth = np.partition(values, k - 1)[k - 1]
    return np.flatnonzero(values <= kth)


def _best_row_per_song(
    rows: np.ndarray, dist: np.ndarray, track: np.ndarray, segment: np.ndarray, n_tracks: int, top_k: int
) -> np.ndarray:
    """Of ``rows``, the best row of each of the top_k songs (min over a song's segments)."""
    d, t = dist[rows], track[rows]
    best = np.full(n_tracks, np.inf)
    np.minimum.at(best, t, d)
    songs = np.flatnonzero(np.isfinite(best))
    songs = songs[_smallest(best[songs], top_k)]
    # the best row of each selected song: its rows at the song's minimum, smallest segment first
    chosen = rows[np.isin(t, songs)]
    chosen = chosen[dist[chosen] <= best[track[chosen]]]
    order = np.lexsort((segment[chosen], track[chosen]))
    chosen = chosen[order]
    first = np.ones(chosen.size, dtype=bool)
    first[1:] = track[chosen][1:] != track[chosen][:-1]
    return chosen[first]


def rank(
    dist: np.ndarray,
    track: np.ndarray,
    segment: np.ndarray,
    track_names: Sequence[str],
    top_k: int,
    valid: np.ndarray | None = None,
    *,
    per_song: bool,
) -> np.ndarray:
    """The top_k rows by (distance, track id, segment index).

    With ``per_song`` (mix search): min over each song's segments, songs ascending; the best row
    of each of the top_k songs. Without (similar-stem search): the segments, no grouping.

    Args:
        dist: (N,) segment distances.
        track: (N,) int track ordinal of each row (an index into ``track_names``).
        segment: (N,) segment index of each row.
        track_names: track id of each ordinal (ties are broken by it).
        top_k: songs (or segments) to return.
        valid: optional (N,) bool mask of rows to consider (excluded / deleted rows False).
        per_song: group the rows by song.

    Returns:
        Row indices (int64), best first. Equal distances: the smaller track id first; within a
        song the smaller segment index.
    """
    rows = np.arange(dist.shape[0]) if valid is None else np.flatnonzero(valid)
    if rows.size == 0 or top_k <= 0:
        return np.zeros(0, dtype=np.int64)
    if per_song:
        rows = _best_row_per_song(rows, dist, track, segment, len(track_names), top_k)
    else:
        rows = rows[_smallest(dist[rows], top_k)]
    return _order_rows(rows, dist, track_names, segment, track)[:top_k]


def candidate_bound(kth_distances: Sequence[float], weights: Sequence[float]) -> float:
    """Distance up to which the approximate path's candidate union is complete.

    If part i's nearest-neighbour list holds every segment with d_i <= tau_i (its K'-th
    distance), a segment missing from the union has d_i > tau_i for every query part, so its
    D(s) > sum_i w_i tau_i / sum_i w_i. Every segment at or below that bound is therefore a
    candidate (given exact per-part neighbour lists): hits at or below it are exact.
    """
    w = np.asarray(weights, dtype=np.float64)
    return float(np.asarray(kth_distances, dtype=np.float64) @ w / w.sum())
