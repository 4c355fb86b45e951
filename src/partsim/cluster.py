"""``partsim up``: the whole cluster on one machine (searcher, embedder, separator, gateway as processes).

Embedded defaults: Milvus Lite and job state under ``--data``, no Redis (unless ``--redis-url``).
Every port is on 127.0.0.1: each service's gRPC and /metrics on ports the OS picks, except the
gateway's gRPC (``--gateway``, default 127.0.0.1:50051). A gateway address beyond loopback starts
only with TLS and auth configured (PARTSIM_GATEWAY_* in the environment) or ``insecure`` (the
gateway's INSECURE: it then logs a warning). Every service prints ``serving on HOST:PORT`` (and
its metrics port) once bound, which is how the launcher learns the addresses. SIGINT/SIGTERM stop
the services in reverse order, each with its grace period.
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

LOOPBACK = "127.0.0.1"
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
    ``insecure=True`` lets a non-loopback ``gateway`` address serve without TLS and auth.
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
        insecure: bool = False,
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
        self.insecure = insecure
        self.services: list[Service] = []

    def _env(self, name: str, env: dict[str, str]) -> dict[str, str]:
        """The environment of ``partsim.services.<name>``: gRPC and /metrics on loopback ports the OS picks
        unless ``env`` says otherwise (only the gateway's address may); /metrics always on loopback."""
        prefix = f"PARTSIM_{name.upper()}"
        loopback = {f"{prefix}_ADDRESS": f"{LOOPBACK}:0", f"{prefix}_METRICS_PORT": "0"}
        return {
            **os.environ,
            **self.extra_env,
            **loopback,
            **env,
            f"{prefix}_METRICS_HOST": LOOPBACK,
            "PYTHONUNBUFFERED": "1",
        }

    def _gateway_env(self, embedder: str, searcher: str, separator: str) -> dict[str, str]:
        return {
            "PARTSIM_GATEWAY_ADDRESS": self.gateway_address,
            "PARTSIM_GATEWAY_EMBEDDER": embedder,
            "PARTSIM_GATEWAY_SEARCHER": searcher,
            "PARTSIM_GATEWAY_REDIS_URL": self.redis_url,
            "PARTSIM_GATEWAY_DATA_DIR": str(self.data / "gateway"),
            "PARTSIM_GATEWAY_ALLOWED_ROOTS": os.pathsep.join(str(p) for p in self.allowed_roots),
            **({"PARTSIM_GATEWAY_INSECURE": "true"} if self.insecure else {}),
            **({"PARTSIM_GATEWAY_SEPARATOR": separator} if separator else {}),
        }

    def check(self) -> None:
        """Raise InvalidArgument (naming the variable) before anything starts when the gateway would refuse
        its configuration, e.g. a non-loopback address without TLS and auth nor ``insecure``."""
        from .services.config import parse
        from .services.gateway.config import PREFIX, GatewayConfig

        parse(GatewayConfig, PREFIX, [], environ=self._env("gateway", self._gateway_env("x:1", "x:1", "")))

    def _start(self, name: str, env: dict[str, str], timeout: float = 300.0) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"partsim.services.{name}"],
            env=self._env(name, env),
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
                config_error = [line for line in svc.lines[-5:] if ": configuration error: " in line]
                if proc.poll() == 2 and config_error:  # the service's one line naming the variable
                    raise InvalidArgument(config_error[-1])
                raise Unavailable(
                    f"{name} did not start (exit {proc.poll()}); its last lines (full log {log_path}):\n{tail}"
                )
        if not self.quiet:
            print(f"  {name:9s} {svc.address}  (metrics {svc.metrics or 'off'}, log {log_path})", flush=True)
        return svc

    def start(self) -> Cluster:
        self.check()
        self.data.mkdir(parents=True, exist_ok=True)
        model = {"PARTSIM_EMBEDDER_MODEL": self.model, "PARTSIM_SEARCHER_MODEL": self.model} if self.model else {}
        searcher = self._start("searcher", {"PARTSIM_SEARCHER_DATA_DIR": str(self.data / "searcher"), **model})
        embedder = self._start("embedder", model)
        separator = self._start("separator", {}).address if self.separator else ""
        self._start("gateway", self._gateway_env(embedder.address, searcher.address, separator))
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
