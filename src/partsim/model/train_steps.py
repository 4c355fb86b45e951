"""What one optimisation step of ``partsim train`` computes, for each phase (:mod:`.train` runs them).

:class:`TrainingSteps` sets a run up (device, features, augmenter, stems of the training and
validation splits, the CSN, the per-part networks when the thesis's pre-training runs, the
optimizer, the run log) and computes each phase's losses on a batch of draws: the per-part
networks' triplet loss (``partnets``), eq. 4.7's MSE to the normalised per-part embeddings
(``pretrain``), and the masked basic + additional triplet losses with the norm loss
(``main``, eq. 4.1-4.6); ``step`` adds the backward pass and Adam. ``partsim bench-train``
times these steps alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from tqdm import tqdm

from ..data import open_dataset
from ..errors import InvalidArgument
from ..provenance import git_commit
from .augment import AugmentConfig, Augmenter
from .data import StemBank
from .features import SILENCE_POWER, FeatureConfig, LogMel
from .features_torch import TorchLogMel
from .nets import CSN, PartNet, masked_distance, norm_loss, triplet_loss
from .train_config import TrainConfig


class RunState(TypedDict):
    """Where a run stands (saved in its checkpoint): the phase in training, ``"done"`` once model.pt is
    written, and the epochs of that phase already trained."""

    phase: str
    epoch: int


class TrainingSteps:
    """A run's setup and the losses of one step of each phase (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        cfg.validate()
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.features = LogMel(FeatureConfig())
        # The features are computed on the training device (same filters as the NumPy ones; tested).
        self.torch_features = TorchLogMel(FeatureConfig()).to(self.device) if cfg.features == "torch" else None
        self.bf16 = _bf16_supported(self.device) if cfg.precision == "auto" else cfg.precision == "bf16"
        self.augmenter = Augmenter(AugmentConfig(), cfg.net.parts) if cfg.augment else None
        self.aug_gen = torch.Generator(device=self.device)
        sr = self.features.cfg.sample_rate
        self.segment = int(round(cfg.segment_seconds * sr))
        ds = open_dataset(cfg.corpus)
        self.corpus_description = {
            "root": str(ds.root),
            "layout": ds.layout,
            "tracks": len(ds),
            "splits": {k: len(v) for k, v in ds.splits().items()},
        }
        if ds.layout == "partsim":
            self.corpus_description["config"] = json.loads((ds.root / "index.json").read_text()).get("config")
        wrap = (lambda it, **kw: tqdm(it, desc="loading stems", unit="track", **kw)) if progress else None
        train_tracks = ds.tracks("train")
        val_tracks = ds.tracks("validation") or train_tracks[: max(4, len(train_tracks) // 10)]
        workers = cfg.load_workers or os.cpu_count() or 1
        extra = self.augmenter.extra(self.segment) if self.augmenter else 0
        self.train = StemBank(train_tracks, cfg.net.parts, self.segment, self.segment // 2, wrap, workers, extra)
        self.val = StemBank(val_tracks, cfg.net.parts, self.segment, self.segment, None, workers)
        if len(self.train) < 4:
            raise InvalidArgument(
                f"corpus {cfg.corpus} has {len(self.train)} usable training tracks; at least 4 are needed"
            )
        if len(self.val) < 4:  # too small to draw validation pseudo pieces from: monitor on training tracks
            self.corpus_description["validation_note"] = (
                f"validation split has {len(self.val)} usable tracks; validation draws come from training tracks"
            )
            self.val = self.train
        self.csn = CSN(cfg.net)
        self.log: dict = {
            "config": cfg.to_record(),
            "corpus": self.corpus_description,
            "git_commit": git_commit(),
            "epochs": [],
            "wall_seconds": 0.0,
            "device": _device_name(self.device),
            "bf16": self.bf16,
            "augmentation": self.augmenter.cfg.to_dict() if self.augmenter else None,
        }
        if cfg.init:
            from .warmstart import load_init

            self.log["init"] = load_init(self.csn, cfg.init, self._calibration_mel)
        self.csn = self.csn.to(self.device)
        if cfg.channels_last:
            # Module.to takes memory_format at run time; torch's overloads of Module.to leave it out
            self.csn = self.csn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.forward = torch.compile(self.csn) if cfg.compile else self.csn
        # per-part networks exist only for the thesis's pre-training (not with --init)
        self.partnets = (
            torch.nn.ModuleList([PartNet(cfg.net) for _ in cfg.net.parts]).to(self.device)
            if "partnets" in cfg.phases()
            else None
        )
        self.state: RunState = {"phase": cfg.phases()[0], "epoch": 0}
        self.opt = self._optimizer()
        self.rng = np.random.default_rng(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # ------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        params = self._partnets().parameters() if self.state["phase"] == "partnets" else self.csn.parameters()
        return torch.optim.Adam(params, lr=self.cfg.lr)

    def _partnets(self) -> torch.nn.ModuleList:
        """The per-part networks, which only the phases ``partnets`` and ``pretrain`` use."""
        if self.partnets is None:
            raise RuntimeError(
                f"phase {self.state['phase']!r} needs the per-part networks, which exist only when "
                f"the run's phases include 'partnets' (these are {self.cfg.phases()})"
            )
        return self.partnets

    def _calibration_mel(self) -> torch.Tensor:
        """Features of 96 real training segments (for rebuilding an ONNX model's batch norms)."""
        rng = np.random.default_rng(self.cfg.seed + 1)
        pieces = [self.train.dataset_piece(rng, int(rng.integers(len(self.train)))) for _ in range(96)]
        with torch.no_grad():
            return self._mel(self.train.render_batch(pieces, "cpu")[0].to(self.device)).cpu()

    def _mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` audio on the training device -> ``(B, n_mels, frames)`` features there."""
        with torch.no_grad():
            if self.torch_features is not None:
                return self.torch_features(audio)
            return torch.from_numpy(self.features(audio.cpu().numpy())).to(self.device)

    def _embed(self, mel: torch.Tensor) -> torch.Tensor:
        """The CSN's training forward: bf16 autocast where enabled; float32 out."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.forward(mel).float()

    def _render(self, bank: StemBank, pieces, augment: bool):
        """Mix pieces on the device; augmented (seeded from the run's RNG) in training draws."""
        if augment and self.augmenter is not None:
            self.aug_gen.manual_seed(int(self.rng.integers(2**62)))
            return bank.render_batch(pieces, self.device, self.augmenter, self.aug_gen)
        return bank.render_batch(pieces, self.device)

    # ------------------------------------------------------------------------------------
    def step_partnets(self) -> dict:
        c = self.cfg
        losses = []
        for j, net in enumerate(self._partnets()):
            trip = [self.train.stem_triplet(self.rng, j) for _ in range(max(2, c.batch // 2))]
            mel = self._mel(self.train.gather(j, [s for t in trip for s in t], self.device))
            emb = net(mel).view(len(trip), 3, -1)
            zero = torch.zeros(len(trip), dtype=torch.long, device=self.device)
            losses.append(triplet_loss(emb[:, 0], emb[:, 1], emb[:, 2], zero, 1, c.net.subspace_dim, c.margin))
        loss = torch.stack(losses).mean()
        return {"loss": loss, "partnet_triplet": loss.detach()}

    def _pretrain_targets(self, pieces) -> torch.Tensor:
        P, D = len(self.cfg.net.parts), self.cfg.net.subspace_dim
        targets = torch.zeros(len(pieces), P * D, device=self.device)
        with torch.no_grad():
            partnets = self._partnets()
            partnets.eval()
            for j, net in enumerate(partnets):
                stems = self.train.gather(j, [p.sources[j] for p in pieces], self.device)
                silent = (stems.double() ** 2).mean(dim=1) < SILENCE_POWER
                emb = net(self._mel(stems))
                emb[silent] = 0.0
                targets[:, j * D : (j + 1) * D] = emb
        return targets / targets.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def step_pretrain(self) -> dict:
        pieces = [
            self.train.dataset_piece(self.rng, int(self.rng.integers(len(self.train))))
            for _ in range(self.cfg.batch * 2)
        ]
        target = self._pretrain_targets(pieces)
        self._train_mode()
        out = self._embed(self._mel(self.train.render_batch(pieces, self.device)[0]))
        loss = torch.nn.functional.mse_loss(out, target)
        return {"loss": loss, "pretrain_mse": loss.detach()}

    def _draw(self, bank: StemBank, rng: np.random.Generator):
        """One draw: three pieces, basic condition, additional condition (or None)."""
        if self.cfg.pseudo:
            pieces, c, c2 = bank.pseudo_triplets(rng, self.cfg.created_silence if self.cfg.norm else 0.0)
            return pieces, c, (c2 if self.cfg.additional else None)
        pieces, c = bank.dataset_triplet(rng)
        return pieces, c, None

    def _losses(self, bank: StemBank, draws, augment: bool = False) -> dict:
        c = self.cfg
        P, D = len(c.net.parts), c.net.subspace_dim
        audio, present = self._render(bank, [piece for pieces, _, _ in draws for piece in pieces], augment)
        emb = self._embed(self._mel(audio)).view(len(draws), 3, -1)
        q = present.view(len(draws), 3, -1)
        cond = torch.tensor([d[1] for d in draws], device=self.device)
        a, p, n = emb[:, 0], emb[:, 1], emb[:, 2]
        basic = triplet_loss(a, p, n, cond, P, D, c.margin)
        out = {"basic": basic}
        loss = basic
        with_add = [i for i, d in enumerate(draws) if d[2] is not None]
        if with_add:
            idx = torch.tensor(with_add, device=self.device)
            cond2 = torch.tensor([draws[i][2] for i in with_add], device=self.device)
            add = triplet_loss(a[idx], n[idx], p[idx], cond2, P, D, c.margin)  # anchor, (D,B), (A,C)
            out["additional"] = add
            loss = loss + add
        if c.norm:
            nl = norm_loss([a, p, n], [q[:, 0], q[:, 1], q[:, 2]], self.csn.norm_bias, P, D)
            out["norm"] = nl
            loss = loss + c.norm_weight * nl
        with torch.no_grad():
            out["triplet_acc"] = (masked_distance(a, p, cond, P, D) < masked_distance(a, n, cond, P, D)).float().mean()
        out["loss"] = loss
        return out

    def _train_mode(self) -> None:
        self.csn.train()
        if self.cfg.freeze_bn:  # normalise with the running statistics; the affine parameters still learn
            for m in self.csn.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()

    def step_main(self) -> dict:
        self._train_mode()
        draws = [self._draw(self.train, self.rng) for _ in range(self.cfg.batch)]
        return self._losses(self.train, draws, augment=True)

    def step(self, phase: str = "main") -> dict:
        """One optimisation step of ``phase``: its losses, backward, Adam. Returns the losses."""
        out = {"partnets": self.step_partnets, "pretrain": self.step_pretrain, "main": self.step_main}[phase]()
        self.opt.zero_grad()
        out["loss"].backward()
        self.opt.step()
        return out

    def validate_main(self) -> dict:
        """Loss and basic-triplet accuracy on a fixed set of validation draws."""
        rng = np.random.default_rng(12345)
        self.csn.eval()
        totals: dict[str, float] = {}
        n = 0
        with torch.no_grad():
            for start in range(0, self.cfg.val_draws, 32):
                draws = [self._draw(self.val, rng) for _ in range(min(32, self.cfg.val_draws - start))]
                for k, v in self._losses(self.val, draws).items():
                    totals[k] = totals.get(k, 0.0) + float(v) * len(draws)
                n += len(draws)
        return {f"val_{k}": v / n for k, v in totals.items()}


def _bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays where the hardware has bf16 arithmetic (CUDA, or x86 AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
