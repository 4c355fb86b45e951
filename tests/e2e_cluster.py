"""The running cluster that tests/test_cluster_e2e_*.py share: real processes (``partsim up``'s launcher) in
front of a real Redis server, and a catalog of FluidSynth-rendered songs indexed through it.

The fixtures are session-scoped (tests/conftest.py imports them) so that the cluster starts and the catalog is
rendered and indexed once for all those files, as it was once for the single file they came from; so is the
second cluster, with a tiny separator (``cluster_with_separator``), that the GetStems and web app tests share.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from partsim.client import PartsimClient
from partsim.cluster import Cluster

from .redis_server import RedisServer

SEG = 10.0


@pytest.fixture(scope="session")
def catalog(render_corpus) -> Path:
    return render_corpus("catalog", songs=8, seconds=32.0, seed=11)


@pytest.fixture(scope="session")
def redis():
    """``redis://127.0.0.1:PORT/0`` of a redis-server kept for the cluster's life (skips without one)."""
    with RedisServer() as srv:
        yield srv.url


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, catalog, redis):
    data = tmp_path_factory.mktemp("cluster")
    with Cluster(
        data, gateway="127.0.0.1:0", redis_url=redis, allowed_roots=[catalog], quiet=True, separator=False
    ) as c:
        with PartsimClient(c.gateway) as client:
            client.wait_ready(300)
        yield c


@pytest.fixture(scope="session")
def cluster_with_separator(tmp_path_factory, catalog):
    """A second cluster, shared by the tests that need GetStems (tests/test_cluster_e2e_up.py and _http.py, the
    web app's through tests/web_harness.py): no Redis (the embedded defaults: in-process cache, SQLite jobs), a
    tiny separator and HTTP on (any port). Each test indexes the songs it uses under their own names."""
    from .tiny_separator import make_tiny_repo

    repo = tmp_path_factory.mktemp("seprepo")
    make_tiny_repo(repo, name="tiny-sep")
    data = tmp_path_factory.mktemp("cluster-sep")
    env = {"PARTSIM_SEPARATOR_REPO": str(repo), "PARTSIM_SEPARATOR_MODEL": "tiny-sep"}
    with Cluster(data, gateway="127.0.0.1:0", allowed_roots=[catalog], quiet=True, extra_env=env) as c:
        with PartsimClient(c.gateway) as client:
            client.wait_ready(300)
            client.wait_ready(300, backend="separator")  # optional: the gateway serves before it
        assert c.http.startswith("http://"), c.http  # the launcher turns HTTP on (any port)
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    with PartsimClient(cluster.gateway, timeout=120) as c:
        yield c


def songs(catalog: Path) -> list[Path]:
    return sorted(p for p in catalog.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def indexed(client, catalog) -> dict[str, np.ndarray]:
    """Index every song; return each song's (segments, parts, dim) vectors from EmbedParts."""
    vectors = {}
    for song in songs(catalog):
        data = (song / "mix.flac").read_bytes()
        resp = client.index_bytes(data, song.name, title=song.name, tags={"corpus": "e2e"})
        assert resp.track.num_segments == 3  # 32 s -> three whole 10-s segments
        emb = client.embed_parts(data, SEG, SEG)
        vectors[song.name] = (
            np.array([[p.vector for p in s.parts] for s in emb.segments], dtype=np.float64),
            np.array([[p.present for p in s.parts] for s in emb.segments]),
        )
    return vectors


def wav_clip(path: Path, start: float, seconds: float) -> bytes:
    """``seconds`` of an audio file from ``start`` on, as WAV bytes."""
    audio, sr = sf.read(str(path), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio[int(start * sr) : int((start + seconds) * sr)], sr, format="WAV")
    return buf.getvalue()


def gateway_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    """``python -m partsim ARGS --gateway <the cluster's gateway>``, as other tools run it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "partsim", *args, "--gateway", cluster.gateway],
        capture_output=True,
        text=True,
        timeout=300,
    )
