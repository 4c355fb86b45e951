"""The text ``partsim evaluate`` prints: one set's tables, or several sets side by side, each
beside the thesis's row (``THESIS``); and the results as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .tables import THESIS

# Tables 4.2 and 4.3, one row per model: THESIS key -> (key in the results, title, the thesis row's label)
_ROW_TABLES = {
    "table_4_2": (
        "table_4_2_part_label_accuracy",
        "Table 4.2  part-level label accuracy on test pseudo pieces (%, 5-s segments)",
        "thesis (i) norm+psd+basic+add+pre",
    ),
    "table_4_3": (
        "table_4_3_identification_accuracy",
        "Table 4.3  instrument identification from subspace norms, isolated stems in (%)",
        "thesis w/pre, w/norm",
    ),
}


def _row(label: str, values: dict | None, parts: list[str], width: int = 34, fmt: str = "{:7.2f}") -> str:
    values = values or {}

    def cell(p):
        try:
            v = float(values.get(p, "nan"))
        except (TypeError, ValueError):  # None: not measured or not applicable
            return "      -"
        return fmt.format(v) if v == v else "      -"

    return f"  {label:<{width}}" + "".join(cell(p) for p in parts)


def _header(parts: list[str], width: int = 34) -> str:
    return f"  {'':<{width}}" + "".join(f"{p:>7}" for p in parts)


def _correlation_lines(corr: dict, parts: list[str], width: int = 34) -> list[str]:
    lines = [
        "Table 4.4  distance-matrix correlation, stem in vs mix in, same subspace",
        _header(parts, width),
        _row("partsim", corr["same_subspace"], parts, width, fmt="{:7.3f}"),
        _row("thesis w/ psd", THESIS["table_4_4"], parts, width, fmt="{:7.3f}"),
        "",
        "Table 4.5  distance-matrix correlation across subspaces (mix in; ideal-stem reference)",
    ]
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

    def table(name: str) -> list[str]:  # Tables 4.2 and 4.3
        key, title, thesis_label = _ROW_TABLES[name]
        return ["", title, header, row("partsim", results[key]), row(thesis_label, THESIS[name])]

    lines += table("table_4_2")
    if "table_4_1_track_id_accuracy" in results:
        t41 = results["table_4_1_track_id_accuracy"]
        lines += ["", "Table 4.1  track-ID accuracy, kNN k=5 (%)", header]
        for s in ("3", "5", "10"):
            if s in t41["proposed"]:
                lines.append(row(f"{s} s partsim CSN (mix in)", t41["proposed"][s]))
                if t41["baseline_ideal_stems"].get(s):
                    lines.append(row(f"{s} s per-part nets, ideal stems", t41["baseline_ideal_stems"][s]))
                lines.append(row(f"{s} s thesis proposed", THESIS["table_4_1"][s]))
    lines += table("table_4_3")
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
        extra = "".join(
            f"; {title}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items())
            for key, title in (
                ("composers", "composers"),
                ("groove_families", "groove families"),
                ("soundfonts", "SoundFonts"),
            )
            if summary.get(key)
        )
        lines.append(f"  {labels[name]:<{wl}}  {d['corpus']} ({d['split']} split, {d['tracks']} tracks{extra})")

    base_label = {name: f"baseline, {lab}" for name, lab in labels.items()}
    width = max([34] + [len(v) + 15 for v in labels.values()])  # room for "baseline, X" and "X, ideal stems"
    header = _header(parts, width)

    def row(label, values, fmt="{:7.2f}"):
        return _row(label, values, parts, width, fmt)

    key, title, thesis_label = _ROW_TABLES["table_4_2"]
    lines += ["", title, header]
    lines += [row(labels[n], r[key]) for n, r in results.items()]
    lines += [row(base_label[n], r[key]) for n, r in base_results.items()]
    lines.append(row(thesis_label, THESIS["table_4_2"]))

    t41 = {n: r["table_4_1_track_id_accuracy"] for n, r in results.items() if "table_4_1_track_id_accuracy" in r}
    if t41:
        lines += ["", "Table 4.1  track-ID accuracy, kNN k=5 (%, mix in; 'ideal stems': per-part nets on the stems)"]
        for s in ("3", "5", "10"):
            if not any(s in t["proposed"] for t in t41.values()):
                continue
            lines += [f"  {s}-s segments", header]
            lines += [row(labels[n], t["proposed"].get(s)) for n, t in t41.items()]
            lines += [
                row(f"{labels[n]}, ideal stems", t["baseline_ideal_stems"][s])
                for n, t in t41.items()
                if t["baseline_ideal_stems"].get(s)
            ]
            lines += [
                row(base_label[n], r["table_4_1_track_id_accuracy"]["proposed"].get(s))
                for n, r in base_results.items()
                if "table_4_1_track_id_accuracy" in r
            ]
            lines.append(row("thesis proposed", THESIS["table_4_1"][s]))

    key, title, thesis_label = _ROW_TABLES["table_4_3"]
    lines += ["", title, header]
    lines += [row(labels[n], r[key]) for n, r in results.items()]
    lines.append(row(thesis_label, THESIS["table_4_3"]))
    if base:
        lines.append("  (the baseline has one vector in every subspace: no part identification, no row)")

    first = next(iter(results), None)
    if first is not None and "table_4_4_4_5_correlations" in results[first]:
        lines += ["", f"Tables 4.4 and 4.5 on the first set only ({labels[first]})"]
        lines += _correlation_lines(results[first]["table_4_4_4_5_correlations"], parts, width)
    return "\n".join(lines)


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
