"""``partsim up``: the whole cluster on one machine (searcher, embedder, separator, gateway as processes).

Embedded defaults: Milvus Lite and job state under ``--data``, no Redis (unless ``--redis-url``).
Each service binds a port the OS picks except the gateway (``--gateway``, default
localhost:50051); every service prints ``serving on HOST:PORT`` (and its metrics port) once
bound, which is how the launcher learns the addresses. SIGINT/SIGTERM stop the services in
reverse order, each with its grace period.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidArgument, Unavailable

SERVING = re.compile(r"serving on (\S+:\d+)")
METRICS = re.compile(r"metrics on (\S+:\d+)")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    address: str = ""
    metrics: str = ""
    lines: list[str] = field(default_factory=list)


class Cluster:
    """Start, watch and stop the services. Use as a context manager.

    ``separator=False`` leaves the separator out (the gateway then gets no PARTSIM_GATEWAY_SEPARATOR);
    otherwise it loads its default model (PARTSIM_SEPARATOR_REPO/MODEL in ``extra_env`` override).
    """

    def __init__(
        self,
        data: Path,
        gateway: str = "127.0.0.1:50051",
        redis_url: str = "",
        model: str = "",
        allowed_roots: list[Path] | None = None,
        log_dir: Path | None = None,
        quiet: bool = False,
        extra_env: dict[str, str] | None = None,
        separator: bool = True,
    ):
        self.data = Path(data)
        self.gateway_address = gateway
        self.redis_url = redis_url
        self.model = model
        self.allowed_roots = [Path(p).resolve() for p in (allowed_roots or [])]
        self.log_dir = Path(log_dir) if log_dir else self.data / "logs"
        self.quiet = quiet
        self.extra_env = extra_env or {}
        self.separator = separator
        self.services: list[Service] = []

    def _start(self, name: str, module: str, env: dict[str, str], timeout: float = 300.0) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **self.extra_env, **env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        svc = Service(name, proc)
        self.services.append(svc)
        got = threading.Event()
        log_path = self.log_dir / f"{name}.log"

        def pump() -> None:
            with open(log_path, "a") as log:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    svc.lines.append(line.rstrip())
                    del svc.lines[:-200]
                    m = SERVING.search(line)
                    if m and not svc.address:
                        svc.address = m.group(1)
                        got.set()
                    m = METRICS.search(line)
                    if m and not svc.metrics:
                        svc.metrics = m.group(1)

        threading.Thread(target=pump, name=f"{name}-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not got.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(svc.lines[-15:])
                self.stop()
                raise Unavailable(
                    f"{name} did not start (exit {proc.poll()}); its last lines (full log {log_path}):\n{tail}"
                )
        if not self.quiet:
            print(f"  {name:9s} {svc.address}  (metrics {svc.metrics or 'off'}, log {log_path})", flush=True)
        return svc

    def start(self) -> Cluster:
        self.data.mkdir(parents=True, exist_ok=True)
        common = {}
        model = {"PARTSIM_EMBEDDER_MODEL": self.model, "PARTSIM_SEARCHER_MODEL": self.model} if self.model else {}
        searcher = self._start(
            "searcher",
            "partsim.services.searcher",
            {
                "PARTSIM_SEARCHER_ADDRESS": "127.0.0.1:0",
                "PARTSIM_SEARCHER_DATA_DIR": str(self.data / "searcher"),
                "PARTSIM_SEARCHER_METRICS_PORT": "0",
                **model,
                **common,
            },
        )
        embedder = self._start(
            "embedder",
            "partsim.services.embedder",
            {"PARTSIM_EMBEDDER_ADDRESS": "127.0.0.1:0", "PARTSIM_EMBEDDER_METRICS_PORT": "0", **model, **common},
        )
        separator = {}
        if self.separator:
            sep = self._start(
                "separator",
                "partsim.services.separator",
                {
                    "PARTSIM_SEPARATOR_ADDRESS": "127.0.0.1:0",
                    "PARTSIM_SEPARATOR_METRICS_PORT": "0",
                    "PARTSIM_SEPARATOR_METRICS_HOST": "127.0.0.1",
                    **common,
                },
            )
            separator = {"PARTSIM_GATEWAY_SEPARATOR": sep.address}
        self._start(
            "gateway",
            "partsim.services.gateway",
            {
                "PARTSIM_GATEWAY_ADDRESS": self.gateway_address,
                "PARTSIM_GATEWAY_EMBEDDER": embedder.address,
                "PARTSIM_GATEWAY_SEARCHER": searcher.address,
                "PARTSIM_GATEWAY_REDIS_URL": self.redis_url,
                "PARTSIM_GATEWAY_DATA_DIR": str(self.data / "gateway"),
                "PARTSIM_GATEWAY_METRICS_PORT": "0",
                "PARTSIM_GATEWAY_METRICS_HOST": "127.0.0.1",
                "PARTSIM_GATEWAY_ALLOWED_ROOTS": os.pathsep.join(str(p) for p in self.allowed_roots),
                **separator,
                **common,
            },
        )
        return self

    @property
    def gateway(self) -> str:
        return next(s.address for s in self.services if s.name == "gateway")

    def alive(self) -> list[str]:
        """Names of services that have exited."""
        return [s.name for s in self.services if s.proc.poll() is not None]

    def stop(self, timeout: float = 30.0) -> None:
        for svc in reversed(self.services):
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        for svc in reversed(self.services):
            try:
                svc.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()
        self.services = []

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_host_port(text: str) -> str:
    if ":" not in text:
        raise InvalidArgument(f"expected HOST:PORT, got {text!r}")
    host, port = text.rsplit(":", 1)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"bad port in {text!r}")
    return f"{host or '127.0.0.1'}:{port}"
