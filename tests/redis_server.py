"""A throwaway redis-server for tests: Debian's binary on 127.0.0.1, a port the OS picks.

Use it as a context manager (``with RedisServer() as srv: srv.url``) or through the pytest
fixtures at the bottom (``redis_server`` / ``redis_url``, module scope). To make them available
to every test module, add to tests/conftest.py::

    from .redis_server import redis_server, redis_url  # noqa: F401

``RedisServer(password="...")`` starts it with ``--requirepass`` (``url`` then carries the password);
``RedisServer(tls=(cert, key, ca))`` serves TLS only (``url`` is ``rediss://``; clients need the CA).

Without /usr/bin/redis-server (or ``$PARTSIM_TEST_REDIS_SERVER``) the fixtures skip with a reason.
Nothing is persisted (``--save "" --appendonly no``); the working directory and log file live
in a temporary folder that is removed on stop. The server is stopped by its own PID only.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REDIS_SERVER = os.environ.get("PARTSIM_TEST_REDIS_SERVER", "/usr/bin/redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, timeout: float = 0.5, password: str | None = None, ca: str | None = None) -> bool:
    """True when the server on ``port`` answers PING with +PONG (raw RESP, no client library; AUTH first
    with ``password``, over TLS trusting ``ca`` with ``ca``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname="127.0.0.1") if ca else raw
            s.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
            reply = b""
            while b"PONG" not in reply and b"-" not in reply and len(reply) < 256:
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return b"+PONG" in reply
    except OSError:
        return False


class RedisServer:
    """One redis-server process. ``start()`` / ``stop()`` / ``restart()``; ``url`` once started."""

    def __init__(
        self,
        binary: str = REDIS_SERVER,
        start_timeout: float = 10.0,
        attempts: int = 5,
        password: str | None = None,
        tls: tuple[str, str, str] | None = None,
    ):
        self.binary = binary
        self.password = password
        self.tls = tls
        self.start_timeout = start_timeout
        self.attempts = attempts
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("redis-server is not started")
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        return self._dir / "redis.log" if self._dir else None

    def start(self) -> RedisServer:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            pytest.skip(
                f"redis-server not found at {self.binary} (apt-get install redis-server, "
                f"or set PARTSIM_TEST_REDIS_SERVER)"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="partsim-redis-"))
        last = ""
        for _ in range(self.attempts):
            if self._launch(_free_port()):
                return self
            last = self._log_tail()
            self.port = None
        self.stop()
        raise RuntimeError(f"redis-server did not start after {self.attempts} attempts; log:\n{last}")

    def restart(self) -> RedisServer:
        """Start again on the same port after :meth:`stop` (e.g. to test recovery from an outage)."""
        port = self.port
        self._terminate()
        if port is None or not self._launch(port):
            raise RuntimeError(f"redis-server did not restart on port {port}; log:\n{self._log_tail()}")
        return self

    def _launch(self, port: int) -> bool:
        assert self._dir is not None
        port_args = ["--port", str(port)]
        if self.tls:
            cert, key, ca = self.tls
            port_args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key]
            port_args += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        cmd = [
            self.binary,
            *port_args,
            *(["--requirepass", self.password] if self.password else []),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self._dir / "redis.log"),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited: most likely the port was taken meanwhile
                self.proc = None
                return False
            if _ping(port, password=self.password, ca=self.tls[2] if self.tls else None):
                self.port = port
                return True
            time.sleep(0.02)
        self._terminate()
        return False

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the process (keeps ``port`` so :meth:`restart` can reuse it)."""
        self._terminate()

    def cleanup(self) -> None:
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.port = None

    def _log_tail(self) -> str:
        try:
            return (self._dir / "redis.log").read_text(errors="replace")[-2000:] if self._dir else ""
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


@pytest.fixture(scope="module")
def redis_server():
    """A running :class:`RedisServer` shared by one test module (skips without redis-server)."""
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    """``redis://127.0.0.1:PORT/0`` of a module-scoped redis-server."""
    return redis_server.url
