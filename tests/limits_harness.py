"""The limits tests' harness (tests/test_security_limits*.py): what a failed call's google.rpc.Status details
say, a tmpfs to fill up (``tiny_fs``), a TCP relay that stalls or refuses like a partitioned or dead host, and a
stack of real services (an embedder with the shipped model, a searcher on Milvus Lite, gateways in front)."""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from google.rpc import error_details_pb2

from partsim.client import PartsimClient
from partsim.services.status import rich_status

HUGE_TITLE = "t" * (8 << 20)  # 8 MB
MANY_TAGS = {f"k{i}": "v" for i in range(50_000)}


def wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def details(exc: grpc.RpcError) -> dict:
    """The google.rpc.Status details of a failed call, by kind: ErrorInfo, BadRequest, RetryInfo."""
    status = rich_status(exc)
    assert status is not None, f"{exc.code()} without google.rpc.Status details: {exc.details()}"
    assert status.code == exc.code().value[0] and status.message == exc.details()
    out = {}
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
        for any_ in status.details:
            if any_.Is(kind.DESCRIPTOR):
                out[kind.__name__] = msg = kind()
                any_.Unpack(msg)
    return out


def rpc_error(call, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value


@pytest.fixture
def tiny_fs(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` (e.g. "1m") at a new folder, unmounted after the test; ``grow(size)``
    remounts it larger. Skips where mounting is not allowed (not root)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root; the disk-full paths are tested with real ENOSPC errors above")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    def grow(folder: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)

    mount.grow = grow
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Leave no free byte on the file system of ``folder``."""
    with open(folder / "ballast", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


class Relay:
    """A TCP relay on 127.0.0.1 to ``target``: passes bytes both ways; :meth:`hold` stops passing them (a host
    that stops answering), :meth:`release` lets them through again, :meth:`close` refuses connections."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.passing = threading.Event()
        self.passing.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.passing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def hold(self) -> None:
        self.passing.clear()

    def release(self) -> None:
        self.passing.set()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not, on Linux)
        except OSError:
            pass
        self.listener.close()
        self.passing.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Stack:
    """A real embedder (the shipped model) and searcher, and gateways in front of them (:meth:`gateway`)."""

    def __init__(self, folder: Path):
        from partsim.services.embedder.config import EmbedderConfig
        from partsim.services.embedder.server import EmbedderServer
        from partsim.services.searcher.config import SearcherConfig
        from partsim.services.searcher.server import SearcherServer

        self.folder = folder
        self.embedder = EmbedderServer(EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, grace_seconds=1)).start()
        self.searcher = SearcherServer(
            SearcherConfig(address="127.0.0.1:0", data_dir=str(folder / "searcher"), metrics_port=-1, grace_seconds=1)
        ).start()
        self.servers: list = []

    def gateway(self, searcher: str | None = None, **fields):
        from partsim.services.gateway.config import GatewayConfig
        from partsim.services.gateway.server import GatewayServer

        n = len(self.servers)
        cfg = GatewayConfig(
            address="127.0.0.1:0",
            embedder=self.embedder.address,
            searcher=searcher or self.searcher.address,
            data_dir=str(self.folder / f"gateway{n}"),
            metrics_port=0,
            metrics_host="127.0.0.1",
            deadline_seconds=30,
            **fields,
        )
        server = GatewayServer(cfg).start()
        self.servers.append(server)
        with PartsimClient(server.address) as c:
            c.wait_ready(60)
        return server

    def close(self) -> None:
        for s in [*self.servers, self.embedder, self.searcher]:
            s.stop(0)


INTERNAL_WORDS = [
    re.compile(r"\d+\.\d+\.\d+\.\d+"),  # an IP address
    re.compile(r"\w:\d{2,5}\b"),  # host:port
    re.compile(r"(?<![\w.])/(tmp|home|root|var|data|srv|etc|usr|opt|work|proc)\b"),  # an absolute path
    re.compile(r"\blocalhost\b|\bipv[46]:"),
]


def assert_says_nothing_internal(message: str, sent: str = "") -> None:
    said = message.replace(sent, "<what the caller sent>") if sent else message
    for pattern in (*INTERNAL_WORDS, re.compile(re.escape(socket.gethostname()))):
        assert not pattern.search(said), (pattern.pattern, message)
