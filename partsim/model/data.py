"""Training and evaluation data: stems in memory, non-silent windows, pseudo musical pieces.

A *pseudo musical piece* (thesis 4.3.3) labelled (X, Y) for part c mixes part c of dataset
piece X with the other parts of piece Y, both from one tempo class. For condition c the basic
triplet is anchor (A, B), positive (A, C), negative (D, B); the additional triplet reuses the
same three pieces as anchor (A, B), positive (D, B), negative (A, C) under a condition c' != c
(a part B has). Each piece is cut at its own random non-silent 3-s window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Track
from .features import SILENCE_POWER

INT16 = 32768.0


@dataclass
class Piece:
    """One training input: which stem windows to sum. ``sources[j] = (track, start)`` or None."""

    sources: list[tuple[int, int] | None]


class StemBank:
    """Stems of many tracks as int16 in memory, with each part's non-silent windows.

    Args:
        tracks: dataset tracks (partsim or Slakh layout).
        parts: part names, in subspace order.
        segment: window length in samples; hop: window hop in samples (50 % overlap in training).
    """

    def __init__(self, tracks: list[Track], parts: list[str], segment: int, hop: int, progress=None):
        self.parts = list(parts)
        self.segment, self.hop = segment, hop
        self.ids: list[str] = []
        self.stems: list[np.ndarray] = []  # (P, n) int16
        self.tempo_class: list[int] = []
        self.windows: list[list[np.ndarray]] = []  # [track][part] -> non-silent window starts
        self.mix_windows: list[np.ndarray] = []  # windows where the mix is non-silent
        for track in (progress(tracks) if progress else tracks):
            stems = track.load_stems()
            arr = np.stack([stems[p] for p in self.parts])
            if arr.shape[1] < segment:
                continue
            q = np.clip(np.round(arr * INT16), -32768, 32767).astype(np.int16)
            starts = np.arange(0, arr.shape[1] - segment + 1, hop)
            power = _window_power(arr, starts, segment)  # (P, W)
            mix_power = _window_power(arr.sum(axis=0, keepdims=True), starts, segment)[0]
            self.ids.append(track.id)
            self.stems.append(q)
            self.tempo_class.append(int(track.tempo_class) if track.tempo_class is not None else 0)
            self.windows.append([starts[power[j] >= SILENCE_POWER] for j in range(len(self.parts))])
            self.mix_windows.append(starts[mix_power >= SILENCE_POWER])
        # Pseudo pieces mix tracks of one tempo class. A small set (a validation split, a test
        # corpus) has too few tracks per class, so adjacent classes are merged (2, 4, ... at a
        # time) until most tracks sit in a group of at least 4.
        self.class_merge = 1
        while True:
            self.by_class = {}
            for i, k in enumerate(self.tempo_class):
                self.by_class.setdefault(k // self.class_merge, []).append(i)
            in_groups = sum(len(m) for m in self.by_class.values() if len(m) >= 4)
            if in_groups >= 0.75 * len(self) or self.class_merge >= 64:
                break
            self.class_merge *= 2

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, t: int, j: int) -> bool:
        return len(self.windows[t][j]) > 0

    def window(self, t: int, j: int, start: int) -> np.ndarray:
        return self.stems[t][j, start:start + self.segment].astype(np.float32) / INT16

    def render(self, piece: Piece) -> tuple[np.ndarray, np.ndarray]:
        """Mix a piece: ``(segment,)`` float32 audio and ``(P,)`` presence targets (eq. 4.5)."""
        audio = np.zeros(self.segment, dtype=np.float32)
        present = np.zeros(len(self.parts), dtype=np.float32)
        for j, src in enumerate(piece.sources):
            if src is None:
                continue
            w = self.window(src[0], j, src[1])
            audio += w
            present[j] = float(np.mean(w.astype(np.float64) ** 2) > SILENCE_POWER)
        return audio, present

    # ----------------------------------------------------------------------------------------
    # samplers

    def dataset_piece(self, rng: np.random.Generator, t: int, start: int | None = None) -> Piece:
        """A segment of dataset piece ``t`` (all its parts at one time)."""
        if start is None:
            pool = self.mix_windows[t]
            start = int(rng.choice(pool)) if len(pool) else 0
        return Piece([(t, start) for _ in self.parts])

    def _pseudo(self, rng, c: int, x: int, y: int, keep: set[int], drop_prob: float) -> Piece:
        """Pseudo piece (x, y): part c of x at one of its non-silent windows, other parts of y."""
        start = int(rng.choice(self.windows[x][c]))
        start = min(start, self.stems[y].shape[1] - self.segment)
        others = [j for j in range(len(self.parts)) if j != c]
        # created silences (4.3.4): sometimes mix only some of y's parts
        if rng.random() < drop_prob:
            kept = {j for j in others if j in keep or rng.random() < 0.5}
        else:
            kept = set(others)
        return Piece([(x, start) if j == c else ((y, start) if j in kept else None) for j in range(len(self.parts))])

    def pseudo_triplets(self, rng: np.random.Generator, drop_prob: float = 0.3, max_tries: int = 200):
        """Basic and additional triplet of one draw: ``((a, p, n), c), ((a, p, n), c2 or None)``."""
        P = len(self.parts)
        classes = [k for k, members in self.by_class.items() if len(members) >= 4]
        if not classes:
            raise ValueError("pseudo pieces need a tempo class with at least 4 tracks")
        for _ in range(max_tries):
            c = int(rng.integers(P))
            members = self.by_class[classes[int(rng.integers(len(classes)))]]
            with_c = [t for t in members if self.has(t, c)]
            if len(with_c) < 2:
                continue
            a, d = (int(v) for v in rng.choice(with_c, size=2, replace=False))
            rest = [t for t in members if t not in (a, d)]
            if len(rest) < 2:
                continue
            b, cc = (int(v) for v in rng.choice(rest, size=2, replace=False))
            add_choices = [j for j in range(P) if j != c and self.has(b, j)]
            c2 = int(rng.choice(add_choices)) if add_choices else None
            keep = {c2} if c2 is not None else set()
            anchor = self._pseudo(rng, c, a, b, keep, drop_prob)
            positive = self._pseudo(rng, c, a, cc, set(), drop_prob)
            negative = self._pseudo(rng, c, d, b, keep, drop_prob)
            return (anchor, positive, negative), c, c2
        raise ValueError("could not draw a pseudo-piece triplet: too few tracks with the parts needed")

    def dataset_triplet(self, rng: np.random.Generator):
        """Without pseudo pieces (Fig. 4.2): same-track positive, other-track negative, random c."""
        P = len(self.parts)
        usable = [t for t in range(len(self)) if len(self.mix_windows[t]) >= 2]
        a, d = (int(v) for v in rng.choice(usable, size=2, replace=False))
        return (self.dataset_piece(rng, a), self.dataset_piece(rng, a), self.dataset_piece(rng, d)), int(rng.integers(P))

    def stem_triplet(self, rng: np.random.Generator, j: int):
        """Chapter 3 triplet for part j on ideal stems: two windows of one track, one of another."""
        with_j = [t for t in range(len(self)) if len(self.windows[t][j]) >= 2]
        a, d = (int(v) for v in rng.choice(with_j, size=2, replace=False))
        def win(t: int) -> np.ndarray:
            return self.window(t, j, int(rng.choice(self.windows[t][j])))

        return win(a), win(a), win(d)


def _window_power(arr: np.ndarray, starts: np.ndarray, segment: int) -> np.ndarray:
    """Mean power of each window: ``(C, n)`` -> ``(C, len(starts))`` via a cumulative sum."""
    sq = np.concatenate([np.zeros((arr.shape[0], 1)), np.cumsum(arr.astype(np.float64) ** 2, axis=1)], axis=1)
    return (sq[:, starts + segment] - sq[:, starts]) / segment
