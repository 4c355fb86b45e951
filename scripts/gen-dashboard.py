#!/usr/bin/env python3
"""Write the partsim Grafana dashboard (deploy/grafana/dashboards/partsim.json) from the panel list
below: the one place where a panel and its PromQL are defined.

    scripts/gen-dashboard.py            # rewrite the JSON
    scripts/gen-dashboard.py --check    # exit 1 when the committed JSON differs (tests run this)

Every query may use Grafana's ``$__rate_interval`` and the ``${job_prefix}`` and ``${namespace}`` variables,
nothing else (grafana_templating.scoped puts both into every metric selector),
so a test can run each query against a real Prometheus by substituting their defaults
(tests/test_observability.py). Job label values (partsim-gateway, partsim-embedder, partsim-searcher,
partsim-separator, partsim-ingest-worker) are those of deploy/prometheus/prometheus.yml and of the
Kubernetes PodMonitor; the dashboard selects them as ``${job_prefix}gateway`` and ``${job_prefix}.+``.

Importable into an existing Grafana: the ``datasource`` and ``job_prefix`` variables, ``__inputs`` and
``__requires`` come from scripts/grafana_templating.py, which says why they are what they are.

It is a little over 400 lines because most of it is one table, ROWS (30 panels, one field a line as the
formatter writes it); split, a panel's PromQL would no longer sit beside its title and description.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_templating import INPUTS, JOB, REQUIRES, SCOPE, TEMPLATING, scoped

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "partsim.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
GW = f'job="{JOB}gateway",namespace=~"${{namespace}}",grpc_service="partsim.v1.PartsimService"'
ALL = SCOPE
R = "[$__rate_interval]"


def q(le_by: str, metric: str, sel: str = "", quantiles=(0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    """histogram_quantile targets: (expr, legend) per quantile."""
    by = f"le, {le_by}" if le_by else "le"
    legend = "{{" + le_by.split(",")[0].strip() + "}} " if le_by else ""
    return [
        (f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{{{sel}}}{R})))", f"{legend}p{int(p * 100)}")
        for p in quantiles
    ]


# (row title, [(panel title, unit, [(expr, legend)], description)])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str]]]] = [
    (
        "Gateway (public API)",
        [
            (
                "Requests per second by RPC",
                "reqps",
                [(f"sum by (grpc_method) (rate(grpc_server_handled_total{{{GW}}}{R}))", "{{grpc_method}}")],
                "Completed RPCs on the gateway, every status code.",
            ),
            (
                "Errors per second by status code",
                "reqps",
                [
                    (
                        f'sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{{{GW},grpc_code!="OK"}}{R}))',
                        "{{grpc_method}} {{grpc_code}}",
                    )
                ],
                "Non-OK completions. INVALID_ARGUMENT / NOT_FOUND / PERMISSION_DENIED are the caller's; "
                "UNAVAILABLE / INTERNAL / DEADLINE_EXCEEDED are ours (the error-ratio alert counts those).",
            ),
            (
                "Server error ratio",
                "percentunit",
                [(f"partsim:grpc_server_error_ratio:rate5m{{{ALL}}}", "{{job}}")],
                "Share of RPCs ending UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS or UNIMPLEMENTED "
                "(recording rule; alert PartsimHighErrorRatio above 5 %).",
            ),
            (
                "Latency quantiles by RPC",
                "s",
                q("grpc_method", "grpc_server_handling_seconds", GW),
                "Server-side handling time of each gateway RPC (p50, p95, p99).",
            ),
            (
                "Search latency by RPC and mode",
                "s",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, rpc, mode) (rate(partsim_gateway_search_seconds_bucket{R})))",
                        "{{rpc}} {{mode}} p95",
                    )
                ],
                "SearchMix / SearchStems end to end in the gateway (query embedding included), p95.",
            ),
            (
                "Query embeddings per search",
                "short",
                [
                    (
                        f"sum(rate(partsim_gateway_query_embeddings_sum{R})) / sum(rate(partsim_gateway_query_embeddings_count{R}))",
                        "mean",
                    )
                ],
                "Mean number of unit part embeddings averaged into one search (eq. 6.1).",
            ),
            (
                "Query warnings per second by code",
                "short",
                [(f"sum by (code) (rate(partsim_gateway_query_warnings_total{R}))", "{{code}}")],
                "Searches answered with a warning, e.g. PART_JUDGED_ABSENT: a stem query on a part the model "
                "judges absent while the audio plays (the query uses that part's raw vector, normalised).",
            ),
            (
                "Search latency SLO: slow-request ratio",
                "percentunit",
                [("partsim:search_slow_ratio:rate5m", "5m"), ("partsim:search_slow_ratio:rate1h", "1h")],
                "Share of SearchMix/SearchStems slower than 0.5 s; the SLO allows 1 % (burn-rate alert at 14.4x).",
            ),
        ],
    ),
    (
        "Embedder",
        [
            (
                "Segments embedded per second",
                "short",
                [(f"sum(rate(partsim_embedder_segments_total{R}))", "segments/s")],
                "10-s segments through the CSN, all replicas.",
            ),
            (
                "Batch size",
                "short",
                q("", "partsim_embedder_batch_size", "", (0.5, 0.95))
                + [
                    (
                        f"sum(rate(partsim_embedder_batch_size_sum{R})) / sum(rate(partsim_embedder_batch_size_count{R}))",
                        "mean",
                    )
                ],
                "Segments per model call (dynamic batching across requests).",
            ),
            (
                "Queue wait",
                "s",
                q("", "partsim_embedder_queue_wait_seconds"),
                "Time a segment waits for its batch to start.",
            ),
            (
                "Model call latency",
                "s",
                q("", "partsim_embedder_model_seconds", "", (0.5, 0.95)),
                "ONNX Runtime time per batch.",
            ),
            (
                "Segments queued",
                "short",
                [("sum(partsim_embedder_queue_segments)", "queued")],
                "Segments waiting for a batch right now.",
            ),
        ],
    ),
    (
        "Searcher",
        [
            (
                "Search latency by mode",
                "s",
                [
                    (
                        f"histogram_quantile(0.5, sum by (le, mode, kind) (rate(partsim_search_seconds_bucket{R})))",
                        "{{mode}} {{kind}} p50",
                    ),
                    (
                        f"histogram_quantile(0.99, sum by (le, mode, kind) (rate(partsim_search_seconds_bucket{R})))",
                        "{{mode}} {{kind}} p99",
                    ),
                ],
                "Exact (in-memory mirror) and approximate (Milvus ANN + exact re-rank) searches.",
            ),
            (
                "Candidates per SearchMix",
                "short",
                [
                    (
                        f"sum by (mode) (rate(partsim_search_candidates_sum{R})) / sum by (mode) (rate(partsim_search_candidates_count{R}))",
                        "{{mode}} mean",
                    )
                ],
                "Catalog segments whose distance was computed exactly per search.",
            ),
            (
                "Index size",
                "short",
                [("max(partsim_index_tracks)", "tracks"), ("max(partsim_index_segments)", "segments")],
                "Tracks and 10-s segments in the catalog.",
            ),
            (
                "Segments where each part is present",
                "short",
                [("max by (part) (partsim_index_present_segments)", "{{part}}")],
                "Absent parts are stored as zero vectors and never match.",
            ),
        ],
    ),
    (
        "Ingestion",
        [
            (
                "Queue depth",
                "short",
                [("max(partsim_ingest_queue_depth)", "items waiting")],
                "Ingest items not yet taken (every gateway reports the same shared queue).",
            ),
            (
                "Queue lag",
                "s",
                [("max(partsim_ingest_queue_lag_seconds)", "oldest waiting item")],
                "Age of the oldest waiting item; the ingest-worker autoscaler targets it.",
            ),
            (
                "Items finished per second by result",
                "reqps",
                [
                    (f"sum by (result) (rate(partsim_ingest_items_total{R}))", "{{result}}"),
                    (f"sum(rate(partsim_ingest_retries_total{R}))", "retried"),
                ],
                "Indexed and failed job items, and retries after a backend outage.",
            ),
            (
                "Time per ingest item",
                "s",
                q("", "partsim_ingest_item_seconds", "", (0.5, 0.95)),
                "Decode, embed and write one track (retries included).",
            ),
        ],
    ),
    (
        "Embedding cache",
        [
            (
                "Cache hit ratio",
                "percentunit",
                [
                    (
                        f'sum(rate(partsim_cache_requests_total{{result="hit"}}{R})) / sum(rate(partsim_cache_requests_total{R}))',
                        "hit ratio",
                    )
                ],
                "Share of embedding lookups answered from the cache (Redis or in-process).",
            ),
            (
                "Cache lookups per second",
                "reqps",
                [(f"sum by (result) (rate(partsim_cache_requests_total{R}))", "{{result}}")],
                "Hits, misses and back-end errors.",
            ),
        ],
    ),
    (
        "Separator",
        [
            (
                "Audio separated (seconds per second)",
                "short",
                [(f"sum(rate(partsim_separator_audio_seconds_total{R}))", "audio s/s")],
                "Seconds of audio separated per wall-clock second, all replicas.",
            ),
            (
                "Real-time factor",
                "short",
                q("", "partsim_separator_realtime_factor", "", (0.5, 0.95)),
                "Separation time / audio duration per request (below 1: faster than real time).",
            ),
            (
                "Separations running and waiting",
                "short",
                [
                    ("sum(partsim_separator_running)", "running"),
                    ("sum(partsim_separator_waiting)", "waiting"),
                    (f"sum(rate(partsim_separator_rejected_total{R}))", "rejected/s"),
                ],
                "Admission control: beyond running + waiting, requests get RESOURCE_EXHAUSTED.",
            ),
        ],
    ),
    (
        "Processes",
        [
            (
                "Serving (grpc.health.v1)",
                "short",
                [
                    (f"min by (job) (partsim_health_serving{{{ALL}}})", "{{job}}"),
                    (f"min by (job) (up{{{ALL}}})", "{{job}} up"),
                ],
                "1 while every replica reports SERVING; 0 while loading, stopping or broken.",
            ),
            (
                "CPU by service",
                "percentunit",
                [(f"sum by (job) (rate(process_cpu_seconds_total{{{ALL}}}{R}))", "{{job}}")],
                "CPU cores used, summed over replicas.",
            ),
            (
                "Resident memory by service",
                "bytes",
                [(f"sum by (job) (process_resident_memory_bytes{{{ALL}}})", "{{job}}")],
                "Resident set size, summed over replicas.",
            ),
            (
                "RPC rate by service",
                "reqps",
                [
                    (
                        f"sum by (job, grpc_service) (rate(grpc_server_handled_total{{{ALL}}}{R}))",
                        "{{job}} {{grpc_service}}",
                    )
                ],
                "Every service's own gRPC traffic, health checks included.",
            ),
        ],
    ),
]


def build() -> dict:
    panels: list[dict] = []
    pid = 1
    y = 0
    for row_title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        for i, (title, unit, targets, description) in enumerate(row):
            panels.append(
                {
                    "id": pid,
                    "type": "timeseries",
                    "title": title,
                    "description": description,
                    "datasource": DS,
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {
                        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"},
                    },
                    "targets": [
                        {
                            "datasource": DS,
                            "expr": scoped(expr),
                            "legendFormat": legend,
                            "refId": chr(ord("A") + k),
                            "range": True,
                        }
                        for k, (expr, legend) in enumerate(targets)
                    ],
                }
            )
            pid += 1
        y += ((len(row) + 2) // 3) * 8
    return {
        "__inputs": INPUTS,
        "__requires": REQUIRES,
        "uid": "partsim-overview",
        "title": "partsim",
        "description": "partsim cluster: gateway, embedder, "
        "searcher, separator, ingestion, cache, processes. Generated by scripts/gen-dashboard.py.",
        "tags": ["partsim"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "graphTooltip": 1,
        "templating": {"list": TEMPLATING},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed dashboard is stale")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run scripts/gen-dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({sum(1 for p in build()['panels'] if p['type'] != 'row')} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
