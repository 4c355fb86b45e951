"""Index and search through the whole cluster end to end: real processes (``partsim up``'s launcher), real
gRPC on loopback, the shipped model, Milvus Lite, a real Redis server, FluidSynth-rendered songs. The cluster, its catalog and
the songs' vectors are tests/e2e_cluster.py's session fixtures, shared by tests/test_cluster_e2e_*.py.

Search is checked against eq. 6.1/6.2 by brute force over the songs' own EmbedParts vectors; then
re-indexing, precise errors for bad input, health, reflection and metrics of every process (after the
searches), and the ``partsim index`` / ``search-mix`` / ``search-stems`` commands.
"""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
import soundfile as sf

from partsim.client import Stem
from partsim.errors import InvalidArgument, NotFound, PermissionDenied

from .e2e_cluster import SEG, gateway_cli, songs, wav_clip

# every test here talks to a whole cluster (processes, Milvus, Redis): left out of make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def reference_search(indexed, parts, query: dict[str, np.ndarray], top_k: int):
    """Eq. 6.1/6.2 by brute force: mean over query parts of 1 - cos, min over each song's segments."""
    ranked = []
    for tid, (vecs, present) in indexed.items():
        best = None
        for s in range(len(vecs)):
            terms = []
            for part, y in query.items():
                j = parts.index(part)
                v = vecs[s, j]
                cos = 0.0 if not present[s, j] else float(v @ y / (np.linalg.norm(v) * np.linalg.norm(y)))
                terms.append(1.0 - cos)
            d = float(np.mean(terms))
            if best is None or d < best[0]:
                best = (d, s)
        ranked.append((best[0], tid, best[1]))
    ranked.sort()
    return ranked[:top_k]


def test_exact_search_mix_is_the_retrieval_function(client, indexed):
    parts = ["drums", "bass", "piano", "guitar", "others"]
    names = sorted(indexed)
    # a query: part j of song a at segment 1 and part k of song b at segment 2, where they play
    picks = []
    for tid in names:
        vecs, present = indexed[tid]
        for j, part in enumerate(parts):
            if (
                present[1, j]
                and part not in [p for p, _, _ in picks]
                and len(picks) < 2
                and tid not in [t for _, t, _ in picks]
            ):
                picks.append((part, tid, 1))
    assert len(picks) == 2
    query = {}
    for part, tid, s in picks:
        v = indexed[tid][0][s, parts.index(part)]
        query[part] = v / np.linalg.norm(v)
    ref = reference_search(indexed, parts, query, top_k=5)
    hits = client.search_mix([Stem(p, track_id=t, seconds=s * SEG + 3.0) for p, t, s in picks], top_k=5, mode="exact")
    assert [h.track_id for h in hits] == [r[1] for r in ref]
    np.testing.assert_allclose([h.distance for h in hits], [r[0] for r in ref], atol=1e-4)
    assert [h.best_segment for h in hits] == [r[2] for r in ref]
    assert hits[0].best_start == hits[0].best_segment * SEG and hits[0].best_end == hits[0].best_start + SEG
    assert set(hits[0].per_part) == set(query)
    assert hits[0].metadata["tags"]["corpus"] == "e2e"
    # approximate mode on a tiny catalog finds the same songs
    approx = client.search_mix([Stem(p, track_id=t, seconds=s * SEG + 3.0) for p, t, s in picks], top_k=5)
    assert [h.track_id for h in approx] == [h.track_id for h in hits]


def test_a_segment_finds_its_own_track_first(client, indexed, catalog):
    tid = sorted(indexed)[3]
    vecs, present = indexed[tid]
    j = int(np.argmax(present[0]))
    part = ["drums", "bass", "piano", "guitar", "others"][j]
    hits = client.search_mix([Stem(part, track_id=tid, seconds=1.0)], top_k=3, mode="exact")
    assert hits[0].track_id == tid and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    stems = client.search_stems(Stem(part, track_id=tid, segment_index=0), top_k=3)
    assert (stems[0].track_id, stems[0].segment) == (tid, 0)
    # an uploaded clip of the same audio finds it too
    song = catalog / tid
    clip = wav_clip(song / "mix.flac", 0.0, SEG)
    hits = client.search_mix([Stem(part, audio=clip)], top_k=3, mode="exact")
    assert hits[0].track_id == tid and hits[0].best_segment == 0


def test_reindexing_replaces_and_does_not_duplicate(client, indexed, catalog):
    before = client.stats()
    song = songs(catalog)[0]
    resp = client.index_bytes((song / "mix.flac").read_bytes(), song.name, title="renamed")
    assert resp.replaced
    after = client.stats()
    assert (after.tracks, after.segments) == (before.tracks, before.segments)
    assert client.get_track(song.name).title == "renamed"
    assert len([t for t in client.list_tracks(page_size=3)]) == before.tracks
    # EmbedParts with the default segment (0 -> the catalog's 10 s) and hop
    assert len(client.embed_parts((song / "mix.flac").read_bytes()).segments) == 3


def test_bad_input_gets_precise_errors_and_changes_nothing(client, indexed, catalog):
    tid = sorted(indexed)[0]
    before = client.stats()
    cases = [
        (lambda: client.search_mix([]), InvalidArgument, "empty"),
        (lambda: client.search_mix([Stem("kazoo", track_id=tid, seconds=1)]), InvalidArgument, "unknown part"),
        (lambda: client.search_mix([Stem("drums", track_id="nope", seconds=1)]), NotFound, "nope"),
        (lambda: client.search_mix([Stem("drums", track_id=tid, seconds=999)]), NotFound, "outside"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 7)]), InvalidArgument, "128"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], top_k=0), InvalidArgument, "top_k"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], top_k=1001), InvalidArgument, "top_k"),
        (
            lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], weights={"drums": -1}),
            InvalidArgument,
            "positive",
        ),
        (lambda: client.search_mix([Stem("drums", audio=b"not audio at all")]), InvalidArgument, "decode"),
        (lambda: client.embed_parts(b""), InvalidArgument, "empty"),
        (
            lambda: client.embed_parts(wav_clip(songs(catalog)[0] / "mix.flac", 0, 2.0), SEG, SEG),
            InvalidArgument,
            "shorter",
        ),
        (lambda: client.submit_job([{"track_id": "x", "uri": "/etc/passwd"}]), PermissionDenied, "allowed roots"),
        (lambda: client.get_job("no-such-job"), NotFound, "no-such-job"),
        (lambda: client.delete_track("never-indexed"), NotFound, "never-indexed"),
    ]
    for call, exc_type, fragment in cases:
        with pytest.raises(exc_type) as info:
            call()
        assert fragment.lower() in str(info.value).lower(), (fragment, str(info.value))
    nan = io.BytesIO()
    sf.write(nan, np.full(int(SEG * 44100) + 10, np.nan, dtype=np.float32), 44100, format="WAV", subtype="FLOAT")
    with pytest.raises(InvalidArgument):
        client.embed_parts(nan.getvalue())
    after = client.stats()
    assert (after.tracks, after.segments) == (before.tracks, before.segments)


def test_health_reflection_and_metrics(cluster, client, indexed):
    import urllib.request

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for svc in cluster.services:
        ch = grpc.insecure_channel(svc.address)
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, svc.name
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(
            refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        )
        names = {s.name for s in resp.list_services_response.service}
        # the gateway serves the public partsim.v1 API, the services behind it partsim.internal.v1
        package = "partsim.v1." if svc.name == "gateway" else "partsim.internal.v1."
        assert "grpc.health.v1.Health" in names and any(n.startswith(package) for n in names), names
        ch.close()
        text = urllib.request.urlopen(f"http://{svc.metrics}/metrics", timeout=5).read().decode()
        assert "grpc_server_handled_total" in text, svc.name
    gw = next(s for s in cluster.services if s.name == "gateway")
    text = urllib.request.urlopen(f"http://{gw.metrics}/metrics", timeout=5).read().decode()
    assert 'grpc_method="SearchMix"' in text and "partsim_cache_requests_total" in text
    assert "partsim_ingest_queue_depth" in text


def test_cli_index_and_search_commands(cluster, catalog, indexed):
    """The commands other tools call: partsim index / search-mix / search-stems --json."""
    song = songs(catalog)[5]
    proc = gateway_cli(cluster, "index", str(song), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "indexed 1 of 1" in proc.stderr
    vecs, present = indexed[song.name]
    part = ["drums", "bass", "piano", "guitar", "others"][int(np.argmax(present[1]))]
    proc = gateway_cli(cluster, "search-mix", "--stem", f"{part}:{song.name}@12.5", "--top-k", "3", "--exact", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert hits[0]["track_id"] == song.name and hits[0]["best_start"] == 10.0
    assert set(hits[0]) >= {"track_id", "distance", "best_start", "per_part"} and list(hits[0]["per_part"]) == [part]
    proc = gateway_cli(cluster, "search-stems", "--stem", f"{part}:{song.name}@12.5", "--top-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    stems = json.loads(proc.stdout)
    assert (stems[0]["track_id"], stems[0]["segment"], stems[0]["start"]) == (song.name, 1, 10.0)
    # the server refuses the query: a precise message and exit status 1; a malformed --stem: 2 (usage)
    proc = gateway_cli(cluster, "search-mix", "--stem", "kazoo:x@1", "--json")
    assert proc.returncode == 2 and "unknown part 'kazoo'" in proc.stderr and "Traceback" not in proc.stderr
    proc = gateway_cli(cluster, "search-mix", "--stem", "drums-song@1")
    assert proc.returncode == 2 and "PART:TRACK_ID@SECONDS" in proc.stderr
