"""The gateway's own Prometheus metrics (the per-RPC ones come from :mod:`partsim.services.runtime`).

Names are part of the deployment: the dashboard (``scripts/gen-dashboard.py``) and the autoscaler's
external metric (``partsim_ingest_queue_lag_seconds``) read them.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from partsim.v1 import gateway_pb2, types_pb2

from .jobs import JobQueue


class GatewayMetrics:
    """Search latency and query shape, query warnings, ingest outcomes, and the ingest queue's depth and lag."""

    def __init__(self, registry: CollectorRegistry | None):
        r = registry
        self.search_seconds = Histogram(
            "partsim_gateway_search_seconds",
            "SearchMix/SearchStems latency.",
            ["rpc", "mode"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.query_embeddings = Histogram(
            "partsim_gateway_query_embeddings",
            "Query embeddings per search.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.query_warnings = Counter(
            "partsim_gateway_query_warnings",
            "Warnings in search responses, by code (one per query segment concerned).",
            ["code"],
            registry=r,
        )
        for code in gateway_pb2.WarningCode.keys()[1:]:
            self.query_warnings.labels(code)
        for rpc in ("SearchMix", "SearchStems"):  # export zeros from the start
            for mode in types_pb2.SearchMode.keys():
                self.search_seconds.labels(rpc, mode)
        self.ingested = Counter(
            "partsim_ingest_items",
            "Ingest job items this replica finished, by result (indexed or failed).",
            ["result"],
            registry=r,
        )
        self.ingest_retries = Counter(
            "partsim_ingest_retries", "Ingest attempts retried after a backend outage.", registry=r
        )
        self.ingest_seconds = Histogram(
            "partsim_ingest_item_seconds",
            "Time to index one ingest item (retries included).",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        for result in ("indexed", "failed"):
            self.ingested.labels(result)
        self._depth = Gauge("partsim_ingest_queue_depth", "Ingest items waiting.", registry=r)
        self._lag = Gauge("partsim_ingest_queue_lag_seconds", "Age of the oldest waiting ingest item.", registry=r)

    def watch(self, jobs: JobQueue) -> None:
        """Export ``jobs``' depth and lag, read at every scrape (NaN while its back end is unreachable)."""
        self._depth.set_function(lambda: _read(jobs.depth))
        self._lag.set_function(lambda: _read(jobs.lag_seconds))

    def searched(self, rpc: str, mode: int, started: float, warnings: list[gateway_pb2.QueryWarning]) -> None:
        """One search answered: its latency since ``started`` (``time.perf_counter()``) and its warnings."""
        self.search_seconds.labels(rpc, types_pb2.SearchMode.Name(mode)).observe(time.perf_counter() - started)
        for w in warnings:
            self.query_warnings.labels(gateway_pb2.WarningCode.Name(w.code)).inc()


def _read(value) -> float:
    try:
        return float(value())
    except Exception:  # noqa: BLE001 - a metric must not raise
        return float("nan")


def auth_failures(registry: CollectorRegistry | None) -> Counter:
    """``partsim_gateway_auth_failures_total``: calls the gateway refused, by reason (from the start, zeros)."""
    c = Counter(
        "partsim_gateway_auth_failures",
        "Calls refused by the gateway's authentication, by reason (unauthenticated, permission_denied, rate_limited).",
        ["reason"],
        registry=registry,
    )
    for reason in ("unauthenticated", "permission_denied", "rate_limited"):
        c.labels(reason)
    return c
