"""``partsim train``: the thesis's training recipe (Chapter 4, with Chapter 3's per-part nets).

Phases, each resumable from ``OUT/checkpoint.pt``:

1. ``partnets`` (with pre-training): one Chapter-3 network per part, trained with the triplet
   loss on ideal stems (two windows of one track are similar, another track's are not).
2. ``pretrain`` (eq. 4.7): the CSN learns to output ``y / ||y||`` where ``y`` concatenates the
   per-part networks' embeddings of the ideal stems (zeros for a silent part), by MSE.
3. ``main``: masked triplet loss on pseudo musical pieces (basic + additional triplets,
   eq. 4.1-4.3, margin 0.2) plus 0.1 x the norm loss (eq. 4.4-4.6) with created silences.

Ablations of Table 4.2 are flags: ``--no-pseudo`` (dataset-piece triplets, Fig. 4.2),
``--no-additional``, ``--no-norm``, ``--no-pretrain``.

csn-v3 additions: ``--init`` starts the main phase from a trained or shipped model; stems are
augmented before mixing (:mod:`augment`, ``--no-augment``); the forward and backward passes run
in bf16 autocast with channels_last tensors where the device supports it (``--precision``), and
optionally compiled (``--compile``); the learning rate can follow a cosine over the main phase
(``--schedule cosine``). Checkpoints hold weights only (no optimizer moments), so they stay a
few MB and a run resumes across machines. Every epoch logs its triplet draws per second.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import open_dataset
from ..errors import InvalidArgument
from .augment import AugmentConfig, Augmenter
from .data import StemBank
from .features import SILENCE_POWER, FeatureConfig, LogMel
from .features_torch import TorchLogMel
from .nets import CSN, NetConfig, PartNet, masked_distance, norm_loss, triplet_loss

PHASES = ("partnets", "pretrain", "main")


@dataclass
class TrainConfig:
    corpus: str
    out: str
    net: NetConfig = field(default_factory=NetConfig)
    segment_seconds: float = 3.0
    batch: int = 16  # triplet draws per step
    lr: float = 1e-3
    margin: float = 0.2
    norm_weight: float = 0.1
    created_silence: float = 0.3  # probability that a pseudo piece mixes only some of its parts
    epochs: int = 20
    steps_per_epoch: int = 50
    partnet_steps: int = 300
    pretrain_steps: int = 300
    pseudo: bool = True
    additional: bool = True
    norm: bool = True
    pretrain: bool = True
    val_draws: int = 96
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "auto"  # auto: CUDA when there is one, else CPU
    time_limit: float = 0.0  # minutes of training after which the main phase stops (0: no limit)
    load_workers: int = 0  # threads decoding stems (0: one per CPU core)
    augment: bool = True  # per-stem augmentation before mixing (main phase)
    precision: str = "auto"  # auto: bf16 autocast where the device has it; fp32; bf16
    channels_last: bool = True
    compile: bool = False  # torch.compile the CSN's training forward
    features: str = "torch"  # torch (on the training device) or numpy (csn-v2's CPU path)
    init: str = ""  # model.pt, shipped model folder or manifest.json to start the main phase from
    schedule: str = "constant"  # constant or cosine (over the main phase's epochs or time limit)
    freeze_bn: bool = False  # batch norms keep their running statistics (fine-tuning with small batches)

    def validate(self) -> None:
        for name in ("batch", "epochs", "steps_per_epoch", "val_draws"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 1.0 <= self.segment_seconds <= 30.0:
            raise InvalidArgument(f"--segment-seconds must be within 1..30, got {self.segment_seconds}")
        if self.lr <= 0:
            raise InvalidArgument(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.time_limit < float("inf"):
            raise InvalidArgument(f"--time-limit must be 0 (none) or positive minutes, got {self.time_limit}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise InvalidArgument(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidArgument(f"--device {self.device}: PyTorch sees no CUDA device here")
        for name, allowed in (("precision", ("auto", "fp32", "bf16")), ("features", ("torch", "numpy")),
                              ("schedule", ("constant", "cosine"))):
            if getattr(self, name) not in allowed:
                raise InvalidArgument(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def phases(self) -> list[str]:
        return list(PHASES) if self.pretrain and not self.init else ["main"]


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        cfg.validate()
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.features = LogMel(FeatureConfig())
        # The features are computed on the training device (same filters as the NumPy ones; tested).
        self.torch_features = TorchLogMel(FeatureConfig()).to(self.device) if cfg.features == "torch" else None
        self.bf16 = _bf16_supported(self.device) if cfg.precision == "auto" else cfg.precision == "bf16"
        self.augmenter = Augmenter(AugmentConfig(), cfg.net.parts) if cfg.augment else None
        self.aug_gen = torch.Generator(device=self.device)
        sr = self.features.cfg.sample_rate
        self.segment = int(round(cfg.segment_seconds * sr))
        ds = open_dataset(cfg.corpus)
        self.corpus_description = {"root": str(ds.root), "layout": ds.layout, "tracks": len(ds),
                                   "splits": {k: len(v) for k, v in ds.splits().items()}}
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
            raise InvalidArgument(f"corpus {cfg.corpus} has {len(self.train)} usable training tracks; at least 4 are needed")
        if len(self.val) < 4:  # too small to draw validation pseudo pieces from: monitor on training tracks
            self.corpus_description["validation_note"] = (
                f"validation split has {len(self.val)} usable tracks; validation draws come from training tracks")
            self.val = self.train
        self.csn = CSN(cfg.net)
        self.log: dict = {"config": _jsonable(asdict(cfg)), "corpus": self.corpus_description,
                          "git_commit": _git_commit(), "epochs": [], "wall_seconds": 0.0,
                          "device": _device_name(self.device), "bf16": self.bf16,
                          "augmentation": self.augmenter.cfg.to_dict() if self.augmenter else None}
        if cfg.init:
            from .warmstart import load_init

            self.log["init"] = load_init(self.csn, cfg.init, self._calibration_mel)
        self.csn = self.csn.to(self.device)
        if cfg.channels_last:
            self.csn = self.csn.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.csn) if cfg.compile else self.csn
        # per-part networks exist only for the thesis's pre-training (not with --init)
        self.partnets = (torch.nn.ModuleList([PartNet(cfg.net) for _ in cfg.net.parts]).to(self.device)
                         if "partnets" in cfg.phases() else None)
        self.state = {"phase": cfg.phases()[0], "epoch": 0}
        self.opt = self._optimizer()
        self.rng = np.random.default_rng(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # ------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        params = self.partnets.parameters() if self.state["phase"] == "partnets" else self.csn.parameters()
        return torch.optim.Adam(params, lr=self.cfg.lr)

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
            self.aug_gen.manual_seed(int(self.rng.integers(2 ** 62)))
            return bank.render_batch(pieces, self.device, self.augmenter, self.aug_gen)
        return bank.render_batch(pieces, self.device)

    def _phase_steps(self, phase: str) -> tuple[int, int]:
        """(epochs, steps per epoch) of a phase."""
        c = self.cfg
        if phase == "partnets":
            return max(1, c.partnet_steps // c.steps_per_epoch), c.steps_per_epoch
        if phase == "pretrain":
            return max(1, c.pretrain_steps // c.steps_per_epoch), c.steps_per_epoch
        return c.epochs, c.steps_per_epoch

    # ------------------------------------------------------------------------------------
    def step_partnets(self) -> dict:
        c = self.cfg
        losses = []
        for j, net in enumerate(self.partnets):
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
            self.partnets.eval()
            for j, net in enumerate(self.partnets):
                stems = self.train.gather(j, [p.sources[j] for p in pieces], self.device)
                silent = (stems.double() ** 2).mean(dim=1) < SILENCE_POWER
                emb = net(self._mel(stems))
                emb[silent] = 0.0
                targets[:, j * D:(j + 1) * D] = emb
        return targets / targets.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def step_pretrain(self) -> dict:
        pieces = [self.train.dataset_piece(self.rng, int(self.rng.integers(len(self.train))))
                  for _ in range(self.cfg.batch * 2)]
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

    # ------------------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> None:
        path = path or self.out / "checkpoint.pt"
        tmp = path.with_suffix(".tmp")
        # Weights only (no optimizer moments): a few MB, so a run moves between machines.
        # The per-part networks travel only while they are being trained (then in partnets.pt).
        partnets = (_cpu(self.partnets.state_dict()) if self.partnets is not None
                    and self.state["phase"] in ("partnets", "pretrain") else None)
        torch.save({"state": self.state, "csn": _cpu(self.csn.state_dict()), "partnets": partnets,
                    "rng": self.rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "log": self.log, "net": asdict(self.cfg.net)}, tmp)
        os.replace(tmp, path)
        (self.out / "run.json").write_text(json.dumps(self.log, indent=1) + "\n")

    def resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.is_file():
            return False
        ck = torch.load(path, weights_only=False, map_location="cpu")
        if ck["net"] != asdict(self.cfg.net):
            raise InvalidArgument(f"{path} was trained with other network sizes ({ck['net']}); use another --out")
        self.state = ck["state"]
        self.csn.load_state_dict(ck["csn"])
        if self.partnets is not None and ck.get("partnets") is not None:
            self.partnets.load_state_dict(ck["partnets"])
        self.opt = self._optimizer()
        if "opt" in ck:  # checkpoints before csn-v3 kept Adam's moments
            self.opt.load_state_dict(ck["opt"])
        self.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        self.log = ck["log"]
        if self.log.get("config") != _jsonable(asdict(self.cfg)):
            self.log.setdefault("resumed_with", []).append(
                {"after_epochs": len(self.log["epochs"]), "config": _jsonable(asdict(self.cfg))})
            self.log["config"] = _jsonable(asdict(self.cfg))
        if self.state["phase"] == "done":  # asked for more main epochs than were trained: go on
            done_main = sum(1 for e in self.log["epochs"] if e["phase"] == "main")
            if done_main < self.cfg.epochs:
                self.state = {"phase": "main", "epoch": done_main}
        return True

    def run(self) -> dict:
        if self.state["phase"] == "done":
            return self.log
        phases = self.cfg.phases()
        started = time.monotonic() - self.log["wall_seconds"]
        while True:
            phase = self.state["phase"]
            epochs, steps = self._phase_steps(phase)
            if self.state["epoch"] >= epochs:
                nxt = phases.index(phase) + 1
                if nxt == len(phases):
                    break
                self.state = {"phase": phases[nxt], "epoch": 0}
                self.opt = self._optimizer()
                continue
            if phase == "main" and self._out_of_time(started):
                self.log["stopped_early"] = {"after_main_epochs": self.state["epoch"],
                                             "time_limit_minutes": self.cfg.time_limit}
                break
            totals: dict[str, float] = {}
            bar = tqdm(range(steps), desc=f"{phase} {self.state['epoch'] + 1}/{epochs}", disable=not self.progress,
                       dynamic_ncols=True, leave=False)
            t0 = time.monotonic()
            for _ in bar:
                if phase == "main":
                    self._set_lr(started, epochs)
                out = self.step(phase)
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                bar.set_postfix({k: f"{v / (bar.n + 1):.3f}" for k, v in totals.items()})
            record = {"phase": phase, "epoch": self.state["epoch"] + 1, **{k: v / steps for k, v in totals.items()}}
            if phase == "main":
                record["draws_per_second"] = steps * self.cfg.batch / max(1e-9, time.monotonic() - t0)
                record["lr"] = self.opt.param_groups[0]["lr"]
                record.update(self.validate_main())
            record["wall_seconds"] = round(time.monotonic() - started, 1)
            self.log["epochs"].append(record)
            self.log["wall_seconds"] = record["wall_seconds"]
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                  flush=True)
            self.state["epoch"] += 1
            if phase == "pretrain" and self.state["epoch"] >= epochs and self.partnets is not None:
                torch.save(_cpu(self.partnets.state_dict()), self.out / "partnets.pt")
            self.save()
        self.state = {"phase": "done", "epoch": 0}
        torch.save({"csn": _cpu(self.csn.state_dict()), "partnets": self._trained_partnets(),
                    "net": asdict(self.cfg.net), "features": FeatureConfig().to_dict(),
                    "segment_seconds": self.cfg.segment_seconds, "log": self.log}, self.out / "model.pt")
        self.save()
        return self.log


    def _out_of_time(self, started: float) -> bool:
        return self.cfg.time_limit > 0 and time.monotonic() - started >= self.cfg.time_limit * 60

    def _trained_partnets(self) -> dict | None:
        """The per-part networks once trained (kept for Table 4.1's ideal-stem baseline)."""
        path = self.out / "partnets.pt"
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def _set_lr(self, started: float, epochs: int) -> None:
        """Cosine schedule: the further of epoch progress and time-limit progress decides."""
        if self.cfg.schedule != "cosine":
            return
        done = self.state["epoch"] / max(1, epochs)
        if self.cfg.time_limit > 0:
            done = max(done, (time.monotonic() - started) / (self.cfg.time_limit * 60))
        lr = self.cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))
        for g in self.opt.param_groups:
            g["lr"] = lr


def _bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays where the hardware has bf16 arithmetic (CUDA, or x86 AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
