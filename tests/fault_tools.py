"""What tests/test_faults.py does to a running cluster and how it looks at the result: distinct songs to ingest,
a search load that records when each call failed, a job followed through a gateway restart, the catalog's
segments counted over the searcher's own API, health checks, and a size-limited filesystem (tmpfs).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.client import PartsimClient, Stem
from partsim.errors import PartsimError
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.loadtest import code_of
from partsim.v1 import gateway_pb2

SEGMENTS = 2  # each song is 20 s: two whole 10-s segments
SERVICE = "partsim.v1.PartsimService"


def distinct_songs(songs: list[Path], folder: Path, n: int, salt: int) -> list[Path]:
    """``n`` files made from ``songs`` with gains that no other call with another ``salt`` uses: audio that no
    cache has seen, so each one is really embedded."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        data, sr = sf.read(str(songs[i % len(songs)]), dtype="float32")
        path = folder / f"song-{i}.flac"
        sf.write(str(path), data * (0.95 - 0.002 * (salt * n + i)), sr)
        out.append(path)
    return out


def until(what: Callable[[], object], timeout: float, step: float = 0.05):
    """``what()`` once it is truthy (asserting it becomes so within ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(step)
    return got


def health(address: str, service: str = "") -> str:
    """The gateway's grpc.health.v1 answer for ``service`` ("" overall), or the code of the failed call."""
    with grpc.insecure_channel(address) as ch:
        try:
            st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(st.status)


@contextmanager
def search_load(address: str, queries: list[list[Stem]], callers: int = 2):
    """SearchMix callers in the background for the ``with`` block; yields the list of (time.monotonic(), code)
    of every call ("OK" or the failure's code) as it grows."""
    calls: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop(i: int) -> None:
        with PartsimClient(address, timeout=30) as c:
            n = i
            while not stop.is_set():
                try:
                    c.search_mix(queries[n % len(queries)], top_k=10)
                    code = "OK"
                except Exception as exc:  # noqa: BLE001 - recorded: the test's verdict
                    code = code_of(exc)
                    stop.wait(0.1)
                calls.append((time.monotonic(), code))
                n += callers

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(callers)]
    for t in threads:
        t.start()
    try:
        yield calls
    finally:
        stop.set()
        for t in threads:
            t.join(60)


def finished_job(address: str, job: str, timeout: float = 240):
    """The job's status once DONE, asking through whatever gateway answers (it may be restarting)."""
    deadline = time.monotonic() + timeout
    with PartsimClient(address, timeout=10) as c:
        while time.monotonic() < deadline:
            try:
                st = c.get_job(job)
                if st.state == gateway_pb2.JOB_STATE_DONE:
                    return st
            except PartsimError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"job {job} not done within {timeout} s")


def retry_failures(address: str, job: str):
    """Every failed item of a finished ``job`` indexed again (RetryIngestJob); the job's final status."""
    with PartsimClient(address, timeout=30) as c:
        c.retry_ingest_job(job)
    return finished_job(address, job)


def assert_catalog_holds(searcher: str, tracks: list[str], segments: int = SEGMENTS) -> None:
    """Over the searcher's own API: each track is listed with ``segments`` segments, each of them stored and
    none beyond; and the catalog as a whole holds exactly ``segments`` per listed track (nothing duplicated)."""
    with grpc.insecure_channel(searcher) as ch:
        stub = searcher_pb2_grpc.SearcherServiceStub(ch)
        for tid in tracks:
            track = stub.GetTrack(searcher_pb2.GetTrackRequest(track_id=tid), timeout=30).track
            assert track.num_segments == segments, (tid, track.num_segments)
            for i in range(segments):
                stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=i), timeout=30)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=segments), timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stats = stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30)
    assert stats.segments == segments * stats.tracks, stats


@contextmanager
def tmpfs(folder: Path, size_mb: int):
    """A tmpfs of ``size_mb`` MiB mounted on ``folder`` for the ``with`` block; skips where it cannot be
    mounted (mounting needs root, or CAP_SYS_ADMIN in a container)."""
    folder.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if got.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (uid {os.getuid()}): {got.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write ``folder/filler`` until the filesystem has no space left; the file."""
    path = folder / "filler"
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    small = b"\0" * 4096
    with open(path, "ab", buffering=0) as f:  # the last pages too
        try:
            while True:
                f.write(small)
        except OSError:
            pass
    return path
