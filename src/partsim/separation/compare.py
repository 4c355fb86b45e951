"""``partsim compare-paths``: feature-level vs signal-level part embeddings, and their ingest cost.

- feature level (thesis Ch. 4, partsim's default): the CSN on the *mix*; part j's subspace.
- signal level (thesis Ch. 3 path): separate the mix with the separator, the CSN on each
  *estimated stem*; part j's subspace of stem j's embedding.
- ideal stems (reference): the CSN on each *true* stem.

Quality: the track-ID protocol of Tables 3.2 / 4.1 (3-s segments without overlap, segments
whose true stem is silent left out, leave-one-out kNN with k = 5, majority vote) on the corpus's
test split. Cost: wall time of each path on the same songs in one run (real-time factor =
seconds of audio per second of compute) and their ratio.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..model.features import SILENCE_POWER, mean_power
from ..model.tables import knn_accuracy, load_test_tracks, segments

SR = 44100
SEG = 3 * SR

# Table 3.2 (track-ID accuracy %, kNN k=5) and Table 4.1 at 3 s, for reference.
THESIS_3_2 = {
    "proposed (separated)": {"drums": 94.00, "bass": 51.78, "piano": 39.40},
    "proposed (ideal)": {"drums": 95.14, "bass": 81.47, "piano": 93.11},
}
THESIS_4_1_3S = {"drums": 84.73, "bass": 51.01, "piano": 77.21, "guitar": 76.50, "others": 82.84}


def compare_paths(
    manifest: str | Path,
    repo: str | Path,
    model: str,
    corpus: str | Path,
    split: str = "test",
    limit: int | None = None,
) -> dict:
    from partsim.model.inference import OnnxEmbedder
    from partsim.services.separator.engine import Engine

    emb = OnnxEmbedder(manifest)
    engine = Engine(repo, model)
    parts = emb.parts
    missing = [p for p in parts if p not in engine.parts.values()]
    tracks = load_test_tracks(corpus, parts, split, limit)
    audio_seconds = sum(t.stems.shape[1] for t in tracks) / SR
    feature, signal, ideal, labels, keep = [], [], [], [], []
    t_feature = t_signal = 0.0
    part_of_source = {p: i for i, (s, p) in enumerate(engine.parts.items()) if p}
    for i, t in enumerate(tracks):
        mix = t.mix
        seg_mix = segments(mix, SEG)  # (k, SEG)
        if len(seg_mix) == 0:
            continue
        t0 = time.perf_counter()
        f = emb.embed(seg_mix)  # (k, P, D)
        t_feature += time.perf_counter() - t0
        t0 = time.perf_counter()
        est = engine.separate(engine.to_model_channels(mix[:, None]))  # (S, C, n)
        est = est.mean(axis=1)  # (S, n) mono
        s = np.zeros_like(f)
        for j, part in enumerate(parts):
            if part in part_of_source:
                s[:, j] = emb.embed(segments(est[part_of_source[part]], SEG))[:, j]
            else:  # a part the separator lacks keeps the mix's subspace
                s[:, j] = f[:, j]
        t_signal += time.perf_counter() - t0
        true = segments(t.stems, SEG)  # (P, k, SEG)
        ideal.append(np.stack([emb.embed(true[j])[:, j] for j in range(len(parts))], axis=1))
        feature.append(f)
        signal.append(s)
        labels += [i] * len(f)
        keep.append(mean_power(true).T >= SILENCE_POWER)  # (k, P)
    feature_a, signal_a, ideal_a = (np.concatenate(x) for x in (feature, signal, ideal))
    labels_a, keep_a = np.array(labels), np.concatenate(keep)
    table = {"feature_level_csn_on_mix": {}, "signal_level_csn_on_separated": {}, "csn_on_ideal_stems": {}}

    def acc(x: np.ndarray, y: np.ndarray) -> float | None:  # None: too few segments with this part
        v = knn_accuracy(x, y) if len(x) >= 2 else float("nan")
        return None if v != v else float(v)

    for j, part in enumerate(parts):
        k = keep_a[:, j]
        table["feature_level_csn_on_mix"][part] = acc(feature_a[k, j], labels_a[k])
        table["signal_level_csn_on_separated"][part] = acc(signal_a[k, j], labels_a[k])
        table["csn_on_ideal_stems"][part] = acc(ideal_a[k, j], labels_a[k])
    return {
        "corpus": str(corpus),
        "split": split,
        "tracks": len(tracks),
        "segments": int(len(labels_a)),
        "embedding_model": str(manifest),
        "separator": model,
        "parts_without_separated_stem": missing,
        "track_id_accuracy_3s": table,
        "ingest_cost": {
            "audio_seconds": audio_seconds,
            "feature_level_seconds": t_feature,
            "signal_level_seconds": t_signal,
            "feature_level_rtf": audio_seconds / t_feature if t_feature else None,
            "signal_level_rtf": audio_seconds / t_signal if t_signal else None,
            "signal_over_feature_cost": t_signal / t_feature if t_feature else None,
        },
        "thesis": {"table_3_2": THESIS_3_2, "table_4_1_3s_proposed": THESIS_4_1_3S},
    }


def format_comparison(r: dict) -> str:
    parts = list(r["track_id_accuracy_3s"]["feature_level_csn_on_mix"])
    head = "".join(f"{p:>8s}" for p in parts)
    lines = [
        f"corpus {r['corpus']} ({r['split']} split, {r['tracks']} tracks, {r['segments']} 3-s segments)",
        "",
        "Track-ID accuracy, kNN k=5, 3-s segments (%)",
        f"{'':44s}{head}",
    ]

    def row(name, values):
        lines.append(
            f"  {name:42s}" + "".join(f"{values[p]:8.2f}" if values.get(p) is not None else f"{'-':>8s}" for p in parts)
        )

    t = r["track_id_accuracy_3s"]
    row("partsim feature level (CSN on the mix)", t["feature_level_csn_on_mix"])
    row("partsim signal level (CSN on separated)", t["signal_level_csn_on_separated"])
    row("partsim CSN on ideal stems", t["csn_on_ideal_stems"])
    row("thesis 3.2 proposed (separated, Spleeter)", THESIS_3_2["proposed (separated)"])
    row("thesis 3.2 proposed (ideal stems)", THESIS_3_2["proposed (ideal)"])
    row("thesis 4.1 proposed (CSN on the mix)", THESIS_4_1_3S)
    c = r["ingest_cost"]
    lines += [
        "",
        f"Ingest cost on the same {c['audio_seconds']:.0f} s of audio (one run):",
        f"  feature level: {c['feature_level_seconds']:.1f} s ({c['feature_level_rtf']:.0f}x real time)",
        f"  signal level:  {c['signal_level_seconds']:.1f} s ({c['signal_level_rtf']:.1f}x real time)",
        f"  signal level costs {c['signal_over_feature_cost']:.1f}x the feature level",
    ]
    return "\n".join(lines)
