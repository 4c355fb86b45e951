"""A bounded load test on loopback: concurrent SearchMix callers while an ingest job runs, in "clean"
windows and in "hostile" ones where one more caller keeps indexing tracks whose metadata is at the
limits (title and artist 512 bytes, 64 tags, 16 KiB in all: :mod:`partsim.services.tracks`), so that
every search answers with them. The windows alternate (clean, hostile, clean, ...) so that a machine
whose speed drifts during the run burdens both alike; each kind's p50/p99 is over all its windows.

    python -m partsim.services.loadtest                          # 32 callers, 30 s clean + 30 s hostile
    python -m partsim.services.loadtest --seconds 10 --rounds 1 --concurrency 8

The command renders a small corpus with FluidSynth, starts ``partsim up``'s cluster on 127.0.0.1 in a
temporary folder (embedded Milvus Lite; SQLite jobs, or ``--redis-url``), indexes the corpus and runs
the windows; it prints one line per window and a summary (exit 1 on any error or a hostile p99 over 2x
the clean one). tests/test_load.py runs the same windows, shorter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from partsim.client import PartsimClient, Stem
from partsim.client.types import JobState
from partsim.errors import PartsimError

from .tracks import MAX_FIELD_BYTES, MAX_METADATA_BYTES, MAX_TAGS


@dataclass
class Result:
    """Latencies (seconds) of the calls that succeeded and the status codes of those that did not."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.errors.update(other.errors)

    def quantile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]

    def timed(self, call: Callable[..., object], *args, **kwargs) -> None:
        """``call(*args, **kwargs)`` once: its latency when it succeeds, its status code when it fails."""
        start = time.perf_counter()
        try:
            call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - counted by code: the test's verdict
            self.errors[code_of(exc)] += 1
        else:
            self.latencies.append(time.perf_counter() - start)

    def line(self, name: str, seconds: float) -> str:
        calls = len(self.latencies) + sum(self.errors.values())
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "0"
        return (
            f"{name:8s} {calls:6d} calls ({calls / max(seconds, 1e-9):6.1f}/s)  p50 {self.quantile(0.5) * 1000:7.1f} ms"
            f"  p99 {self.quantile(0.99) * 1000:7.1f} ms  errors {errors}"
        )


def code_of(exc: Exception) -> str:
    return exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__


def search_load(
    address: str, queries: Sequence[list[Stem]], concurrency: int, seconds: float, top_k: int = 20
) -> Result:
    """``concurrency`` callers (a client each) sending SearchMix one after another for ``seconds``, cycling
    through ``queries``."""
    results = [Result() for _ in range(concurrency)]
    end = time.monotonic() + seconds

    def caller(i: int) -> None:
        with PartsimClient(address, timeout=60) as c:
            n = i
            while time.monotonic() < end:
                results[i].timed(c.search_mix, queries[n % len(queries)], top_k=top_k)
                n += concurrency

    threads = [threading.Thread(target=caller, args=(i,), name=f"load-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Result()
    for r in results:
        total.add(r)
    return total


@contextmanager
def background(loop: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    """Run ``loop(stop)`` in a thread for the ``with`` block; then set ``stop`` and wait for it."""
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=120)


def maximal_metadata(n: int) -> dict:
    """Title, artist and tags at every limit at once: 512-byte title and artist, 64 tags, 16 KiB in all."""
    per_tag = (MAX_METADATA_BYTES - 2 * MAX_FIELD_BYTES) // MAX_TAGS
    tags = {}
    for i in range(MAX_TAGS):
        key = f"hostile-{n}-{i:02d}-".ljust(16, "k")
        tags[key] = "v" * (per_tag - len(key))
    return {"title": "T" * MAX_FIELD_BYTES, "artist": "A" * MAX_FIELD_BYTES, "tags": tags}


def hostile_indexer(address: str, clip: bytes, ids: Sequence[str], result: Result) -> Callable[[threading.Event], None]:
    """A caller that indexes ``clip`` (its embedding is cached after the first) under ``ids`` in turn with
    :func:`maximal_metadata`, back to back, until stopped; its calls in ``result``."""

    def loop(stop: threading.Event) -> None:
        with PartsimClient(address, timeout=60) as c:
            n = 0
            while not stop.is_set():
                result.timed(c.index_bytes, clip, ids[n % len(ids)], **maximal_metadata(n))
                n += 1

    return loop


def ingest_jobs(address: str, items: Callable[[int], list[dict]], result: Result) -> Callable[[threading.Event], None]:
    """One ingest job after another (``items(round)``: the job's items) until stopped; ``result``: the
    finished jobs' durations and the failed items."""

    def loop(stop: threading.Event) -> None:
        with PartsimClient(address, timeout=60) as c:
            r = 0
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    job = c.submit_job(items(r))
                    while (st := c.get_job(job)).state != JobState.DONE and not stop.wait(0.2):
                        pass
                except Exception as exc:  # noqa: BLE001 - a failed submit or poll is counted, not fatal
                    result.errors[code_of(exc)] += 1
                else:
                    for f in st.failures:
                        result.errors[f"{f.track_id}: {f.error}"] += 1
                    if st.state == JobState.DONE:
                        result.latencies.append(time.perf_counter() - start)
                r += 1

    return loop


def run_windows(
    address: str,
    queries: Sequence[list[Stem]],
    items: Callable[[int], list[dict]],
    clip: bytes,
    concurrency: int = 32,
    seconds: float = 30.0,
    rounds: int = 1,
    hostile_tracks: int = 20,
    say: Callable[[str], None] = print,
) -> dict[str, Result]:
    """``rounds`` pairs of windows of ``seconds`` each, clean then hostile, all while ingest jobs run;
    the hostile tracks are deleted after each hostile window. Returns the SearchMix calls of each kind
    ("clean", "hostile"), the hostile caller's IndexTrack calls ("indexer") and the ingest jobs ("ingest")."""
    out = {"clean": Result(), "hostile": Result(), "indexer": Result(), "ingest": Result()}
    ids = [f"hostile-{i}" for i in range(hostile_tracks)]
    with background(ingest_jobs(address, items, out["ingest"])):
        for r in range(rounds):
            res = search_load(address, queries, concurrency, seconds)
            say(res.line(f"clean {r + 1}", seconds))
            out["clean"].add(res)
            with background(hostile_indexer(address, clip, ids, out["indexer"])):
                res = search_load(address, queries, concurrency, seconds)
            say(res.line(f"hostile {r + 1}", seconds))
            out["hostile"].add(res)
            with PartsimClient(address, timeout=60) as c:
                for tid in ids:
                    try:
                        c.delete_track(tid)
                    except PartsimError:  # never indexed (a short window): nothing to delete
                        pass
    return out


# -- the command ------------------------------------------------------------------------------------------


def corpus_tracks(folder: Path, songs: int, seconds: float) -> list[Path]:
    """``songs`` FluidSynth-rendered songs of ``seconds`` (partsim's corpus generator); their mix files."""
    from partsim.corpus.make import CorpusConfig, make_corpus
    from partsim.corpus.soundfonts import default_soundfonts

    make_corpus(
        CorpusConfig(out=folder, songs=songs, seconds=seconds, seed=7, soundfonts=default_soundfonts()[:1]),
        progress=False,
    )
    return sorted(p / "mix.flac" for p in folder.iterdir() if (p / "mix.flac").is_file())


def variant_items(files: Sequence[Path], folder: Path) -> Callable[[int], list[dict]]:
    """Items of ingest round ``r``: each file scaled by a gain of its round (new bytes: no cached embedding),
    written to ``folder`` (an allowed root), indexed as ``ingest-<i>``."""
    import soundfile as sf

    audio = [sf.read(str(f), dtype="float32") for f in files]

    def items(r: int) -> list[dict]:
        out = []
        for i, (data, sr) in enumerate(audio):
            path = folder / f"ingest-{i}-{r % 2}.flac"
            sf.write(str(path), data * (1.0 - 0.001 * (r % 100 + 1)), sr)
            out.append({"track_id": f"ingest-{i}", "uri": str(path)})
        return out

    return items


def clip_of(path: Path, seconds: float = 10.0) -> bytes:
    """The first ``seconds`` of an audio file, as FLAC bytes."""
    import io

    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", frames=int(seconds * sf.info(str(path)).samplerate))
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="FLAC")
    return buf.getvalue()


def mix_queries(ids: Sequence[str]) -> list[list[Stem]]:
    """SearchMix queries over indexed tracks: one's drums at 5 s with the next's bass at 15 s."""
    return [
        [Stem("drums", track_id=a, seconds=5.0), Stem("bass", track_id=b, seconds=15.0)] for a, b in zip(ids, ids[1:])
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m partsim.services.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each window (default 30)")
    ap.add_argument("--rounds", type=int, default=1, help="clean+hostile window pairs (default 1)")
    ap.add_argument("--songs", type=int, default=16)
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args(argv)
    from partsim.cluster import Cluster

    with tempfile.TemporaryDirectory(prefix="partsim-load-") as tmp:
        root = Path(tmp)
        print(f"rendering {args.songs} songs of 20 s", flush=True)
        files = corpus_tracks(root / "corpus", args.songs, 20.0)
        (root / "ingest").mkdir()
        with Cluster(
            root / "data", gateway="127.0.0.1:0", redis_url=args.redis_url, allowed_roots=[root], separator=False
        ) as cluster:
            with PartsimClient(cluster.gateway, timeout=120) as c:
                c.wait_ready(300)
                ids = [f"song-{i}" for i in range(len(files))]
                for tid, f in zip(ids, files):
                    c.index_bytes(f.read_bytes(), tid)
            clip = clip_of(files[0])
            out = run_windows(
                cluster.gateway,
                mix_queries(ids),
                variant_items(files[: len(files) // 2], root / "ingest"),
                clip,
                args.concurrency,
                args.seconds,
                args.rounds,
            )
    return verdict(out, args.seconds * args.rounds)


def verdict(out: dict[str, Result], seconds: float, say: Callable[[str], None] = print) -> int:
    """Print the summary; 0 when nothing failed and the hostile p99 is within 2x of the clean one."""
    clean, hostile = out["clean"], out["hostile"]
    ratio = hostile.quantile(0.99) / clean.quantile(0.99)
    say(clean.line("clean", seconds))
    say(hostile.line("hostile", seconds))
    say(out["indexer"].line("indexer", seconds) + "  (IndexTrack at the metadata limits, hostile windows)")
    say(out["ingest"].line("ingest", seconds * 2) + "  (whole jobs, all windows)")
    say(f"hostile p99 / clean p99 = {ratio:.2f} (limit 2)")
    failed = clean.errors or hostile.errors or out["indexer"].errors or out["ingest"].errors or not ratio <= 2.0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
