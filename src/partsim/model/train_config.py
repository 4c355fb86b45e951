"""``partsim train``'s settings: every flag of the command as one dataclass, checked before a run starts.

The phases a configuration runs (``PHASES``, less the thesis's pre-training with ``--init`` or
``--no-pretrain``) and what each flag means are in :mod:`.train`'s docstring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import InvalidArgument
from .nets import NetConfig

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
        for name, allowed in (
            ("precision", ("auto", "fp32", "bf16")),
            ("features", ("torch", "numpy")),
            ("schedule", ("constant", "cosine")),
        ):
            if getattr(self, name) not in allowed:
                raise InvalidArgument(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def to_record(self) -> dict:
        """The configuration as the run log records it (JSON types: tuples become lists)."""
        return _jsonable(asdict(self))

    def phases(self) -> list[str]:
        return list(PHASES) if self.pretrain and not self.init else ["main"]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
