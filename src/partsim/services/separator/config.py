"""Separator configuration (env ``PARTSIM_SEPARATOR_*``, flags override), validated at start-up.

Checks that need the model (the repository holds it, the parts mapping names its sources, the
segment suits it) happen when the model loads, also at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from partsim.assets import DEFAULT_SEPARATION_MODEL, shipped_separator_repo
from partsim.errors import InvalidArgument

from ..config import InternalServerConfig, require, server_field

PREFIX = "PARTSIM_SEPARATOR"
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_parts(text: str, what: str = "parts") -> dict[str, str]:
    """``"drums=drums,other=others,vocals="`` -> ``{source: part}`` (``""``: no part).

    Raises:
        InvalidArgument: an entry without ``=``, a malformed name, a source named twice, or two
            sources mapped to one part.
    """
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise InvalidArgument(f"{what}: expected SOURCE=PART (PART may be empty), got {item!r}")
        source, part = (x.strip() for x in item.split("=", 1))
        if not NAME.match(source) or (part and not NAME.match(part)):
            raise InvalidArgument(f"{what}: bad name in {item!r} (letters, digits, _ . - only)")
        if source in out:
            raise InvalidArgument(f"{what}: source {source!r} is mapped twice")
        out[source] = part
    parts = [p for p in out.values() if p]
    dup = sorted({p for p in parts if parts.count(p) > 1})
    if dup:
        raise InvalidArgument(f"{what}: part {dup[0]!r} comes from more than one source")
    return out


@dataclass
class SeparatorConfig(InternalServerConfig):
    """partsim separator: audio in, the stems of a Demucs model out (internal, streamed)."""

    prefix: ClassVar[str] = PREFIX
    address: str = server_field("address", "127.0.0.1:50054")
    metrics_port: int = server_field("metrics_port", 9094)
    grace_seconds: float = server_field("grace_seconds", 30.0)
    workers: int = server_field("workers", 8, "RPC handler threads (at least max_concurrent + max_queued + 1)")
    max_message_mb: float = server_field("max_message_mb", 128.0)
    repo: str = field(
        default="",
        metadata={
            "help": "model repository folder (Demucs LocalRepo: <sig>-<sha8>.th "
            "files and bag .yaml files; empty: the shipped models/separator)"
        },
    )
    model: str = field(
        default=DEFAULT_SEPARATION_MODEL,
        metadata={"help": "model name in the repository (a bag .yaml name or a .th signature)"},
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda (cuda fails at start-up if unavailable)"})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads (0: torch's default)"})
    segment_seconds: float = field(default=0.0, metadata={"help": "apply_model split length (0: the model's own)"})
    overlap: float = field(default=0.25, metadata={"help": "apply_model overlap of neighbouring splits, [0, 1)"})
    shifts: int = field(default=0, metadata={"help": "default random-shift passes per request (0: deterministic)"})
    max_shifts: int = field(default=4, metadata={"help": "most shift passes a request may ask for"})
    max_audio_seconds: float = field(default=900.0, metadata={"help": "longest audio per request"})
    parts: str = field(
        default="",
        metadata={
            "help": "source->catalog part map, e.g. 'other=others,vocals=' "
            "(empty part: a stem for listening only); sources not named "
            "map to the part of the same name"
        },
    )
    max_concurrent: int = field(default=1, metadata={"help": "separations running at once"})
    max_queued: int = field(default=4, metadata={"help": "separations waiting for a slot; more get RESOURCE_EXHAUSTED"})
    chunk_kb: int = field(default=1024, metadata={"help": "largest stem chunk per response message, KiB"})

    def validate(self) -> None:
        super().validate()
        p = PREFIX
        require(bool(NAME.match(self.model)), p, "model", f"expected a model name, got {self.model!r}")
        require(self.device in ("cpu", "cuda"), p, "device", f"must be cpu or cuda, got {self.device!r}")
        require(0 <= self.threads <= 256, p, "threads", "must be within 0..256")
        require(
            self.segment_seconds == 0 or 0.1 <= self.segment_seconds <= 600,
            p,
            "segment_seconds",
            "must be 0 (the model's) or within 0.1..600",
        )
        require(0 <= self.overlap < 1, p, "overlap", "must be within [0, 1)")
        require(0 <= self.max_shifts <= 20, p, "max_shifts", "must be within 0..20")
        require(0 <= self.shifts <= self.max_shifts, p, "shifts", f"must be within 0..max_shifts ({self.max_shifts})")
        require(0 < self.max_audio_seconds <= 86400, p, "max_audio_seconds", "must be within (0, 86400]")
        try:
            parse_parts(self.parts)
        except InvalidArgument as exc:
            require(False, p, "parts", str(exc).split(": ", 1)[-1])
        require(1 <= self.max_concurrent <= 64, p, "max_concurrent", "must be within 1..64")
        require(0 <= self.max_queued <= 1024, p, "max_queued", "must be within 0..1024")
        require(
            1 <= self.chunk_kb and self.chunk_kb * 1024 + 4096 <= self.max_message_bytes,
            p,
            "chunk_kb",
            "must be at least 1 and leave room within max_message_mb",
        )
        require(
            self.workers >= self.max_concurrent + self.max_queued + 1,
            p,
            "workers",
            f"must be at least max_concurrent + max_queued + 1 ({self.max_concurrent + self.max_queued + 1}) "
            f"so that waiting separations never hold up GetSeparatorModel and health checks",
        )

    @property
    def repo_path(self) -> Path:
        return Path(self.repo) if self.repo else shipped_separator_repo()

    @property
    def parts_map(self) -> dict[str, str]:
        return parse_parts(self.parts)

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_kb * 1024
