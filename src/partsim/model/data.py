"""Training and evaluation data: stems in memory, non-silent windows, pseudo musical pieces.

A *pseudo musical piece* (thesis 4.3.3) labelled (X, Y) for part c mixes part c of dataset
piece X with the other parts of piece Y, both from one tempo class. For condition c the basic
triplet is anchor (A, B), positive (A, C), negative (D, B); the additional triplet reuses the
same three pieces as anchor (A, B), positive (D, B), negative (A, C) under a condition c' != c
(a part B has). Each piece is cut at its own random non-silent 3-s window.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data import Track
from .features import SILENCE_POWER

if TYPE_CHECKING:
    from .augment import Augmenter

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

    def __init__(
        self,
        tracks: list[Track],
        parts: list[str],
        segment: int,
        hop: int,
        progress=None,
        workers: int = 1,
        extra: int = 0,
    ):
        self.parts = list(parts)
        self.segment, self.hop = segment, hop
        self.extra = extra  # samples readable past a window (augmentation's speed changes)
        self.ids: list[str] = []
        self.stems: list[np.ndarray] = []  # (P, n) int16, views into self.flat
        self.tempo_class: list[int] = []
        self.windows: list[list[np.ndarray]] = []  # [track][part] -> non-silent window starts
        self.mix_windows: list[np.ndarray] = []  # windows where the mix is non-silent
        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoding releases the GIL
            loaded = pool.map(self._load, tracks)
            for item in progress(loaded, total=len(tracks)) if progress else loaded:
                if item is None:
                    continue
                track, q, windows, mix_windows = item
                self.ids.append(track.id)
                self.stems.append(q)
                self.tempo_class.append(int(track.tempo_class) if track.tempo_class is not None else 0)
                self.windows.append(windows)
                self.mix_windows.append(mix_windows)
        # All tracks end to end, one row per part, so a batch of windows is one gather (render_batch).
        lengths = [q.shape[1] for q in self.stems]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.flat = np.zeros((len(self.parts), int(self.offsets[-1]) + extra), dtype=np.int16)
        for t, q in enumerate(self.stems):
            self.flat[:, self.offsets[t] : self.offsets[t + 1]] = q
            self.stems[t] = self.flat[:, self.offsets[t] : self.offsets[t + 1]]
        self._device_flat: dict[str, torch.Tensor] = {}
        # Pseudo pieces mix tracks of one tempo class. A small set (a validation split, a test
        # corpus) has too few tracks per class, so adjacent classes are merged (2, 4, ... at a
        # time) until most tracks sit in a group of at least 4.
        self.class_merge = 1
        while True:
            self.by_class: dict[int, list[int]] = {}  # merged tempo class -> track indices
            for i, k in enumerate(self.tempo_class):
                self.by_class.setdefault(k // self.class_merge, []).append(i)
            in_groups = sum(len(m) for m in self.by_class.values() if len(m) >= 4)
            if in_groups >= 0.75 * len(self) or self.class_merge >= 64:
                break
            self.class_merge *= 2

    def _load(self, track: Track):
        stems = track.load_stems()
        arr = np.stack([stems[p] for p in self.parts])
        if arr.shape[1] < self.segment:
            return None
        q = np.clip(np.round(arr * INT16), -32768, 32767).astype(np.int16)
        starts = np.arange(0, arr.shape[1] - self.segment + 1, self.hop)
        power = _window_power(arr, starts, self.segment)  # (P, W)
        mix_power = _window_power(arr.sum(axis=0, keepdims=True), starts, self.segment)[0]
        return (
            track,
            q,
            [starts[power[j] >= SILENCE_POWER] for j in range(len(self.parts))],
            starts[mix_power >= SILENCE_POWER],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, t: int, j: int) -> bool:
        return len(self.windows[t][j]) > 0

    def window(self, t: int, j: int, start: int) -> np.ndarray:
        return self.stems[t][j, start : start + self.segment].astype(np.float32) / INT16

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

    def _windows_view(self, device: torch.device, length: int) -> torch.Tensor:
        """``(P, L - length + 1, length)`` strided view of every window of the flat stems."""
        key = str(device)
        if key not in self._device_flat:
            flat = torch.from_numpy(self.flat)
            self._device_flat[key] = flat.to(device) if device.type != "cpu" else flat
        flat = self._device_flat[key]
        P, L = flat.shape
        return flat.as_strided((P, max(0, L - length + 1), length), (L, 1, 1))

    def gather(
        self, j: int, sources: list[tuple[int, int] | None], device: torch.device | str = "cpu", extra: int = 0
    ) -> torch.Tensor:
        """Windows of part ``j``: ``sources[i] = (track, start)`` or None (silence).

        Returns ``(N, segment + extra)`` float32; ``extra`` (at most the bank's) reads on past the
        window, into the next track's start or the zero padding at the very end.
        """
        device = torch.device(device)
        if not 0 <= extra <= self.extra:
            raise ValueError(f"extra={extra} exceeds the bank's {self.extra}")
        idx = torch.tensor([self.offsets[s[0]] + s[1] if s is not None else 0 for s in sources], dtype=torch.long)
        keep = torch.tensor([s is not None for s in sources])
        w = self._windows_view(device, self.segment + extra)[j][idx.to(device)].float() / INT16
        return w * keep.to(device)[:, None]

    def render_batch(
        self,
        pieces: list[Piece],
        device: torch.device | str = "cpu",
        augment: Augmenter | None = None,
        gen: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix many pieces at once: ``(N, segment)`` float32 audio and ``(N, P)`` presence targets.

        With ``augment`` (an :class:`~partsim.model.augment.Augmenter`) and ``gen``, each stem
        window is augmented before the sum and the mix gets its noise floor; presence is judged
        on the augmented stems.

        Raises:
            ValueError: ``augment`` without ``gen``, or a bank without parts.
        """
        if augment is not None and gen is None:
            raise ValueError("render_batch: augment needs gen, the torch.Generator its random draws come from")
        audio: torch.Tensor | None = None
        present: list[torch.Tensor] = []
        extra = augment.extra(self.segment) if augment is not None else 0
        for j in range(len(self.parts)):
            w = self.gather(j, [p.sources[j] for p in pieces], device, extra)
            if augment is not None and gen is not None:
                w = augment.stems(w, j, self.segment, gen)
            audio = w if audio is None else audio + w
            present.append(((w.double() ** 2).mean(dim=1) > SILENCE_POWER).float())
        if audio is None:
            raise ValueError("render_batch: the bank has no parts to mix")
        if augment is not None and gen is not None:
            audio = augment.mix(audio, gen)
        return audio, torch.stack(present, dim=1)

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
        return (self.dataset_piece(rng, a), self.dataset_piece(rng, a), self.dataset_piece(rng, d)), int(
            rng.integers(P)
        )

    def stem_triplet(self, rng: np.random.Generator, j: int) -> list[tuple[int, int]]:
        """Chapter 3 triplet for part j on ideal stems: two windows of one track, one of another.

        Returns three ``(track, start)`` sources of part ``j`` (anchor, positive, negative).
        """
        with_j = [t for t in range(len(self)) if len(self.windows[t][j]) >= 2]
        a, d = (int(v) for v in rng.choice(with_j, size=2, replace=False))
        return [(t, int(rng.choice(self.windows[t][j]))) for t in (a, a, d)]


def _window_power(arr: np.ndarray, starts: np.ndarray, segment: int) -> np.ndarray:
    """Mean power of each window: ``(C, n)`` -> ``(C, len(starts))`` via a cumulative sum."""
    sq = np.concatenate([np.zeros((arr.shape[0], 1)), np.cumsum(arr.astype(np.float64) ** 2, axis=1)], axis=1)
    return (sq[:, starts + segment] - sq[:, starts]) / segment
