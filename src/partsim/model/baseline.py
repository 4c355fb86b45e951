"""An untrained reference for the evaluation tables: the log-spectrum baseline.

``partsim evaluate baseline:logspec ...`` (or ``--baseline`` beside a trained model) runs the
thesis's protocols on an embedder that learned nothing: for a segment it takes the same
normalised log-mel the CSN sees (:class:`~.features.LogMel`), summarises it over time by the
mean and the standard deviation of every mel bin (``2 * n_mels`` numbers), and projects that
summary to the subspace dimension with a fixed orthonormal projection (QR of a Gaussian matrix
drawn from ``numpy.random.default_rng(seed)``; the identity, zero-padded, when the subspace is
at least ``2 * n_mels`` wide). Every part's subspace holds the *same* vector.

So the baseline can say "these segments sound alike" but not "these basses sound alike": how
far a model's Table 4.1/4.2 row stands above this one is what training bought. Table 4.3
(which subspace has the largest norm) is meaningless for it (all norms are equal), so
:attr:`identifies_parts` is False and the evaluation reports that table as not applicable.
"""

from __future__ import annotations

import numpy as np

from ..data import PARTS
from ..errors import InvalidArgument
from .features import FeatureConfig, LogMel
from .inference import Embedder, load_embedder

LOGSPEC = "baseline:logspec"
BASELINES = (LOGSPEC,)


class LogSpectrumBaseline(Embedder):
    """Mean and std over time of the log-mel, fixed projection to ``subspace_dim``, one vector per part."""

    name = LOGSPEC
    description = (
        "untrained log-spectrum baseline: mean and std over time of each log-mel bin, "
        "fixed orthonormal projection, the same vector in every part's subspace"
    )
    identifies_parts = False

    def __init__(
        self,
        subspace_dim: int = 128,
        parts: list[str] | tuple[str, ...] = PARTS,
        features: FeatureConfig | None = None,
        segment_seconds: float = 3.0,
        seed: int = 0,
    ):
        if subspace_dim < 1:
            raise InvalidArgument(f"baseline subspace dimension must be at least 1, got {subspace_dim}")
        self.parts = list(parts)
        self.subspace_dim = int(subspace_dim)
        self.segment_seconds = float(segment_seconds)
        self.features = LogMel(features or FeatureConfig())
        self.seed = seed
        self.projection = summary_projection(2 * self.features.cfg.n_mels, self.subspace_dim, seed)

    def summary(self, mel: np.ndarray) -> np.ndarray:
        """``(N, n_mels, T)`` -> ``(N, 2 * n_mels)``: per-bin mean and standard deviation over time."""
        mel = np.asarray(mel, dtype=np.float32)
        return np.concatenate([mel.mean(axis=-1), mel.std(axis=-1)], axis=-1)

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        v = (self.summary(mel) @ self.projection).astype(np.float32)  # (N, D)
        return np.tile(v, (1, len(self.parts)))  # (N, P * D): the same vector for every part


def summary_projection(n_in: int, n_out: int, seed: int = 0) -> np.ndarray:
    """``(n_in, n_out)`` with orthonormal columns (distances shrink, never stretch); identity when it fits."""
    if n_out >= n_in:
        return np.eye(n_in, n_out, dtype=np.float32)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_in, n_out)))
    return (q * np.sign(np.diag(r))).astype(np.float32)  # sign fix: Q does not depend on the LAPACK build


def is_baseline(spec: object) -> bool:
    return str(spec).startswith("baseline:")


def load_model(spec: object, subspace_dim: int = 128) -> Embedder:
    """``baseline:logspec`` -> :class:`LogSpectrumBaseline`; any other path -> :func:`load_embedder`."""
    text = str(spec)
    if is_baseline(text):
        if text != LOGSPEC:
            raise InvalidArgument(f"unknown baseline {text!r} (baselines: {', '.join(BASELINES)})")
        return LogSpectrumBaseline(subspace_dim)
    return load_embedder(text)
