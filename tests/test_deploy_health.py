"""``partsim health``: the command every container's healthcheck runs (deploy/docker-compose.yml,
the Kubernetes probes use gRPC health directly), against a real ServiceRuntime on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from partsim.cli import main


@pytest.fixture()
def runtime():
    from partsim.internal.v1 import embedder_pb2  # noqa: F401  registers partsim.internal.v1.EmbedderService's descriptor
    from partsim.services.runtime import ServiceRuntime

    rt = ServiceRuntime("health-test", address="127.0.0.1:0", max_message_bytes=1 << 20, metrics_port=None)
    rt.start(["partsim.internal.v1.EmbedderService"])
    yield rt
    rt.stop(grace=0)


def _health(capsys, *argv) -> tuple[int, str, str]:
    code = main(["health", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_health_serving(runtime, capsys):
    runtime.set_serving(True)
    code, out, err = _health(capsys, runtime.address, "--timeout", "5")
    assert (code, err) == (0, "")
    assert out.strip().endswith("SERVING")
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.internal.v1.EmbedderService")
    assert (code, err) == (0, "")


def test_health_not_serving(runtime, capsys):
    # NOT_SERVING until the service has loaded its model (rt.set_serving(True) not called)
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.internal.v1.EmbedderService")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "NOT_SERVING" in err
    runtime.set_serving(True)
    runtime.set_serving(False)
    assert _health(capsys, runtime.address)[0] == 1


def test_health_unknown_service(runtime, capsys):
    runtime.set_serving(True)
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.v1.NoSuchService")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unknown service" in err and "NoSuchService" in err


def test_health_closed_port_is_one_line_and_fast():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "partsim.cli", "health", f"127.0.0.1:{port}", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "unreachable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_health_bad_target_is_a_user_error(capsys):
    code, out, err = _health(capsys, "no-port-here")
    assert code == 2 and err.startswith("partsim: error: expected HOST:PORT")
