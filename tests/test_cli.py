"""The ``partsim`` command as a user runs it: real processes, real files, exit codes and messages."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from partsim.data import PARTS, open_dataset

from .slakh_tracks import make_slakh_track
from .util import FAST_SOUNDFONTS, assert_user_error, corpus_make_args, run_cli

TIM = FAST_SOUNDFONTS[0]


@pytest.mark.slow
def test_readme_command_with_default_soundfonts(tmp_path):
    """The newcomer's command, verbatim but for the folder: every Debian GM SoundFont installed."""
    out = tmp_path / "c"
    proc = run_cli("corpus", "make", "--out", str(out), "--songs", "3", "--seconds", "12", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 3 songs to {out}" in proc.stdout
    assert "songs: 100%" in proc.stderr  # the progress bar
    index = json.loads((out / "index.json").read_text())
    assert index["config"]["soundfonts"] == [
        "FluidR3_GM.sf2",
        "TimGM6mb.sf2",
        "MuseScore_General.sf3",
        "FluidR3Mono_GM.sf3",
        "sf_GMbank.sf2",
        "OPL-3_FM_128M.sf2",
    ]
    for sid in index["songs"]:
        assert sid in proc.stdout
        assert sf.info(str(out / sid / "mix.flac")).duration == pytest.approx(12.0)
    info = run_cli("corpus", "info", str(out), "--check")
    assert info.returncode == 0, info.stderr
    assert "partsim layout, 3 tracks" in info.stdout and "all readable" in info.stdout
    # running it again is a no-op that reports the same corpus
    again = run_cli("corpus", "make", "--out", str(out), "--songs", "3", "--seconds", "12", "--seed", "1", "--quiet")
    assert again.returncode == 0 and again.stdout.splitlines()[2:] == proc.stdout.splitlines()[2:]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--songs", "0"], ["--songs must be at least 1, got 0"]),
        (["--songs", "-4"], ["--songs must be at least 1, got -4"]),
        (["--seconds", "3"], ["--seconds 3 is too short for one bar", "60 BPM"]),
        (["--seconds", "0"], ["--seconds must be a positive number"]),
        (["--seconds", "nan"], ["--seconds must be a positive number"]),
        (["--seconds", "99999"], ["exceeds the maximum"]),
        (["--workers", "0"], ["--workers must be at least 1"]),
        (["--seed", "-1"], ["--seed must be a non-negative integer"]),
        (["--split", "0.5,0.5,0.5"], ["--split must be three non-negative fractions summing to 1"]),
    ],
)
def test_bad_numbers(tmp_path, args, fragments):
    base = {"--out": str(tmp_path / "c"), "--songs": "2", "--seconds": "8", "--seed": "1", "--soundfont": TIM}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    proc = run_cli("corpus", "make", *[x for kv in base.items() for x in kv])
    assert_user_error(proc, *fragments)
    assert not (tmp_path / "c").exists()  # validated before anything is written


def test_unparseable_number_is_a_usage_error(tmp_path):
    proc = run_cli(*corpus_make_args(tmp_path / "c", songs="two"))
    assert proc.returncode == 2 and "expected a whole number, got 'two'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_soundfonts(tmp_path):
    missing = tmp_path / "nope.sf2"
    assert_user_error(
        run_cli(*corpus_make_args(tmp_path / "c"), "--soundfont", str(missing)),
        "SoundFont not found",
        str(missing),
    )
    fake = tmp_path / "fake.sf2"
    fake.write_text("this is not a soundfont\n" * 10)
    assert_user_error(
        run_cli(*corpus_make_args(tmp_path / "c"), "--soundfont", str(fake)),
        "not a SoundFont",
        str(fake),
    )
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_unwritable_and_foreign_output_folders(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")

    def make(out, *more: str, seed: int = 1):
        return run_cli(*corpus_make_args(out, seed=seed), "--soundfont", TIM, *more)

    assert_user_error(make(blocker / "sub"), "cannot write to output folder", str(blocker / "sub"))
    assert_user_error(make(blocker), "output path exists and is not a folder")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    assert_user_error(make(foreign), "not empty", str(foreign))
    assert (foreign / "precious.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    ours = tmp_path / "ours"
    assert make(ours, "--quiet").returncode == 0
    assert_user_error(make(ours, seed=2), "other settings", "seed 1 vs 2")


@pytest.mark.slow
def test_interrupted_run_leaves_nothing_half_written_and_resumes(tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "partsim.cli", *corpus_make_args(out, songs=30, seed=4), "--soundfont", TIM, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("song*"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "generator ended or stalled"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "index.json").exists()
    done = sorted(p for p in out.glob("song*"))
    assert 2 <= len(done) < 30
    for song in done:  # everything that looks complete is complete
        meta = json.loads((song / "metadata.json").read_text())
        for name in ["mix.flac"] + [f"stems/{p}.flac" for p in PARTS]:
            assert sf.read(str(song / name))[0].shape == (meta["num_samples"],)
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".tmp-*"))
    ds = open_dataset(out)
    assert len(ds) == 30 and ds.check()["tracks"] == 30


@pytest.mark.slow
def test_info_reports_slakh_problems_in_one_line(tmp_path):
    root = tmp_path / "slakh"
    make_slakh_track(root / "train" / "Track00001")
    make_slakh_track(root / "test" / "Track00002", seed=1)
    ok = run_cli("corpus", "info", str(root), "--json")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["layout"] == "slakh" and summary["tracks"] == 2 and summary["splits"] == {"test": 1, "train": 1}

    corrupt = next((root / "test" / "Track00002" / "stems").glob("S*.flac"))
    corrupt.write_bytes(b"\x00garbage" * 100)
    assert_user_error(run_cli("corpus", "info", str(root), "--check"), str(corrupt))

    missing = next((root / "train" / "Track00001" / "stems").glob("S*.flac"))
    missing.unlink()
    assert_user_error(run_cli("corpus", "info", str(root)), "Track00001", "missing")

    assert_user_error(run_cli("corpus", "info", str(tmp_path / "nowhere")), "not found")


@pytest.mark.slow
def test_info_check_verifies_the_corpus_promises(tmp_path):
    out = tmp_path / "c"
    assert run_cli(*corpus_make_args(out, songs=2, seconds=6, seed=3), "--soundfont", TIM, "--quiet").returncode == 0
    ok = run_cli("corpus", "info", str(out), "--check")
    assert ok.returncode == 0 and "12 audio files decoded" in ok.stdout  # 2 x (mix + 5 stems)
    meta = json.loads((out / "song00000" / "metadata.json").read_text())
    absent = [p for p in PARTS if not meta["parts"][p]["present"]]
    present = [p for p in PARTS if meta["parts"][p]["present"]]
    assert absent, "seed 3 gives song00000 an absent part"
    stem = out / "song00000" / "stems" / f"{present[0]}.flac"
    audio, sr = sf.read(str(stem), dtype="int16")
    sf.write(str(stem), (audio // 2).astype("int16"), sr, subtype="PCM_16")
    assert_user_error(run_cli("corpus", "info", str(out), "--check"), "song00000", "mix differs from the sum")
    sf.write(str(stem), audio, sr, subtype="PCM_16")
    silent = out / "song00000" / "stems" / f"{absent[0]}.flac"
    n = sf.info(str(silent)).frames
    sf.write(str(silent), np.full(n, 3, dtype="int16"), sr, subtype="PCM_16")
    assert_user_error(run_cli("corpus", "info", str(out), "--check"), str(silent), "declared absent")


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every runnable (sub)command below ``parser``."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield path, parser
        return
    for name, child in actions[0].choices.items():
        yield from _leaf_commands(child, (*path, name))


def test_each_cli_module_registers_its_own_commands_once_and_every_command_has_a_handler(capsys):
    """partsim.cli's modules each add their commands in register(subparsers); no command comes from two
    modules; together they are the whole `partsim` list; every (sub)command parses --help and names its handler."""
    import partsim.cli as cli

    owner: dict[str, str] = {}
    for info in pkgutil.iter_modules(cli.__path__):
        if info.name.startswith("_"):  # __main__ runs the command when imported
            continue
        module = importlib.import_module(f"partsim.cli.{info.name}")
        if not hasattr(module, "register"):  # args: the shared argument types
            continue
        sub = argparse.ArgumentParser().add_subparsers()
        module.register(sub)  # argparse itself refuses a name registered twice within one module
        assert sub.choices, f"{info.name}.register adds no command"
        for name in sub.choices:
            assert name not in owner, f"{name!r} is registered by both {owner[name]} and {info.name}"
            owner[name] = info.name
    assert set(owner.values()) == {"corpus", "model", "cluster", "catalog", "tracks", "separation", "health", "keys"}
    leaves = list(_leaf_commands(cli.build_parser()))
    assert {words[0] for words, _ in leaves} == set(owner)
    for words, parser in leaves:
        assert callable(parser.get_default("handler")), words
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args([*words, "--help"])
        assert exit_.value.code == 0 and f"usage: partsim {' '.join(words)}" in capsys.readouterr().out
