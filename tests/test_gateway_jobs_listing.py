"""ListIngestJobs end to end: a real gateway (its embedder and searcher unreachable: listing jobs needs
neither) over each queue back end (a real redis-server, SQLite in the data folder), called over gRPC, through
the Python client and as ``partsim jobs list`` (slow: two ``partsim`` processes)."""

from __future__ import annotations

import json
import os

import grpc
import pytest
import redis as redis_py

from partsim.client import IngestJob, IngestJobPage, JobState, PartsimClient, rpc_code
from partsim.errors import InvalidArgument
from partsim.services.gateway.jobs import IngestItem, make_job_queue
from partsim.v1 import gateway_pb2, gateway_pb2_grpc

from .redis_server import redis_server, redis_url  # noqa: F401
from .util import assert_user_error, run_cli

UNREACHABLE = "127.0.0.1:1"
JOBS = 5
JOB_FIELDS = {"job_id", "state", "total", "succeeded", "failed", "failures", "created_at", "updated_at"}


@pytest.fixture(params=["redis", "local"])
def gateway(request, tmp_path):
    """A gateway on one queue back end holding JOBS queued jobs (no worker takes them): its address and the
    job ids, oldest first."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis_py.Redis.from_url(url).flushdb()
    data = tmp_path / "gateway"
    queue = make_job_queue(url or None, data if not url else None, "test-submitter")
    try:
        ids = [
            queue.submit([IngestItem(f"j{i}-t{k}", {"title": f"t{k}"}, uri=f"/music/{k}.wav") for k in range(i + 1)])
            for i in range(JOBS)
        ]
    finally:
        queue.close()
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=UNREACHABLE,
        searcher=UNREACHABLE,
        redis_url=url,
        data_dir=str(data),
        ingest_workers=0,
        metrics_port=-1,
    )
    server = GatewayServer(cfg).start()
    try:
        yield server.address, ids
    finally:
        server.stop(0)


def test_list_ingest_jobs_over_grpc_pages_newest_first_and_rejects_a_bad_token(gateway):
    address, ids = gateway
    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.PartsimServiceStub(channel)
        seen, token, pages = [], "", 0
        while True:
            resp = stub.ListIngestJobs(gateway_pb2.ListIngestJobsRequest(page_size=2, page_token=token), timeout=10)
            pages += 1
            seen += list(resp.jobs)
            token = resp.next_page_token
            if not token or pages > JOBS:
                break
        assert ([j.job_id for j in seen], pages) == (ids[::-1], 3)
        newest = seen[0]
        assert (newest.state, newest.total, newest.succeeded, newest.failed) == (
            gateway_pb2.JOB_STATE_QUEUED,
            JOBS,
            0,
            0,
        )
        assert newest.created_at >= seen[-1].created_at > 0
        whole = stub.ListIngestJobs(gateway_pb2.ListIngestJobsRequest(), timeout=10)  # page_size 0: 50
        assert ([j.job_id for j in whole.jobs], whole.next_page_token) == (ids[::-1], "")
        for bad, message in (
            (gateway_pb2.ListIngestJobsRequest(page_token="garbage!"), "page_token is not one this gateway issued"),
            (gateway_pb2.ListIngestJobsRequest(page_size=-1), "page_size -1: must be >= 0"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListIngestJobs(bad, timeout=10)
            assert (err.value.code(), message in err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, True)


def test_the_client_lists_typed_pages_and_iterates_over_every_page(gateway):
    address, ids = gateway
    with PartsimClient(address, timeout=10) as c:
        page = c.list_ingest_jobs(page_size=3)
        assert isinstance(page, IngestJobPage) and all(isinstance(j, IngestJob) for j in page.jobs)
        assert [j.job_id for j in page.jobs] == ids[:-4:-1] and page.next_page_token
        assert page.jobs[0].state is JobState.QUEUED and page.jobs[0].total == JOBS
        last = c.list_ingest_jobs(page_size=3, page_token=page.next_page_token)
        assert ([j.job_id for j in last.jobs], last.next_page_token) == (ids[1::-1], "")
        assert [j.job_id for j in c.iter_ingest_jobs(page_size=2)] == ids[::-1]
        assert page.to_json()["jobs"][0]["state"] == "QUEUED"
        with pytest.raises(InvalidArgument, match="page_token is not one this gateway issued") as err:
            c.list_ingest_jobs(page_token="garbage!")
        assert rpc_code(err.value) == "INVALID_ARGUMENT" and err.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.slow
def test_partsim_jobs_list_json_prints_every_job_newest_first_in_the_documented_schema(gateway):
    address, ids = gateway
    env = {k: v for k, v in os.environ.items() if k not in ("PARTSIM_TOKEN", "PARTSIM_TLS_CA")}
    proc = run_cli("jobs", "list", "--page-size", "2", "--json", "--gateway", address, env=env)
    assert proc.returncode == 0, proc.stderr
    jobs = json.loads(proc.stdout)
    assert [j["job_id"] for j in jobs] == ids[::-1]  # three calls of two: every page
    assert all(set(j) == JOB_FIELDS for j in jobs)
    assert (jobs[0]["state"], jobs[0]["total"], jobs[0]["succeeded"], jobs[0]["failed"], jobs[0]["failures"]) == (
        "QUEUED",
        JOBS,
        0,
        0,
        [],
    )
    assert all(isinstance(j["created_at"], float) and j["created_at"] <= j["updated_at"] for j in jobs)

    text = run_cli("jobs", "list", "--gateway", address, env=env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ids[::-1] and "QUEUED" in lines[0]

    assert_user_error(run_cli("jobs", "list", "--page-size", "-1", "--gateway", address, env=env), "page_size -1")
