"""``partsim evaluate``: the thesis's Tables 4.1-4.5 on a corpus split, or on several sets side by side.

The protocols themselves are in :mod:`.tables`; the text the command prints is :mod:`.report`'s
(``format_tables``, ``format_sets`` and ``save_results`` are imported here for the command).
:func:`evaluate_tracks` runs the tables on loaded tracks (and draws the figures, :mod:`.figures`).

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

from ..data import open_dataset
from ..errors import InvalidArgument, PartsimError
from .inference import Embedder
from .report import format_sets, format_tables, save_results
from .tables import (
    THESIS,
    TestTrack,
    correlation_tables,
    identification_table,
    load_test_tracks,
    pseudo_piece_table,
    track_id_table,
)

__all__ = [
    "EvalSet",
    "corpus_summary",
    "evaluate",
    "evaluate_sets",
    "evaluate_tracks",
    "format_sets",
    "format_tables",
    "parse_set",
    "resolve_sets",
    "save_results",
]

MIN_FIGURE_TRACKS = 3  # fewer tracks: no figures (t-SNE needs more points than its perplexity)


def evaluate_tracks(
    model: Embedder,
    tracks: list[TestTrack],
    quick: bool = False,
    correlations: bool | None = None,
    figures: Path | None = None,
) -> dict:
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


def _evaluate_tracks(
    model: Embedder, tracks: list[TestTrack], quick: bool, correlations: bool, figures: Path | None
) -> dict:
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


def evaluate(
    model: Embedder, corpus: str | Path, split: str = "test", figures: Path | None = None, quick: bool = False
) -> dict:
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

SET_LABELS = {"test": "test split", "composer": "held-out composer", "synth": "held-out SoundFont", "both": "both"}
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
        return {
            "label": self.label,
            "corpus": str(self.corpus),
            "split": self.split,
            "tracks": self.tracks,
            "corpus_summary": self.summary,
        }


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
            raise InvalidArgument(
                f"--set {s.name}: corpus {s.corpus} has no tracks in split {s.split!r} (splits: {have})"
            )
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
    songs: dict = index["songs"] if isinstance(index.get("songs"), dict) else {}
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
        fonts = {
            str(inst["soundfont"])
            for info in (meta.get("parts") or {}).values()
            if isinstance(info, dict)
            for inst in info.get("instruments") or ()
            if isinstance(inst, dict) and inst.get("soundfont")
        }
        soundfonts.update(fonts)
    if composers:
        out["composers"] = dict(sorted(composers.items()))
    if soundfonts:
        out["soundfonts"] = dict(sorted(soundfonts.items()))
    if families:
        out["groove_families"] = dict(sorted(families.items()))
    return out


def evaluate_sets(
    model: Embedder,
    sets: list[EvalSet],
    model_name: str = "",
    baseline: Embedder | None = None,
    figures: Path | None = None,
    quick: bool = False,
    progress=None,
) -> dict:
    """Tables 4.1 (unless ``quick``), 4.2 and 4.3 on every set; 4.4/4.5 and the figures on the first
    set only (unless ``quick``). With ``baseline``, the same tables (4.3 excepted) for it on every
    set, from the same loaded audio. Sets are loaded one at a time."""
    report: dict = {
        "format": "partsim-evaluation-sets",
        "version": 1,
        "model": {"name": model_name, "parts": list(model.parts), "subspace_dim": model.subspace_dim},
        "quick": quick,
        "sets": {s.name: s.definition() for s in sets},
        "results": {},
        "thesis": THESIS,
    }
    if baseline is not None:
        report["baseline"] = {
            "name": getattr(baseline, "name", "baseline"),
            "description": getattr(baseline, "description", ""),
            "results": {},
        }
    for i, s in enumerate(sets):
        if progress:
            progress(f"evaluating set {s.name} ({s.label}): {s.corpus}, {s.split} split, {s.tracks} tracks")
        tracks = load_test_tracks(s.corpus, model.parts, s.split)
        head = {"corpus": str(s.corpus), "split": s.split, "tracks": len(tracks)}
        first = i == 0 and not quick
        report["results"][s.name] = {
            **head,
            **evaluate_tracks(model, tracks, quick=quick, correlations=first, figures=figures if first else None),
        }
        if baseline is not None:
            report["baseline"]["results"][s.name] = {
                **head,
                **evaluate_tracks(baseline, tracks, quick=quick, correlations=False),
            }
        del tracks
    return report
