"""Embedder configuration (env ``PARTSIM_EMBEDDER_*``, flags override), validated at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import InternalServerConfig, require, server_field

PREFIX = "PARTSIM_EMBEDDER"


@dataclass
class EmbedderConfig(InternalServerConfig):
    """partsim embedder: audio in, per-segment per-part vectors out (internal; concurrent requests are batched)."""

    prefix: ClassVar[str] = PREFIX
    address: str = server_field("address", "127.0.0.1:50052")
    metrics_port: int = server_field("metrics_port", 9092)
    workers: int = server_field("workers", 16, "RPC handler threads (they decode and compute features)")
    model: str = field(
        default="", metadata={"help": "model manifest.json (empty: the shipped model, or $PARTSIM_MODEL)"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda (cuda fails at start-up if unavailable)"})
    max_batch: int = field(default=32, metadata={"help": "most segments per model call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest a segment waits for its batch to fill"})
    intra_op_threads: int = field(default=0, metadata={"help": "onnxruntime intra-op threads (0: its default)"})
    spinning: bool = field(
        default=False,
        metadata={
            "help": "let onnxruntime's idle pool threads busy-wait between calls (off: they leave the cores to decoding "
            "and features)"
        },
    )
    max_audio_seconds: float = field(default=1200.0, metadata={"help": "longest audio per request"})
    max_segments: int = field(default=2000, metadata={"help": "most segments per request"})

    def validate(self) -> None:
        super().validate()
        p = PREFIX
        require(self.model == "" or Path(self.model).is_file(), p, "model", f"no such manifest: {self.model}")
        require(self.device in ("cpu", "cuda"), p, "device", f"must be cpu or cuda, got {self.device!r}")
        require(1 <= self.max_batch <= 1024, p, "max_batch", "must be within 1..1024")
        require(0 <= self.max_wait_ms <= 1000, p, "max_wait_ms", "must be within 0..1000")
        require(0 <= self.intra_op_threads <= 256, p, "intra_op_threads", "must be within 0..256")
        require(0 < self.max_audio_seconds <= 86400, p, "max_audio_seconds", "must be within (0, 86400]")
        require(1 <= self.max_segments <= 1_000_000, p, "max_segments", "must be within 1..1000000")
