"""Shared test helpers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository

# The two Debian SF2 sets load in about half a second; MuseScore's SF3 takes seconds, so only
# the tests of the defaults use it.
FAST_SOUNDFONTS = ["/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2"]


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``partsim`` command as a user would (in ``env``, or this process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "partsim.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def corpus_make_args(out, songs=1, seconds=8, seed=1) -> list[str]:
    """The words of ``partsim corpus make`` for a small corpus in ``out``; options such as --soundfont follow."""
    return ["corpus", "make", "--out", str(out), "--songs", str(songs), "--seconds", str(seconds), "--seed", str(seed)]


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, one line on stderr naming the problem (each of ``fragments`` in it), no traceback; the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("partsim: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_script(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python scripts/<name> ARGS`` of the repository (a generator's ``--check``, say), its output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, timeout=timeout
    )


def scrape_metrics(port: int) -> str:
    """The Prometheus text a service serves on ``http://127.0.0.1:<port>/metrics``."""
    import urllib.request

    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def handled_calls(text: str, method: str) -> dict[str, float]:
    """``grpc_server_handled_total`` of one gRPC method in a metrics text, by ``grpc_code``."""
    calls: dict[str, float] = {}
    for labels, value in re.findall(r"^grpc_server_handled_total\{([^}]*)\} (\S+)$", text, re.M):
        if f'grpc_method="{method}"' in labels:
            code = re.search(r'grpc_code="([^"]*)"', labels).group(1)
            calls[code] = calls.get(code, 0.0) + float(value)
    return calls


def serves_until_sigterm(proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
    """A service's process (``python -m partsim.services.<name>``, stdout piped as text) prints "<name>
    serving on ADDR", its health turns SERVING (NOT_SERVING while it loads) and SIGTERM ends it with exit 0.
    The process is killed if it is still running at the end."""
    import re
    import signal
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        address, lines = None, []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and address is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(rf"{name} serving on (\S+)", line)  # printed by ServiceRuntime.start
            address = found and found.group(1)
        assert address, "".join(lines)
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        status = None
        while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def service_configs() -> dict[str, type]:
    """Each service's configuration dataclass, by service name (its env prefix is PARTSIM_<NAME>)."""
    from partsim.services.embedder.config import EmbedderConfig
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.searcher.config import SearcherConfig
    from partsim.services.separator.config import SeparatorConfig

    return {
        "gateway": GatewayConfig,
        "embedder": EmbedderConfig,
        "searcher": SearcherConfig,
        "separator": SeparatorConfig,
    }


def read_audio(path):
    """A corpus FLAC file as float32 (asserting the corpus rate, 44.1 kHz)."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32")
    assert sr == 44100
    return data


def song_metadata(root, sid: str) -> dict:
    """``root/sid/metadata.json`` of a corpus song."""
    import json

    return json.loads((Path(root) / sid / "metadata.json").read_text())
