"""Limits and errors a caller can act on (issue 12), as the rules they are: bounded metadata and audio rates,
URIs without control characters, vectors whose norm fits float32, google.rpc.Status details both ways, a full
disk answered as RESOURCE_EXHAUSTED (STORAGE_FULL), deleted metadata reclaimed. Full disks are real: a tmpfs of
a few hundred KB (mounting needs root; elsewhere those tests skip). The services themselves:
tests/test_security_limits_services.py.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2

from partsim.audio import decode_audio_bytes
from partsim.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    is_disk_full,
    storage_error,
)
from partsim.services.gateway.audio_store import AudioStore
from partsim.services.gateway.ingest import job_items, resolve_uri, upload
from partsim.services.gateway.jobs import IngestItem
from partsim.services.gateway.jobs.local_queue import LocalJobQueue
from partsim.services.gateway.queries import vector_query
from partsim.services.searcher.meta import MetaDB, TrackInfo
from partsim.services.status import DOMAIN, error_for, status_proto
from partsim.services.tracks import MAX_FIELD_BYTES, MAX_METADATA_BYTES, MAX_TAGS, check_metadata
from partsim.v1 import gateway_pb2, types_pb2

from .limits_harness import HUGE_TITLE, MANY_TAGS, fill, wav

Code = grpc.StatusCode


# ---------------------------------------------------------------------------------------------
# metadata limits (the rule both services apply)


def test_metadata_at_the_limits_passes_and_one_byte_over_names_the_field_and_the_limit():
    tags = {f"tag{i:02d}": "v" * 200 for i in range(MAX_TAGS)}
    check_metadata(types_pb2.TrackMetadata(title="é" * (MAX_FIELD_BYTES // 2), artist="a" * MAX_FIELD_BYTES, tags=tags))
    for meta, path, text in [
        (types_pb2.TrackMetadata(title="é" * 257), "metadata.title", "metadata.title is 514 bytes; the limit is 512"),
        (types_pb2.TrackMetadata(artist="a" * 513), "metadata.artist", "513 bytes; the limit is 512"),
        (types_pb2.TrackMetadata(tags={"k": "v" * 513}), "metadata.tags['k']", "the tag's value is 513 bytes"),
        (types_pb2.TrackMetadata(tags={"k" * 600: ""}), "metadata.tags['kkk", "the tag's key is 600 bytes"),
        (types_pb2.TrackMetadata(tags={str(i): "" for i in range(65)}), "metadata.tags", "65 tags; the limit is 64"),
        (
            types_pb2.TrackMetadata(tags={f"{i:02d}": "v" * 500 for i in range(40)}),
            "metadata",
            f"in all (title, artist, tags); the limit is {MAX_METADATA_BYTES}",
        ),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(text)) as info:
            check_metadata(meta)
        assert info.value.reason == "METADATA_TOO_LARGE"
        assert info.value.field_violations[0][0].startswith(path), info.value.field_violations


def test_an_8_mb_title_and_50000_tags_are_refused_before_any_backend_is_asked():
    """The gateway's two entry points: a job's items (SubmitIngestJob) and an upload's header (IndexTrack)."""
    items = [gateway_pb2.IngestItem(track_id="a", uri="/x.flac", metadata=types_pb2.TrackMetadata(title=HUGE_TITLE))]
    with pytest.raises(InvalidArgument, match=r"items\[0\]\.metadata\.title is 8388608 bytes; the limit is 512"):
        job_items(items, [Path("/")])
    header = gateway_pb2.IndexTrackHeader(track_id="a", metadata=types_pb2.TrackMetadata(tags=MANY_TAGS))
    t0 = time.perf_counter()
    with pytest.raises(InvalidArgument, match=r"header\.metadata\.tags has 50000 tags; the limit is 64") as info:
        upload(header, iter(()), 1 << 20)
    assert time.perf_counter() - t0 < 0.5
    assert len(info.value.field_violations) <= 12  # one per limit and a few tags, not 50,000
    assert len(str(info.value)) < 1000


# ---------------------------------------------------------------------------------------------
# encoded audio, URIs, vectors


def test_an_encoded_header_rate_outside_1000_to_384000_hz_is_refused_before_decoding():
    body = np.zeros(2_000_000, np.int16)  # 2 M frames: at 1 Hz, 23 days of audio to resample
    for rate in (1, 999, 384_001):
        t0 = time.perf_counter()
        with pytest.raises(InvalidArgument, match=f"sample rate {rate} Hz is outside 1000..384000 Hz") as info:
            decode_audio_bytes(wav(body, rate), max_seconds=600)
        assert time.perf_counter() - t0 < 0.5
        assert info.value.reason == "INVALID_AUDIO" and info.value.field_violations[0][0] == "audio.encoded"
    assert decode_audio_bytes(wav(np.zeros(1000, np.int16), 1000)).shape == (44100,)


def test_a_nul_or_other_control_character_in_an_ingest_uri_is_invalid_argument(tmp_path):
    roots = [tmp_path]
    for uri in (f"{tmp_path}/a\x00.flac", f"file://{tmp_path}/a%00.flac", f"{tmp_path}/a\n.flac", "/x" * 3000):
        with pytest.raises(InvalidArgument) as info:
            resolve_uri(uri, roots)
        assert info.value.reason == "INVALID_URI"
        assert "control character" in str(info.value) or "the limit is 4096" in str(info.value)


def test_a_uri_refusal_names_neither_the_roots_nor_the_resolved_path(tmp_path):
    (tmp_path / "music").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "song.flac").write_bytes(b"x")
    (tmp_path / "music" / "link.flac").symlink_to(tmp_path / "secret" / "song.flac")
    uri = str(tmp_path / "music" / "link.flac")
    with pytest.raises(PermissionDenied, match="outside the allowed roots") as info:
        resolve_uri(uri, [tmp_path / "music"])
    said = str(info.value).replace(uri, "<uri>")
    assert str(tmp_path) not in said and "secret" not in said, said


def test_a_finite_vector_whose_norm_overflows_float32_is_said_to_and_not_called_zero_or_not_finite():
    with pytest.raises(InvalidArgument, match="its norm overflows float32") as info:
        vector_query([3e38] * 8, 8, "bass", "query 0")
    assert "zero or not finite" not in str(info.value) and info.value.reason == "INVALID_VECTOR"
    with pytest.raises(InvalidArgument, match="their squares add up beyond 3.4e"):
        vector_query([3e38] + [0.0] * 7, 8, "bass", "query 0")
    [u] = vector_query([1e18] * 8, 8, "bass", "query 0")  # large but computable: normalised as ever
    assert u == pytest.approx([8**-0.5] * 8)


# ---------------------------------------------------------------------------------------------
# the error table: details both ways


def test_every_error_becomes_a_status_with_error_info_and_its_bad_request_and_retry_info_come_back():
    err = ResourceExhausted("slow down", reason="RATE_LIMITED", retry_after_seconds=2.5)
    status = status_proto(Code.RESOURCE_EXHAUSTED, err)
    back = error_for(Code.RESOURCE_EXHAUSTED, status.message, status)
    assert (type(back), back.reason, back.retry_after_seconds) == (ResourceExhausted, "RATE_LIMITED", 2.5)
    err = InvalidArgument("bad", field_violations=[("header.metadata.title", "too long")])
    status = status_proto(Code.INVALID_ARGUMENT, err)
    back = error_for(Code.INVALID_ARGUMENT, status.message, status)
    assert (back.reason, back.field_violations) == ("INVALID_ARGUMENT", [("header.metadata.title", "too long")])
    assert Unavailable("x").reason == "BACKEND_UNAVAILABLE" and Unavailable("x").retry_after_seconds is None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.domain == DOMAIN == "partsim.v1"


def test_disk_full_is_resource_exhausted_storage_full_and_names_no_path():
    for exc in (
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/audio/x.tmp"),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/audio/x.tmp"),
        sqlite3.OperationalError("database or disk is full"),
    ):
        err = storage_error(exc, "the audio store")
        assert isinstance(err, ResourceExhausted) and err.reason == "STORAGE_FULL", err
        assert "/data" not in str(err) and str(err) == "the audio store: no space left on the device"
    err = storage_error(OSError(errno.EACCES, os.strerror(errno.EACCES), "/data/x"), "the audio store")
    assert isinstance(err, Unavailable) and "/data" not in str(err) and "Permission denied" in str(err)
    wrapped = RuntimeError("insert failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped)


# ---------------------------------------------------------------------------------------------
# reclaimed metadata


def test_deleting_tracks_shrinks_the_metadata_file(tmp_path):
    meta = MetaDB(tmp_path / "tracks.sqlite")
    tags = {f"k{j:02d}": "v" * 200 for j in range(60)}
    meta.put_many([TrackInfo(f"t{i:03d}", title="x" * 500, tags=tags) for i in range(60)])
    meta._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    full = (tmp_path / "tracks.sqlite").stat().st_size
    for i in range(59):
        meta.delete(f"t{i:03d}")
    emptied = (tmp_path / "tracks.sqlite").stat().st_size
    assert meta.count() == 1 and meta.get("t059").tags == tags
    meta.close()
    assert emptied < full / 5, (full, emptied)


def test_a_metadata_file_written_before_is_converted_to_reclaim_space(tmp_path):
    path = tmp_path / "tracks.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tracks (track_id TEXT PRIMARY KEY, title TEXT, artist TEXT, tags TEXT, num_segments INTEGER, "
        "duration_seconds REAL, segment_seconds REAL, model_version TEXT, indexed_at REAL)"
    )
    db.execute("INSERT INTO tracks VALUES ('old', 'T', 'A', '{}', 3, 30.0, 10.0, 'v1', 0.0)")
    db.commit()
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    db.close()
    meta = MetaDB(path)
    assert meta._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert meta.get("old").title == "T"
    meta.close()


# ---------------------------------------------------------------------------------------------
# full disks (a real tmpfs)


def test_the_gateways_audio_store_and_job_store_on_a_full_disk_answer_storage_full(tiny_fs):
    folder = tiny_fs("1m")
    store = AudioStore(folder / "audio")
    jobs = LocalJobQueue(folder / "jobs")
    fill(folder)
    with pytest.raises(ResourceExhausted, match="no space left on the device") as info:
        store.put("song", types_pb2.Audio(encoded=b"x" * 200_000))
    assert info.value.reason == "STORAGE_FULL" and str(folder) not in str(info.value)
    with pytest.raises(ResourceExhausted, match="no space left on the device") as info:
        jobs.submit([IngestItem("song", {}, audio=b"x" * 200_000)])
    assert info.value.reason == "STORAGE_FULL" and str(folder) not in str(info.value)
    assert not list((folder / "audio").glob("*.tmp"))  # nothing half-written left behind
    (folder / "ballast").unlink()
    store.put("song", types_pb2.Audio(encoded=b"x" * 200_000))
    assert jobs.submit([IngestItem("song", {}, audio=b"x" * 200_000)])
    jobs.close()


def test_the_metadata_file_on_a_full_disk_answers_storage_full_keeps_what_it_had_and_resumes(tiny_fs):
    folder = tiny_fs("512k")
    meta = MetaDB(folder / "tracks.sqlite")
    tags = {f"k{j:02d}": "v" * 200 for j in range(60)}
    with pytest.raises(ResourceExhausted, match="the searcher's track metadata: no space left") as info:
        for i in range(10_000):
            meta.put_many([TrackInfo(f"t{i:05d}", title="x" * 500, tags=tags)])
    assert info.value.reason == "STORAGE_FULL"
    kept = meta.count()
    assert kept == i and meta.get(f"t{i - 1:05d}") is not None and meta.get(f"t{i:05d}") is None
    tiny_fs.grow(folder, "8m")
    meta.put_many([TrackInfo(f"t{i:05d}")])
    assert meta.count() == kept + 1
    meta.close()
