"""Embedder configuration (env ``PARTSIM_EMBEDDER_*``, flags override), validated at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import require

PREFIX = "PARTSIM_EMBEDDER"


@dataclass
class EmbedderConfig:
    """partsim embedder: audio in, per-segment per-part vectors out (internal; concurrent requests are batched)."""

    address: str = field(default="0.0.0.0:50052", metadata={"help": "host:port to serve on"})
    model: str = field(default="", metadata={"help": "model manifest.json (empty: the shipped model, or $PARTSIM_MODEL)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda (cuda fails at start-up if unavailable)"})
    max_batch: int = field(default=32, metadata={"help": "most segments per model call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest a segment waits for its batch to fill"})
    intra_op_threads: int = field(default=0, metadata={"help": "onnxruntime intra-op threads (0: its default)"})
    spinning: bool = field(default=False, metadata={
        "help": "let onnxruntime's idle pool threads busy-wait between calls (off: they leave the cores to decoding "
                "and features)"})
    max_audio_seconds: float = field(default=1200.0, metadata={"help": "longest audio per request"})
    max_segments: int = field(default=2000, metadata={"help": "most segments per request"})
    max_message_mb: float = field(default=64.0, metadata={"help": "largest request/response message"})
    metrics_port: int = field(default=9092, metadata={"help": "Prometheus /metrics port (0: any, -1: none)"})
    metrics_host: str = field(default="0.0.0.0", metadata={"help": "interface of the /metrics server"})
    grace_seconds: float = field(default=10.0, metadata={"help": "graceful-stop grace period"})
    max_connection_age_seconds: float = field(default=0.0, metadata={
        "help": "close client connections after this long (0: never), so clients re-resolve DNS and spread "
                "over new replicas"})
    workers: int = field(default=16, metadata={"help": "RPC handler threads (they decode and compute features)"})

    def validate(self) -> None:
        p = PREFIX
        require(":" in self.address, p, "address", f"expected host:port, got {self.address!r}")
        require(self.model == "" or Path(self.model).is_file(), p, "model", f"no such manifest: {self.model}")
        require(self.device in ("cpu", "cuda"), p, "device", f"must be cpu or cuda, got {self.device!r}")
        require(1 <= self.max_batch <= 1024, p, "max_batch", "must be within 1..1024")
        require(0 <= self.max_wait_ms <= 1000, p, "max_wait_ms", "must be within 0..1000")
        require(0 <= self.intra_op_threads <= 256, p, "intra_op_threads", "must be within 0..256")
        require(0 < self.max_audio_seconds <= 86400, p, "max_audio_seconds", "must be within (0, 86400]")
        require(1 <= self.max_segments <= 1_000_000, p, "max_segments", "must be within 1..1000000")
        require(0 < self.max_message_mb < 2048, p, "max_message_mb", "must be within (0, 2048)")
        require(-1 <= self.metrics_port <= 65535, p, "metrics_port", "must be a port, 0 (any) or -1 (none)")
        require(self.grace_seconds >= 0, p, "grace_seconds", "must be 0 or more")
        require(self.max_connection_age_seconds >= 0, p, "max_connection_age_seconds", "must be 0 (never) or more")
        require(1 <= self.workers <= 1024, p, "workers", "must be within 1..1024")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))
