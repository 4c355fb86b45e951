"""The bounded load test of issue 12 on loopback: 32 concurrent SearchMix callers while ingest jobs run see no
error; a hostile caller that keeps indexing tracks with metadata at every limit (16 KiB each, answered in every
search) costs the others less than 2x in p99. Real processes (``partsim up``'s launcher), Redis, Milvus Lite,
FluidSynth-rendered songs.

The windows alternate clean / hostile (:func:`partsim.services.loadtest.run_windows`), each
``PARTSIM_LOAD_SECONDS`` long (default 5 here, to keep the suite short), ``PARTSIM_LOAD_ROUNDS`` pairs (default 2);
``python -m partsim.services.loadtest`` is the full-length run (30 s windows) whose numbers the README quotes.
"""

from __future__ import annotations

import os

import pytest

from partsim.client import PartsimClient
from partsim.cluster import Cluster
from partsim.services.loadtest import clip_of, mix_queries, run_windows, variant_items, verdict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SECONDS = float(os.environ.get("PARTSIM_LOAD_SECONDS", "5"))
ROUNDS = int(os.environ.get("PARTSIM_LOAD_ROUNDS", "2"))
CONCURRENCY = 32


@pytest.fixture(scope="module")
def loaded(render_corpus, redis_url, tmp_path_factory):
    """A cluster on Redis with 12 songs of 20 s indexed; (gateway address, song ids, their files, a work folder)."""
    corpus = render_corpus("load", songs=12, seconds=20.0, seed=21)
    files = sorted(p / "mix.flac" for p in corpus.iterdir() if p.is_dir())
    work = tmp_path_factory.mktemp("load-work")
    with Cluster(
        work / "data", gateway="127.0.0.1:0", redis_url=redis_url, allowed_roots=[work], quiet=True, separator=False
    ) as cluster:
        ids = [f"song-{i}" for i in range(len(files))]
        with PartsimClient(cluster.gateway, timeout=120) as c:
            c.wait_ready(300)
            for tid, f in zip(ids, files):
                c.index_bytes(f.read_bytes(), tid)
        (work / "ingest").mkdir()
        yield cluster.gateway, ids, files, work


def test_32_searchers_during_ingest_have_no_errors_and_a_hostile_caller_costs_under_2x_p99(loaded):
    gateway, ids, files, work = loaded
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    out = run_windows(
        gateway,
        mix_queries(ids),
        variant_items(files[:4], work / "ingest"),
        clip_of(files[0]),
        concurrency=CONCURRENCY,
        seconds=SECONDS,
        rounds=ROUNDS,
        say=say,
    )
    status = verdict(out, SECONDS * ROUNDS, say)
    report = "\n".join(lines)
    assert not out["clean"].errors and not out["hostile"].errors, report
    assert not out["indexer"].errors and not out["ingest"].errors, report  # their own calls succeeded too
    assert len(out["clean"].latencies) > CONCURRENCY and len(out["hostile"].latencies) > CONCURRENCY, report
    assert out["indexer"].latencies and out["ingest"].latencies, report  # both ran (a job finished at least)
    assert status == 0, report  # hostile p99 within 2x of the clean one
