"""``partsim evaluate``: the thesis's evaluation protocols (section 4.4.2) on a corpus's test split.

* Table 4.1: track-ID prediction, kNN (k=5, majority vote, leave-one-out) in each part's
  subspace, 3/5/10-s mix segments; the signal-level baseline is the per-part networks on ideal
  stems. Segments where the part is silent (mean power < 1e-4) are left out.
* Table 4.2: part-level label prediction on test pseudo pieces: per part 10 labels x 4 pieces
  (part c of track A mixed with the other parts of 4 other tracks), 5-s segments, kNN where
  segments of the same piece are excluded from the reference.
* Table 4.3: instrument identification: an isolated stem in, the subspace with the largest
  norm out.
* Tables 4.4 / 4.5: Pearson correlation of distance matrices, stem-in vs mix-in in the same
  subspace, and across subspaces with mix input (with the per-part networks on ideal stems as
  the reference).

Several sets side by side (issue 11): :func:`resolve_sets` checks ``--set NAME=DIR[:SPLIT]``
definitions, :func:`evaluate_sets` runs Tables 4.1-4.3 on each (4.4/4.5 and the figures on the
first only) and, optionally, the untrained log-spectrum baseline (:mod:`.baseline`) on the same
audio; :func:`format_sets` prints one row per set under each table, beside the thesis's row.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import open_dataset
from ..errors import InvalidArgument, PartsimError
from .features import SILENCE_POWER, mean_power
from .inference import Embedder, TorchEmbedder

SR = 44100
MIN_FIGURE_TRACKS = 3  # fewer tracks: no figures (t-SNE needs more points than its perplexity)

THESIS = {
    "table_4_1": {"3": {"drums": 84.73, "bass": 51.01, "piano": 77.21, "guitar": 76.50, "others": 82.84},
                  "5": {"drums": 86.84, "bass": 59.20, "piano": 82.00, "guitar": 80.18, "others": 83.34},
                  "10": {"drums": 88.91, "bass": 64.87, "piano": 84.30, "guitar": 82.70, "others": 82.20}},
    "table_4_2": {"drums": 95.80, "bass": 61.91, "piano": 67.37, "guitar": 57.32, "others": 80.69},
    "table_4_3": {"drums": 84.48, "bass": 96.04, "piano": 90.27, "guitar": 76.85, "others": 92.24},
    "table_4_4": {"drums": 0.6159, "bass": 0.4782, "piano": 0.3608, "guitar": 0.4115, "others": 0.3243},
}


@dataclass
class TestTrack:
    id: str
    stems: np.ndarray  # (P, n) float32
    tempo_class: int

    @property
    def mix(self) -> np.ndarray:
        return self.stems.sum(axis=0)


def load_test_tracks(corpus: str | Path, parts: list[str], split: str = "test", limit: int | None = None) -> list[TestTrack]:
    ds = open_dataset(corpus)
    tracks = ds.tracks(split)
    if not tracks:
        raise InvalidArgument(f"corpus {corpus} has no tracks in split {split!r}")
    out = []
    for t in tracks[:limit]:
        stems = t.load_stems()
        out.append(TestTrack(t.id, np.stack([stems[p] for p in parts]), int(t.tempo_class or 0)))
    return out


def segments(x: np.ndarray, seg: int) -> np.ndarray:
    """Non-overlapping full segments of the last axis: ``(..., n)`` -> ``(..., k, seg)``."""
    k = x.shape[-1] // seg
    return x[..., :k * seg].reshape(*x.shape[:-1], k, seg)


def knn_accuracy(x: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, k: int = 5) -> float:
    """Leave-one-out kNN (Euclidean) majority vote; ``groups`` also excludes same-group references.

    Ties go to the label whose nearest member is closest.
    """
    n = len(x)
    if n < 2:
        return float("nan")
    d = _sq_dist(x)
    np.fill_diagonal(d, np.inf)
    if groups is not None:
        d[groups[:, None] == groups[None, :]] = np.inf
    nearest = np.argsort(d, axis=1)[:, :k]
    correct = 0
    for i in range(n):
        cand = [j for j in nearest[i] if np.isfinite(d[i, j])]
        if not cand:
            continue
        votes: dict[int, list[int]] = {}
        for rank, j in enumerate(cand):
            votes.setdefault(int(labels[j]), []).append(rank)
        best = max(votes.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))[0]
        correct += best == labels[i]
    return 100.0 * correct / n


def _pearson_upper(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices(len(a), 1)
    x, y = a[iu], b[iu]
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _sq_dist(x: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of the rows of ``x``."""
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)


def _pdist(x: np.ndarray) -> np.ndarray:
    return np.sqrt(_sq_dist(x))


def _has_partnets(model: Embedder) -> bool:
    """The ideal-stem baselines need per-part networks (a model fine-tuned with --init has none)."""
    return isinstance(model, TorchEmbedder) and model.partnets is not None


def track_id_table(model: Embedder, tracks: list[TestTrack], seconds=(3, 5, 10)) -> dict:
    parts = model.parts
    out: dict = {"proposed": {}, "baseline_ideal_stems": {}}
    for s in seconds:
        seg = s * SR
        mixes, stems, labels = [], [], []
        for i, t in enumerate(tracks):
            segs = segments(t.stems, seg)  # (P, k, seg)
            if segs.shape[1] == 0:
                continue
            stems.append(segs)
            mixes.append(segs.sum(axis=0))
            labels += [i] * segs.shape[1]
        if not mixes:
            continue
        mix = np.concatenate(mixes)
        stem = np.concatenate(stems, axis=1)  # (P, N, seg)
        labels_a = np.array(labels)
        emb = model.embed(mix)
        out["proposed"][str(s)], out["baseline_ideal_stems"][str(s)] = {}, {}
        for j, part in enumerate(parts):
            keep = mean_power(stem[j]) >= SILENCE_POWER
            out["proposed"][str(s)][part] = knn_accuracy(emb[keep, j], labels_a[keep])
            if _has_partnets(model) and keep.sum() > 1:
                base = model.embed_stems(j, stem[j][keep])
                out["baseline_ideal_stems"][str(s)][part] = knn_accuracy(base, labels_a[keep])
    return out


def pseudo_piece_table(model: Embedder, tracks: list[TestTrack], labels_per_part: int = 10,
                       pieces_per_label: int = 4, seconds: int = 5, seed: int = 0, return_embeddings=False):
    """Table 4.2 protocol. Returns accuracy per part (and, optionally, what the figures need)."""
    rng = np.random.default_rng(seed)
    seg = seconds * SR
    result, figure_data = {}, {}
    for c, part in enumerate(model.parts):
        with_c = [i for i, t in enumerate(tracks)
                  if (mean_power(segments(t.stems[c], seg)) >= SILENCE_POWER).sum() >= 1]
        if len(with_c) < 2 or len(tracks) < 3:
            result[part] = float("nan")
            continue
        label_tracks = list(rng.choice(with_c, size=min(labels_per_part, len(with_c)), replace=False))
        audio, labels, groups = [], [], []
        piece = 0
        for a in label_tracks:
            others = [i for i in range(len(tracks)) if i != a]
            same_class = [i for i in others if tracks[i].tempo_class // 4 == tracks[a].tempo_class // 4]
            pool = same_class if len(same_class) >= pieces_per_label else others
            for y in rng.choice(pool, size=min(pieces_per_label, len(pool)), replace=False):
                n = min(tracks[a].stems.shape[1], tracks[y].stems.shape[1])
                part_c = tracks[a].stems[c, :n]
                rest = np.delete(tracks[y].stems[:, :n], c, axis=0).sum(axis=0)
                segs_c, segs_mix = segments(part_c, seg), segments(part_c + rest, seg)
                keep = mean_power(segs_c) >= SILENCE_POWER
                audio.append(segs_mix[keep])
                labels += [a] * int(keep.sum())
                groups += [piece] * int(keep.sum())
                piece += 1
        x = np.concatenate(audio)
        emb = model.embed(x)
        result[part] = knn_accuracy(emb[:, c], np.array(labels), np.array(groups))
        figure_data[part] = (emb[:, c], np.array(labels), np.array(groups))
    return (result, figure_data) if return_embeddings else result


def identification_table(model: Embedder, tracks: list[TestTrack], seconds: int = 5, per_track: int = 4):
    """Table 4.3: isolated stems in, argmax of subspace norms out. Also returns the embeddings (Fig. 4.10)."""
    seg = seconds * SR
    result, stacks = {}, {}
    for j, part in enumerate(model.parts):
        chunks = []
        for t in tracks:
            s = segments(t.stems[j], seg)
            s = s[mean_power(s) >= SILENCE_POWER][:per_track]
            if len(s):
                chunks.append(s)
        if not chunks:
            result[part] = float("nan")
            continue
        emb = model.embed(np.concatenate(chunks))
        norms = np.linalg.norm(emb, axis=2)
        result[part] = 100.0 * float(np.mean(norms.argmax(axis=1) == j))
        stacks[part] = emb.reshape(len(emb), -1)
    return result, stacks


def correlation_tables(model: Embedder, tracks: list[TestTrack], seconds: int = 5, max_segments: int = 400):
    """Tables 4.4 and 4.5 (and the matrices of Fig. 4.11 for the first part)."""
    seg = seconds * SR
    parts = model.parts
    stem_segs = np.concatenate([segments(t.stems, seg) for t in tracks], axis=1)[:, :max_segments]  # (P, N, seg)
    mix_segs = stem_segs.sum(axis=0)
    present = mean_power(stem_segs) >= SILENCE_POWER  # (P, N)
    mix_emb = model.embed(mix_segs)
    same, matrices = {}, {}
    for j, part in enumerate(parts):
        keep = present[j]
        if keep.sum() < 3:
            same[part] = float("nan")
            continue
        stem_emb = model.embed(stem_segs[j][keep])
        d_stem, d_mix = _pdist(stem_emb[:, j]), _pdist(mix_emb[keep, j])
        same[part] = _pearson_upper(d_stem, d_mix)
        matrices[part] = (d_stem, d_mix)
    across, reference = {}, {}
    dists = {j: _pdist(mix_emb[:, j]) for j in range(len(parts))}
    for j in range(len(parts)):
        for k in range(j + 1, len(parts)):
            across[f"{parts[j]}-{parts[k]}"] = _pearson_upper(dists[j], dists[k])
            both = present[j] & present[k]
            if _has_partnets(model) and both.sum() >= 3:
                gj = model.embed_stems(j, stem_segs[j][both])
                gk = model.embed_stems(k, stem_segs[k][both])
                reference[f"{parts[j]}-{parts[k]}"] = _pearson_upper(_pdist(gj), _pdist(gk))
    return {"same_subspace": same, "across_subspaces": across, "across_reference_ideal": reference}, matrices


# --------------------------------------------------------------------------------------------


def evaluate_tracks(model: Embedder, tracks: list[TestTrack], quick: bool = False, correlations: bool | None = None,
                    figures: Path | None = None) -> dict:
    """The tables on loaded tracks: 4.2 and 4.3 always, 4.1 unless ``quick``, 4.4/4.5 when
    ``correlations`` (default: unless ``quick``), the figures when ``figures`` names a folder and
    the correlations are computed.

    An embedder whose ``identifies_parts`` is False (the untrained baseline: one vector in every
    subspace) gets ``None`` for every part of Table 4.3: the argmax of equal norms means nothing.
    """
    if correlations is None:
        correlations = not quick
    with warnings.catch_warnings():  # tiny sets: NaN cells (printed "-"), not a screen of numpy warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        return _evaluate_tracks(model, tracks, quick, correlations, figures)


def _evaluate_tracks(model: Embedder, tracks: list[TestTrack], quick: bool, correlations: bool,
                     figures: Path | None) -> dict:
    results: dict = {}
    t42, fig42 = pseudo_piece_table(model, tracks, return_embeddings=True)
    results["table_4_2_part_label_accuracy"] = t42
    if not quick:
        results["table_4_1_track_id_accuracy"] = track_id_table(model, tracks)
    t43, stacks = identification_table(model, tracks)
    if not getattr(model, "identifies_parts", True):
        t43 = {p: None for p in model.parts}
    results["table_4_3_identification_accuracy"] = t43
    if correlations:
        corr, matrices = correlation_tables(model, tracks)
        results["table_4_4_4_5_correlations"] = corr
        if figures is not None and len(tracks) < MIN_FIGURE_TRACKS:
            results["figures"] = []  # t-SNE of a segment or two: nothing to see, and sklearn refuses
        elif figures is not None:
            from .figures import draw_all

            results["figures"] = draw_all(figures, model, tracks, fig42, stacks, matrices)
    return results


def evaluate(model: Embedder, corpus: str | Path, split: str = "test", figures: Path | None = None,
             quick: bool = False) -> dict:
    """One corpus split: ``partsim evaluate MODEL --corpus DIR``."""
    tracks = load_test_tracks(corpus, model.parts, split)
    results: dict = {"corpus": str(corpus), "split": split, "tracks": len(tracks)}
    results.update(evaluate_tracks(model, tracks, quick=quick, figures=figures))
    return results


# ----------------------------------------------------------------------------- several sets
#
# ``partsim evaluate MODEL --set test=work/mixed:test --set composer=work/ho-grooves ...``: the
# same tables on several sets (issue 11: the training corpus's test split, held-out composer,
# held-out SoundFont, both), printed side by side and written as one JSON.

SET_LABELS = {"test": "test split", "composer": "held-out composer", "synth": "held-out SoundFont",
              "both": "both"}
SET_SYNTAX = "NAME=DIR[:SPLIT]"
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass
class EvalSet:
    """One evaluation set: a corpus folder and a split of it (resolved: its track count and summary)."""

    name: str
    corpus: Path
    split: str = "test"
    tracks: int = 0
    summary: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return SET_LABELS.get(self.name, self.name)

    def definition(self) -> dict:
        return {"label": self.label, "corpus": str(self.corpus), "split": self.split, "tracks": self.tracks,
                "corpus_summary": self.summary}


def parse_set(text: str, default_split: str = "test") -> EvalSet:
    """``NAME=DIR[:SPLIT]`` -> :class:`EvalSet` (not yet resolved). The last ``:`` starts the split
    unless what follows it holds a ``/`` (then it is part of the folder's path)."""
    name, eq, rest = text.partition("=")
    example = f"expected {SET_SYNTAX}, e.g. composer=work/ho-grooves:test"
    if not eq or not name or not rest:
        raise InvalidArgument(f"--set {text!r}: {example}")
    if not _SET_NAME.match(name):
        raise InvalidArgument(f"--set {text!r}: set name {name!r} must be letters, digits, '_', '.' or '-'")
    corpus, split = rest, default_split
    head, colon, tail = rest.rpartition(":")
    if colon and "/" not in tail:
        corpus, split = head, tail
        if not split:
            raise InvalidArgument(f"--set {text!r}: empty split after ':'; {example}")
    if not corpus:
        raise InvalidArgument(f"--set {text!r}: no corpus folder; {example}")
    return EvalSet(name, Path(corpus), split)


def resolve_sets(specs: list[str | EvalSet], default_split: str = "test") -> list[EvalSet]:
    """Parse every ``--set`` (text, or an :class:`EvalSet` already) and check it before anything
    is evaluated: names unique, the corpus opens, the split has tracks. Errors name the set (one
    line, :class:`PartsimError`)."""
    if not specs:
        raise InvalidArgument(f"no evaluation set: give --set {SET_SYNTAX} at least once")
    sets = [s if isinstance(s, EvalSet) else parse_set(s, default_split) for s in specs]
    seen: set[str] = set()
    for s in sets:
        if s.name in seen:
            raise InvalidArgument(f"--set {s.name} is given more than once; every set needs its own name")
        seen.add(s.name)
    for s in sets:
        try:
            ds = open_dataset(s.corpus)
            tracks = ds.tracks(s.split)
        except PartsimError as exc:
            raise type(exc)(f"--set {s.name}: {exc}") from None
        if not tracks:
            have = ", ".join(f"{k} {len(v)}" for k, v in ds.splits().items()) or "none"
            raise InvalidArgument(f"--set {s.name}: corpus {s.corpus} has no tracks in split {s.split!r} "
                                  f"(splits: {have})")
        s.tracks = len(tracks)
        s.summary = corpus_summary(ds, tracks)
    return sets


def corpus_summary(ds, tracks) -> dict:
    """What a set is made of: the corpus's generator config (index.json) and, over the set's tracks,
    how many songs each composer, each SoundFont and each MMA groove family made (when the
    metadata says)."""
    out: dict = {"layout": ds.layout}
    index_path = Path(ds.root) / "index.json"
    index: dict = {}
    if ds.layout == "partsim" and index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            config = dict(index.get("config") or {})
        except (OSError, ValueError, AttributeError, TypeError):
            index, config = {}, {}
        config.pop("soundfont_sha256", None)
        out["config"] = config
    songs = index.get("songs") if isinstance(index.get("songs"), dict) else {}
    composers: Counter = Counter()
    soundfonts: Counter = Counter()
    families: Counter = Counter()
    for t in tracks:
        meta = t.metadata if isinstance(t.metadata, dict) else {}
        composer = meta.get("composer") or (songs.get(t.id) or {}).get("composer")
        if isinstance(composer, dict):
            composer = composer.get("name") or composer.get("composer")
        if composer:
            composers[str(composer)] += 1
        source = meta.get("source")
        if isinstance(source, dict) and isinstance(source.get("families"), list):
            families.update({str(f) for f in source["families"]})  # MMA groove families (held-out composer)
        fonts = {str(inst["soundfont"]) for info in (meta.get("parts") or {}).values() if isinstance(info, dict)
                 for inst in info.get("instruments") or () if isinstance(inst, dict) and inst.get("soundfont")}
        soundfonts.update(fonts)
    if composers:
        out["composers"] = dict(sorted(composers.items()))
    if soundfonts:
        out["soundfonts"] = dict(sorted(soundfonts.items()))
    if families:
        out["groove_families"] = dict(sorted(families.items()))
    return out


def evaluate_sets(model: Embedder, sets: list[EvalSet], model_name: str = "", baseline: Embedder | None = None,
                  figures: Path | None = None, quick: bool = False, progress=None) -> dict:
    """Tables 4.1 (unless ``quick``), 4.2 and 4.3 on every set; 4.4/4.5 and the figures on the first
    set only (unless ``quick``). With ``baseline``, the same tables (4.3 excepted) for it on every
    set, from the same loaded audio. Sets are loaded one at a time."""
    report: dict = {
        "format": "partsim-evaluation-sets", "version": 1,
        "model": {"name": model_name, "parts": list(model.parts), "subspace_dim": model.subspace_dim},
        "quick": quick,
        "sets": {s.name: s.definition() for s in sets},
        "results": {},
        "thesis": THESIS,
    }
    if baseline is not None:
        report["baseline"] = {"name": getattr(baseline, "name", "baseline"),
                              "description": getattr(baseline, "description", ""), "results": {}}
    for i, s in enumerate(sets):
        if progress:
            progress(f"evaluating set {s.name} ({s.label}): {s.corpus}, {s.split} split, {s.tracks} tracks")
        tracks = load_test_tracks(s.corpus, model.parts, s.split)
        head = {"corpus": str(s.corpus), "split": s.split, "tracks": len(tracks)}
        first = i == 0 and not quick
        report["results"][s.name] = {**head, **evaluate_tracks(model, tracks, quick=quick, correlations=first,
                                                              figures=figures if first else None)}
        if baseline is not None:
            report["baseline"]["results"][s.name] = {
                **head, **evaluate_tracks(baseline, tracks, quick=quick, correlations=False)}
        del tracks
    return report


# ----------------------------------------------------------------------------- text


def _row(label: str, values: dict | None, parts: list[str], width: int = 34, fmt: str = "{:7.2f}") -> str:
    values = values or {}

    def cell(p):
        try:
            v = float(values.get(p))
        except (TypeError, ValueError):  # None: not measured or not applicable
            return "      -"
        return fmt.format(v) if v == v else "      -"

    return f"  {label:<{width}}" + "".join(cell(p) for p in parts)


def _header(parts: list[str], width: int = 34) -> str:
    return f"  {'':<{width}}" + "".join(f"{p:>7}" for p in parts)


def _correlation_lines(corr: dict, parts: list[str], width: int = 34) -> list[str]:
    lines = ["Table 4.4  distance-matrix correlation, stem in vs mix in, same subspace", _header(parts, width),
             _row("partsim", corr["same_subspace"], parts, width, fmt="{:7.3f}"),
             _row("thesis w/ psd", THESIS["table_4_4"], parts, width, fmt="{:7.3f}"),
             "", "Table 4.5  distance-matrix correlation across subspaces (mix in; ideal-stem reference)"]
    for pair, v in corr["across_subspaces"].items():
        ref = corr["across_reference_ideal"].get(pair)
        lines.append(f"  {pair:<16} {_num(v)}" + (f"   reference {_num(ref)}" if ref is not None else ""))
    return lines


def _num(v, fmt: str = "{:7.3f}") -> str:
    return fmt.format(v) if v == v else "      -"


def format_tables(results: dict) -> str:
    """One set's tables beside the thesis's numbers, as text."""
    parts = list(THESIS["table_4_2"])
    lines = [f"corpus {results['corpus']} ({results['split']} split, {results['tracks']} tracks)"]

    def row(name, values, fmt="{:7.2f}"):
        return _row(name, values, parts, fmt=fmt)

    header = _header(parts)
    lines += ["", "Table 4.2  part-level label accuracy on test pseudo pieces (%, 5-s segments)", header,
              row("partsim", results["table_4_2_part_label_accuracy"]),
              row("thesis (i) norm+psd+basic+add+pre", THESIS["table_4_2"])]
    if "table_4_1_track_id_accuracy" in results:
        t41 = results["table_4_1_track_id_accuracy"]
        lines += ["", "Table 4.1  track-ID accuracy, kNN k=5 (%)", header]
        for s in ("3", "5", "10"):
            if s in t41["proposed"]:
                lines.append(row(f"{s} s partsim CSN (mix in)", t41["proposed"][s]))
                if t41["baseline_ideal_stems"].get(s):
                    lines.append(row(f"{s} s per-part nets, ideal stems", t41["baseline_ideal_stems"][s]))
                lines.append(row(f"{s} s thesis proposed", THESIS["table_4_1"][s]))
    lines += ["", "Table 4.3  instrument identification from subspace norms, isolated stems in (%)", header,
              row("partsim", results["table_4_3_identification_accuracy"]),
              row("thesis w/pre, w/norm", THESIS["table_4_3"])]
    if "table_4_4_4_5_correlations" in results:
        lines += [""] + _correlation_lines(results["table_4_4_4_5_correlations"], parts)
    return "\n".join(lines)


def format_sets(report: dict) -> str:
    """Several sets side by side: per table (and per segment length in Table 4.1) one row per set,
    then the baseline's rows, then the thesis's row."""
    parts = list(report["model"]["parts"])
    sets, results = report["sets"], report["results"]
    base = report.get("baseline")
    base_results = base["results"] if base else {}
    labels = {name: d["label"] for name, d in sets.items()}
    lines = [f"model {report['model']['name']}"]
    if base:
        lines.append(f"baseline {base['name']}: {base['description']}")
    lines.append("sets")
    wl = max(len(v) for v in labels.values())
    for name, d in sets.items():
        summary = d.get("corpus_summary") or {}
        extra = "".join(f"; {title}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items())
                        for key, title in (("composers", "composers"), ("groove_families", "groove families"),
                                           ("soundfonts", "SoundFonts")) if summary.get(key))
        lines.append(f"  {labels[name]:<{wl}}  {d['corpus']} ({d['split']} split, {d['tracks']} tracks{extra})")

    base_label = {name: f"baseline, {lab}" for name, lab in labels.items()}
    width = max([34] + [len(v) + 15 for v in labels.values()])  # room for "baseline, X" and "X, ideal stems"
    header = _header(parts, width)

    def row(label, values, fmt="{:7.2f}"):
        return _row(label, values, parts, width, fmt)

    lines += ["", "Table 4.2  part-level label accuracy on test pseudo pieces (%, 5-s segments)", header]
    lines += [row(labels[n], r["table_4_2_part_label_accuracy"]) for n, r in results.items()]
    lines += [row(base_label[n], r["table_4_2_part_label_accuracy"]) for n, r in base_results.items()]
    lines.append(row("thesis (i) norm+psd+basic+add+pre", THESIS["table_4_2"]))

    t41 = {n: r["table_4_1_track_id_accuracy"] for n, r in results.items() if "table_4_1_track_id_accuracy" in r}
    if t41:
        lines += ["", "Table 4.1  track-ID accuracy, kNN k=5 (%, mix in; 'ideal stems': per-part nets on the stems)"]
        for s in ("3", "5", "10"):
            if not any(s in t["proposed"] for t in t41.values()):
                continue
            lines += [f"  {s}-s segments", header]
            lines += [row(labels[n], t["proposed"].get(s)) for n, t in t41.items()]
            lines += [row(f"{labels[n]}, ideal stems", t["baseline_ideal_stems"][s])
                      for n, t in t41.items() if t["baseline_ideal_stems"].get(s)]
            lines += [row(base_label[n], r["table_4_1_track_id_accuracy"]["proposed"].get(s))
                      for n, r in base_results.items() if "table_4_1_track_id_accuracy" in r]
            lines.append(row("thesis proposed", THESIS["table_4_1"][s]))

    lines += ["", "Table 4.3  instrument identification from subspace norms, isolated stems in (%)", header]
    lines += [row(labels[n], r["table_4_3_identification_accuracy"]) for n, r in results.items()]
    lines.append(row("thesis w/pre, w/norm", THESIS["table_4_3"]))
    if base:
        lines.append("  (the baseline has one vector in every subspace: no part identification, no row)")

    first = next(iter(results), None)
    if first is not None and "table_4_4_4_5_correlations" in results[first]:
        lines += ["", f"Tables 4.4 and 4.5 on the first set only ({labels[first]})"]
        lines += _correlation_lines(results[first]["table_4_4_4_5_correlations"], parts, width)
    return "\n".join(lines)


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
