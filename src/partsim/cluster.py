"""``partsim up``: the whole cluster on one machine (searcher, embedder, separator, gateway as processes).

Embedded defaults: Milvus Lite and job state under ``--data``, no Redis (unless ``--redis-url``).
Every port is on 127.0.0.1: each service's gRPC and /metrics on ports the OS picks, except the
gateway's gRPC (``--gateway``, default 127.0.0.1:50051). A gateway address beyond loopback starts
only with TLS and auth configured (PARTSIM_GATEWAY_* in the environment) or ``insecure`` (the
gateway's INSECURE: it then logs a warning). The gateway also serves the HTTP/JSON API and the web app
(``http``, default port 0 on the gateway's host: the OS picks; ``partsim up`` asks for 8080; None: off).
Every service prints ``serving on HOST:PORT`` (and
its metrics port) once bound, which is how the launcher learns the addresses. SIGINT/SIGTERM stop
the services in reverse order, each with its grace period.

The launcher supervises the services: one that exits on its own is started again on the same ports
after a delay (:class:`~partsim.supervisor.RestartPolicy`: 0.5 s doubling to 30 s, back to 0.5 s
after a minute up), said on its output and in the service's log, counted in ``Service.restarts``.
Each service's output goes to ``LOG_DIR/<name>.log`` through a :class:`~partsim.supervisor.LogPump`
that keeps reading when the disk is full (the lines it cannot write are dropped and counted).
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
from .supervisor import LogPump, RestartPolicy, open_log

LOOPBACK = "127.0.0.1"
SERVING = re.compile(r"serving on (\S+:\d+)")
METRICS = re.compile(r"metrics on (\S+:\d+)")
HTTP = re.compile(r"HTTP/JSON API and web app on (https?://\S+)")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)  # what it was started with (a restart: same ports)
    address: str = ""
    metrics: str = ""
    http: str = ""  # the gateway's HTTP/JSON API and web app: http://host:port/
    lines: list[str] = field(default_factory=list)
    pump: LogPump | None = None
    up: threading.Event = field(default_factory=threading.Event)  # "serving on" seen
    started: float = 0.0  # time.monotonic() of the last start
    restarts: int = 0
    delay: float = 0.0  # before the last restart
    restart_at: float | None = None  # when it is to be started again (it has exited)


class Cluster:
    """Start, watch and stop the services. Use as a context manager.

    ``separator=False`` leaves the separator out (the gateway then gets no PARTSIM_GATEWAY_SEPARATOR);
    otherwise it loads its default model (PARTSIM_SEPARATOR_REPO/MODEL in ``extra_env`` override).
    ``insecure=True`` lets a non-loopback ``gateway`` address serve without TLS and auth.
    ``supervise=False`` leaves a service that exits dead; ``restart`` sets the delays otherwise.
    ``http``: ``HOST:PORT`` of the gateway's HTTP/JSON API and web app (port 0: the OS picks; None: the gateway's
    host, port 0; ``""``: off); beyond loopback on the gateway's terms (TLS and auth, or ``insecure``).
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
        supervise: bool = True,
        restart: RestartPolicy | None = None,
        http: str | None = None,
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
        self.http_address = f"{gateway.rsplit(':', 1)[0]}:0" if http is None else http
        self.services: list[Service] = []
        self.supervise = supervise
        self.restart = restart or RestartPolicy()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

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
            **self._http_env(),
        }

    def _http_env(self) -> dict[str, str]:
        if not self.http_address:
            return {"PARTSIM_GATEWAY_HTTP_PORT": "-1"}
        host, port = self.http_address.rsplit(":", 1)
        return {"PARTSIM_GATEWAY_HTTP_HOST": host.strip("[]"), "PARTSIM_GATEWAY_HTTP_PORT": port}

    def check(self) -> None:
        """Raise InvalidArgument (naming the variable) before anything starts when the gateway would refuse
        its configuration, e.g. a non-loopback address without TLS and auth nor ``insecure``."""
        from .services.config import parse
        from .services.gateway.config import PREFIX, GatewayConfig

        parse(GatewayConfig, PREFIX, [], environ=self._env("gateway", self._gateway_env("x:1", "x:1", "")))

    def _spawn(self, svc: Service) -> None:
        """Start ``svc``'s process (again) with its output pumped to its log file."""
        svc.proc = subprocess.Popen(
            [sys.executable, "-m", f"partsim.services.{svc.name}"],
            env=svc.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        svc.started = time.monotonic()

        def seen(line: str) -> None:
            m = SERVING.search(line)
            if m and not svc.address:
                svc.address = m.group(1)
            if m:
                svc.up.set()
            m = METRICS.search(line)
            if m and not svc.metrics:
                svc.metrics = m.group(1)
            m = HTTP.search(line)
            if m and not svc.http:
                svc.http = m.group(1)

        svc.pump = LogPump(open_log(self.log_dir / f"{svc.name}.log"), svc.lines, seen)
        threading.Thread(target=svc.pump.run, args=(svc.proc.stdout,), name=f"{svc.name}-log", daemon=True).start()

    def _start(self, name: str, env: dict[str, str], timeout: float = 300.0) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        svc = Service(name, None, env=self._env(name, env))  # type: ignore[arg-type] # _spawn sets proc
        self._spawn(svc)
        self.services.append(svc)
        proc = svc.proc
        log_path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while not (svc.up.wait(0.2) and self._http_seen(svc)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(svc.lines[-15:])
                config_error = [line for line in svc.lines[-5:] if ": configuration error: " in line]
                if proc.poll() == 2 and config_error:  # the service's one line naming the variable
                    raise InvalidArgument(config_error[-1])
                raise Unavailable(
                    f"{name} did not start (exit {proc.poll()}); its last lines (full log {log_path}):\n{tail}"
                )
        if not self.quiet:
            print(f"  {name:9s} {svc.address}  (metrics {svc.metrics or 'off'}, log {log_path})", flush=True)
            if svc.http:
                print(f"  {'':9s} {svc.http}  (HTTP/JSON API and web app)", flush=True)
        return svc

    def _http_seen(self, svc: Service) -> bool:
        """Whether ``svc`` said all its addresses: the gateway with HTTP on prints its HTTP line after gRPC's."""
        return svc.name != "gateway" or not self.http_address or bool(svc.http)

    def start(self) -> Cluster:
        """Start the services in order; when any step fails (a service that does not start, Ctrl-C while
        waiting), stop those already running before raising: they run in their own sessions, so nothing
        else would."""
        self.check()
        self.data.mkdir(parents=True, exist_ok=True)
        model = {"PARTSIM_EMBEDDER_MODEL": self.model, "PARTSIM_SEARCHER_MODEL": self.model} if self.model else {}
        try:
            searcher = self._start("searcher", {"PARTSIM_SEARCHER_DATA_DIR": str(self.data / "searcher"), **model})
            embedder = self._start("embedder", model)
            separator = self._start("separator", {}).address if self.separator else ""
            self._start("gateway", self._gateway_env(embedder.address, searcher.address, separator))
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._stopping.clear()
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()
        return self

    @property
    def gateway(self) -> str:
        return next(s.address for s in self.services if s.name == "gateway")

    @property
    def http(self) -> str:
        """``http://host:port/`` of the gateway's HTTP/JSON API and web app ("" when off)."""
        return next(s.http for s in self.services if s.name == "gateway")

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def _supervise(self, poll: float = 0.2) -> None:
        """Start again, on the same ports, each service that exited on its own (after its delay)."""
        while not self._stopping.wait(poll):
            for svc in self.services:
                code = svc.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if svc.restart_at is None:
                    svc.delay = self.restart.delay(svc.delay, now - svc.started)
                    svc.restart_at = now + svc.delay
                    self._say(
                        svc,
                        f"{svc.name} exited (status {code}) after {now - svc.started:.0f} s; "
                        f"restart {svc.restarts + 1} in {svc.delay:g} s",
                    )
                elif now >= svc.restart_at and not self._stopping.is_set():
                    svc.env = {**svc.env, **same_ports(svc)}
                    svc.restart_at = None
                    svc.restarts += 1
                    self._spawn(svc)

    def _say(self, svc: Service, message: str) -> None:
        """A line on the launcher's output (unless quiet) and in the service's log."""
        if not self.quiet:
            print(f"partsim up: {message}", flush=True)
        pump = LogPump(open_log(self.log_dir / f"{svc.name}.log"), svc.lines)
        pump.run([f"[partsim up: {message}]".encode()])

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
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


def same_ports(svc: Service) -> dict[str, str]:
    """The environment that starts ``svc`` again where it listened: the ports it bound (the OS's choice
    when it was 0), on the hosts it was given."""
    prefix = f"PARTSIM_{svc.name.upper()}"
    env = {}
    if svc.address:
        host = svc.env.get(f"{prefix}_ADDRESS", LOOPBACK).rsplit(":", 1)[0]
        env[f"{prefix}_ADDRESS"] = f"{host}:{svc.address.rsplit(':', 1)[1]}"
    if svc.metrics:
        env[f"{prefix}_METRICS_PORT"] = svc.metrics.rsplit(":", 1)[1]
    if svc.http:
        env[f"{prefix}_HTTP_PORT"] = svc.http.rstrip("/").rsplit(":", 1)[1]
    return env


def parse_host_port(text: str) -> str:
    if ":" not in text:
        raise InvalidArgument(f"expected HOST:PORT, got {text!r}")
    host, port = text.rsplit(":", 1)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"bad port in {text!r}")
    return f"{host or '127.0.0.1'}:{port}"
