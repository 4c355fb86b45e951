"""Faults on real processes (issue 12): ``partsim up``'s launcher (supervising, Redis for the jobs, a tiny separator)
with kill -9 of each service during an ingest job of 30 tracks and a search load; the gateway's health while a
backend is dead; a full disk under the data folder (a size-limited tmpfs); and, without processes, the log pump
and the services' logging on a full disk or an unread pipe.

After each kill the supervisor starts the service again; the job's items all succeed (those that failed while
the service was away are retried with RetryIngestJob), no segment is lost or stored twice (counted over the
searcher's own API), and the searches succeed again.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from partsim.client import PartsimClient
from partsim.cluster import Cluster
from partsim.errors import ResourceExhausted
from partsim.services.loadtest import mix_queries
from partsim.services.logs import LogOutput
from partsim.supervisor import LogPump, RestartPolicy

from .fault_tools import (
    SERVICE,
    assert_catalog_holds,
    distinct_songs,
    fill,
    finished_job,
    health,
    retry_failures,
    search_load,
    tmpfs,
    until,
)
from .tiny_separator import make_tiny_repo

JOB_TRACKS = 30
DOWN = ("Unavailable", "UNAVAILABLE", "DeadlineExceeded", "DEADLINE_EXCEEDED")  # what a caller may see meanwhile


class FullDisk:
    """A log file on a full disk: every write fails with ENOSPC."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        pass


def test_the_log_pump_keeps_draining_a_child_whose_log_is_on_a_full_disk():
    lines = 20_000  # ~1.3 MB: twenty times what a pipe holds
    child = subprocess.Popen(
        [sys.executable, "-c", f"for i in range({lines}): print('x' * 60, i)"], stdout=subprocess.PIPE
    )
    pump = LogPump(FullDisk(), [])
    thread = threading.Thread(target=pump.run, args=(child.stdout,))
    thread.start()
    assert child.wait(timeout=60) == 0  # it never blocked on a full pipe
    thread.join(30)
    assert not thread.is_alive() and pump.dropped == lines and pump.error == os.strerror(errno.ENOSPC)
    assert pump.lines[-1].endswith(f" {lines - 1}")


def test_the_log_pump_says_how_many_lines_it_dropped_once_the_disk_has_space(tmp_path):
    class FillsThenFrees(io.FileIO):
        failures = 3

        def write(self, data):
            if self.failures:
                self.failures -= 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    pump = LogPump(FillsThenFrees(tmp_path / "x.log", "ab"), [])
    pump.run(f"line {i}\n".encode() for i in range(6))
    assert (tmp_path / "x.log").read_text().splitlines() == [
        "[partsim up: 3 log lines dropped: No space left on device]",
        "line 3",
        "line 4",
        "line 5",
    ]
    assert pump.dropped == 3


def test_restarts_wait_longer_each_time_up_to_a_limit_and_start_over_after_a_stable_run():
    policy = RestartPolicy(initial=0.5, maximum=30.0, stable=60.0)
    delays, delay = [], 0.0
    for _ in range(9):
        delay = policy.delay(delay, ran_for=1.0)
        delays.append(delay)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay(30.0, ran_for=61.0) == 0.5


def _logger(out: LogOutput) -> logging.Logger:
    logger = logging.getLogger(f"partsim.test.{id(out)}")
    logger.propagate = False
    logger.addHandler(out.enqueue)
    return logger


def test_service_logging_on_a_full_disk_goes_on_and_then_says_how_much_was_lost(capfd):
    class Stream(io.StringIO):
        full = True

        def write(self, s):
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(s)

    stream = Stream()
    out = LogOutput(stream)
    logger = _logger(out)
    for i in range(100):
        logger.warning("record %d", i)
    until(lambda: out.writer.lost == 100, 10)
    stream.full = False
    logger.warning("space again")
    out.close()
    assert (
        stream.getvalue().splitlines()[0].endswith("100 log records were lost (the log output failed or was not read)")
    )
    assert stream.getvalue().splitlines()[1].endswith("space again")
    assert capfd.readouterr().err == ""  # no traceback per record on the (full) standard error


def test_service_logging_never_blocks_on_an_output_that_nobody_reads():
    read, write = os.pipe()
    stream = open(write, "w")  # closed below
    out = LogOutput(stream, capacity=100)
    logger = _logger(out)
    start = time.monotonic()
    for i in range(2000):
        logger.warning("%d %s", i, "x" * 1000)  # 2 MB: the pipe holds 64 KiB, then its writer blocks
    assert time.monotonic() - start < 10 and out.enqueue.dropped > 0
    os.close(read)  # the writer's blocked write fails (EPIPE) and it goes on
    out.close()
    assert out.lost > 0
    with contextlib.suppress(BrokenPipeError):  # what is still buffered has nowhere to go
        stream.close()


# -- a supervised cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def songs(render_corpus) -> list:
    """Ten rendered songs of 20 s (two segments each): their mix files."""
    corpus = render_corpus("faults", songs=10, seconds=20.0, seed=31)
    return sorted(p / "mix.flac" for p in corpus.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def faulty(songs, redis_url, tmp_path_factory):
    """A supervised cluster (restarts after 1 s) on Redis with a tiny separator and four indexed songs; the
    cluster, the songs and a work folder (an allowed root)."""
    work = tmp_path_factory.mktemp("faults")
    make_tiny_repo(work / "seprepo", name="tiny-sep")
    env = {"PARTSIM_SEPARATOR_REPO": str(work / "seprepo"), "PARTSIM_SEPARATOR_MODEL": "tiny-sep"}
    with Cluster(
        work / "data",
        gateway="127.0.0.1:0",
        redis_url=redis_url,
        allowed_roots=[work],
        quiet=True,
        extra_env=env,
        restart=RestartPolicy(initial=1.0),
    ) as cluster:
        with PartsimClient(cluster.gateway, timeout=120) as c:
            c.wait_ready(300)
            for i in range(4):
                c.index_bytes(songs[i].read_bytes(), f"base-{i}")
        yield cluster, songs, work


def kill(cluster: Cluster, name: str) -> int:
    """kill -9 of the service; its restart count before."""
    svc = cluster.service(name)
    restarts = svc.restarts
    os.kill(svc.proc.pid, signal.SIGKILL)
    return restarts


def restarted(cluster: Cluster, name: str, before: int, timeout: float = 120) -> None:
    svc = cluster.service(name)
    until(lambda: svc.restarts > before and svc.proc.poll() is None and svc.up.is_set(), timeout)
    with PartsimClient(cluster.gateway) as c:
        c.wait_ready(timeout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_gateway_is_not_serving_while_a_required_backend_is_dead_and_serving_once_it_is_restarted(faulty):
    cluster, _, _ = faulty
    gw = cluster.gateway
    until(lambda: health(gw, f"{SERVICE}/separator") == "SERVING", 60)  # the gateway did not wait for it
    assert health(gw) == "SERVING"
    for victim, other in (("searcher", "embedder"), ("embedder", "searcher")):
        cluster.service(victim).up.clear()
        before, killed = kill(cluster, victim), time.monotonic()
        until(lambda: health(gw) == "NOT_SERVING", 10, step=0.02)
        assert time.monotonic() - killed < 5
        assert health(gw, SERVICE) == "NOT_SERVING" and health(gw, f"{SERVICE}/{victim}") == "NOT_SERVING"
        assert health(gw, f"{SERVICE}/{other}") == "SERVING"  # the operator sees which one
        assert health(gw, "liveness") == "SERVING"  # not ready, but alive: a liveness probe leaves it be
        restarted(cluster, victim, before)
        assert health(gw) == health(gw, SERVICE) == health(gw, f"{SERVICE}/{victim}") == "SERVING"
    # the separator is optional: only its own name says it is away
    cluster.service("separator").up.clear()
    before = kill(cluster, "separator")
    until(lambda: health(gw, f"{SERVICE}/separator") == "NOT_SERVING", 10, step=0.02)
    assert health(gw) == health(gw, SERVICE) == "SERVING"
    restarted(cluster, "separator", before)
    until(lambda: health(gw, f"{SERVICE}/separator") == "SERVING", 30)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("victim", ["embedder", "searcher", "gateway", "separator"])
def test_kill_9_during_ingest_and_search_loses_and_duplicates_no_segment(faulty, victim):
    cluster, songs, work = faulty
    salt = ["embedder", "searcher", "gateway", "separator"].index(victim)
    files = distinct_songs(songs, work / victim, JOB_TRACKS, salt)
    items = [{"track_id": f"{victim}-{i}", "uri": str(f)} for i, f in enumerate(files)]
    queries = mix_queries([f"base-{i}" for i in range(4)])
    with search_load(cluster.gateway, queries) as calls:
        until(lambda: calls and calls[-1][1] == "OK", 60)
        with PartsimClient(cluster.gateway, timeout=60) as c:
            job = c.submit_job(items)
            st = until(lambda: (s := c.get_job(job)).succeeded + s.failed >= 3 and s, 120, step=0.02)
        cluster.service(victim).up.clear()
        before = kill(cluster, victim)
        killed = time.monotonic()
        assert st.succeeded + st.failed < JOB_TRACKS, "the job ended before the kill: nothing was tested"
        restarted(cluster, victim, before)
        recovered = time.monotonic()
        st = finished_job(cluster.gateway, job)
        assert st.total == JOB_TRACKS and st.succeeded + st.failed == JOB_TRACKS  # every item accounted for
        if st.failed:
            print(f"{victim}: {st.failed} items failed while it was away, retried: {[f.error for f in st.failures]}")
            st = retry_failures(cluster.gateway, job)
        assert (st.total, st.succeeded, st.failed) == (JOB_TRACKS, JOB_TRACKS, 0), st
        until(lambda: sum(1 for t, code in calls if t > time.monotonic() - 1 and code == "OK") >= 2, 60)
        settled = time.monotonic()
        time.sleep(1.0)
    down = [code for t, code in calls if code != "OK"]
    assert set(down) <= set(DOWN), down  # while it was away: unavailable, nothing else
    assert all(killed - 1 <= t <= settled for t, code in calls if code != "OK")
    assert [code for t, code in calls if t > settled] and all(code == "OK" for t, code in calls if t > settled)
    print(f"{victim}: back {recovered - killed:.1f} s after kill -9; {len(calls)} searches, {len(down)} failed")
    assert_catalog_holds(cluster.service("searcher").address, [it["track_id"] for it in items])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_reopened_catalog_holds_every_track_once(faulty):
    """After all the kills: the searcher started again from its files (kill -9 once more) lists every track with
    all its segments, none twice."""
    cluster, _, _ = faulty
    cluster.service("searcher").up.clear()
    restarted(cluster, "searcher", kill(cluster, "searcher"))
    with PartsimClient(cluster.gateway, timeout=60) as c:
        tracks = [t.track_id for t in c.list_tracks()]
    assert len(tracks) >= 4
    assert_catalog_holds(cluster.service("searcher").address, tracks)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_full_disk_under_the_data_folder_fails_clearly_without_hanging_and_recovers(songs, tmp_path):
    """The data folder (the searcher's catalog, the gateway's job store, the logs) on a 48-MiB tmpfs, filled up.
    The gateway keeps the tracks' audio elsewhere here, so that an IndexTrack reaches the searcher's full disk
    (with the audio on it, the audio store is the first to refuse: RESOURCE_EXHAUSTED likewise)."""
    roots = [songs[0].parent.parent]
    audio = {"PARTSIM_GATEWAY_AUDIO_DIR": str(tmp_path / "audio")}
    with tmpfs(tmp_path / "data", 48) as data:
        with Cluster(
            data, gateway="127.0.0.1:0", allowed_roots=roots, quiet=True, separator=False, extra_env=audio
        ) as cluster:
            with PartsimClient(cluster.gateway, timeout=60) as c:
                c.wait_ready(300)
                c.index_bytes(songs[0].read_bytes(), "before")
                filler = fill(data)
                start = time.monotonic()
                with pytest.raises(ResourceExhausted) as info:
                    c.index_bytes(songs[1].read_bytes(), "during")
                assert time.monotonic() - start < 30  # no hang, and not retried as if a backend were away
                print(f"IndexTrack on a full disk: {info.value}")
                with pytest.raises(ResourceExhausted):
                    c.submit_job([{"track_id": "job", "uri": str(songs[2])}])
                assert health(cluster.gateway) == "SERVING"  # every service still answers
                assert c.search_mix(mix_queries(["before", "before"])[0], top_k=5)  # reads still work
                for i in range(50):  # the launcher's log thread meets the full disk too, and goes on
                    with pytest.raises(ResourceExhausted):
                        c.index_bytes(songs[1].read_bytes(), f"during-{i}")
                filler.unlink()
                c.index_bytes(songs[1].read_bytes(), "after")
                job = c.submit_job([{"track_id": "job", "uri": str(songs[2])}])
                st = finished_job(cluster.gateway, job)
                assert (st.succeeded, st.failed) == (1, 0)
                assert sorted(t.track_id for t in c.list_tracks()) == ["after", "before", "job"]
            assert_catalog_holds(cluster.service("searcher").address, ["before", "after", "job"])
            assert all(s.restarts == 0 and s.proc.poll() is None for s in cluster.services)
            dropped = {s.name: s.pump.dropped for s in cluster.services if s.pump is not None}
            print(f"log lines dropped on the full disk: {dropped}")
