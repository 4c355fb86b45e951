"""Tempo classes.

The thesis (4.4.1) groups the training songs into 36 tempo classes and mixes pseudo musical
pieces only from songs of one class, so that the mixture stays music-like. It does not say
how the classes are cut; partsim uses equal 4-BPM bins from 60 BPM: class k holds tempos in
[60 + 4k, 64 + 4k), and tempos outside 60..204 BPM fall into the first or last class.
"""

from __future__ import annotations

import math

NUM_TEMPO_CLASSES = 36
TEMPO_MIN_BPM = 60.0
TEMPO_CLASS_WIDTH_BPM = 4.0
TEMPO_MAX_BPM = TEMPO_MIN_BPM + NUM_TEMPO_CLASSES * TEMPO_CLASS_WIDTH_BPM  # 204


def tempo_class(bpm: float) -> int:
    """Tempo class (0..35) of a tempo in beats per minute."""
    if not math.isfinite(bpm) or bpm <= 0:
        raise ValueError(f"tempo must be a positive number of BPM, got {bpm}")
    k = int((bpm - TEMPO_MIN_BPM) // TEMPO_CLASS_WIDTH_BPM)
    return min(max(k, 0), NUM_TEMPO_CLASSES - 1)


def tempo_class_range(k: int) -> tuple[float, float]:
    """[low, high) BPM bounds of tempo class k."""
    if not 0 <= k < NUM_TEMPO_CLASSES:
        raise ValueError(f"tempo class {k} is outside 0..{NUM_TEMPO_CLASSES - 1}")
    low = TEMPO_MIN_BPM + k * TEMPO_CLASS_WIDTH_BPM
    return low, low + TEMPO_CLASS_WIDTH_BPM
