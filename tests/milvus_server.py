"""A Milvus server process for tests: ``milvus-lite server`` on a loopback port (OS-picked), stopped after
the module (the ``milvus_server`` fixture: its URI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    exe = Path(sys.executable).with_name("milvus-lite")
    if not exe.exists() and shutil.which("milvus-lite") is None:
        pytest.skip("milvus-lite's server command is not installed")
    data = tmp_path_factory.mktemp("milvus-server")
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [
                str(exe if exe.exists() else "milvus-lite"),
                "server",
                "--data-dir",
                str(data),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    up = True
                    break
            except OSError:
                time.sleep(0.2)
        if up:
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("milvus-lite server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
