"""``partsim evaluate-separator``: SDR/SIR/SAR per part on a corpus split (Table 3.1 protocol).

Protocol: every song of the split is separated whole with :func:`demucs.apply.apply_model`
(``split=True``, ``overlap=0.25``, no random shifts). Song and estimates are cut into
consecutive **10-s chunks** (a shorter tail of at least 1 s counts as a chunk). In each chunk,
the parts whose true stem is silent (mean power < 1e-4) are skipped; the others are scored
together with bss_eval v3 (``fast_bss_eval.bss_eval_sources``, 512-tap distortion filters,
conjugate-gradient solver with 10 iterations, float64). A part's number is the mean over
every (song, chunk) where it sounds. SIR is infinite when a part sounds alone in a chunk;
those chunks are left out of the SIR mean only.

The reference row scores the *mix itself* as every part's estimate, the same way: what
"separation" gains over doing nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..data import open_dataset
from ..errors import InvalidArgument, NotFound
from . import SOURCES
from .train import SILENCE_POWER, separate

# Thesis Table 3.1: Spleeter on Slakh2100, test SDR (dB). Guitar/others were not reported.
SPLEETER_TABLE_3_1 = {"drums": 2.73, "bass": -4.79, "piano": -9.66}
METRICS = ("sdr", "sir", "sar")


def chunk_metrics(
    stems: np.ndarray, est: np.ndarray, mix: np.ndarray, chunk: int, cg_iter: int | None = 10
) -> list[dict]:
    """bss_eval metrics of one song, per chunk.

    Args:
        stems: ``(S, T)`` true stems in :data:`SOURCES` order.
        est: ``(S, T)`` estimates in the same order.
        mix: ``(T,)`` the mix (the reference "estimate").
        chunk: chunk length in samples.

    Returns:
        One dict per (chunk, sounding part): ``{"part", "chunk", "sdr", "sir", "sar",
        "mix_sdr", "mix_sir", "mix_sar"}``.
    """
    import fast_bss_eval

    rows = []
    total = stems.shape[1]
    for c, start in enumerate(range(0, total, chunk)):
        stop = min(start + chunk, total)
        if stop - start < SAMPLE_RATE:
            break
        ref = stems[:, start:stop]
        active = [s for s in range(len(SOURCES)) if np.mean(ref[s].astype(np.float64) ** 2) >= SILENCE_POWER]
        if not active:
            continue
        r = torch.from_numpy(ref[active].astype(np.float64))
        e = torch.stack(
            [
                torch.from_numpy(est[active, start:stop].astype(np.float64)),
                torch.from_numpy(np.repeat(mix[None, start:stop], len(active), 0).astype(np.float64)),
            ]
        )
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(
            torch.stack([r, r]), e, compute_permutation=False, use_cg_iter=cg_iter
        )  # each (2, len(active))
        for j, s in enumerate(active):
            rows.append(
                {
                    "part": SOURCES[s],
                    "chunk": c,
                    **{m: float(v[0, j]) for m, v in zip(METRICS, (sdr, sir, sar))},
                    **{f"mix_{m}": float(v[1, j]) for m, v in zip(METRICS, (sdr, sir, sar))},
                }
            )
    return rows


def _mean(values) -> float | None:
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else None


def summarize(rows: list[dict]) -> dict:
    """Per part: mean (and median SDR) over chunks, for the model and for the mix."""
    out = {"model": {}, "mix": {}}
    for part in SOURCES:
        mine = [r for r in rows if r["part"] == part]
        out["model"][part] = {
            **{m: _mean(r[m] for r in mine) for m in METRICS},
            "sdr_median": float(np.median([r["sdr"] for r in mine])) if mine else None,
            "chunks": len(mine),
        }
        out["mix"][part] = {m: _mean(r[f"mix_{m}"] for r in mine) for m in METRICS}
    return out


def evaluate(
    model,
    corpus: Path,
    split: str = "test",
    chunk_seconds: float = 10.0,
    songs: int | None = None,
    device: str = "cpu",
    cg_iter: int | None = 10,
    log=None,
) -> dict:
    """Evaluate a demucs model (or bag) on a corpus split; returns the JSON-ready result.

    Raises:
        NotFound: the corpus folder does not exist.
        InvalidArgument: the split is empty, or the model's sources are not the corpus's parts.
    """
    t0 = time.time()
    if not Path(corpus).is_dir():
        raise NotFound(f"corpus folder {corpus} does not exist")
    if chunk_seconds < 1:
        raise InvalidArgument(f"chunk length {chunk_seconds} s: expected at least 1 s")
    missing = [p for p in SOURCES if p not in model.sources]
    if missing or model.samplerate != SAMPLE_RATE or model.audio_channels != 1:
        raise InvalidArgument(
            f"model sources {model.sources} at {model.samplerate} Hz x{model.audio_channels}: "
            f"expected mono {SAMPLE_RATE} Hz {SOURCES}"
        )
    tracks = open_dataset(corpus).tracks(split)[:songs]
    if not tracks:
        raise InvalidArgument(f"split {split!r} of {corpus} has no songs")
    order = [list(model.sources).index(p) for p in SOURCES]
    rows = []
    for i, track in enumerate(tracks):
        stems = track.load_stems()
        truth = np.stack([stems[p] for p in SOURCES])  # (S, T)
        mix = track.load_mix()  # (T,)
        est = separate(model, mix, device)[order]  # (S, T)
        rows += [
            {"song": track.id, **r} for r in chunk_metrics(truth, est, mix, int(chunk_seconds * SAMPLE_RATE), cg_iter)
        ]
        if log:
            log(f"{i + 1}/{len(tracks)} {track.id}")
    return {
        "protocol": {
            "split": split,
            "songs": len(tracks),
            "chunk_seconds": chunk_seconds,
            "silence_power": SILENCE_POWER,
            "metric": f"bss_eval v3 (fast_bss_eval, 512 taps, cg_iter={cg_iter})",
            "apply_model": {"split": True, "overlap": 0.25, "shifts": 0},
            "aggregate": "mean over (song, 10-s chunk) where the part sounds",
        },
        "corpus": str(Path(corpus).resolve()),
        **summarize(rows),
        "spleeter_table_3_1": SPLEETER_TABLE_3_1,
        "seconds": time.time() - t0,
        "chunks": rows,
    }


def format_table(result: dict) -> str:
    """The per-part table, beside Table 3.1 (Spleeter on Slakh2100) and the mix-as-estimate row."""

    def f(x):
        return "   n/a" if x is None else f"{x:6.2f}"

    lines = [f"{'part':8} {'SDR':>6} {'SIR':>6} {'SAR':>6} {'chunks':>6} | {'mix SDR':>7} | {'Spleeter (T3.1)':>15}"]
    for p in SOURCES:
        m, x = result["model"][p], result["mix"][p]
        lines.append(
            f"{p:8} {f(m['sdr'])} {f(m['sir'])} {f(m['sar'])} {m['chunks']:6d} | {f(x['sdr']):>7} | "
            f"{f(SPLEETER_TABLE_3_1.get(p)):>15}"
        )
    return "\n".join(lines)


def save(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
