"""The whole cluster end to end: real processes (``partsim up``'s launcher), real gRPC on loopback,
the shipped model, Milvus Lite, a real Redis server, FluidSynth-rendered songs."""

from __future__ import annotations

import io
import json
import time

import grpc
import numpy as np
import pytest
import soundfile as sf

from partsim.client import PartsimClient, Stem
from partsim.cluster import Cluster
from partsim.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from partsim.model.features import SILENCE_POWER
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .e2e_cluster import SEG, songs, wav_clip

pytestmark = pytest.mark.timeout(900)


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
            if present[1, j] and part not in [p for p, _, _ in picks] and len(picks) < 2 and tid not in [t for _, t, _ in picks]:
                picks.append((part, tid, 1))
    assert len(picks) == 2
    query = {}
    for part, tid, s in picks:
        v = indexed[tid][0][s, parts.index(part)]
        query[part] = v / np.linalg.norm(v)
    ref = reference_search(indexed, parts, query, top_k=5)
    hits = client.search_mix([Stem(p, track_id=t, seconds=s * SEG + 3.0) for p, t, s in picks], top_k=5,
                             mode="exact")
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
    before = client.stats().stats
    song = songs(catalog)[0]
    resp = client.index_bytes((song / "mix.flac").read_bytes(), song.name, title="renamed")
    assert resp.replaced
    after = client.stats().stats
    assert (after.tracks, after.segments) == (before.tracks, before.segments)
    assert client.get_track(song.name).metadata.title == "renamed"
    assert len([t for t in client.list_tracks(page_size=3)]) == before.tracks
    # EmbedParts with the default segment (0 -> the catalog's 10 s) and hop
    assert len(client.embed_parts((song / "mix.flac").read_bytes()).segments) == 3


def test_bad_input_gets_precise_errors_and_changes_nothing(client, indexed, catalog):
    tid = sorted(indexed)[0]
    before = client.stats().stats
    cases = [
        (lambda: client.search_mix([]), InvalidArgument, "empty"),
        (lambda: client.search_mix([Stem("kazoo", track_id=tid, seconds=1)]), InvalidArgument, "unknown part"),
        (lambda: client.search_mix([Stem("drums", track_id="nope", seconds=1)]), NotFound, "nope"),
        (lambda: client.search_mix([Stem("drums", track_id=tid, seconds=999)]), NotFound, "outside"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 7)]), InvalidArgument, "128"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], top_k=0), InvalidArgument, "top_k"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], top_k=1001), InvalidArgument, "top_k"),
        (lambda: client.search_mix([Stem("drums", vector=[0.1] * 128)], weights={"drums": -1}), InvalidArgument,
         "positive"),
        (lambda: client.search_mix([Stem("drums", audio=b"not audio at all")]), InvalidArgument, "decode"),
        (lambda: client.embed_parts(b""), InvalidArgument, "empty"),
        (lambda: client.embed_parts(wav_clip(songs(catalog)[0] / "mix.flac", 0, 2.0), SEG, SEG), InvalidArgument,
         "shorter"),
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
    after = client.stats().stats
    assert (after.tracks, after.segments) == (before.tracks, before.segments)


def test_over_long_upload_is_resource_exhausted(cluster, catalog, tmp_path):
    # a second gateway with a 1-MB limit in front of the same backends
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    searcher = next(s.address for s in cluster.services if s.name == "searcher")
    embedder = next(s.address for s in cluster.services if s.name == "embedder")
    cfg = GatewayConfig(address="127.0.0.1:0", embedder=embedder, searcher=searcher, data_dir=str(tmp_path),
                        max_upload_mb=1.0, metrics_port=-1)
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
        cfg = GatewayConfig(address="127.0.0.1:0", embedder=embedder, searcher=searcher, redis_url=own_db,
                            data_dir=str(tmp_path),
                            allowed_roots=str(catalog), ingest_workers=workers, metrics_port=-1)
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


def test_health_reflection_and_metrics(cluster, client, indexed):
    import urllib.request

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for svc in cluster.services:
        ch = grpc.insecure_channel(svc.address)
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, svc.name
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=5))
        names = {s.name for s in resp.list_services_response.service}
        assert "grpc.health.v1.Health" in names and any(n.startswith("partsim.v1.") for n in names), names
        ch.close()
        text = urllib.request.urlopen(f"http://{svc.metrics}/metrics", timeout=5).read().decode()
        assert "grpc_server_handled_total" in text, svc.name
    gw = next(s for s in cluster.services if s.name == "gateway")
    text = urllib.request.urlopen(f"http://{gw.metrics}/metrics", timeout=5).read().decode()
    assert 'grpc_method="SearchMix"' in text and "partsim_cache_requests_total" in text
    assert "partsim_ingest_queue_depth" in text


def test_cli_index_and_search_commands(cluster, catalog, indexed):
    """The commands other tools call: partsim index / search-mix / search-stems --json."""
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "partsim", *args, "--gateway", cluster.gateway],
                              capture_output=True, text=True, timeout=300)

    song = songs(catalog)[5]
    proc = cli("index", str(song), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "indexed 1 of 1" in proc.stderr
    vecs, present = indexed[song.name]
    part = ["drums", "bass", "piano", "guitar", "others"][int(np.argmax(present[1]))]
    proc = cli("search-mix", "--stem", f"{part}:{song.name}@12.5", "--top-k", "3", "--exact", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert hits[0]["track_id"] == song.name and hits[0]["best_start"] == 10.0
    assert set(hits[0]) >= {"track_id", "distance", "best_start", "per_part"} and list(hits[0]["per_part"]) == [part]
    proc = cli("search-stems", "--stem", f"{part}:{song.name}@12.5", "--top-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    stems = json.loads(proc.stdout)
    assert (stems[0]["track_id"], stems[0]["segment"], stems[0]["start"]) == (song.name, 1, 10.0)
    # bad input: a precise message and exit status 2, no traceback
    proc = cli("search-mix", "--stem", "kazoo:x@1", "--json")
    assert proc.returncode == 2 and "unknown part 'kazoo'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("search-mix", "--stem", "drums-song@1")
    assert proc.returncode == 2 and "PART:TRACK_ID@SECONDS" in proc.stderr


# ------------------------------------------------------------------ presence: parts judged absent, silence


def _wav(audio: np.ndarray, sr: int = 44100) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def judged_absent(client, catalog, indexed):
    """The first (track, segment, part, its PartVector) of the catalog where the model judges the part
    absent but the mix is not silent (EmbedParts says both; songs whose parts drop out have many)."""
    for song in songs(catalog):
        emb = client.embed_parts((song / "mix.flac").read_bytes(), SEG, SEG)
        for seg in emb.segments:
            for pv in seg.parts:
                assert pv.HasField("power"), "EmbedParts gives each part's audio power"
                if not pv.present and pv.power >= SILENCE_POWER:
                    return song.name, seg.index, pv.part, pv
    pytest.fail("precondition: no catalog segment where the model judges a part absent and the mix plays")


@pytest.fixture
def quiet_intro(client, catalog, indexed):
    """A track whose first 10-s segment is near-silent noise (mean power 1e-6) and whose next two are a song
    (indexed for the test, then deleted: other tests compare the catalog with their own reference)."""
    mix, sr = sf.read(str(songs(catalog)[1] / "mix.flac"), dtype="float32")
    hiss = (np.random.default_rng(3).standard_normal(int(SEG * sr)) * 1e-3).astype(np.float32)
    tid = "quiet-intro"
    client.index_bytes(_wav(np.concatenate([hiss, mix[:int(2 * SEG * sr)]]), sr), tid, title="quiet intro")
    yield tid
    client.delete_track(tid)


def test_embed_parts_gives_each_segments_audio_power(client, catalog, indexed):
    song = songs(catalog)[2]
    mix, sr = sf.read(str(song / "mix.flac"), dtype="float32")
    emb = client.embed_parts((song / "mix.flac").read_bytes(), SEG, SEG)
    for seg in emb.segments:
        want = float(np.mean(mix[int(seg.start_seconds * sr):int(seg.end_seconds * sr)].astype(np.float64) ** 2))
        # feature level: every part's power is the mix's over the segment
        assert [pv.power for pv in seg.parts] == pytest.approx([want] * len(seg.parts), rel=1e-5)
    # another sample rate: the same power (measured at the upload's own rate, over the same seconds)
    import soxr

    at48 = client.embed_parts(_wav(soxr.resample(mix, sr, 48000), 48000), SEG, SEG)
    assert [s.parts[0].power for s in at48.segments] == pytest.approx([s.parts[0].power for s in emb.segments],
                                                                      rel=0.01)


def test_a_stem_query_on_a_part_judged_absent_where_the_audio_plays_is_answered_with_a_warning(client, judged_absent):
    tid, idx, part, pv = judged_absent
    at = idx * SEG + 4.0
    raw = list(pv.vector)
    for search, by_vector in ((lambda st: client.search_mix([st], top_k=5, mode="exact"),
                               lambda: client.search_mix([Stem(part, vector=raw)], top_k=5, mode="exact")),
                              (lambda st: client.search_stems(st, top_k=5, mode="exact"),
                               lambda: client.search_stems(Stem(part, vector=raw), top_k=5, mode="exact"))):
        hits = search(Stem(part, track_id=tid, seconds=at))
        assert len(hits) == 5
        [w] = hits.warnings
        assert (w.code, w.query_index, w.part, w.track_id, w.segment_index, w.start, w.end) == \
               ("PART_JUDGED_ABSENT", 0, part, tid, idx, idx * SEG, idx * SEG + SEG)
        assert w.power == pytest.approx(pv.power, rel=1e-6) and w.power >= SILENCE_POWER
        assert w.norm == pytest.approx(pv.norm, rel=1e-6)
        assert part in w.message and tid in w.message and "absent" in w.message
        # the query embedding is the part's raw subspace vector, normalised: the same answer as that vector
        ref = by_vector()
        assert ref.warnings == []
        assert [h.to_json() for h in hits] == [h.to_json() for h in ref]


def test_an_absent_part_beside_a_playing_one_warns_only_about_its_own_query(client, indexed, judged_absent):
    tid, idx, part, _ = judged_absent
    other_tid, other_part = next((t, p) for t, (vecs, present) in sorted(indexed.items()) if t != tid
                                 for j, p in enumerate(["drums", "bass", "piano", "guitar", "others"])
                                 if present[0, j] and p != part)
    hits = client.search_mix([Stem(other_part, track_id=other_tid, seconds=1.0),
                              Stem(part, track_id=tid, segment_index=idx)], top_k=3, mode="exact")
    assert len(hits) == 3 and set(hits[0].per_part) == {part, other_part}
    assert [(w.code, w.query_index, w.part) for w in hits.warnings] == [("PART_JUDGED_ABSENT", 1, part)]


def test_a_clip_in_which_the_part_is_judged_absent_but_plays_is_answered_with_a_warning(client, catalog,
                                                                                        judged_absent):
    tid, idx, part, pv = judged_absent
    clip = wav_clip(catalog / tid / "mix.flac", idx * SEG, SEG)
    hits = client.search_stems(Stem(part, audio=clip), top_k=4, mode="exact")
    [w] = hits.warnings
    assert (w.code, w.part, w.track_id, w.segment_index, w.start, w.end) == ("PART_JUDGED_ABSENT", part, "", 0,
                                                                             0.0, SEG)
    ref = client.search_stems(Stem(part, vector=list(pv.vector)), top_k=4, mode="exact")
    assert [(h.track_id, h.segment) for h in hits] == [(h.track_id, h.segment) for h in ref]
    assert [h.distance for h in hits] == pytest.approx([h.distance for h in ref], abs=1e-5)


def test_a_stem_query_on_a_silent_segment_is_refused_for_every_part(client, quiet_intro):
    for part in ["drums", "bass", "piano", "guitar", "others"]:
        for call in (lambda: client.search_mix([Stem(part, track_id=quiet_intro, seconds=5.0)], mode="exact"),
                     lambda: client.search_stems(Stem(part, track_id=quiet_intro, segment_index=0)),
                     lambda: client.search_mix([Stem(part, audio=_wav(np.zeros(int(SEG * 44100), np.float32)))])):
            with pytest.raises(InvalidArgument, match="silent") as info:
                call()
            assert part in str(info.value)
    # the track's other segments play: the same part there is a query again (with or without a warning)
    hits = client.search_mix([Stem("drums", track_id=quiet_intro, seconds=15.0)], top_k=2, mode="exact")
    assert len(hits) == 2


def test_the_catalog_keeps_raw_vectors_presence_and_power_as_embedded(cluster, client, catalog, indexed):
    """Over the searcher's own gRPC API: every part of every segment, present or not, as EmbedParts gave it."""
    from partsim.v1 import searcher_pb2, searcher_pb2_grpc

    searcher = searcher_pb2_grpc.SearcherServiceStub(
        grpc.insecure_channel(next(s.address for s in cluster.services if s.name == "searcher")))
    absent = 0
    for song in songs(catalog)[:4]:
        emb = client.embed_parts((song / "mix.flac").read_bytes(), SEG, SEG)
        for seg in emb.segments:
            got = searcher.GetSegment(searcher_pb2.GetSegmentRequest(track_id=song.name, segment_index=seg.index),
                                      timeout=30).segment
            assert (got.start_seconds, got.end_seconds) == (seg.start_seconds, seg.end_seconds)
            for want, have in zip(seg.parts, got.parts):
                assert have.part == want.part and have.present == want.present
                assert np.array_equal(np.asarray(have.vector, np.float32), np.asarray(want.vector, np.float32))
                assert have.HasField("power") and have.power == want.power
                absent += not want.present
    assert absent > 0


def test_an_absent_part_in_a_catalog_from_before_power_was_kept_is_refused_until_the_track_is_reindexed(
        cluster, catalog, indexed, judged_absent, tmp_path):
    """A catalog the searcher wrote before it kept raw vectors and audio power (migrated when opened): its
    present parts query as before; an absent part cannot be judged audible, so it is refused with the fix."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer
    from partsim.services.searcher.config import SearcherConfig
    from partsim.services.searcher.server import SearcherServer

    from .searcher_harness import write_legacy_catalog

    parts = ["drums", "bass", "piano", "guitar", "others"]
    tid, idx, part, _ = judged_absent
    vecs, present = indexed[tid]
    old = {tid: [{"index": i, "start": i * SEG, "end": (i + 1) * SEG, "vectors": {
        p: vecs[i, j].astype(np.float32) for j, p in enumerate(parts)}, "present": {
        p: bool(present[i, j]) for j, p in enumerate(parts)}} for i in range(len(vecs))]}
    write_legacy_catalog(tmp_path / "old", old, parts=parts, dim=vecs.shape[2])
    searcher = SearcherServer(SearcherConfig(address="127.0.0.1:0", data_dir=str(tmp_path / "old"),
                                             parts=",".join(parts), subspace_dim=vecs.shape[2],
                                             metrics_port=-1)).start()
    embedder = next(s.address for s in cluster.services if s.name == "embedder")
    gateway = GatewayServer(GatewayConfig(address="127.0.0.1:0", embedder=embedder, searcher=searcher.address,
                                          data_dir=str(tmp_path / "gw"), metrics_port=-1)).start()
    try:
        with PartsimClient(gateway.address, timeout=120) as c:
            c.wait_ready(60)
            with pytest.raises(InvalidArgument, match=f"re-index track {tid}"):
                c.search_stems(Stem(part, track_id=tid, segment_index=idx))
            playing = parts[int(np.argmax(present[idx]))]
            assert present[idx, parts.index(playing)]
            hits = c.search_stems(Stem(playing, track_id=tid, segment_index=idx), top_k=1)
            assert [(h.track_id, h.segment) for h in hits] == [(tid, idx)] and hits.warnings == []
            c.index_bytes((catalog / tid / "mix.flac").read_bytes(), tid)   # the fix the message names
            hits = c.search_stems(Stem(part, track_id=tid, segment_index=idx), top_k=1)
            assert [w.code for w in hits.warnings] == ["PART_JUDGED_ABSENT"]
    finally:
        gateway.stop(1)
        searcher.stop(1)


def test_cli_search_commands_print_warnings_on_stderr(cluster, judged_absent, quiet_intro):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "partsim", *args, "--gateway", cluster.gateway],
                              capture_output=True, text=True, timeout=300)

    tid, idx, part, _ = judged_absent
    stem = f"{part}:{tid}@{idx * SEG + 4.0}"
    proc = cli("search-mix", "--stem", stem, "--top-k", "3", "--exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3  # stdout: the hits alone, as before
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    w = json.loads(line)["warning"]
    assert (w["code"], w["part"], w["track_id"], w["segment_index"]) == ("PART_JUDGED_ABSENT", part, tid, idx)
    proc = cli("search-stems", "--stem", stem, "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"partsim: warning: PART_JUDGED_ABSENT: query 0: the model judges the {part} part absent" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 2
    proc = cli("search-stems", "--stem", f"{part}:{quiet_intro}@5", "--json")
    assert proc.returncode == 2 and "silent" in proc.stderr and "Traceback" not in proc.stderr


def test_partsim_up_serves_and_stops_on_sigint(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "partsim", "up", "--data", str(tmp_path / "d"),
                             "--gateway", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        for line in proc.stdout:
            if "partsim is serving on" in line:
                address = line.split("serving on ")[1].split(";")[0]
                break
        assert address, "partsim up did not come up"
        with PartsimClient(address) as c:
            assert c.stats().stats.tracks == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read()
        assert "stopping" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster_with_separator(tmp_path_factory, catalog):
    """No Redis here: the embedded defaults (in-process cache, SQLite jobs) and a tiny separator."""
    from .tiny_separator import make_tiny_repo

    repo = tmp_path_factory.mktemp("seprepo")
    make_tiny_repo(repo, name="tiny-sep")
    data = tmp_path_factory.mktemp("cluster-sep")
    env = {"PARTSIM_SEPARATOR_REPO": str(repo), "PARTSIM_SEPARATOR_MODEL": "tiny-sep"}
    with Cluster(data, gateway="127.0.0.1:0", allowed_roots=[catalog], quiet=True, extra_env=env) as c:
        with PartsimClient(c.gateway) as client:
            client.wait_ready(300)
        yield c


def test_get_stems_and_the_signal_level_mode(cluster_with_separator, catalog):
    song = songs(catalog)[2]
    data = (song / "mix.flac").read_bytes()
    stub = gateway_pb2_grpc.PartsimServiceStub(grpc.insecure_channel(cluster_with_separator.gateway))
    with PartsimClient(cluster_with_separator.gateway) as c:
        c.index_bytes(data, song.name)
        feature = c.embed_parts(data, SEG, SEG)
    signal = stub.EmbedParts(gateway_pb2.EmbedPartsRequest(audio=types_pb2.Audio(encoded=data), segment_seconds=SEG,
                                                           hop_seconds=SEG, mode=gateway_pb2.EMBED_MODE_SIGNAL),
                             timeout=300)
    # same shape as the feature-level answer, different vectors (each part from its own stem)
    assert [len(s.parts) for s in signal.segments] == [len(s.parts) for s in feature.segments]
    assert [p.part for p in signal.segments[0].parts] == [p.part for p in feature.segments[0].parts]
    assert all(len(p.vector) == 128 for s in signal.segments for p in s.parts)
    assert not np.allclose([p.vector for p in signal.segments[0].parts], [p.vector for p in feature.segments[0].parts])
    # each part's audio power is its own separated stem's, not the mix's
    assert all(p.HasField("power") for s in signal.segments for p in s.parts)
    sig_power = np.array([[p.power for p in s.parts] for s in signal.segments])
    mix_power = np.array([[p.power for p in s.parts] for s in feature.segments])
    assert not np.allclose(sig_power, mix_power, rtol=1e-3) and np.all(sig_power >= 0)
    # the stems of segment 1 (10-20 s), twice: the second answer comes from the cache, identical
    answers = []
    for _ in range(2):
        msgs = list(stub.GetStems(gateway_pb2.GetStemsRequest(segment=gateway_pb2.IndexedSegment(
            track_id=song.name, seconds=12.0)), timeout=300))
        answers.append(msgs)
    header = answers[0][0].header
    assert (header.track_id, header.segment_index, header.start_seconds, header.end_seconds) == (song.name, 1, 10.0, 20.0)
    stems = {}
    for m in answers[0][1:]:
        stems.setdefault(m.chunk.stem, bytearray()).extend(m.chunk.data)
    sep = header.separation
    assert [s.name for s in sep.stems] == ["drums", "bass", "piano", "guitar", "others"]
    for i in range(len(sep.stems)):
        assert len(stems[i]) == sep.total_frames * sep.channels * 4 and sep.total_frames == 10 * sep.sample_rate
    assert [m.SerializeToString() for m in answers[1]] == [m.SerializeToString() for m in answers[0]]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.GetStems(gateway_pb2.GetStemsRequest(segment=gateway_pb2.IndexedSegment(track_id=song.name,
                                                                                          segment_index=9)), timeout=60))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_without_a_separator_the_signal_mode_says_why(client, catalog, indexed):
    stub = client.stub
    data = (songs(catalog)[0] / "mix.flac").read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.EmbedParts(gateway_pb2.EmbedPartsRequest(audio=types_pb2.Audio(encoded=data),
                                                      mode=gateway_pb2.EMBED_MODE_SIGNAL), timeout=60)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "separator" in info.value.details()
