"""Commands about a running gateway's tracks and ingest jobs: ``tracks list|get|delete``, ``stats``,
``jobs submit|get|list|retry``.

Each prints plain lines, or with ``--json`` the client's dataclass as JSON (``Track``, ``CatalogStats``,
``IngestJob``: see :mod:`partsim.client.types`); the exit statuses are those of ``partsim --help``.

``jobs list --json`` prints one JSON array of every job the gateway still keeps, newest first, each an
``IngestJob``: ``{"job_id": str, "state": "QUEUED"|"RUNNING"|"DONE", "total": int, "succeeded": int,
"failed": int, "failures": [{"track_id": str, "error": str}], "created_at": float, "updated_at": float}``
(times in seconds since the Unix epoch) - the object ``jobs get --json`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import PurePosixPath
from urllib.parse import urlparse

from .args import EXIT_OK, add_gateway_options, gateway_client, integer


def register(sub) -> None:
    tracks = sub.add_parser("tracks", help="the catalog's tracks: list, get, delete")
    tsub = tracks.add_subparsers(dest="tracks_command", required=True, metavar="COMMAND")
    ls = _command(tsub, "list", "every track, by track id", _cmd_tracks_list)
    ls.add_argument("--page-size", type=integer, default=100, metavar="N", help="tracks per call (default 100)")
    _command(tsub, "get", "one track: metadata, segments, model", _cmd_tracks_get).add_argument("track_id")
    delete = _command(tsub, "delete", "remove a track from the catalog", _cmd_tracks_delete, json_output=False)
    delete.add_argument("track_id")

    _command(sub, "stats", "the catalog's size: tracks, segments, segments where each part is present", _cmd_stats)

    jobs = sub.add_parser("jobs", help="ingest jobs: submit, get, list, retry")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    submit = _command(jsub, "submit", "index files the gateway reads itself, as one job", _cmd_jobs_submit)
    submit.add_argument(
        "uris",
        nargs="+",
        metavar="[TRACK_ID=]URI",
        help="a path or file:// URI inside the gateway's allowed roots (track id: the file name without suffix)",
    )
    _command(jsub, "get", "a job's state and failures", _cmd_jobs_get).add_argument("job_id")
    jls = _command(jsub, "list", "every job the gateway still keeps (unexpired), newest first", _cmd_jobs_list)
    jls.add_argument("--page-size", type=integer, default=100, metavar="N", help="jobs per call (default 100)")
    _command(jsub, "retry", "queue a job's failed items again", _cmd_jobs_retry).add_argument("job_id")


def _command(sub, name: str, helptext: str, handler, json_output: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=helptext, description=helptext)
    if json_output:
        p.add_argument("--json", action="store_true", help="print JSON")
    add_gateway_options(p)
    p.set_defaults(handler=handler)
    return p


def _print_json(value) -> None:
    print(json.dumps(value, indent=1))


def _cmd_tracks_list(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        tracks = list(c.list_tracks(page_size=args.page_size))
    if args.json:
        _print_json([t.to_json() for t in tracks])
        return EXIT_OK
    for t in tracks:
        print(f"{t.track_id:24s} {t.num_segments:4d} segments {t.duration_seconds:7.1f} s  {t.title}")
    return EXIT_OK


def _cmd_tracks_get(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        track = c.get_track(args.track_id).to_json()
    if args.json:
        _print_json(track)
    else:
        for key, value in track.items():
            print(f"{key}: {value}")
    return EXIT_OK


def _cmd_tracks_delete(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        c.delete_track(args.track_id)
    print(f"deleted {args.track_id}", file=sys.stderr)
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        stats = c.stats()
    if args.json:
        _print_json(stats.to_json())
        return EXIT_OK
    print(f"{stats.tracks} tracks, {stats.segments} segments ({stats.backend}, model {stats.model_version})")
    for part, n in stats.present_segments_by_part.items():
        print(f"  {part}: present in {n} segments")
    return EXIT_OK


def job_item(text: str) -> dict[str, str]:
    """A job item from ``[TRACK_ID=]URI``: the track id given, else the file name without its suffix."""
    tid, sep, uri = text.partition("=")
    if not sep or "/" in tid or ":" in tid:  # a path or URI that holds "=" further on
        tid, uri = PurePosixPath(urlparse(text).path).stem, text
    return {"track_id": tid, "uri": uri, "title": tid}


def _cmd_jobs_submit(args: argparse.Namespace) -> int:
    items = [job_item(u) for u in args.uris]
    with gateway_client(args) as c:
        job_id = c.submit_job(items)
    if args.json:
        _print_json({"job_id": job_id, "track_ids": [it["track_id"] for it in items]})
    else:
        print(job_id)
    return EXIT_OK


def _print_job(job, as_json: bool) -> None:
    if as_json:
        _print_json(job.to_json())
        return
    print(f"{job.job_id}: {job.state.name}, {job.succeeded} of {job.total} indexed, {job.failed} failed")
    for f in job.failures:
        print(f"  {f.track_id}: {f.error}")


def _cmd_jobs_get(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        _print_job(c.get_job(args.job_id), args.json)
    return EXIT_OK


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        jobs = list(c.iter_ingest_jobs(page_size=args.page_size))
    if args.json:
        _print_json([j.to_json() for j in jobs])
        return EXIT_OK
    for j in jobs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at))
        print(f"{j.job_id}  {created}  {j.state.name:7s} {j.succeeded}/{j.total} indexed, {j.failed} failed")
    return EXIT_OK


def _cmd_jobs_retry(args: argparse.Namespace) -> int:
    with gateway_client(args) as c:
        result = c.retry_ingest_job(args.job_id)
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"requeued {result.requeued} failed items", file=sys.stderr)
        _print_job(result.job, False)
    return EXIT_OK
