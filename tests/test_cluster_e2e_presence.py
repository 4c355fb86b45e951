"""Parts judged absent and silence through the whole cluster end to end: real processes (``partsim up``'s
launcher), real gRPC on loopback, the shipped model, Milvus Lite, a real Redis server, FluidSynth-rendered songs. The cluster, its catalog and
the songs' vectors are tests/e2e_cluster.py's session fixtures, shared by tests/test_cluster_e2e_*.py.

EmbedParts gives each segment's audio power; a stem query on a part the model judges absent where the
audio plays is answered with a warning (over the API and on the command line's stderr); one on a silent
segment is refused; a catalog from before power was kept refuses such a query until the track is re-indexed.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from partsim.client import PartsimClient, Stem
from partsim.errors import InvalidArgument
from partsim.model.features import SILENCE_POWER

from .e2e_cluster import SEG, gateway_cli, songs, wav_clip

# every test here talks to a whole cluster (processes, Milvus, Redis): left out of make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


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
                assert pv.power is not None, "EmbedParts gives each part's audio power"
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
    client.index_bytes(_wav(np.concatenate([hiss, mix[: int(2 * SEG * sr)]]), sr), tid, title="quiet intro")
    yield tid
    client.delete_track(tid)


def test_embed_parts_gives_each_segments_audio_power(client, catalog, indexed):
    song = songs(catalog)[2]
    mix, sr = sf.read(str(song / "mix.flac"), dtype="float32")
    emb = client.embed_parts((song / "mix.flac").read_bytes(), SEG, SEG)
    for seg in emb.segments:
        want = float(np.mean(mix[int(seg.start_seconds * sr) : int(seg.end_seconds * sr)].astype(np.float64) ** 2))
        # feature level: every part's power is the mix's over the segment
        assert [pv.power for pv in seg.parts] == pytest.approx([want] * len(seg.parts), rel=1e-5)
    # another sample rate: the same power (measured at the upload's own rate, over the same seconds)
    import soxr

    at48 = client.embed_parts(_wav(soxr.resample(mix, sr, 48000), 48000), SEG, SEG)
    assert [s.parts[0].power for s in at48.segments] == pytest.approx(
        [s.parts[0].power for s in emb.segments], rel=0.01
    )


def test_a_stem_query_on_a_part_judged_absent_where_the_audio_plays_is_answered_with_a_warning(client, judged_absent):
    tid, idx, part, pv = judged_absent
    at = idx * SEG + 4.0
    raw = list(pv.vector)
    for search, by_vector in (
        (
            lambda st: client.search_mix([st], top_k=5, mode="exact"),
            lambda: client.search_mix([Stem(part, vector=raw)], top_k=5, mode="exact"),
        ),
        (
            lambda st: client.search_stems(st, top_k=5, mode="exact"),
            lambda: client.search_stems(Stem(part, vector=raw), top_k=5, mode="exact"),
        ),
    ):
        hits = search(Stem(part, track_id=tid, seconds=at))
        assert len(hits) == 5
        [w] = hits.warnings
        assert (w.code, w.query_index, w.part, w.track_id, w.segment_index, w.start, w.end) == (
            "PART_JUDGED_ABSENT",
            0,
            part,
            tid,
            idx,
            idx * SEG,
            idx * SEG + SEG,
        )
        assert w.power == pytest.approx(pv.power, rel=1e-6) and w.power >= SILENCE_POWER
        assert w.norm == pytest.approx(pv.norm, rel=1e-6)
        assert part in w.message and tid in w.message and "absent" in w.message
        # the query embedding is the part's raw subspace vector, normalised: the same answer as that vector
        ref = by_vector()
        assert ref.warnings == []
        assert [h.to_json() for h in hits] == [h.to_json() for h in ref]


def test_an_absent_part_beside_a_playing_one_warns_only_about_its_own_query(client, indexed, judged_absent):
    tid, idx, part, _ = judged_absent
    other_tid, other_part = next(
        (t, p)
        for t, (vecs, present) in sorted(indexed.items())
        if t != tid
        for j, p in enumerate(["drums", "bass", "piano", "guitar", "others"])
        if present[0, j] and p != part
    )
    hits = client.search_mix(
        [Stem(other_part, track_id=other_tid, seconds=1.0), Stem(part, track_id=tid, segment_index=idx)],
        top_k=3,
        mode="exact",
    )
    assert len(hits) == 3 and set(hits[0].per_part) == {part, other_part}
    assert [(w.code, w.query_index, w.part) for w in hits.warnings] == [("PART_JUDGED_ABSENT", 1, part)]


def test_a_clip_in_which_the_part_is_judged_absent_but_plays_is_answered_with_a_warning(client, catalog, judged_absent):
    tid, idx, part, pv = judged_absent
    clip = wav_clip(catalog / tid / "mix.flac", idx * SEG, SEG)
    hits = client.search_stems(Stem(part, audio=clip), top_k=4, mode="exact")
    [w] = hits.warnings
    assert (w.code, w.part, w.track_id, w.segment_index, w.start, w.end) == (
        "PART_JUDGED_ABSENT",
        part,
        "",
        0,
        0.0,
        SEG,
    )
    ref = client.search_stems(Stem(part, vector=list(pv.vector)), top_k=4, mode="exact")
    assert [(h.track_id, h.segment) for h in hits] == [(h.track_id, h.segment) for h in ref]
    assert [h.distance for h in hits] == pytest.approx([h.distance for h in ref], abs=1e-5)


def test_a_stem_query_on_a_silent_segment_is_refused_for_every_part(client, quiet_intro):
    for part in ["drums", "bass", "piano", "guitar", "others"]:
        for call in (
            lambda part=part: client.search_mix([Stem(part, track_id=quiet_intro, seconds=5.0)], mode="exact"),
            lambda part=part: client.search_stems(Stem(part, track_id=quiet_intro, segment_index=0)),
            lambda part=part: client.search_mix([Stem(part, audio=_wav(np.zeros(int(SEG * 44100), np.float32)))]),
        ):
            with pytest.raises(InvalidArgument, match="silent") as info:
                call()
            assert part in str(info.value)
    # the track's other segments play: the same part there is a query again (with or without a warning)
    hits = client.search_mix([Stem("drums", track_id=quiet_intro, seconds=15.0)], top_k=2, mode="exact")
    assert len(hits) == 2


def test_an_absent_part_in_a_catalog_from_before_power_was_kept_is_refused_until_the_track_is_reindexed(
    cluster, catalog, indexed, judged_absent, tmp_path
):
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
    old = {
        tid: [
            {
                "index": i,
                "start": i * SEG,
                "end": (i + 1) * SEG,
                "vectors": {p: vecs[i, j].astype(np.float32) for j, p in enumerate(parts)},
                "present": {p: bool(present[i, j]) for j, p in enumerate(parts)},
            }
            for i in range(len(vecs))
        ]
    }
    write_legacy_catalog(tmp_path / "old", old, parts=parts, dim=vecs.shape[2])
    searcher = SearcherServer(
        SearcherConfig(
            address="127.0.0.1:0",
            data_dir=str(tmp_path / "old"),
            parts=",".join(parts),
            subspace_dim=vecs.shape[2],
            metrics_port=-1,
        )
    ).start()
    embedder = next(s.address for s in cluster.services if s.name == "embedder")
    gateway = GatewayServer(
        GatewayConfig(
            address="127.0.0.1:0",
            embedder=embedder,
            searcher=searcher.address,
            data_dir=str(tmp_path / "gw"),
            metrics_port=-1,
        )
    ).start()
    try:
        with PartsimClient(gateway.address, timeout=120) as c:
            c.wait_ready(60)
            with pytest.raises(InvalidArgument, match=f"re-index track {tid}"):
                c.search_stems(Stem(part, track_id=tid, segment_index=idx))
            playing = parts[int(np.argmax(present[idx]))]
            assert present[idx, parts.index(playing)]
            hits = c.search_stems(Stem(playing, track_id=tid, segment_index=idx), top_k=1)
            assert [(h.track_id, h.segment) for h in hits] == [(tid, idx)] and hits.warnings == []
            c.index_bytes((catalog / tid / "mix.flac").read_bytes(), tid)  # the fix the message names
            hits = c.search_stems(Stem(part, track_id=tid, segment_index=idx), top_k=1)
            assert [w.code for w in hits.warnings] == ["PART_JUDGED_ABSENT"]
    finally:
        gateway.stop(1)
        searcher.stop(1)


def test_cli_search_commands_print_warnings_on_stderr(cluster, judged_absent, quiet_intro):
    tid, idx, part, _ = judged_absent
    stem = f"{part}:{tid}@{idx * SEG + 4.0}"
    proc = gateway_cli(cluster, "search-mix", "--stem", stem, "--top-k", "3", "--exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3  # stdout: the hits alone, as before
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    w = json.loads(line)["warning"]
    assert (w["code"], w["part"], w["track_id"], w["segment_index"]) == ("PART_JUDGED_ABSENT", part, tid, idx)
    proc = gateway_cli(cluster, "search-stems", "--stem", stem, "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"partsim: warning: PART_JUDGED_ABSENT: query 0: the model judges the {part} part absent" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 2
    proc = gateway_cli(cluster, "search-stems", "--stem", f"{part}:{quiet_intro}@5", "--json")
    assert proc.returncode == 2 and "silent" in proc.stderr and "Traceback" not in proc.stderr  # the server refuses it
