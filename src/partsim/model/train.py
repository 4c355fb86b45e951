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
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import InvalidArgument
from .features import FeatureConfig
from .train_config import PHASES, TrainConfig
from .train_steps import TrainingSteps

__all__ = ["PHASES", "TrainConfig", "Trainer"]


class Trainer(TrainingSteps):
    """A whole run: the phases in order, epochs of steps, validation, checkpoints and ``model.pt``."""

    def _phase_steps(self, phase: str) -> tuple[int, int]:
        """(epochs, steps per epoch) of a phase."""
        c = self.cfg
        if phase == "partnets":
            return max(1, c.partnet_steps // c.steps_per_epoch), c.steps_per_epoch
        if phase == "pretrain":
            return max(1, c.pretrain_steps // c.steps_per_epoch), c.steps_per_epoch
        return c.epochs, c.steps_per_epoch

    # ------------------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> None:
        path = path or self.out / "checkpoint.pt"
        tmp = path.with_suffix(".tmp")
        # Weights only (no optimizer moments): a few MB, so a run moves between machines.
        # The per-part networks travel only while they are being trained (then in partnets.pt).
        partnets = (
            _cpu(self.partnets.state_dict())
            if self.partnets is not None and self.state["phase"] in ("partnets", "pretrain")
            else None
        )
        torch.save(
            {
                "state": self.state,
                "csn": _cpu(self.csn.state_dict()),
                "partnets": partnets,
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "log": self.log,
                "net": asdict(self.cfg.net),
            },
            tmp,
        )
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
        if self.log.get("config") != self.cfg.to_record():
            self.log.setdefault("resumed_with", []).append(
                {"after_epochs": len(self.log["epochs"]), "config": self.cfg.to_record()}
            )
            self.log["config"] = self.cfg.to_record()
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
                self.log["stopped_early"] = {
                    "after_main_epochs": self.state["epoch"],
                    "time_limit_minutes": self.cfg.time_limit,
                }
                break
            totals: dict[str, float] = {}
            bar = tqdm(
                range(steps),
                desc=f"{phase} {self.state['epoch'] + 1}/{epochs}",
                disable=not self.progress,
                dynamic_ncols=True,
                leave=False,
            )
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
            print(
                " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True
            )
            self.state["epoch"] += 1
            if phase == "pretrain" and self.state["epoch"] >= epochs and self.partnets is not None:
                torch.save(_cpu(self.partnets.state_dict()), self.out / "partnets.pt")
            self.save()
        self.state = {"phase": "done", "epoch": 0}
        torch.save(
            {
                "csn": _cpu(self.csn.state_dict()),
                "partnets": self._trained_partnets(),
                "net": asdict(self.cfg.net),
                "features": FeatureConfig().to_dict(),
                "segment_seconds": self.cfg.segment_seconds,
                "log": self.log,
            },
            self.out / "model.pt",
        )
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


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}
