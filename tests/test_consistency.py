"""Consistency of the catalog under concurrent and failed writes (issue 12).

- Concurrent IndexTrack of one track id, through a real cluster and a second gateway replica: the kept
  audio, the vectors and the metadata of the track always come from one upload.
- A replace on a real store (Milvus Lite: the part collections and the tracks collection) is atomic: a failure at the Milvus or metadata write
  boundary (injected on the store's own objects, as disk full cannot be produced here) leaves the old
  version searchable and listed; what a failure leaves behind is removed by the next open.
- RetryIngestJob: the failed items of a job queued again, on both queue back ends (real Redis, SQLite),
  through the queue and through a gateway's RPC.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
import redis as redis_py

from partsim.client import PartsimClient
from partsim.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable, storage_error
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.gateway.audio_store import AudioStore
from partsim.services.gateway.jobs import IngestItem, make_job_queue
from partsim.services.searcher.meta import TrackInfo
from partsim.services.searcher.milvus import pk
from partsim.services.searcher.retrieval import Query, unit
from partsim.services.searcher.store import SearchStore, Segments
from partsim.v1 import gateway_pb2, types_pb2

from .e2e_cluster import SEG, songs, wav_clip
from .redis_server import redis_server, redis_url  # noqa: F401

PARTS = ["drums", "bass"]
DIM = 4
# what the switch (the track record's write) raises when the disk is full (nothing written)
META_DISK_FULL = storage_error(sqlite3.OperationalError("database or disk is full"), "the searcher's track metadata")


# ------------------------------------------------------------------ atomic replace on a real store
@contextmanager
def opened(folder) -> Iterator[SearchStore]:
    # grace 0: the open-time sweep takes every orphaned row at once (no other replica writes here)
    store = SearchStore(str(folder / "milvus.db"), None, PARTS, DIM, index_type="FLAT", orphan_grace_seconds=0).open(
        wait=True
    )
    try:
        yield store
    finally:
        store.close()


def serves_after_reopening(folder, title: str, segs: Segments) -> None:
    with opened(folder) as store:
        assert_serves(store, "song", title, segs)


def info(title: str, segs: Segments, upload: str = "") -> TrackInfo:
    return TrackInfo("song", title=title, num_segments=len(segs), version=upload)


def version(n: int, seed: int) -> Segments:
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    return Segments(idx, idx * 10.0, idx * 10.0 + 10, rng.standard_normal((len(PARTS), n, DIM)), np.ones((2, n), bool))


def stored_keys(store: SearchStore, track_id: str) -> list[set[str]]:
    """Per part, the primary keys of the track's rows in Milvus."""
    return [
        {r["pk"] for r in store.milvus.client.query(name, filter=f'track_id == "{track_id}"', output_fields=["pk"])}
        for name in store.collections.values()
    ]


def assert_serves(store: SearchStore, track_id: str, title: str, segs: Segments) -> None:
    """The store lists, answers and finds exactly this version of the track, and holds no other rows of it."""
    info = store.get_track(track_id)
    assert (info.title, info.num_segments) == (title, len(segs))
    assert [t.track_id for t in store.list_tracks("", 10)] == [track_id]
    for j in range(len(segs)):
        _, rec = store.get_segment(track_id, j)
        np.testing.assert_allclose(rec.vectors["bass"], segs.vectors[1, j], rtol=1e-6)
        hit = store.search_mix([Query("drums", unit(segs.vectors[0, j]))], top_k=1).hits[0]
        assert (hit.track_id, hit.distance) == (track_id, pytest.approx(0.0, abs=1e-6))
    assert store.stats()["segments"] == len(segs)
    assert stored_keys(store, track_id) == [{pk(track_id, j, info.generation) for j in range(len(segs))}] * 2


def fail_on(obj, name: str, exc: BaseException, after: int = 0):
    """Make ``obj.name`` raise ``exc`` from its ``after``-th call on (the earlier calls go through)."""
    real, calls = getattr(obj, name), []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) > after:
            raise exc
        return real(*args, **kwargs)

    setattr(obj, name, failing)
    return calls


OLD, NEW = version(3, seed=1), version(2, seed=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, fault",
    [
        ("insert", Unavailable("Milvus failed to insert: disk full")),  # half-way: the first part's rows written
        ("put_many", META_DISK_FULL),  # at the switch
    ],
)
def test_a_replace_failing_before_the_switch_leaves_the_old_version_searchable_and_listed(tmp_path, where, fault):
    with opened(tmp_path) as store:
        store.upsert(info("old", OLD), OLD)
        fail_on(store.milvus if where == "insert" else store.tracks, where, fault, after=1 if where == "insert" else 0)
        with pytest.raises(type(fault)):
            store.upsert(info("new", NEW), NEW)
        assert_serves(store, "song", "old", OLD)  # the new rows written before the failure are gone again
    serves_after_reopening(tmp_path, "old", OLD)


@pytest.mark.slow
def test_rows_of_a_write_that_died_before_the_switch_are_removed_at_the_next_open(tmp_path):
    with opened(tmp_path) as store:
        store.upsert(info("old", OLD), OLD)
        fail_on(store.tracks, "put_many", META_DISK_FULL)
        fail_on(store.milvus, "delete_keys", Unavailable("Milvus is gone"))  # nor can the new rows be removed
        with pytest.raises(ResourceExhausted):
            store.upsert(info("new", NEW), NEW)
        assert store.get_track("song").title == "old"
        assert all(len(keys) == len(OLD) + len(NEW) for keys in stored_keys(store, "song"))  # both versions' rows
    serves_after_reopening(tmp_path, "old", OLD)


@pytest.mark.slow
def test_a_failure_after_the_switch_keeps_the_new_version_and_the_next_open_removes_the_old_rows(tmp_path):
    with opened(tmp_path) as store:
        store.upsert(info("old", OLD, "u1"), OLD)
        fail_on(store.milvus, "delete_stale", Unavailable("Milvus failed to delete: disk full"))
        replaced = store.upsert(info("new", NEW, "u2"), NEW)
        assert replaced is not None and (replaced.title, replaced.version) == ("old", "u1")  # the write succeeded
        now = store.get_track("song")
        assert (now.title, now.version, now.num_segments) == ("new", "u2", 2)
        assert store.stats()["segments"] == len(NEW)  # the exact path serves the new version only
    serves_after_reopening(tmp_path, "new", NEW)


@pytest.mark.slow
def test_a_replace_writes_generations_that_are_never_reused_and_delete_answers_the_version(tmp_path):
    with opened(tmp_path) as store:
        gens = []
        for i, segs in enumerate((OLD, NEW, OLD)):
            store.upsert(info(f"v{i}", segs, f"u{i}"), segs)
            gens.append(store.get_track("song").generation)
            assert_serves(store, "song", f"v{i}", segs)
        assert store.delete("song").version == "u2"
        store.upsert(info("again", NEW), NEW)
        gens.append(store.get_track("song").generation)
        assert gens == sorted(set(gens))


# ------------------------------------------------------------------ RetryIngestJob on both queue back ends
@pytest.fixture(params=["redis", "local"])
def queue(request, tmp_path):
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    if url:
        redis_py.Redis.from_url(url).flushdb()
    q = make_job_queue(url, tmp_path / "jobs", "gateway-0")
    yield q
    q.close()


def work_until_done(q, job_id: str, fail: set[str], seen: list[IngestItem]) -> gateway_pb2.JobState:
    """Work the queue (one thread) until the job is done: items named in ``fail`` fail, the rest succeed."""

    def process(item: IngestItem) -> None:
        seen.append(item)
        if item.track_id in fail:
            raise InvalidArgument(f"{item.track_id}: not an audio file")

    stop = threading.Event()
    worker = threading.Thread(target=q.work, args=(process, stop, 0.02), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    try:
        while (st := q.get(job_id)).state != "done":
            assert time.monotonic() < deadline, st
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(5)
    return st


def test_a_retry_queues_only_the_failed_items_again_under_the_same_job(queue):
    items = [IngestItem(f"t{i}", {"title": f"song {i}"}, audio=bytes([i]) * 50) for i in range(2)]
    items += [IngestItem(f"t{i}", {"title": f"song {i}"}, uri=f"/music/t{i}.wav") for i in range(2, 4)]
    job = queue.submit(items)
    first: list[IngestItem] = []
    st = work_until_done(queue, job, {"t1", "t2"}, first)
    assert (st.succeeded, st.failed, sorted(t for t, _ in st.failures)) == (2, 2, ["t1", "t2"])

    assert queue.retry(job) == 2
    st = queue.get(job)
    assert (st.state, st.total, st.succeeded, st.failed, st.failures) == ("running", 4, 2, 0, [])
    assert queue.retry(job) == 0 and queue.depth() == 2  # idempotent: nothing failed is left to queue

    again: list[IngestItem] = []
    st = work_until_done(queue, job, {"t2"}, again)  # t1 now succeeds, t2 fails once more
    assert sorted((it.track_id, it.audio, it.uri, it.metadata["title"]) for it in again) == [
        ("t1", bytes([1]) * 50, None, "song 1"),  # the upload was kept for the retry
        ("t2", None, "/music/t2.wav", "song 2"),
    ]
    assert (st.state, st.succeeded, st.failed, [t for t, _ in st.failures]) == ("done", 3, 1, ["t2"])
    assert queue.retry(job) == 1 and queue.retry(job) == 0
    st = work_until_done(queue, job, set(), [])
    assert (st.state, st.succeeded, st.failed, st.failures) == ("done", 4, 0, [])
    assert queue.depth() == 0


def test_a_retry_of_an_unknown_job_is_not_found(queue):
    with pytest.raises(NotFound, match="no ingest job"):
        queue.retry("0" * 32)


@pytest.mark.slow
@pytest.mark.parametrize("back_end", ["redis", "local"])
def test_retry_ingest_job_through_a_gateway_indexes_a_fixed_file(cluster, catalog, redis, tmp_path, back_end):
    """A URI item fails (not audio), the file is fixed, RetryIngestJob queues it again: the same job succeeds."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    own_db = redis.rsplit("/", 1)[0] + "/2"  # the cluster's gateway consumes db 0's queue
    redis_py.Redis.from_url(own_db).flushdb()
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=cluster.service("embedder").address,
        searcher=cluster.service("searcher").address,
        redis_url=own_db if back_end == "redis" else "",
        data_dir=str(tmp_path / "gateway"),
        allowed_roots=str(tmp_path),
        metrics_port=-1,
    )
    song = tmp_path / "song.wav"
    song.write_bytes(b"not audio")
    gateway = GatewayServer(cfg).start()
    try:
        with PartsimClient(gateway.address, timeout=120) as c:
            c.wait_ready(60)
            job = c.submit_job([{"track_id": f"retry-{back_end}", "uri": str(song)}])
            st = wait_done(c, job)
            assert (st.succeeded, st.failed, st.failures[0].track_id) == (0, 1, f"retry-{back_end}")
            song.write_bytes(wav_clip(songs(catalog)[0] / "mix.flac", 0, SEG))
            resp = c.retry_ingest_job(job)
            assert (resp.requeued, resp.job.job_id, resp.job.failed, list(resp.job.failures)) == (1, job, 0, [])
            assert c.retry_ingest_job(job).requeued == 0
            st = wait_done(c, job)
            assert (st.total, st.succeeded, st.failed) == (1, 1, 0)
            assert c.get_track(f"retry-{back_end}").num_segments == 1
            c.delete_track(f"retry-{back_end}")
            with pytest.raises(NotFound):
                c.retry_ingest_job("0" * 32)
    finally:
        gateway.stop(1)


def wait_done(client: PartsimClient, job: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (st := client.get_job(job)).state != gateway_pb2.JOB_STATE_DONE:
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return st


# ------------------------------------------------------------------ concurrent IndexTrack of one track id
CLIENTS, ROUNDS = 6, 20  # the code before issue 12 mixed two uploads in 1 to 3 of 10 rounds


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_concurrent_index_track_of_one_id_keeps_audio_vectors_and_metadata_of_one_upload(cluster, catalog, tmp_path):
    """6 clients upload different audio under one track id at once, 20 rounds, half of them through a second
    gateway replica sharing the audio folder: after each round the catalog's metadata (which upload won), its
    vectors, its segment count and the kept audio all belong to that one upload, and no other version's audio
    file is left."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    folder = cluster.data / "gateway" / "audio"
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=cluster.service("embedder").address,
        searcher=cluster.service("searcher").address,
        data_dir=str(tmp_path),
        audio_dir=str(folder),
        ingest_workers=0,
        metrics_port=-1,
    )
    uploads = [wav_clip(song / "mix.flac", 0, SEG * (1 + k % 3)) for k, song in enumerate(songs(catalog)[:CLIENTS])]
    searcher = searcher_pb2_grpc.SearcherServiceStub(grpc.insecure_channel(cluster.service("searcher").address))
    tid, audio = "consistency-race", AudioStore(folder)
    replica = GatewayServer(cfg).start()
    clients = [PartsimClient(a, timeout=300) for a in (cluster.gateway, replica.address) * (CLIENTS // 2)]
    try:
        clients[1].wait_ready(60)
        expected = [clients[0].embed_parts(u, SEG, SEG) for u in uploads]
        with ThreadPoolExecutor(CLIENTS) as pool:
            for r in range(ROUNDS):
                start = threading.Barrier(CLIENTS)

                def upload(k: int, r: int = r, start: threading.Barrier = start):
                    start.wait()
                    return clients[k].index_bytes(uploads[k], tid, title=f"upload-{k}", tags={"round": str(r)})

                list(pool.map(upload, range(CLIENTS)))
                track = searcher.GetTrack(searcher_pb2.GetTrackRequest(track_id=tid), timeout=30).track
                k = int(track.metadata.title.split("-")[1])
                assert (track.metadata.tags["round"], track.num_segments) == (str(r), len(expected[k].segments))
                kept = audio.get(tid, track.version)
                assert kept is not None, f"round {r}: no audio kept for the catalog's version"
                digest = hashlib.sha256(kept.SerializeToString()).hexdigest()
                want = hashlib.sha256(types_pb2.Audio(encoded=uploads[k]).SerializeToString()).hexdigest()
                assert digest == want, f"round {r}: the catalog says upload {k}, the kept audio is another"
                for seg in expected[k].segments:
                    got = searcher.GetSegment(
                        searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=seg.index), timeout=30
                    )
                    assert got.track.version == track.version
                    stored = {p.part: p.vector for p in got.segment.parts}
                    for part in seg.parts:
                        np.testing.assert_allclose(stored[part.part], part.vector, rtol=1e-5, atol=1e-6)
                with pytest.raises(grpc.RpcError) as e:  # no segment left over from a longer upload
                    searcher.GetSegment(
                        searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=track.num_segments), timeout=30
                    )
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
                prefix = hashlib.sha256(tid.encode()).hexdigest()
                assert len(list(folder.glob(prefix + "*.audio"))) == 1, f"round {r}: other versions' audio left"
        clients[0].delete_track(tid)
        assert not list(folder.glob(prefix + "*.audio"))
    finally:
        for c in clients:
            c.close()
        replica.stop(1)
