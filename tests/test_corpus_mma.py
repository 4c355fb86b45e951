"""The MMA composer, end to end: real mma runs, real FluidSynth renders (TimGM6mb), real files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from partsim.corpus.make import CorpusConfig, composer_for, make_corpus, song_id
from partsim.corpus.mma import PART_PROGRAMS, _instruments, compose_mma, read_notes
from partsim.corpus.mma_library import HELDOUT_FAMILIES, MMA_LICENSE, catalogue, families, run_mma
from partsim.corpus.song import DRUM_CHANNEL
from partsim.corpus.soundfonts import check_soundfonts
from partsim.data import PARTS
from partsim.data.taxonomy import part_for_program
from partsim.data.tempo import tempo_class

from .util import assert_user_error, corpus_make_args, read_audio, run_cli, song_metadata

TIMGM = ["/usr/share/sounds/sf2/TimGM6mb.sf2"]
SEED, SECONDS, SONGS = 5, 8.0, 3


def _config(out: Path, songs: int, composer: str = "mma", grooves: str = "train") -> CorpusConfig:
    return CorpusConfig(
        out=out,
        songs=songs,
        seconds=SECONDS,
        seed=SEED,
        soundfonts=check_soundfonts(TIMGM),
        composer=composer,
        grooves=grooves,
    )


@pytest.fixture(scope="module")
def mma_corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mma") / "c"
    return out, make_corpus(_config(out, SONGS), progress=False)


# --------------------------------------------------------------------------------------------
# Songs


@pytest.mark.slow
def test_mma_songs_are_complete_and_the_mix_is_exactly_the_sum_of_the_stems(mma_corpus):
    root, index = mma_corpus
    assert list(index["songs"]) == [song_id(i) for i in range(SONGS)]
    for sid in index["songs"]:
        for name in ["mix.flac", "song.mid", "song.mma", "metadata.json"] + [f"stems/{p}.flac" for p in PARTS]:
            assert (root / sid / name).is_file(), name
        mix = read_audio(root / sid / "mix.flac").astype(np.float64)
        assert mix.shape == (int(SECONDS * 44100),)
        total = sum(read_audio(root / sid / "stems" / f"{p}.flac").astype(np.float64) for p in PARTS)
        assert np.max(np.abs(mix - total)) <= 1e-7
        assert np.max(np.abs(mix)) > 0.1


def test_every_instrument_is_in_its_parts_general_midi_range_and_drums_sound_when_channel_10_plays(mma_corpus):
    root, index = mma_corpus
    for sid in index["songs"]:
        meta = song_metadata(root, sid)
        assert len(meta["present"]) >= 2
        assert tempo_class(meta["tempo"]) == meta["tempo_class"]
        for part, info in meta["parts"].items():
            for inst in info["instruments"]:
                assert part_for_program(inst["program"], inst["is_drum"]) == part, (sid, part, inst)
            if part == "bass":
                assert all(32 <= i["program"] <= 39 for i in info["instruments"])
        channels = Counter()
        for track in mido.MidiFile(str(root / sid / "song.mid")).tracks:
            for msg in track:
                if msg.type == "note_on" and msg.velocity:
                    channels[msg.channel] += 1
        for part in PARTS:
            stem = read_audio(root / sid / "stems" / f"{part}.flac")
            audible = float(np.mean(stem.astype(np.float64) ** 2)) > 1e-7
            assert audible == meta["parts"][part]["present"], (sid, part)
        assert (channels[DRUM_CHANNEL] > 0) == meta["parts"]["drums"]["present"]


def test_a_groove_bass_line_played_on_a_jazz_guitar_is_guitar_and_programs_vary_inside_each_part():
    # bossanova's "Bass" track plays on program 26 (jazz guitar): by GM program it is guitar, as in Slakh
    chart = "RndSeed 1\nTempo 120\nUse stdlib/bossanova\nGroove BossaNova\n1 C\n2 Dm7\n3 G7\n4 C\n"
    notes = read_notes(run_mma(chart))
    assert any(n.channel == DRUM_CHANNEL for n in notes)
    assert {n.program for n in notes if n.track == "Bass"} == {26}
    drawn = Counter()
    for seed in range(12):
        for inst in _instruments(notes, np.random.default_rng(seed)):
            original = int(inst.role.removeprefix("gm"))
            assert inst.part == ("drums" if inst.is_drum else part_for_program(original))
            if not inst.is_drum:
                assert inst.program in PART_PROGRAMS[inst.part]
                drawn[inst.part, inst.program] += 1
    assert len({p for part, p in drawn if part == "guitar"}) >= 4  # program variety inside 24-31


@pytest.mark.slow
def test_songs_lack_some_parts_and_parts_drop_out_of_some_sections():
    lacking = dropping = 0
    for i in range(10):
        song = compose_mma(np.random.default_rng([SEED, i]), 40.0, 3 * i, "train").song
        present = [p for p in PARTS if song.present[p]]
        assert len(present) >= 2
        lacking += len(present) < 5
        dropping += any(0 < sum(p in s.parts for s in song.sections) < len(song.sections) for p in present)
        assert all(s.parts <= set(present) for s in song.sections)
    assert lacking and dropping


def test_same_seed_same_midi_chart_and_metadata_and_a_smaller_corpus_is_a_prefix(mma_corpus, tmp_path):
    root, _ = mma_corpus
    other = tmp_path / "again"
    make_corpus(_config(other, 2), progress=False)
    for sid in (song_id(0), song_id(1)):
        for name in ("song.mid", "song.mma", "metadata.json"):
            assert (other / sid / name).read_bytes() == (root / sid / name).read_bytes(), (sid, name)


# --------------------------------------------------------------------------------------------
# Groove families, composers, provenance


def test_held_out_families_are_a_fixed_sixth_of_the_library_in_several_metres():
    train, held = families("train"), families("heldout")
    assert set(held) == set(HELDOUT_FAMILIES) and not set(train) & set(held)
    assert set(train) | set(held) == set(catalogue())
    assert 0.12 <= len(held) / len(catalogue()) <= 0.18
    assert {g[0].beats for g in held.values()} >= {3, 4}


@pytest.mark.slow
def test_train_grooves_never_use_held_out_families_and_heldout_grooves_use_only_them():
    for grooves, n in (("train", 8), ("heldout", 6)):
        for i in range(n):
            source = compose_mma(np.random.default_rng([SEED, 100 + i]), 12.0, 5 * i, grooves).source
            held = [f in HELDOUT_FAMILIES for f in source["families"]]
            assert all(held) if grooves == "heldout" else not any(held), (grooves, source["families"])
            assert {g["family"] for g in source["grooves"]} == set(source["families"])


def test_mixed_deals_the_two_composers_half_and_half_in_every_pair_of_songs():
    for seed in (0, 1, 7):
        drawn = [composer_for(seed, i, "mixed") for i in range(40)]
        assert all({drawn[i], drawn[i + 1]} == {"partsim", "mma"} for i in range(0, 40, 2))
    assert {composer_for(3, i, "mma") for i in range(6)} == {"mma"}


def test_metadata_and_index_record_composer_source_license_soundfonts_and_no_augmentation(mma_corpus, tmp_path):
    root, index = mma_corpus
    for sid, summary in index["songs"].items():
        meta = song_metadata(root, sid)
        assert meta["composer"] == summary["composer"] == "mma"
        assert meta["license"] == summary["license"] == MMA_LICENSE
        src = meta["source"]
        assert src["mma_version"] and src["style_files"] == [f"stdlib/{f}.mma" for f in src["families"]]
        assert summary["source"]["families"] == src["families"]
        for part in PARTS:
            assert meta["parts"][part]["augmentation"] is None and summary["stems"][part]["augmentation"] is None
            assert summary["stems"][part]["soundfonts"] == (["TimGM6mb.sf2"] if meta["parts"][part]["present"] else [])
    assert index["config"]["composer"] == "mma" and index["config"]["grooves"] == "train"
    assert "training time" in index["config"]["augmentation"]
    # mixed: both composers, each with its own licence
    mixed = make_corpus(_config(tmp_path / "mixed", 2, composer="mixed"), progress=False)
    assert {s["composer"]: s["license"] for s in mixed["songs"].values()} == {
        "partsim": "Apache-2.0",
        "mma": MMA_LICENSE,
    }


@pytest.mark.slow
def test_cli_makes_a_held_out_composer_set(tmp_path):
    out = tmp_path / "held"
    proc = run_cli(
        *corpus_make_args(out, seconds=SECONDS, seed=2),
        "--composer",
        "mma",
        "--grooves",
        "heldout",
        "--soundfont",
        *TIMGM,
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    meta = song_metadata(out, song_id(0))
    assert meta["source"]["grooves_set"] == "heldout" and set(meta["source"]["families"]) <= set(HELDOUT_FAMILIES)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--composer", "bach"], "unknown --composer 'bach'"),
        (["--grooves", "heldout"], "needs --composer mma or mixed"),
        (["--composer", "mma", "--grooves", "test"], "unknown --grooves 'test'"),
    ],
)
def test_bad_composer_or_groove_set_is_one_error_line_and_exit_2(tmp_path, args, fragment):
    assert_user_error(run_cli(*corpus_make_args(tmp_path / "c"), *args), fragment)
    assert not (tmp_path / "c").exists()


def test_missing_mma_is_one_error_line_and_exit_2(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no mma on the PATH
    line = assert_user_error(run_cli(*corpus_make_args(tmp_path / "c"), "--composer", "mixed", env=env))
    assert line.startswith("partsim: error: the mma program") and "apt-get install mma" in line
