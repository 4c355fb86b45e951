"""Debian's MMA (Musical MIDI Accompaniment): its groove library and running the ``mma`` program.

MMA turns a chord chart into multi-part MIDI with human-written grooves. Its standard library
(``/usr/share/mma/lib/stdlib/*.mma``, GPL-2+) holds about 1,165 grooves in 118 style files.
partsim groups grooves into **families by style file** ("bossanova", "jazzwaltz", ...).

Held-out families: :data:`HELDOUT_FAMILIES` (17 of the 113 usable families, 15 %, across
latin, jazz, rock/pop, country/folk, blues, soul, ballad, big band, march, electronic and ska)
are never used for training corpora (``--grooves train``); ``--grooves heldout`` uses only
them, for the composer-shift evaluation set. The list is fixed here and must not change once
corpora have been made with it.

The catalogue is read from the style files themselves (``DefGroove`` lines, and the ``Time``
in force for each), so no groove database is needed; songs name their style file with
``Use stdlib/<family>``, which MMA resolves without its ``.mmaDB`` either. Debian's package
builds the database at install time (``mma -G`` in its postinst) and nothing here writes to
``/usr/share/mma``.

``PARTSIM_MMA=/path/to/mma`` runs another MMA than the one on the PATH, e.g. an unpacked copy
(``scripts/gpu-bundle.sh``: the ``mma`` script beside its ``MMA/`` modules and ``lib/``, where MMA
itself looks for them); the groove library is then the ``lib/stdlib`` beside that program.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PartsimError

STDLIB = Path("/usr/share/mma/lib/stdlib")  # MMA resolves "Use stdlib/<family>" here
MMA_ENV = "PARTSIM_MMA"  # another mma program (an unpacked MMA); its groove library is beside it
MMA_LICENSE = "GPL-2.0-or-later"
MMA_TIMEOUT_S = 60.0
# Bump when a seed no longer yields the same MMA songs (it is part of a corpus's identity).
MMA_COMPOSER = "partsim-mma/1"

# Families that are not music: click tracks and the empty style.
EXCLUDED_FAMILIES = frozenset({"metronome", "metronome3", "metronome6", "metronome68", "none"})

# Never used for training: the composer-shift evaluation set (`--grooves heldout`).
HELDOUT_FAMILIES: tuple[str, ...] = (
    "samba",
    "mambo",
    "tango",  # latin
    "bebop",
    "jazzwaltz",
    "gypsyjazz",  # jazz (4/4 and 3/4)
    "60srock",
    "softrock",  # rock / pop
    "bluegrass",
    "countrywaltz",  # country / folk (4/4 and 3/4)
    "slowblues",  # blues
    "dsoul",  # soul / funk
    "popballad",  # ballad
    "bigband",  # swing
    "dixiemarch",  # march / dixieland
    "trance",  # electronic
    "ska",  # ska
)
GROOVE_SETS = ("train", "heldout")


class MmaError(PartsimError):
    """``mma`` is missing, or failed on a chart partsim wrote."""


@dataclass(frozen=True)
class Groove:
    name: str  # as MMA spells it, e.g. "BossaNovaSus"
    family: str  # style file stem, e.g. "bossanova"
    beats: int  # quarter-note beats per bar (MMA's Time)
    kind: str  # "main", "intro", "fill" or "end"


def _kind(name: str) -> str:
    """intro, end, fill or main, from MMA's naming ("SwingIntro2", "BossaNova1End", "WaltzFill")."""
    low = name.lower()
    if "intro" in low:
        return "intro"
    if re.search(r"end(ing)?\d*(sus|plus)*$", low):  # not the "end" in "DescendingJazz"
        return "end"
    if "fill" in low:
        return "fill"
    return "main"


def _scan_file(path: Path) -> list[Groove]:
    beats = 4.0
    out: list[Groove] = []
    seen: set[str] = set()
    for raw in path.read_text(errors="replace").splitlines():
        toks = raw.split("//")[0].split()
        if not toks:
            continue
        word = toks[0].lower()
        if word == "time" and len(toks) > 1:
            try:
                beats = float(toks[1])
            except ValueError:
                pass
        elif word == "defgroove" and len(toks) > 1 and toks[1].lower() not in seen:
            seen.add(toks[1].lower())
            if beats == int(beats) and beats >= 2:
                out.append(Groove(toks[1], path.stem, int(beats), _kind(toks[1])))
    return out


def stdlib_dir() -> Path:
    """The groove library of the mma that runs: ``lib/stdlib`` beside ``$PARTSIM_MMA``, else Debian's."""
    override = os.environ.get(MMA_ENV)
    return Path(override).resolve().parent / "lib" / "stdlib" if override else STDLIB


def catalogue(stdlib: Path | None = None) -> dict[str, tuple[Groove, ...]]:
    """Usable families (sorted) -> their grooves in file order."""
    return _catalogue(stdlib or stdlib_dir())


@functools.lru_cache(maxsize=4)
def _catalogue(stdlib: Path) -> dict[str, tuple[Groove, ...]]:
    if not stdlib.is_dir():
        raise MmaError(f"MMA's groove library {stdlib} is missing; install Debian's mma package (apt-get install mma)")
    fams: dict[str, tuple[Groove, ...]] = {}
    for path in sorted(stdlib.glob("*.mma")):
        if path.stem in EXCLUDED_FAMILIES:
            continue
        grooves = tuple(g for g in _scan_file(path))
        if any(g.kind == "main" for g in grooves):
            fams[path.stem] = grooves
    missing = [f for f in HELDOUT_FAMILIES if f not in fams]
    if missing:
        raise MmaError(f"MMA's library {stdlib} lacks the held-out families {missing}; another MMA version?")
    return fams


def families(grooves: str, stdlib: Path | None = None) -> dict[str, tuple[Groove, ...]]:
    """The families a corpus may use: ``train`` (all but the held-out ones) or ``heldout``."""
    if grooves not in GROOVE_SETS:
        raise MmaError(f"unknown groove set {grooves!r}; choose one of {', '.join(GROOVE_SETS)}")
    cat = catalogue(stdlib)
    held = set(HELDOUT_FAMILIES)
    return {f: g for f, g in cat.items() if (f in held) == (grooves == "heldout")}


def mma_path() -> str:
    override = os.environ.get(MMA_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MmaError(f"{MMA_ENV}={override}: no such executable mma program")
        return os.path.abspath(override)  # mma runs in a temporary folder
    path = shutil.which("mma")
    if path is None:
        raise MmaError(
            "the mma program (Musical MIDI Accompaniment) is not installed; "
            "install Debian's mma package (apt-get install mma) or use --composer partsim"
        )
    return path


@functools.lru_cache(maxsize=1)
def mma_version() -> str:
    try:
        r = subprocess.run([mma_path(), "-v"], capture_output=True, text=True, timeout=MMA_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MmaError(f"cannot run mma -v: {exc}") from None
    m = re.search(r"^\s*(\d+(?:\.\d+)+\S*)\s*$", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise MmaError(f"mma -v failed (exit {r.returncode}): {(r.stdout + r.stderr).strip()[-200:]}")
    return m.group(1)


def run_mma(chart: str, timeout: float = MMA_TIMEOUT_S) -> bytes:
    """Run ``mma`` on ``chart`` (the text of an .mma file) in a temporary folder; return the MIDI bytes."""
    exe = mma_path()
    with tempfile.TemporaryDirectory(prefix="partsim-mma-") as tmp:
        src = Path(tmp) / "song.mma"
        src.write_text(chart)
        try:
            r = subprocess.run(
                [exe, "-f", "song.mid", "song.mma"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "HOME": tmp, "PYTHONHASHSEED": "0"},
            )
        except subprocess.TimeoutExpired:
            raise MmaError(f"mma did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise MmaError(f"cannot run {exe}: {exc.strerror or exc}") from None
        out = Path(tmp) / "song.mid"
        if r.returncode != 0 or not out.is_file():
            lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and "PLUGIN" not in ln]
            detail = " / ".join(lines[-3:]) or "no output"
            raise MmaError(f"mma failed (exit {r.returncode}): {detail}")
        return out.read_bytes()
