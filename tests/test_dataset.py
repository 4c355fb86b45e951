"""partsim.data.open_dataset on tiny hand-written Slakh-style and partsim-style folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from partsim.data import PARTS, MultitrackDataset, Track, open_dataset, tempo_class
from partsim.errors import DatasetError, InvalidArgument, NotFound

from .slakh_tracks import SECONDS, SR, make_slakh_track, stem_signal, write_tempo_midi


@pytest.fixture
def slakh_root(tmp_path: Path) -> Path:
    root = tmp_path / "slakh2100"
    make_slakh_track(root / "train" / "Track00001", bpm=100.0, seed=1)
    make_slakh_track(root / "train" / "Track00002", bpm=None, seed=2)
    make_slakh_track(root / "test" / "Track00003", bpm=150.0, seed=3)
    return root


def _read_mono(path: Path) -> np.ndarray:
    x, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1)


def _assert_one_line_naming(exc_info, *names: str) -> None:
    msg = str(exc_info.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg, msg


# --- Slakh --------------------------------------------------------------------------------


def test_slakh_layout_splits_and_grouping(slakh_root: Path):
    ds = open_dataset(slakh_root)
    assert isinstance(ds, MultitrackDataset)
    assert ds.layout == "slakh" and ds.root == slakh_root and ds.parts == PARTS
    assert len(ds) == 3
    assert ds.splits() == {"train": ["Track00001", "Track00002"], "test": ["Track00003"]}
    assert [t.id for t in ds.tracks("train")] == ["Track00001", "Track00002"]
    assert ds.tracks("validation") == [] and ds.tracks("omitted") == []
    assert [t.id for t in ds.tracks()] == ["Track00001", "Track00002", "Track00003"]

    track = ds["Track00001"]
    assert isinstance(track, Track) and track.split == "train"
    assert track.present == {"drums": True, "bass": False, "piano": False, "guitar": True, "others": True}
    assert [p.name for p in track.stem_files["others"]] == ["S02.flac", "S03.flac"]
    assert track.stem_files["bass"] == [] and track.stem_files["piano"] == []
    assert track.mix_file == slakh_root / "train" / "Track00001" / "mix.flac"
    assert track.metadata["stems_by_part"]["others"] == ["S02", "S03"]
    assert track.metadata["stems"]["S04"]["audio_rendered"] is False


def test_slakh_stem_sums_and_absent_parts(slakh_root: Path):
    track = open_dataset(slakh_root)["Track00001"]
    stems = slakh_root / "train" / "Track00001" / "stems"
    n = int(SECONDS * SR)

    others = track.load_stem("others")
    assert others.dtype == np.float32 and others.shape == (n,)
    np.testing.assert_allclose(others, _read_mono(stems / "S02.flac") + _read_mono(stems / "S03.flac"), atol=1e-6)
    np.testing.assert_allclose(track.load_stem("drums"), _read_mono(stems / "S01.flac"), atol=1e-6)
    assert np.abs(track.load_stem("drums")).max() > 0.05
    np.testing.assert_array_equal(track.load_stem("bass"), np.zeros(n, np.float32))

    all_stems = track.load_stems()
    assert list(all_stems) == list(PARTS) and {x.shape for x in all_stems.values()} == {(n,)}
    mix = track.load_mix()
    assert mix.shape == (n,)
    np.testing.assert_allclose(sum(all_stems.values()), mix, atol=1e-5)
    with pytest.raises(InvalidArgument):
        track.load_stem("vocals")


def test_slakh_tempo_from_midi(slakh_root: Path):
    ds = open_dataset(slakh_root)
    assert ds["Track00001"].tempo == pytest.approx(100.0)
    assert ds["Track00001"].tempo_class == tempo_class(100.0) == 10
    assert ds["Track00003"].tempo == pytest.approx(150.0, abs=1e-3)
    assert ds["Track00003"].tempo_class == tempo_class(150.0)
    assert ds["Track00002"].tempo is None and ds["Track00002"].tempo_class is None


def test_babyslakh_flat_wav_and_resampling(tmp_path: Path):
    root = tmp_path / "babyslakh_16k"
    make_slakh_track(root / "Track00011", ext=".wav", sr=22050, seed=4)
    (root / "Track00012").mkdir()
    (root / "Track00012" / "metadata.yaml").write_text(json.dumps({"stems": {}}))
    ds = open_dataset(root)
    assert ds.layout == "slakh" and ds.splits() == {}
    track = ds["Track00011"]
    assert track.split is None and track.mix_file.name == "mix.wav"
    assert track.stem_files["guitar"][0].suffix == ".wav"
    n = int(SECONDS * 22050)
    assert track.load_stem("guitar", sr=22050).shape == (n,)
    assert track.num_samples(44100) == 2 * n
    stems = track.load_stems(sr=44100)
    assert {x.shape for x in stems.values()} == {(2 * n,)}
    assert track.load_mix(sr=44100).shape == (2 * n,)
    assert not stems["piano"].any()
    # a track without any rendered stem and without a mix is empty, not an error
    assert ds["Track00012"].load_mix().shape == (0,) and not any(ds["Track00012"].present.values())


def test_root_is_one_split_folder(slakh_root: Path):
    ds = open_dataset(slakh_root / "test")
    assert [t.id for t in ds.tracks()] == ["Track00003"]
    assert ds.splits() == {"test": ["Track00003"]}


def test_check_summary(slakh_root: Path):
    summary = open_dataset(slakh_root).check(decode=True)
    assert summary["tracks"] == 3 and summary["files"] == 3 * 5  # mix + 4 rendered stems
    assert summary["seconds"] == pytest.approx(3 * SECONDS)


# --- bad input ------------------------------------------------------------------------------


def test_missing_stem_file(slakh_root: Path):
    missing = slakh_root / "train" / "Track00002" / "stems" / "S03.flac"
    missing.unlink()
    with pytest.raises(DatasetError) as exc:
        open_dataset(slakh_root)
    _assert_one_line_naming(exc, "Track00002", "S03", "Brass", str(missing))


def test_corrupt_flac_garbage(slakh_root: Path):
    bad = slakh_root / "test" / "Track00003" / "stems" / "S02.flac"
    bad.write_bytes(np.random.default_rng(7).bytes(3000))
    ds = open_dataset(slakh_root)  # opening reads no audio
    with pytest.raises(DatasetError) as exc:
        ds.check()
    _assert_one_line_naming(exc, str(bad))
    with pytest.raises(DatasetError) as exc:
        ds["Track00003"].load_stem("others")
    _assert_one_line_naming(exc, str(bad))


def test_corrupt_flac_frames_need_decode(slakh_root: Path):
    bad = slakh_root / "train" / "Track00001" / "mix.flac"
    data = bytearray(bad.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 2000] = np.random.default_rng(7).bytes(2000)  # header intact, frames broken
    bad.write_bytes(bytes(data))
    ds = open_dataset(slakh_root)
    assert ds.check(decode=False)["files"] == 15
    with pytest.raises(DatasetError) as exc:
        ds.check(decode=True)
    _assert_one_line_naming(exc, str(bad))
    with pytest.raises(DatasetError) as exc:
        ds["Track00001"].load_mix()
    _assert_one_line_naming(exc, str(bad))


def test_unparseable_metadata_yaml(slakh_root: Path):
    meta = slakh_root / "train" / "Track00002" / "metadata.yaml"
    meta.write_text("stems: [unclosed\n  S00: {\n")
    with pytest.raises(DatasetError) as exc:
        open_dataset(slakh_root)
    _assert_one_line_naming(exc, str(meta))


def test_corrupt_midi(slakh_root: Path):
    midi = slakh_root / "train" / "Track00001" / "all_src.mid"
    midi.write_bytes(b"MThd garbage")
    ds = open_dataset(slakh_root)
    with pytest.raises(DatasetError) as exc:
        _ = ds["Track00001"].tempo
    _assert_one_line_naming(exc, str(midi))


def test_neither_layout_and_missing_root(tmp_path: Path):
    (tmp_path / "other" / "songs").mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        open_dataset(tmp_path / "other")
    _assert_one_line_naming(exc, str(tmp_path / "other"), "neither", "index.json", "metadata.yaml")
    with pytest.raises(NotFound) as exc:
        open_dataset(tmp_path / "nope")
    _assert_one_line_naming(exc, str(tmp_path / "nope"))


def test_unknown_split_and_track(slakh_root: Path):
    ds = open_dataset(slakh_root)
    with pytest.raises(InvalidArgument) as exc:
        ds.tracks("dev")
    _assert_one_line_naming(exc, "dev")
    with pytest.raises(NotFound) as exc:
        ds["Track09999"]
    _assert_one_line_naming(exc, "Track09999")


# --- partsim corpus ---------------------------------------------------------------------------


def make_partsim_corpus(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Three songs (train/validation/test) with all five stem files; piano absent (zeros)."""
    n = int(SECONDS * SR)
    songs, splits, signals = {}, {"train": [], "validation": [], "test": []}, {}
    for i, (sid, split) in enumerate([("song-0000", "train"), ("song-0001", "validation"), ("song-0002", "test")]):
        folder = root / sid
        (folder / "stems").mkdir(parents=True)
        present = [p for p in PARTS if p != "piano"]
        sig = {
            p: (stem_signal(200.0 + 100 * j + 10 * i, n, SR, i) if p in present else np.zeros(n, np.float32))
            for j, p in enumerate(PARTS)
        }
        for p, x in sig.items():
            sf.write(str(folder / "stems" / f"{p}.flac"), x, SR, subtype="PCM_24")
        sf.write(str(folder / "mix.flac"), sum(sig.values()), SR, subtype="PCM_24")
        write_tempo_midi(folder / "song.mid", 121.3)
        meta = {
            "song_id": sid,
            "sample_rate": SR,
            "seconds": SECONDS,
            "num_samples": n,
            "tempo": 121.3,
            "tempo_class": 15,
            "time_signature": [4, 4],
            "parts": {
                p: {"present": p in present, "stem": f"stems/{p}.flac", "instruments": [], "active": []} for p in PARTS
            },
            "mix": "mix.flac",
            "midi": "song.mid",
        }
        (folder / "metadata.json").write_text(json.dumps(meta))
        songs[sid] = {"split": split, "tempo": 121.3, "tempo_class": 15, "present": present}
        splits[split].append(sid)
        signals[sid] = sig
    (root / ".tmp-song-0003").mkdir()  # unfinished run: ignored
    index = {
        "format": "partsim-corpus",
        "version": 1,
        "parts": list(PARTS),
        "config": {},
        "splits": splits,
        "songs": songs,
    }
    (root / "index.json").write_text(json.dumps(index))
    return signals


def test_partsim_layout(tmp_path: Path):
    root = tmp_path / "corpus"
    signals = make_partsim_corpus(root)
    ds = open_dataset(root)
    assert ds.layout == "partsim" and ds.parts == PARTS and len(ds) == 3
    assert ds.splits() == {"train": ["song-0000"], "validation": ["song-0001"], "test": ["song-0002"]}
    assert [t.id for t in ds.tracks("validation")] == ["song-0001"]
    track = ds["song-0002"]
    assert track.split == "test" and track.tempo == 121.3 and track.tempo_class == 15
    assert track.present["piano"] is False and track.stem_files["piano"] == []
    assert track.stem_files["bass"] == [root / "song-0002" / "stems" / "bass.flac"]
    assert track.midi_file == root / "song-0002" / "song.mid"
    assert track.metadata["time_signature"] == [4, 4]

    stems = track.load_stems()
    for part in PARTS:
        np.testing.assert_allclose(stems[part], signals["song-0002"][part], atol=1e-6)
    np.testing.assert_allclose(track.load_mix(), sum(signals["song-0002"].values()), atol=1e-6)
    assert ds.check(decode=True) == {"tracks": 3, "files": 3 * (1 + len(PARTS)), "seconds": pytest.approx(3 * SECONDS)}


def test_partsim_missing_files(tmp_path: Path):
    root = tmp_path / "corpus"
    make_partsim_corpus(root)
    stem = root / "song-0001" / "stems" / "piano.flac"  # absent parts still need their file
    stem.unlink()
    with pytest.raises(DatasetError) as exc:
        open_dataset(root)
    _assert_one_line_naming(exc, "song-0001", str(stem))

    for path in (root / "song-0001").iterdir():
        if path.is_file():
            path.unlink()
    with pytest.raises(DatasetError) as exc:
        open_dataset(root)
    _assert_one_line_naming(exc, str(root / "song-0001" / "metadata.json"))

    shutil.rmtree(root / "song-0001")
    with pytest.raises(DatasetError) as exc:
        open_dataset(root)
    _assert_one_line_naming(exc, str(root / "song-0001"))

    (root / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DatasetError) as exc:
        open_dataset(root)
    _assert_one_line_naming(exc, str(root / "index.json"))
