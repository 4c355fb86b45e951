"""The catalog commands (``tracks``, ``stats``, ``jobs``), queries by an audio file, the ``--json`` hits and the
exit statuses of ``partsim`` against the shared e2e cluster (tests/e2e_cluster.py); and the client's typed
results (dataclasses, never protobuf).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time

import pytest

from partsim.client import (
    CatalogStats,
    Embedding,
    IngestJob,
    JobState,
    PartEmbedding,
    SegmentEmbedding,
    Track,
    rpc_code,
)
from partsim.errors import FailedPrecondition, InvalidArgument

from .e2e_cluster import SEG, gateway_cli, songs, wav_clip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PARTS = ["drums", "bass", "piano", "guitar", "others"]


def run_json(cluster, *args: str):
    proc = gateway_cli(cluster, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_error(proc: subprocess.CompletedProcess, status: int, *words: str) -> None:
    """Exit ``status`` with one ``partsim: error:`` line naming ``words`` (argparse's usage lines for 2)."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and all(w in proc.stderr for w in words), proc.stderr
    if status != 2:
        assert proc.stderr.startswith("partsim: error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_the_client_returns_dataclasses(client, indexed, catalog):
    song = songs(catalog)[0]
    track = client.get_track(song.name)
    assert isinstance(track, Track) and (track.track_id, track.title, track.tags) == (
        song.name,
        song.name,
        {"corpus": "e2e"},
    )
    assert track.num_segments == 3 and track.model_version and track.duration_seconds == pytest.approx(32.0, abs=0.1)
    assert all(isinstance(t, Track) for t in client.list_tracks(page_size=3))
    stats = client.stats()
    assert isinstance(stats, CatalogStats) and stats.tracks >= len(indexed) and stats.model_version
    emb = client.embed_parts(wav_clip(song / "mix.flac", 0, 2 * SEG), SEG, SEG, mode="feature")
    assert isinstance(emb, Embedding) and emb.model.parts == PARTS and len(emb.segments) == 2
    assert isinstance(emb.segments[0], SegmentEmbedding) and isinstance(emb.segments[0].parts[0], PartEmbedding)
    assert len(emb.segments[0].parts[0].vector) == emb.model.subspace_dim and emb.segments[0].parts[0].power is not None
    for value in (track, stats, emb):
        json.dumps(value.to_json())  # plain JSON values all the way down
        assert dataclasses.is_dataclass(value)
    with pytest.raises(InvalidArgument, match="mode must be one of feature, signal"):
        client.embed_parts(b"", mode="mix")
    # GetStems and the signal level need a separator; this cluster has none: the precise error
    for call in (lambda: client.get_stems(song.name, seconds=12.0), lambda: client.embed_parts(b"x", mode="signal")):
        with pytest.raises(FailedPrecondition, match="needs a separator; none is configured") as err:
            call()
        assert rpc_code(err.value) == "FAILED_PRECONDITION"
    with pytest.raises(InvalidArgument, match="format must be one of flac, float32le"):
        client.get_stems(song.name, segment_index=0, format="mp3")


def test_tracks_list_get_delete_round_trip(cluster, catalog, indexed, tmp_path):
    clip = tmp_path / "cli-own-track.wav"  # our own track: the shared ones stay
    clip.write_bytes(wav_clip(songs(catalog)[1] / "mix.flac", 0, 2 * SEG))
    proc = gateway_cli(cluster, "index", str(clip), "--quiet")
    assert proc.returncode == 0, proc.stderr
    listed = run_json(cluster, "tracks", "list", "--page-size", "3")
    assert {t["track_id"] for t in listed} >= {*indexed, "cli-own-track"}
    got = run_json(cluster, "tracks", "get", "cli-own-track")
    assert got == next(t for t in listed if t["track_id"] == "cli-own-track")
    assert (got["title"], got["artist"], got["num_segments"], got["segment_seconds"]) == ("cli-own-track", "", 2, SEG)
    text = gateway_cli(cluster, "tracks", "get", "cli-own-track")
    assert text.returncode == 0 and "num_segments: 2" in text.stdout.splitlines()
    assert "cli-own-track" in gateway_cli(cluster, "tracks", "list").stdout
    proc = gateway_cli(cluster, "tracks", "delete", "cli-own-track")
    assert proc.returncode == 0 and "deleted cli-own-track" in proc.stderr, proc.stderr
    assert_error(gateway_cli(cluster, "tracks", "get", "cli-own-track"), 3, "cli-own-track")  # NOT_FOUND
    assert "cli-own-track" not in {t["track_id"] for t in run_json(cluster, "tracks", "list")}


def test_stats_json(cluster, indexed):
    stats = run_json(cluster, "stats")
    assert set(stats) == {"tracks", "segments", "present_segments_by_part", "backend", "model_version"}
    assert stats["tracks"] >= len(indexed) and stats["segments"] >= 3 * len(indexed)
    assert set(stats["present_segments_by_part"]) <= set(PARTS) and stats["model_version"]
    text = gateway_cli(cluster, "stats")
    assert text.returncode == 0 and text.stdout.startswith(f"{stats['tracks']} tracks, {stats['segments']} segments")


def _wait_done(cluster, job_id: str) -> dict:
    deadline = time.monotonic() + 180
    while (job := run_json(cluster, "jobs", "get", job_id))["state"] != "DONE":
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_jobs_submit_get_retry(cluster, client, catalog, indexed):
    song = songs(catalog)[2]
    broken = catalog / "cli-broken.flac"  # inside the cluster's allowed root; not audio
    broken.write_bytes(b"not audio")
    try:
        sub = run_json(cluster, "jobs", "submit", f"cli-job={song / 'mix.flac'}", f"file://{broken}")
        assert sub["track_ids"] == ["cli-job", "cli-broken"] and sub["job_id"]
        job = _wait_done(cluster, sub["job_id"])
        assert (job["total"], job["succeeded"], job["failed"]) == (2, 1, 1)
        assert job["failures"][0]["track_id"] == "cli-broken" and job["failures"][0]["error"]
        assert client.get_track("cli-job").num_segments == 3
        retried = run_json(cluster, "jobs", "retry", sub["job_id"])
        assert retried["requeued"] == 1 and retried["job"]["job_id"] == sub["job_id"]
        assert _wait_done(cluster, sub["job_id"])["failed"] == 1  # still not audio
        text = gateway_cli(cluster, "jobs", "get", sub["job_id"])
        assert text.returncode == 0 and text.stdout.startswith(f"{sub['job_id']}: DONE, 1 of 2 indexed, 1 failed")
        typed = client.get_job(sub["job_id"])
        assert isinstance(typed, IngestJob) and typed.state is JobState.DONE
    finally:
        broken.unlink()
        client.delete_track("cli-job")
    assert_error(gateway_cli(cluster, "jobs", "get", "no-such-job"), 3, "no-such-job")  # NOT_FOUND
    assert_error(
        gateway_cli(cluster, "jobs", "submit", "/etc/hostname"), 5, "outside the allowed roots"
    )  # PERMISSION_DENIED


def test_search_by_an_audio_file_with_metadata_and_best_segment_in_json(cluster, catalog, indexed, tmp_path):
    song = songs(catalog)[3]
    vecs, present = indexed[song.name]
    part = next(p for j, p in enumerate(PARTS) if present[1, j])  # a part that plays in segment 1 (10-20 s)
    mix = song / "mix.flac"
    hits = run_json(cluster, "search-mix", "--stem-file", f"{part}:{mix}@10", "--top-k", "3", "--exact")
    assert len(hits) == 3 and hits[0]["track_id"] == song.name
    assert (hits[0]["best_segment"], hits[0]["best_start"], hits[0]["best_end"]) == (1, 10.0, 20.0)
    assert list(hits[0]["per_part"]) == [part] and hits[0]["per_part"][part] == pytest.approx(0.0, abs=1e-3)
    assert hits[0]["metadata"] == {"title": song.name, "artist": "", "tags": {"corpus": "e2e"}}
    stems = run_json(cluster, "search-stems", "--stem-file", f"{part}:{mix}@10", "--top-k", "2", "--exact")
    assert (stems[0]["track_id"], stems[0]["segment"], stems[0]["start"], stems[0]["end"]) == (song.name, 1, 10.0, 20.0)
    assert stems[0]["metadata"]["title"] == song.name and stems[0]["distance"] == pytest.approx(0.0, abs=1e-3)
    # a whole file, mixed with an indexed stem; the text output names the hits
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_clip(mix, 10.0, SEG))
    proc = gateway_cli(cluster, "search-mix", "--stem-file", f"{part}:{clip}", "--stem", f"{part}:{song.name}@12")
    assert proc.returncode == 0 and proc.stdout.split()[1] == song.name, proc.stderr


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_exit_statuses(cluster, catalog, indexed):
    dead = _closed_port()
    for args in (
        ["stats"],
        ["tracks", "list"],
        ["jobs", "get", "x"],
        ["search-mix", "--stem", "drums:x@1"],
        ["index", str(songs(catalog)[0])],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "partsim", *args, "--gateway", dead], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 4 and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert_error(gateway_cli(cluster, "tracks", "get", "never-indexed"), 3, "never-indexed")
    assert_error(gateway_cli(cluster, "search-mix", "--stem", "drums:never-indexed@1"), 3, "never-indexed")
    assert_error(gateway_cli(cluster, "tracks"), 2, "usage: partsim tracks")
    assert_error(gateway_cli(cluster, "tracks", "list", "--page-size", "many"), 2, "expected a whole number")
    assert_error(gateway_cli(cluster, "search-mix"), 2, "--stem-file PART:FILE[@SECONDS]")
    assert_error(gateway_cli(cluster, "search-stems", "--stem-file", "drums:/no/such.flac"), 2, "no such file")
    assert_error(gateway_cli(cluster, "search-mix", "--stem-file", "drums"), 2, "PART:FILE[@SECONDS]")
