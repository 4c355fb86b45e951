"""Gateway ingest jobs (Redis Streams and SQLite back ends) and the embedding cache, against a real
redis-server (tests/redis_server.py)."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from prometheus_client import CollectorRegistry

from partsim.errors import InvalidArgument, NotFound, Unavailable
from partsim.services.gateway.cache import MemoryCache, RedisCache, cache_key, make_cache
from partsim.services.gateway.jobs import IngestItem, JobQueue, make_job_queue

from .redis_server import RedisServer, redis_server, redis_url  # noqa: F401

POLL = 0.02
UUID4_HEX = r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"  # uuid.uuid4().hex: version 4, RFC 4122 variant


def _meta(i: int) -> dict:
    return {"title": f"song {i}", "artist": "band", "tags": {"genre": "test"}}


def _items(n: int, audio_every: int = 2) -> list[IngestItem]:
    return [
        IngestItem(f"t{i}", _meta(i), audio=b"RIFF" + bytes([i]) * 100)
        if i % audio_every == 0
        else IngestItem(f"t{i}", _meta(i), uri=f"/music/t{i}.wav")
        for i in range(n)
    ]


class Backend:
    """Opens queues on one store (a flushed Redis or a tmp data_dir) and closes them after the test."""

    def __init__(self, kind: str, url: str | None, data_dir: Path):
        self.kind, self.url, self.data_dir = kind, url, data_dir
        self.opened: list[JobQueue] = []

    def queue(self, consumer: str = "gateway-0", **kw) -> JobQueue:
        q = make_job_queue(self.url, self.data_dir if self.url is None else None, consumer, **kw)
        self.opened.append(q)
        return q

    def uploads_left(self) -> int:
        if self.url:
            return len(redis.Redis.from_url(self.url).keys("partsim:upload:*"))
        return len(list((self.data_dir / "ingest-spool").iterdir()))


@pytest.fixture(params=["redis", "local"])
def backend(request, tmp_path):
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
    b = Backend(request.param, url, tmp_path / "data")
    yield b
    for q in b.opened:
        q.close()


class Recorder:
    """A process() that records calls and fails the track ids it is told to."""

    def __init__(self, fail: dict[str, Exception] | None = None):
        self.fail = fail or {}
        self.calls: list[IngestItem] = []
        self.lock = threading.Lock()

    def __call__(self, item: IngestItem) -> None:
        with self.lock:
            self.calls.append(item)
        if item.track_id in self.fail:
            raise self.fail[item.track_id]

    def ids(self) -> list[str]:
        return sorted(c.track_id for c in self.calls)


def run_until_done(q: JobQueue, job_id: str, process, threads: int = 1, timeout: float = 10.0):
    stop = threading.Event()
    workers = [threading.Thread(target=q.work, args=(process, stop, POLL), daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + timeout
    try:
        while q.get(job_id).state != "done":
            assert time.monotonic() < deadline, f"job not done: {q.get(job_id)}"
            time.sleep(POLL)
    finally:
        stop.set()
        for w in workers:
            w.join(5)
    assert not any(w.is_alive() for w in workers)
    return q.get(job_id)


def test_submit_work_end_to_end(backend):
    q = backend.queue()
    items = _items(4)
    t0 = time.time()
    job = q.submit(items)
    assert re.fullmatch(UUID4_HEX, job), job
    st = q.get(job)
    assert (st.state, st.total, st.succeeded, st.failed, st.failures) == ("queued", 4, 0, 0, [])
    assert t0 <= st.created_at <= st.updated_at <= time.time()
    assert backend.uploads_left() == 2

    states = []
    rec = Recorder()

    def process(item):
        states.append(q.get(job).state)
        rec(item)

    st = run_until_done(q, job, process)
    assert (st.state, st.total, st.succeeded, st.failed) == ("done", 4, 4, 0)
    assert states[0] == "running"
    assert {c.track_id: c for c in rec.calls} == {it.track_id: it for it in items}  # bytes, uri, metadata intact
    assert st.updated_at >= st.created_at
    assert q.depth() == 0 and q.lag_seconds() == 0.0
    assert backend.uploads_left() == 0  # uploads deleted on acknowledgement


def test_every_submission_gets_its_own_job_id(backend):
    q = backend.queue()
    ids = [q.submit(_items(1)) for _ in range(3)]
    assert all(re.fullmatch(UUID4_HEX, j) for j in ids), ids
    assert len(set(ids)) == 3
    assert [q.get(j).job_id for j in ids] == ids


def test_failures_recorded_with_messages(backend):
    q = backend.queue()
    rec = Recorder(fail={"t1": InvalidArgument("t1.wav: not an audio file"), "t2": ValueError("boom")})
    job = q.submit(_items(3))
    st = run_until_done(q, job, rec)
    assert (st.state, st.succeeded, st.failed) == ("done", 1, 2)
    assert sorted(st.failures) == [("t1", "t1.wav: not an audio file"), ("t2", "internal error: ValueError: boom")]
    assert backend.uploads_left() == 1  # the failed t2's upload, kept for RetryIngestJob until the job expires


def test_unknown_job_and_bad_submissions(backend):
    q = backend.queue()
    with pytest.raises(NotFound, match="no ingest job"):
        q.get("0" * 32)
    with pytest.raises(InvalidArgument, match="at least one item"):
        q.submit([])
    with pytest.raises(InvalidArgument, match="exactly one of uri or audio"):
        q.submit([IngestItem("t", _meta(0), uri="/a.wav", audio=b"x")])
    with pytest.raises(InvalidArgument, match="exactly one of uri or audio"):
        q.submit([IngestItem("t", _meta(0))])
    assert q.depth() == 0


def test_crash_mid_item_is_redelivered_after_restart(backend):
    """process() dies (SystemExit) on the 2nd item: a new queue object (restarted gateway) finishes the job."""
    q1 = backend.queue()
    job = q1.submit(_items(3))
    seen = []

    def crashing(item):
        seen.append(item.track_id)
        if len(seen) == 2:
            raise SystemExit("gateway killed")

    with pytest.raises(SystemExit):
        q1.work(crashing, threading.Event(), POLL)
    st = q1.get(job)
    assert (st.state, st.succeeded, st.failed) == ("running", 1, 0)
    assert q1.depth() == 2
    q1.close()

    q2 = backend.queue()  # same consumer name, as after a restart: its pending item comes back at once
    rec = Recorder()
    st = run_until_done(q2, job, rec, timeout=5)
    assert (st.state, st.total, st.succeeded, st.failed) == ("done", 3, 3, 0)
    assert rec.ids() == sorted(seen[1:] + ["t2"])  # the crashed item again, plus the untouched one
    assert q2.depth() == 0 and backend.uploads_left() == 0


def test_lost_ack_after_accounting_is_not_double_counted(backend, monkeypatch):
    """Dying between accounting and acknowledging: the item is redelivered but not counted (or processed) twice."""
    q1 = backend.queue()
    job = q1.submit(_items(2))

    def die(d):
        raise SystemExit("died before XACK")

    monkeypatch.setattr(q1, "_ack", die)
    rec1 = Recorder(fail={"t0": InvalidArgument("bad t0")})
    with pytest.raises(SystemExit):
        q1.work(rec1, threading.Event(), POLL)
    assert rec1.ids() == ["t0"]
    st = q1.get(job)
    assert (st.succeeded, st.failed, st.failures) == (0, 1, [("t0", "bad t0")])
    q1.close()

    q2 = backend.queue()
    rec2 = Recorder()
    st = run_until_done(q2, job, rec2)
    assert (st.state, st.total, st.succeeded, st.failed, st.failures) == ("done", 2, 1, 1, [("t0", "bad t0")])
    assert rec2.ids() == ["t1"]  # t0 was already accounted: acknowledged without processing
    assert q2.depth() == 0 and backend.uploads_left() == 1  # the failed t0's upload, kept for a retry


def test_stale_claim_is_taken_over_and_counted_once(backend):
    """A claim idle past the visibility timeout goes to another consumer; the slow first one still
    finishes later, and the item counts once."""
    slow = backend.queue("gateway-0", visibility_timeout=0.2)
    other = backend.queue("gateway-1", visibility_timeout=0.2)
    job = slow.submit(_items(1))
    release = threading.Event()
    rec_slow = Recorder()

    def stuck(item):
        rec_slow(item)
        release.wait(10)

    stop = threading.Event()
    t = threading.Thread(target=slow.work, args=(stuck, stop, POLL), daemon=True)
    t.start()
    while not rec_slow.calls:
        time.sleep(POLL)
    rec_other = Recorder()
    st = run_until_done(other, job, rec_other, timeout=5)
    assert rec_other.ids() == ["t0"]
    assert (st.succeeded, st.failed) == (1, 0)
    release.set()  # the slow worker completes too: its accounting is deduplicated
    stop.set()
    t.join(5)
    st = slow.get(job)
    assert (st.state, st.total, st.succeeded, st.failed) == ("done", 1, 1, 0)
    assert slow.depth() == 0


def test_depth_and_lag(backend):
    q = backend.queue()
    assert q.depth() == 0 and q.lag_seconds() == 0.0
    job = q.submit(_items(3))
    time.sleep(0.1)
    assert q.depth() == 3
    assert 0.08 <= q.lag_seconds() < 5
    run_until_done(q, job, Recorder())
    assert q.depth() == 0 and q.lag_seconds() == 0.0


def test_several_worker_threads(backend):
    q = backend.queue()
    jobs = [q.submit(_items(6)), q.submit(_items(5))]
    rec = Recorder(fail={"t3": NotFound("no such file: t3")})
    for job, n in zip(jobs, (6, 5)):
        st = run_until_done(q, job, rec, threads=3)
        assert (st.total, st.succeeded, st.failed) == (n, n - 1, 1)
    assert len(rec.calls) == 11  # nothing redelivered without a crash or a timeout
    assert q.depth() == 0


@pytest.mark.slow
def test_finished_jobs_expire(backend):
    q = backend.queue(job_ttl_seconds=1)
    done = q.submit(_items(1))
    run_until_done(q, done, Recorder())
    pending = q.submit(_items(1))  # unfinished jobs never expire
    if backend.url:
        r = redis.Redis.from_url(backend.url)
        assert 0 < r.ttl(f"partsim:job:{{{done}}}") <= 1 and r.ttl(f"partsim:job:{{{pending}}}") == -1
    time.sleep(1.1)
    with pytest.raises(NotFound):
        q.get(done)
    assert q.get(pending).state == "queued"


@pytest.mark.slow
def test_redis_outage_worker_survives_and_submit_is_unavailable(tmp_path, caplog):
    with RedisServer() as srv:
        q = make_job_queue(srv.url, None)
        job = q.submit(_items(1, audio_every=1))
        stop = threading.Event()
        rec = Recorder()
        srv.stop()
        t = threading.Thread(target=q.work, args=(rec, stop, POLL), daemon=True)
        with caplog.at_level(logging.WARNING, logger="partsim.gateway.jobs"):
            t.start()
            time.sleep(0.3)
            with pytest.raises(Unavailable, match="unreachable"):
                q.submit(_items(1))
            assert t.is_alive() and not rec.calls
        assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # logged once per outage
        srv.restart()  # no persistence: the job is gone, but the worker reconnects and idles
        job = q.submit(_items(2))
        deadline = time.monotonic() + 10
        while q.get(job).state != "done":
            assert time.monotonic() < deadline
            time.sleep(POLL)
        stop.set()
        t.join(5)
        assert rec.ids() == ["t0", "t1"]
        q.close()


# ---------------------------------------------------------------------------------------------
# listing (ListIngestJobs): the same pages on both back ends


def list_all(q: JobQueue, page_size: int) -> tuple[list[str], int]:
    """Every job id :meth:`JobQueue.list` pages through, in order, and the number of pages."""
    ids: list[str] = []
    token, pages = "", 0
    while True:
        jobs, token = q.list(page_size, token)
        pages += 1
        ids += [j.job_id for j in jobs]
        if not token:
            return ids, pages
        assert pages < 100, f"the pages do not end: {ids}"


def test_listing_pages_through_every_job_newest_first(backend):
    q = backend.queue()
    submitted = [q.submit(_items(1)) for _ in range(7)]
    jobs, token = q.list(3)
    assert [j.job_id for j in jobs] == submitted[:-4:-1] and token
    assert list_all(q, 3) == (submitted[::-1], 3)  # 3 + 3 + 1, the last page's token empty
    assert list_all(q, 7) == (submitted[::-1], 1)  # exactly one full page: no empty page after it
    assert q.list(1000) == (q.list(0)[0], "")


def test_an_empty_queue_lists_one_empty_page(backend):
    assert backend.queue().list() == ([], "")


def test_listed_jobs_carry_state_counts_and_failures_as_get_answers_them(backend):
    q = backend.queue()
    done = q.submit(_items(3))
    run_until_done(q, done, Recorder(fail={"t1": NotFound("no such file: t1")}))
    queued = q.submit(_items(2))
    jobs, token = q.list()
    assert (jobs, token) == ([q.get(queued), q.get(done)], "")
    assert (jobs[1].state, jobs[1].failed, jobs[1].failures) == ("done", 1, [("t1", "no such file: t1")])
    assert jobs[0].state == "queued"


def test_page_size_zero_means_50_and_a_larger_one_is_capped(backend, monkeypatch):
    q = backend.queue()
    submitted = [q.submit(_items(1, audio_every=2**31)) for _ in range(51)]
    jobs, token = q.list(0)
    assert [j.job_id for j in jobs] == submitted[:-51:-1] and token
    assert [j.job_id for j in q.list(0, token)[0]] == submitted[:1]
    monkeypatch.setattr("partsim.services.paging.MAX_PAGE_SIZE", 20)
    assert len(q.list(10**6)[0]) == 20


def test_jobs_created_at_the_same_instant_are_ordered_by_job_id_and_each_listed_once(backend, monkeypatch):
    """Pages end between jobs of one created_at: the position is (created_at, job id), not the time alone."""
    import partsim.services.gateway.jobs.local_queue as local_queue
    import partsim.services.gateway.jobs.redis_queue as redis_queue

    frozen = SimpleNamespace(time=lambda: 1_700_000_000.123456, monotonic=time.monotonic)
    for module in (local_queue, redis_queue):
        monkeypatch.setattr(module, "time", frozen)
    q = backend.queue()
    older = q.submit(_items(1))
    frozen.time = lambda: 1_700_000_000.123457
    same = [q.submit(_items(1)) for _ in range(5)]
    ids, pages = list_all(q, 2)
    assert (ids, pages) == ([*sorted(same, reverse=True), older], 3)


def test_a_bad_page_token_or_a_negative_page_size_is_invalid_argument(backend):
    q = backend.queue()
    q.submit(_items(1))
    b64 = lambda text: base64.urlsafe_b64encode(text.encode()).decode()  # noqa: E731
    for token in (
        "garbage!",
        b64("not json"),
        b64("{}"),
        b64('{"created_at": "1", "job_id": "a"}'),
        b64('{"created_at": NaN, "job_id": "a"}'),
        b64('{"created_at": 1.5, "job_id": ""}'),
        b64('[1.5, "a"]'),
        "\u00e9t\u00e9",
    ):
        with pytest.raises(InvalidArgument, match="page_token is not one this gateway issued") as err:
            q.list(2, token)
        assert (err.value.reason, err.value.field_violations[0][0]) == ("INVALID_PAGE_TOKEN", "page_token"), token
    with pytest.raises(InvalidArgument, match=r"page_size -1: must be >= 0 \(0 means 50; above 1000, 1000\)"):
        q.list(-1)


@pytest.mark.slow
def test_expired_jobs_are_not_listed(backend):
    q = backend.queue(job_ttl_seconds=1)
    done = q.submit(_items(1))
    run_until_done(q, done, Recorder())
    pending = q.submit(_items(1))  # unfinished: never expires
    assert [j.job_id for j in q.list()[0]] == [pending, done]
    time.sleep(1.1)
    assert q.list() == ([q.get(pending)], "")
    assert list_all(q, 1) == ([pending], 1)
    if backend.url:  # the listing dropped the expired job from the index
        assert redis.Redis.from_url(backend.url).zrange("partsim:jobs", 0, -1) == [pending.encode()]


@pytest.mark.slow
def test_redis_submit_trims_expired_jobs_from_the_index(redis_url, monkeypatch):  # noqa: F811
    import partsim.services.gateway.jobs.redis_queue as redis_queue

    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.setattr(redis_queue, "TRIM_INTERVAL", 0.0)
    q = make_job_queue(redis_url, None, job_ttl_seconds=1)
    try:
        done = q.submit(_items(1))
        run_until_done(q, done, Recorder())
        time.sleep(1.1)
        fresh = q.submit(_items(1))
        assert redis.Redis.from_url(redis_url).zrange("partsim:jobs", 0, -1) == [fresh.encode()]
    finally:
        q.close()


def test_redis_jobs_submitted_before_the_index_existed_are_not_listed_but_still_found(redis_url):  # noqa: F811
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    q = make_job_queue(redis_url, None)
    try:
        old = q.submit(_items(1))
        r.delete("partsim:jobs")  # as an older gateway left it: a job hash, no index entry
        new = q.submit(_items(1))
        assert [j.job_id for j in q.list()[0]] == [new]
        assert q.get(old).state == "queued"
    finally:
        q.close()


# ---------------------------------------------------------------------------------------------
# embedding cache


def _count(reg: CollectorRegistry, result: str) -> float:
    return reg.get_sample_value("partsim_cache_requests_total", {"result": result})


def test_cache_key():
    k = cache_key("csn-1", "ab12", 3, 1.5)
    assert k == cache_key("csn-1", "ab12", 3.0, 1.5) == "partsim:emb:csn-1:ab12:3.0:1.5"
    assert (
        len(
            {
                k,
                cache_key("csn-2", "ab12", 3, 1.5),
                cache_key("csn-1", "ab13", 3, 1.5),
                cache_key("csn-1", "ab12", 3, 1.0),
                cache_key("csn-1", "ab12", 2, 1.5),
            }
        )
        == 5
    )
    with pytest.raises(InvalidArgument):
        cache_key("csn-1", "ab12", 3, 0)


def test_memory_cache_hit_miss_and_lru_eviction_by_bytes():
    reg = CollectorRegistry()
    c = make_cache(None, max_bytes=250, registry=reg)
    assert isinstance(c, MemoryCache)
    assert _count(reg, "hit") == _count(reg, "miss") == _count(reg, "error") == 0
    assert c.get("a") is None
    c.put("a", b"A" * 100)
    c.put("b", b"B" * 100)
    assert c.get("a") == b"A" * 100  # a is now the most recent
    c.put("c", b"C" * 100)  # 300 > 250: evicts the least recently used, b
    assert c.get("b") is None and c.get("c") == b"C" * 100 and c.get("a") == b"A" * 100
    assert c.size_bytes == 200 and len(c) == 2
    c.put("a", b"a" * 10)  # replacing updates the byte count
    assert c.size_bytes == 110
    c.put("huge", b"x" * 251)  # larger than the whole cache: not stored, nothing evicted
    assert c.get("huge") is None and len(c) == 2
    assert (_count(reg, "hit"), _count(reg, "miss"), _count(reg, "error")) == (3, 3, 0)


def test_memory_cache_ttl():
    c = MemoryCache(max_bytes=100, ttl_seconds=1)
    c.put("k", b"v")
    assert c.get("k") == b"v"
    c._items["k"] = (b"v", time.monotonic() - 1)  # as if a second had passed
    assert c.get("k") is None and c.size_bytes == 0


def test_redis_cache_hit_miss(redis_url):  # noqa: F811
    reg = CollectorRegistry()
    c = make_cache(redis_url, ttl_seconds=100, registry=reg)
    assert isinstance(c, RedisCache)
    key = cache_key("m", "digest-1", 3, 1)
    assert c.get(key) is None
    c.put(key, b"\x00\x01vectors")
    assert c.get(key) == b"\x00\x01vectors"
    assert 0 < redis.Redis.from_url(redis_url).ttl(key) <= 100
    assert (_count(reg, "hit"), _count(reg, "miss"), _count(reg, "error")) == (1, 1, 0)
    c.close()


@pytest.mark.slow
def test_redis_cache_outage_is_a_counted_miss(caplog):
    reg = CollectorRegistry()
    with RedisServer() as srv:
        c = RedisCache(srv.url, registry=reg, retry_after=0.2)
        c.put("k", b"v")
        srv.stop()
        with caplog.at_level(logging.WARNING, logger="partsim.gateway.cache"):
            t0 = time.monotonic()
            for _ in range(5):
                assert c.get("k") is None
            c.put("k2", b"v2")  # dropped, no exception
            assert time.monotonic() - t0 < 2  # no per-request connect waits
        assert _count(reg, "error") == 5 and _count(reg, "hit") == 0
        assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # logged once
        srv.restart()  # empty again (no persistence); the cache recovers after retry_after
        time.sleep(0.25)
        c.put("k", b"v")
        assert c.get("k") == b"v" and _count(reg, "hit") == 1
        c.close()
        url = srv.url
    # make_cache on a dead URL: still no exception
    dead = make_cache(url, registry=CollectorRegistry())
    assert dead.get("k") is None
    dead.put("k", b"v")
