"""Networks: the CSN of thesis Fig. 4.6 and the per-part networks of Fig. 3.1.

Both are the same kind of encoder (the encoder half of a U-Net, as the thesis says): five
blocks of two 3x3 convolutions with batch norm and ReLU, 2x2 max pooling after each block
(10 conv layers), an average over time, and one fully connected layer. The CSN outputs
``len(parts) * subspace_dim`` values, subspace c at ``[c*D, (c+1)*D)``; a per-part network
outputs one ``subspace_dim`` vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from partsim.data.taxonomy import PARTS


@dataclass
class NetConfig:
    """Sizes of an encoder. ``widths`` are the channels of the five conv blocks."""

    parts: list[str] = field(default_factory=lambda: list(PARTS))
    subspace_dim: int = 128
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 128])
    n_mels: int = 128

    @property
    def embedding_dim(self) -> int:
        return len(self.parts) * self.subspace_dim

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> embedding ``(B, out_dim)``.

    ``T`` may be any length of at least 32 frames (five 2x poolings).
    """

    def __init__(self, widths: list[int], out_dim: int, n_mels: int = 128):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"the encoder has five conv blocks; got {len(widths)} widths")
        layers: list[nn.Module] = []
        c_in = 1
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c_in = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1] * (n_mels // 32), out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.features(mel.unsqueeze(1))  # (B, C, n_mels/32, T/32)
        x = x.mean(dim=3)  # time average
        return self.fc(x.flatten(1))


class CSN(nn.Module):
    """Conditional Similarity Network: one embedding, one subspace per part (thesis 4.2-4.3)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.widths, cfg.embedding_dim, cfg.n_mels)
        # b_j of the norm loss (eq. 4.4): one learnable offset per part
        self.norm_bias = nn.Parameter(torch.zeros(len(cfg.parts)))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, T)`` -> ``(B, P * D)``."""
        return self.encoder(mel)

    def subspaces(self, emb: torch.Tensor) -> torch.Tensor:
        """``(B, P * D)`` -> ``(B, P, D)``."""
        return emb.view(emb.shape[0], len(self.cfg.parts), self.cfg.subspace_dim)


class PartNet(nn.Module):
    """Per-part network of Chapter 3 (Fig. 3.1): one part's stem -> ``(B, D)``."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.encoder = Encoder(cfg.widths, cfg.subspace_dim, cfg.n_mels)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel)


def mask(parts: int, dim: int, c: int, device=None) -> torch.Tensor:
    """Binary mask m_c of eq. 4.3: ones on subspace c of a ``parts * dim`` vector."""
    m = torch.zeros(parts * dim, device=device)
    m[c * dim : (c + 1) * dim] = 1.0
    return m


def masked_distance(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, parts: int, dim: int) -> torch.Tensor:
    """Eq. 4.1 for a batch: ``|| f(a) m_c - f(b) m_c ||_2`` with a per-row condition ``c`` (B,)."""
    diff = (a - b).view(a.shape[0], parts, dim)
    return diff[torch.arange(a.shape[0], device=a.device), c].norm(dim=1)


def triplet_loss(anchor, positive, negative, c, parts: int, dim: int, margin: float = 0.2) -> torch.Tensor:
    """Eq. 4.2, averaged over the batch."""
    d_ap = masked_distance(anchor, positive, c, parts, dim)
    d_an = masked_distance(anchor, negative, c, parts, dim)
    return torch.clamp(d_ap - d_an + margin, min=0).mean()


def norm_logits(emb: torch.Tensor, bias: torch.Tensor, parts: int, dim: int) -> torch.Tensor:
    """Eq. 4.4 before the sigmoid: ``log ||f(x) m_j|| + b_j``, shape ``(B, P)``."""
    norms = emb.view(emb.shape[0], parts, dim).norm(dim=2)
    return torch.log(norms + 1e-8) + bias


def norm_loss(
    embs: list[torch.Tensor], targets: list[torch.Tensor], bias: torch.Tensor, parts: int, dim: int
) -> torch.Tensor:
    """Eq. 4.6: mean BCE between subspace presence and the stems' presence, over a, p, n."""
    losses = [
        nn.functional.binary_cross_entropy_with_logits(norm_logits(e, bias, parts, dim), t)
        for e, t in zip(embs, targets)
    ]
    return torch.stack(losses).mean()
