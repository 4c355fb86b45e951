"""The MMA composer, end to end: real mma runs, real FluidSynth renders, real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from partsim.corpus.make import CorpusConfig, make_corpus
from partsim.corpus.soundfonts import check_soundfonts
from partsim.data import PARTS

TIMGM = ["/usr/share/sounds/sf2/TimGM6mb.sf2"]
SEED, SECONDS = 5, 8.0


def _make(out: Path, songs: int, composer: str = "mma", grooves: str = "train", seed: int = SEED) -> dict:
    cfg = CorpusConfig(out=out, songs=songs, seconds=SECONDS, seed=seed, soundfonts=check_soundfonts(TIMGM),
                       composer=composer, grooves=grooves)
    return make_corpus(cfg, progress=False)


@pytest.fixture(scope="module")
def mma_corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mma") / "c"
    return out, _make(out, 3)


def _read(path: Path) -> np.ndarray:
    data, sr = sf.read(str(path), dtype="float32")
    assert sr == 44100
    return data


def test_mma_songs_are_complete_and_the_mix_is_exactly_the_sum_of_the_stems(mma_corpus):
    root, index = mma_corpus
    for sid in index["songs"]:
        meta = json.loads((root / sid / "metadata.json").read_text())
        assert meta["composer"] == "mma" and index["songs"][sid]["composer"] == "mma"
        assert (root / sid / "song.mma").is_file() and (root / sid / "song.mid").is_file()
        mix = _read(root / sid / "mix.flac").astype(np.float64)
        total = sum(_read(root / sid / "stems" / f"{p}.flac").astype(np.float64) for p in PARTS)
        assert np.max(np.abs(mix - total)) <= 1e-7
        assert np.max(np.abs(mix)) > 0.1
        assert len(meta["present"]) >= 2
