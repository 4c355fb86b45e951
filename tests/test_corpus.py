"""The corpus generator, end to end: real composition, real FluidSynth renders, real files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from partsim.corpus.compose import compose, min_seconds_for_one_bar
from partsim.corpus.make import CorpusConfig, assign_splits, make_corpus, song_id, tempo_class_for
from partsim.corpus.rhythm import FLOOR_TOM, GROOVES, HIGH_TOM, LOW_TOM, MID_TOM
from partsim.corpus.soundfonts import check_soundfonts
from partsim.data import PARTS, open_dataset
from partsim.data.taxonomy import part_for_program
from partsim.data.tempo import NUM_TEMPO_CLASSES, tempo_class, tempo_class_range

from .util import FAST_SOUNDFONTS, read_audio, song_metadata

SONGS, SECONDS, SEED = 6, 16.0, 11
SILENT_POWER = 1e-4  # thesis 3.3.1: a segment is silent when its mean power is below this


def _make(out: Path, songs: int = SONGS, seconds: float = SECONDS, seed: int = SEED, workers: int = 1) -> dict:
    cfg = CorpusConfig(
        out=out, songs=songs, seconds=seconds, seed=seed, soundfonts=check_soundfonts(FAST_SOUNDFONTS), workers=workers
    )
    return make_corpus(cfg, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus") / "c"
    return out, _make(out)


@pytest.mark.slow
def test_layout_and_index(corpus):
    root, index = corpus
    assert (root / "index.json").is_file()
    assert json.loads((root / "index.json").read_text()) == index
    assert index["parts"] == list(PARTS)
    assert list(index["songs"]) == [song_id(i) for i in range(SONGS)]
    for sid in index["songs"]:
        for name in ["mix.flac", "song.mid", "metadata.json"] + [f"stems/{p}.flac" for p in PARTS]:
            assert (root / sid / name).is_file(), name
        info = sf.info(str(root / sid / "mix.flac"))
        assert (info.samplerate, info.channels, info.frames) == (44100, 1, int(SECONDS * 44100))
    assert not list(root.glob(".tmp-*"))


def test_mix_is_exactly_the_sum_of_the_stems(corpus):
    root, index = corpus
    for sid in index["songs"]:
        mix = read_audio(root / sid / "mix.flac").astype(np.float64)
        total = sum(read_audio(root / sid / "stems" / f"{p}.flac").astype(np.float64) for p in PARTS)
        assert np.max(np.abs(mix - total)) <= 1e-7
        assert np.max(np.abs(mix)) > 0.1  # a real mix, not silence


def test_present_parts_are_audible_and_absent_parts_silent(corpus):
    root, index = corpus
    absent_seen = dropout_seen = 0
    for sid in index["songs"]:
        meta = song_metadata(root, sid)
        assert meta["present"] == index["songs"][sid]["present"]
        for part in PARTS:
            stem = read_audio(root / sid / "stems" / f"{part}.flac").astype(np.float64)
            info = meta["parts"][part]
            if not info["present"]:
                absent_seen += 1
                assert np.all(stem == 0), f"{sid} {part} declared absent but not silent"
                assert info["active"] == [] and info["instruments"] == []
                continue
            active = np.zeros(stem.size, dtype=bool)
            for start, end in info["active"]:  # humanised onsets may come 50 ms early
                active[max(0, int((start - 0.05) * 44100)) : int(end * 44100)] = True
            assert active.any()
            # audible: loud where it plays, and at least one 3-s window is not silent (thesis 3.3.1)
            assert np.sqrt(np.mean(stem[active] ** 2)) > 0.01, f"{sid} {part} too quiet"
            windows = [stem[i : i + 3 * 44100] for i in range(0, stem.size - 3 * 44100 + 1, 22050)]
            assert max(np.mean(w**2) for w in windows) > SILENT_POWER
            # drop-outs: where the part does not play (allowing 2.5 s of release tails) it is quiet
            tail = np.zeros_like(active)
            for _, end in info["active"]:
                tail[int(end * 44100) : int((end + 2.5) * 44100)] = True
            rest = ~active & ~tail
            if rest.any():
                dropout_seen += 1
                assert np.sqrt(np.mean(stem[rest] ** 2)) < 0.05 * np.sqrt(np.mean(stem[active] ** 2))
    assert absent_seen > 0, "the corpus must represent absent parts"
    assert dropout_seen > 0, "the corpus must represent parts dropping out"


def test_metadata_and_midi_agree(corpus):
    root, index = corpus
    for sid in index["songs"]:
        meta = song_metadata(root, sid)
        assert tempo_class(meta["tempo"]) == meta["tempo_class"]
        low, high = tempo_class_range(meta["tempo_class"])
        assert low <= meta["tempo"] < high
        mid = mido.MidiFile(str(root / sid / "song.mid"))
        tempos = [m.tempo for t in mid.tracks for m in t if m.type == "set_tempo"]
        assert len(tempos) == 1 and abs(mido.tempo2bpm(tempos[0]) - meta["tempo"]) < 0.01
        notes_by_channel = Counter(m.channel for t in mid.tracks for m in t if m.type == "note_on")
        programs = {m.channel: m.program for t in mid.tracks for m in t if m.type == "program_change"}
        for part, info in meta["parts"].items():
            for inst in info["instruments"]:
                assert notes_by_channel[inst["channel"]] == inst["notes"] > 0
                assert programs[inst["channel"]] == inst["program"]
                assert inst["soundfont"] in {Path(p).name for p in FAST_SOUNDFONTS}
                if inst["is_drum"]:
                    assert part == "drums" and inst["channel"] == 9 and inst["bank"] == 128
                else:
                    assert part_for_program(inst["program"]) == part  # Slakh's class recipe


def test_split_is_disjoint_and_complete(corpus):
    root, index = corpus
    members = [sid for ids in index["splits"].values() for sid in ids]
    assert sorted(members) == sorted(index["songs"]) and len(set(members)) == len(members)
    assert all(index["splits"][s] for s in ("train", "validation", "test"))
    for name, ids in index["splits"].items():
        assert all(index["songs"][sid]["split"] == name for sid in ids)
    for n in (1, 2, 3, 10, 101):
        ids = [song_id(i) for i in range(n)]
        splits = assign_splits(ids, 5, (0.8, 0.1, 0.1))
        assert sorted(sum(splits.values(), [])) == ids
        if n >= 3:
            assert splits["validation"] and splits["test"]


def test_dataset_api_reads_the_generated_corpus(corpus):
    root, index = corpus
    ds = open_dataset(root)
    assert ds.layout == "partsim" and len(ds) == SONGS
    assert {k: sorted(v) for k, v in ds.splits().items()} == {k: sorted(v) for k, v in index["splits"].items()}
    track = ds.tracks("test")[0]
    stems = track.load_stems()
    np.testing.assert_allclose(sum(stems.values()), track.load_mix(), atol=1e-6)
    assert track.present == {p: p in index["songs"][track.id]["present"] for p in PARTS}
    assert track.tempo == index["songs"][track.id]["tempo"]
    assert ds.check(decode=True)["tracks"] == SONGS


@pytest.mark.slow
def test_same_seed_same_songs_any_worker_count_and_prefix(corpus, tmp_path):
    root, _ = corpus
    _make(tmp_path / "again", songs=3, workers=2)
    for i in range(3):
        sid = song_id(i)
        assert (tmp_path / "again" / sid / "song.mid").read_bytes() == (root / sid / "song.mid").read_bytes()
        assert song_metadata(tmp_path / "again", sid) == song_metadata(root, sid)
    # the first song a process renders is bit-identical; later ones may differ in a few samples
    # (see partsim.corpus.render): the difference stays about 60 dB below the signal
    assert np.array_equal(
        read_audio(tmp_path / "again" / "song00000" / "mix.flac"), read_audio(root / "song00000" / "mix.flac")
    )
    for i in range(1, 3):
        a, b = (read_audio(d / song_id(i) / "mix.flac").astype(np.float64) for d in (tmp_path / "again", root))
        assert np.sqrt(np.mean((a - b) ** 2)) < 3e-3 * np.sqrt(np.mean(b**2))
    other = _make(tmp_path / "other", songs=1, seed=SEED + 1)
    assert other["songs"][song_id(0)] != _make(tmp_path / "again2", songs=1)["songs"][song_id(0)]
    assert (tmp_path / "other" / "song00000" / "song.mid").read_bytes() != (
        root / "song00000" / "song.mid"
    ).read_bytes()


@pytest.mark.slow
def test_resume_keeps_finished_songs_and_extends(corpus, tmp_path):
    out = tmp_path / "grow"
    _make(out, songs=1)
    first = (out / "song00000" / "metadata.json").stat().st_mtime_ns
    index = _make(out, songs=3)
    assert (out / "song00000" / "metadata.json").stat().st_mtime_ns == first  # kept, not rewritten
    assert list(index["songs"]) == ["song00000", "song00001", "song00002"]
    root, _ = corpus
    assert song_metadata(out, "song00002") == song_metadata(root, "song00002")


def test_tempo_classes_are_dealt_evenly():
    for seed in (0, 1):
        classes = [tempo_class_for(seed, i) for i in range(NUM_TEMPO_CLASSES * 2)]
        assert Counter(classes) == {k: 2 for k in range(NUM_TEMPO_CLASSES)}
    for k in (0, 17, 35):
        song = compose(np.random.default_rng(k), 10.0, k)
        assert tempo_class(song.tempo) == k


@pytest.mark.slow
def test_compositions_vary():
    """Across songs: grooves, bass/piano/guitar styles, programs, modes, metres, absences."""
    songs = [compose(np.random.default_rng([3, i]), 30.0, tempo_class_for(3, i)) for i in range(80)]
    insts = [inst for s in songs for inst in s.instruments]
    styles = {p: {i.style for i in insts if i.part == p} for p in PARTS}
    assert len(styles["drums"]) >= 6 and len(styles["bass"]) >= 5
    assert len(styles["piano"]) >= 4 and len(styles["guitar"]) >= 4 and {"melody", "pad"} <= styles["others"]
    programs = {p: {i.program for i in insts if i.part == p} for p in PARTS}
    assert all(len(v) >= 4 for v in programs.values()), programs
    assert len({s.key.mode for s in songs}) >= 3 and {s.beats_per_bar for s in songs} == {3, 4}
    assert len({s.key.tonic for s in songs}) >= 8
    for p in PARTS:
        assert any(not s.present[p] for s in songs), f"no song lacks {p}"
    assert all(sum(s.present.values()) >= 2 for s in songs)
    assert any(len(sec.parts) < sum(s.present.values()) for s in songs for sec in s.sections)
    # fills: toms appear only in fills, which end sections
    multi = [s for s in songs if s.present["drums"] and len(s.sections) > 1]
    toms = {FLOOR_TOM, LOW_TOM, MID_TOM, HIGH_TOM}
    with_toms = [s for s in multi if any(n.pitch in toms for i in s.instruments if i.is_drum for n in i.notes)]
    assert len(with_toms) >= len(multi) // 3 > 0
    assert len(styles["drums"] & set(GROOVES)) >= 6


def test_minimum_length_is_one_bar():
    assert min_seconds_for_one_bar() == 4.0
