"""The lent-GPU procedure's plumbing (scripts/gpu-bundle.sh, gpu-assemble.sh, gpu-train.sh and
scripts/gpu_bundle.py) on small data: the SoundFont coding, parts that arrive one device call at
a time, their checks, ``PARTSIM_MMA`` for an unpacked MMA, and the scripts' shared settings."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from partsim.corpus import mma_library
from partsim.corpus.mma_library import MMA_ENV, MmaError, catalogue, mma_path, run_mma, stdlib_dir

from .util import ROOT

_spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")
gpu_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_bundle)

DEBIAN_MMA = Path("/usr/share/mma")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pcm(seconds: float = 2.0, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(44100 * seconds)) / 44100
    x = 12000 * np.sin(2 * np.pi * 220 * t) * np.exp(-t) + rng.normal(0, 3, t.size)
    return x.astype("<i2").tobytes()


def test_pcm2_coding_round_trips_any_bytes_and_shrinks_pcm_more_than_xz():
    import lzma

    rng = np.random.default_rng(1)
    pcm = _pcm()
    for raw in (b"", b"x", rng.bytes(1001), pcm, pcm + b"\x01", b"RIFF" + pcm[:999]):
        assert gpu_bundle.decode_bytes(gpu_bundle.encode_bytes(raw)) == raw
    # wrapping differences: full-scale jumps survive
    jumps = np.array([32767, -32768, 32767, 0, -32768] * 200, "<i2").tobytes()
    assert gpu_bundle.decode_bytes(gpu_bundle.encode_bytes(jumps)) == jumps
    coded = gpu_bundle.encode_bytes(pcm)
    assert len(coded) < 0.8 * len(lzma.compress(pcm, preset=6)) and len(coded) < 0.5 * len(pcm)
    with pytest.raises(ValueError, match="not a partsim PCM2"):
        gpu_bundle.decode_bytes(b"garbage!" + coded[8:])


def _fake_bundle(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """A bundle.tar laid out as gpu-bundle.sh lays it out, with small stand-ins."""
    sf2, sf3 = _pcm(1.0, 2), np.random.default_rng(3).bytes(5000)
    outer = tmp / "outer"
    (outer / "sf").mkdir(parents=True)
    (outer / "sf" / "A.sf2.pcm2.xz").write_bytes(gpu_bundle.encode_bytes(sf2))
    (outer / "sf" / "B.sf3").write_bytes(sf3)
    base = io.BytesIO()
    with tarfile.open(fileobj=base, mode="w:xz") as tar:
        for name, data in (("lib/libfluidsynth.so.3", b"\x7fELF stand-in"), ("mma/mma", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (outer / "base.tar.xz").write_bytes(base.getvalue())
    (outer / "MANIFEST.json").write_text(json.dumps({"files": {"sf/A.sf2": _sha(sf2), "sf/B.sf3": _sha(sf3)}}))
    bundle = tmp / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for name in ("MANIFEST.json", "base.tar.xz", "sf"):
            tar.add(outer / name, arcname=name)
    return bundle, {"sf/A.sf2": sf2, "sf/B.sf3": sf3}


def _assemble(tmp: Path, parts_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "WORK": str(tmp / "gpu"), "BUNDLE_PARTS": str(parts_dir)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-assemble.sh"), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.slow
def test_parts_arrive_one_call_at_a_time_are_checked_and_unpack_into_the_bundle(tmp_path):
    bundle, originals = _fake_bundle(tmp_path)
    parts = gpu_bundle.split(bundle, tmp_path / "dev", 4096)
    assert len(parts) >= 3 and all(p.stat().st_size <= 4096 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == bundle.read_bytes()
    sums = (tmp_path / "dev" / gpu_bundle.SUMS).read_text()
    dest = tmp_path / "gpu" / "bundle"

    def call(k: int, corrupt: bool = False) -> Path:  # what one device call carries: part k + the sums
        d = tmp_path / f"call{k}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        data = parts[k].read_bytes()
        (d / parts[k].name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if corrupt else data)
        (d / gpu_bundle.SUMS).write_text(sums)
        return d

    r = _assemble(tmp_path, call(0))
    assert r.returncode == 0 and f"1/{len(parts)} parts" in r.stdout and not dest.exists(), r.stdout + r.stderr
    r = _assemble(tmp_path, call(1, corrupt=True))
    assert r.returncode == 3 and "mismatch" in r.stderr and "part-01" in r.stderr
    r = _assemble(tmp_path, tmp_path / "call1", "--require")
    assert r.returncode == 3 and "missing part-01" in r.stdout and not dest.exists()
    for k in range(1, len(parts)):
        r = _assemble(tmp_path, call(k))
        assert r.returncode == 0, r.stdout + r.stderr
    assert "unpacked" in r.stdout and (dest / "READY").read_text().split()[0] == sums.split()[-2]
    for name, data in originals.items():
        assert (dest / name).read_bytes() == data
    assert not (dest / "sf" / "A.sf2.pcm2.xz").exists() and (dest / "lib" / "libfluidsynth.so.3").is_file()
    # a later call (gpu-train.sh's) finds it ready; a bundle whose SoundFont does not decode to its
    # recorded SHA-256 is refused
    r = _assemble(tmp_path, tmp_path / "call0", "--require")
    assert r.returncode == 0 and "already holds" in r.stdout
    manifest = json.loads((tmp_path / "outer" / "MANIFEST.json").read_text())
    manifest["files"]["sf/A.sf2"] = "0" * 64
    (tmp_path / "outer" / "MANIFEST.json").write_text(json.dumps(manifest))
    with tarfile.open(bundle, "w") as tar:
        for name in ("MANIFEST.json", "base.tar.xz", "sf"):
            tar.add(tmp_path / "outer" / name, arcname=name)
    parts = gpu_bundle.split(bundle, tmp_path / "dev", 1 << 20)
    r = _assemble(tmp_path, tmp_path / "dev", "--require")
    assert r.returncode == 4 and "sf/A.sf2" in r.stderr


def test_partsim_mma_names_another_mma_and_its_groove_library(tmp_path, monkeypatch):
    prog = tmp_path / "mma" / "mma"
    prog.parent.mkdir()
    prog.write_text("#!/bin/sh\n")
    monkeypatch.setenv(MMA_ENV, str(prog))
    with pytest.raises(MmaError, match="PARTSIM_MMA"):  # not executable
        mma_path()
    prog.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MMA_ENV, "mma/mma")  # relative: made absolute (mma runs in a temporary folder)
    assert mma_path() == str(prog) and stdlib_dir() == prog.resolve().parent / "lib" / "stdlib"
    monkeypatch.delenv(MMA_ENV)
    assert stdlib_dir() == mma_library.STDLIB


@pytest.mark.skipif(
    not (DEBIAN_MMA / "lib" / "stdlib").is_dir() or not Path("/usr/bin/mma").is_file(),
    reason="Debian's mma is not installed (scripts/bootstrap.sh installs it)",
)
def test_an_unpacked_mma_renders_with_its_own_groove_library(tmp_path, monkeypatch):
    # laid out as gpu-bundle.sh lays it out, plus a style file that only this copy has
    home = tmp_path / "mma"
    home.mkdir()
    head, rest = Path("/usr/bin/mma").read_text().split("\n", 1)
    (home / "mma").write_text("#!/usr/bin/env python3\n" + rest)
    (home / "mma").chmod(0o755)
    (home / "MMA").symlink_to(DEBIAN_MMA / "MMA")
    (home / "includes").symlink_to(DEBIAN_MMA / "includes")
    shutil.copytree(DEBIAN_MMA / "lib" / "stdlib", home / "lib" / "stdlib", ignore=shutil.ignore_patterns(".mmaDB"))
    style = (home / "lib" / "stdlib" / "bossanova.mma").read_text()
    (home / "lib" / "stdlib" / "zzpartsimtest.mma").write_text(style)
    monkeypatch.setenv(MMA_ENV, str(home / "mma"))
    assert "zzpartsimtest" in catalogue() and "zzpartsimtest" not in catalogue(mma_library.STDLIB)
    midi = run_mma(
        "RndSeed 1\nTempo 120\nUse stdlib/zzpartsimtest\nGroove BossaNova\n1 C / / /\n2 G7 / / /\n3 C / / /\n"
    )
    assert midi[:4] == b"MThd" and len(midi) > 200
    monkeypatch.delenv(MMA_ENV)  # Debian's mma has no such style file
    with pytest.raises(MmaError, match="mma failed"):
        run_mma("Tempo 120\nUse stdlib/zzpartsimtest\nGroove BossaNova\n1 C / / /\n")


def _bash_array(text: str, name: str) -> list[str]:
    m = re.search(rf"^\s*{name}=\((.*?)\)", text, re.S | re.M)
    assert m, name
    return [Path(w).name for w in m.group(1).split()]


def test_bundle_train_and_export_scripts_agree_on_the_training_soundfonts_and_parse():
    scripts = ROOT / "scripts"
    bundled = _bash_array((scripts / "gpu-bundle.sh").read_text(), "SOUNDFONTS")
    rendered = _bash_array((scripts / "gpu-train.sh").read_text(), "SF_NAMES")
    evaluated = _bash_array((scripts / "make-model-v3.sh").read_text(), "TRAIN_SF")
    assert len(bundled) == 5 and bundled == rendered == evaluated
    for name in ("gpu-bundle.sh", "gpu-assemble.sh", "gpu-train.sh"):
        r = subprocess.run(["bash", "-n", str(scripts / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


@pytest.mark.slow
def test_the_separator_gpu_check_dry_runs_on_cpu_and_records_every_section(tmp_path):
    """scripts/gpu_check.py without a GPU (--cpu-only): the shipped separator on synthetic audio, a
    record naming the machine, and no section failed."""
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_check.py"),
            "--out",
            str(out),
            "--cpu-only",
            "--lengths",
            "2",
            "--cpu-reps",
            "1",
            "--no-service",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["sections_failed"] == []
    assert record["machine"]["cpu_only_mode"] is True and record["machine"]["cpu_count"] == os.cpu_count()
    assert record["cpu"]["model_load_s"] > 0
