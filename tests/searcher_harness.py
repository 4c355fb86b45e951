"""The searcher tests' harness: random catalogs, the retrieval function written out loop by loop, requests, a
running searcher service (the ``searcher`` fixture, through tests/conftest.py) and a catalog in the layout
from before raw vectors were kept (also used by tests/test_cluster_e2e_presence.py)."""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.searcher.config import SearcherConfig
from partsim.services.searcher.server import SearcherServer
from partsim.v1 import types_pb2

PARTS = ["drums", "bass", "piano", "guitar", "others"]
DIM = 16
EXACT, APPROX = types_pb2.SEARCH_MODE_EXACT, types_pb2.SEARCH_MODE_APPROXIMATE
Code = grpc.StatusCode


def make_tracks(n: int, seed: int, prefix: str = "t", max_segments: int = 6) -> dict[str, list[dict]]:
    """Random tracks: id -> segments, each {index, start, end, vectors{part: raw}, present{part: bool}}."""
    rng = np.random.default_rng(seed)
    tracks = {}
    for t in range(n):
        segs = []
        for i in range(int(rng.integers(1, max_segments + 1))):
            present = {p: bool(rng.random() > 0.2) for p in PARTS}
            vectors = {
                p: (
                    rng.standard_normal(DIM) * rng.uniform(0.5, 3.0) if present[p] else rng.standard_normal(DIM) * 1e-3
                ).astype(np.float32)
                for p in PARTS
            }
            segs.append({"index": i, "start": 10.0 * i, "end": 10.0 * i + 10.0, "vectors": vectors, "present": present})
        tracks[f"{prefix}{t:03d}"] = segs
    return tracks


def upsert_request(track_id: str, segs: list[dict], title: str = "") -> searcher_pb2.UpsertTrackRequest:
    return searcher_pb2.UpsertTrackRequest(
        track=types_pb2.Track(
            track_id=track_id,
            metadata=types_pb2.TrackMetadata(
                title=title or f"Title of {track_id}", artist="Someone", tags={"genre": "test"}
            ),
            segment_seconds=10.0,
            model_version="test-model",
        ),
        segments=[
            types_pb2.SegmentEmbedding(
                index=s["index"],
                start_seconds=s["start"],
                end_seconds=s["end"],
                parts=[
                    types_pb2.PartVector(
                        part=p,
                        vector=s["vectors"][p].tolist(),
                        norm=float(np.linalg.norm(s["vectors"][p])),
                        present=s["present"][p],
                    )
                    for p in PARTS
                ],
            )
            for s in segs
        ],
    )


def reference_mix(
    catalog: dict[str, list[dict]],
    query: dict[str, list[np.ndarray]],
    weights: dict[str, float],
    exclude: set[str] = frozenset(),
) -> list[tuple[float, str, int, dict[str, float]]]:
    """The retrieval function written out loop by loop, in float64: (D, track, best segment, per part)."""
    y = {p: np.mean(np.asarray(embs, dtype=np.float64), axis=0) for p, embs in query.items()}  # eq. 6.1
    out = []
    for tid, segs in catalog.items():
        if tid in exclude:
            continue
        best = None
        for s in segs:
            per = {}
            for p, yp in y.items():
                v = s["vectors"][p].astype(np.float64)
                cos = 0.0 if not s["present"][p] else float(yp @ v / (np.linalg.norm(yp) * np.linalg.norm(v)))
                per[p] = 1.0 - cos
            d = sum(weights[p] * per[p] for p in y) / sum(weights[p] for p in y)  # eq. 6.2
            if best is None or d < best[0]:
                best = (d, tid, s["index"], per)
        out.append(best)
    return sorted(out, key=lambda r: (r[0], r[1]))


def mix_request(
    query: dict[str, list[np.ndarray]], weights: dict[str, float] | None = None, top_k: int = 10, mode=EXACT, exclude=()
) -> searcher_pb2.SearchMixRequest:
    weights = weights or {}
    return searcher_pb2.SearchMixRequest(
        parts=[
            searcher_pb2.PartQuery(part=p, vector=np.mean(embs, axis=0).tolist(), weight=weights.get(p, 0.0))
            for p, embs in query.items()
        ],
        top_k=top_k,
        mode=mode,
        exclude_track_ids=list(exclude),
    )


class Searcher:
    """A running searcher service and a stub to it."""

    def __init__(self, data_dir, **overrides):
        self.cfg = SearcherConfig(
            address="127.0.0.1:0",
            data_dir=str(data_dir),
            parts=",".join(PARTS),
            subspace_dim=DIM,
            metrics_port=0,
            metrics_host="127.0.0.1",
            grace_seconds=1,
            workers=4,
            **overrides,
        )
        self.cfg.validate()
        self.server = SearcherServer(self.cfg).start()
        self.rt, self.servicer = self.server.rt, self.server.servicer
        self.channel = grpc.insecure_channel(self.rt.address)
        self.stub = searcher_pb2_grpc.SearcherServiceStub(self.channel)

    def upsert(self, tracks: dict[str, list[dict]]) -> None:
        for tid, segs in tracks.items():
            self.stub.UpsertTrack(upsert_request(tid, segs), timeout=30)

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(1)


@pytest.fixture
def searcher(tmp_path):
    """A searcher on a new catalog in ``tmp_path / "data"`` (flushed every 64 rows), stopped after the test."""
    s = Searcher(tmp_path / "data", flush_rows=64)
    yield s
    s.stop()


def random_query(rng, parts: list[str], k: int = 3) -> dict[str, list[np.ndarray]]:
    return {p: [rng.standard_normal(DIM).astype(np.float32) for _ in range(k)] for p in parts}


def write_legacy_catalog(folder, catalog: dict[str, list[dict]], parts: list[str] = PARTS, dim: int = DIM) -> None:
    """A catalog as the searcher wrote it before it kept raw vectors and audio power: per part a collection
    of (pk, track_id, segment, start, end, present, norm, vector = unit or zero), and the SQLite metadata."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import DataType, MilvusClient

    from partsim.services.searcher.meta import MetaDB, TrackInfo

    folder.mkdir(parents=True, exist_ok=True)
    uri = str(folder / "milvus.db")
    client = MilvusClient(uri=uri)
    for part in parts:
        name = f"partsim_{part}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=1040)
        schema.add_field("track_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("segment", DataType.INT32)
        schema.add_field("start", DataType.DOUBLE)
        schema.add_field("end", DataType.DOUBLE)
        schema.add_field("present", DataType.BOOL)
        schema.add_field("norm", DataType.FLOAT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection(name, schema=schema, consistency_level="Strong")
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        client.create_index(name, params)
        client.load_collection(name)
        rows = []
        for tid, segs in catalog.items():
            for s in segs:
                v = s["vectors"][part]
                n = float(np.linalg.norm(v))
                rows.append(
                    {
                        "pk": f"{tid}#{s['index']}",
                        "track_id": tid,
                        "segment": s["index"],
                        "start": s["start"],
                        "end": s["end"],
                        "present": s["present"][part],
                        "norm": n,
                        "vector": (v / n if s["present"][part] else np.zeros(dim, np.float32)).tolist(),
                    }
                )
        client.insert(name, rows)
        client.flush(name)
    client.close()
    server_manager_instance.release_server(os.path.abspath(uri))
    meta = MetaDB(folder / "tracks.sqlite")
    meta.put_many(
        [
            TrackInfo(tid, num_segments=len(segs), segment_seconds=10.0, model_version="old")
            for tid, segs in catalog.items()
        ]
    )
    meta.close()
