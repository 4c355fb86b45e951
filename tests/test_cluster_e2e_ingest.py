"""Ingest through the whole cluster end to end: real processes (``partsim up``'s launcher), real gRPC on
loopback, the shipped model, Milvus Lite, a real Redis server, FluidSynth-rendered songs. The cluster, its catalog and
the songs' vectors are tests/e2e_cluster.py's session fixtures, shared by tests/test_cluster_e2e_*.py.

An upload over a gateway's limit is refused; a job taken by one gateway is finished by the next on the same
Redis; the searcher keeps every part's raw vector, presence and power as EmbedParts gave them.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from partsim.client import PartsimClient
from partsim.errors import ResourceExhausted
from partsim.v1 import gateway_pb2

from .e2e_cluster import SEG, songs

# every test here talks to a whole cluster (processes, Milvus, Redis): left out of make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_over_long_upload_is_resource_exhausted(cluster, catalog, tmp_path):
    # a second gateway with a 1-MB limit in front of the same backends
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    searcher = next(s.address for s in cluster.services if s.name == "searcher")
    embedder = next(s.address for s in cluster.services if s.name == "embedder")
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=embedder,
        searcher=searcher,
        data_dir=str(tmp_path),
        max_upload_mb=1.0,
        metrics_port=-1,
    )
    gateway = GatewayServer(cfg).start()
    try:
        with PartsimClient(gateway.address) as c:
            c.wait_ready(60)
            with pytest.raises(ResourceExhausted, match="limit"):
                c.index_bytes(b"\0" * (2 << 20), "big")
    finally:
        gateway.stop(1)


def test_jobs_survive_a_gateway_restart(cluster, catalog, redis, tmp_path):
    """An API-only gateway takes a job and goes away; a new gateway on the same Redis finishes it."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    searcher = next(s.address for s in cluster.services if s.name == "searcher")
    embedder = next(s.address for s in cluster.services if s.name == "embedder")

    own_db = redis.rsplit("/", 1)[0] + "/1"  # the cluster's gateway consumes db 0's queue

    def gateway(workers: int):
        cfg = GatewayConfig(
            address="127.0.0.1:0",
            embedder=embedder,
            searcher=searcher,
            redis_url=own_db,
            data_dir=str(tmp_path),
            allowed_roots=str(catalog),
            ingest_workers=workers,
            metrics_port=-1,
        )
        return GatewayServer(cfg).start()

    items = [{"track_id": f"job-{p.name}", "uri": str(p / "mix.flac")} for p in songs(catalog)[:3]]
    items.append({"track_id": "job-broken", "audio": b"garbage"})
    first = gateway(0)
    try:
        with PartsimClient(first.address) as c:
            c.wait_ready(60)
            job = c.submit_job(items)
            time.sleep(1.0)
            assert c.get_job(job).state == gateway_pb2.JOB_STATE_QUEUED
    finally:
        first.stop(1)
    second = gateway(2)
    try:
        with PartsimClient(second.address) as c:
            c.wait_ready(60)
            deadline = time.monotonic() + 180
            while (st := c.get_job(job)).state != gateway_pb2.JOB_STATE_DONE and time.monotonic() < deadline:
                time.sleep(0.5)
            assert st.state == gateway_pb2.JOB_STATE_DONE
            assert (st.total, st.succeeded, st.failed) == (4, 3, 1)
            assert st.failures[0].track_id == "job-broken" and "decode" in st.failures[0].error.lower()
            assert c.get_track("job-" + songs(catalog)[0].name).num_segments == 3
            for it in items[:3]:
                c.delete_track(it["track_id"])
    finally:
        second.stop(1)


def test_the_catalog_keeps_raw_vectors_presence_and_power_as_embedded(cluster, client, catalog, indexed):
    """Over the searcher's own gRPC API: every part of every segment, present or not, as EmbedParts gave it."""
    from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc

    searcher = searcher_pb2_grpc.SearcherServiceStub(
        grpc.insecure_channel(next(s.address for s in cluster.services if s.name == "searcher"))
    )
    absent = 0
    for song in songs(catalog)[:4]:
        emb = client.embed_parts((song / "mix.flac").read_bytes(), SEG, SEG)
        for seg in emb.segments:
            got = searcher.GetSegment(
                searcher_pb2.GetSegmentRequest(track_id=song.name, segment_index=seg.index), timeout=30
            ).segment
            assert (got.start_seconds, got.end_seconds) == (seg.start_seconds, seg.end_seconds)
            for want, have in zip(seg.parts, got.parts):
                assert have.part == want.part and have.present == want.present
                assert np.array_equal(np.asarray(have.vector, np.float32), np.asarray(want.vector, np.float32))
                assert have.HasField("power") and have.power == want.power
                absent += not want.present
    assert absent > 0
