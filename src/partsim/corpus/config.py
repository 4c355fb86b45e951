"""What decides a corpus: its configuration, song ids, tempo classes, composers and splits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..data.tempo import NUM_TEMPO_CLASSES
from ..errors import InvalidArgument
from .compose import min_seconds_for_one_bar
from .mma_library import GROOVE_SETS, MMA_COMPOSER, mma_path, mma_version
from .soundfonts import SoundFont

GENERATOR = "partsim-corpus/1"  # bump when a seed no longer yields the same songs
MAX_SECONDS = 1800.0
MIX_PEAK = 0.89  # headroom below full scale after quantisation of every stem
FADE_OUT_SECONDS = 0.05
# Target loudness of each stem (RMS over the bars where it plays), dBFS, before one scale for
# all stems brings the mix peak to at most MIX_PEAK.
PART_RMS_DB = {"drums": -17.0, "bass": -19.0, "piano": -21.0, "guitar": -21.0, "others": -21.0}
SPLITS = ("train", "validation", "test")
STATE_FILE = ".partsim-corpus.json"
COMPOSERS = ("partsim", "mma", "mixed")
PARTSIM_LICENSE = "Apache-2.0"  # partsim's own procedural songs: the project's licence
AUGMENTATION_NOTE = (
    "stems are written unaugmented (augmentation: null); the trainer augments each stem "
    "at training time, deterministically under its seed"
)


@dataclass
class CorpusConfig:
    out: Path
    songs: int
    seconds: float
    seed: int
    soundfonts: list[SoundFont] = field(default_factory=list)
    workers: int = 1
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    composer: str = "partsim"  # partsim, mma or mixed
    grooves: str = "train"  # MMA groove families: train or heldout (see mma_library.HELDOUT_FAMILIES)

    def validate(self) -> None:
        if self.composer not in COMPOSERS:
            raise InvalidArgument(f"unknown --composer {self.composer!r}; choose one of {', '.join(COMPOSERS)}")
        if self.grooves not in GROOVE_SETS:
            raise InvalidArgument(f"unknown --grooves {self.grooves!r}; choose one of {', '.join(GROOVE_SETS)}")
        if self.grooves != "train" and self.composer == "partsim":
            raise InvalidArgument(
                f"--grooves {self.grooves} selects MMA groove families; it needs --composer mma or mixed"
            )
        if self.songs <= 0:
            raise InvalidArgument(f"--songs must be at least 1, got {self.songs}")
        if not math.isfinite(self.seconds) or self.seconds <= 0:
            raise InvalidArgument(f"--seconds must be a positive number, got {self.seconds}")
        shortest = min_seconds_for_one_bar()
        if self.seconds < shortest:
            raise InvalidArgument(
                f"--seconds {self.seconds:g} is too short for one bar (a 4/4 bar at the slowest tempo, "
                f"60 BPM, lasts {shortest:g} s)"
            )
        if self.seconds > MAX_SECONDS:
            raise InvalidArgument(f"--seconds {self.seconds:g} exceeds the maximum of {MAX_SECONDS:g}")
        if self.seed < 0:
            raise InvalidArgument(f"--seed must be a non-negative integer, got {self.seed}")
        if self.workers <= 0:
            raise InvalidArgument(f"--workers must be at least 1, got {self.workers}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise InvalidArgument(f"--split must be three non-negative fractions summing to 1, got {self.split}")
        if self.composer != "partsim":
            mma_path()  # MmaError (exit 2) when mma is not installed

    def identity(self) -> dict:
        """What decides the songs: a folder made with another identity cannot be resumed."""
        return {
            "generator": GENERATOR,
            "seed": self.seed,
            "seconds": self.seconds,
            "sample_rate": SAMPLE_RATE,
            "soundfonts": [sf.name for sf in self.soundfonts],
            "composer": self.composer,
            # the groove set and the MMA library decide MMA songs too
            **(
                {"grooves": self.grooves, "mma_composer": MMA_COMPOSER, "mma_version": mma_version()}
                if self.composer != "partsim"
                else {}
            ),
        }


def composer_for(seed: int, index: int, composer: str) -> str:
    """The composer of song ``index``; ``mixed`` deals partsim and mma in shuffled pairs (exactly half each)."""
    if composer != "mixed":
        return composer
    block, pos = divmod(index, 2)
    return ("partsim", "mma")[int(np.random.default_rng([seed, 2, block]).permutation(2)[pos])]


def song_id(index: int) -> str:
    return f"song{index:05d}"


def tempo_class_for(seed: int, index: int) -> int:
    """Tempo classes are dealt in shuffled rounds of 36 so every class is populated evenly."""
    block, pos = divmod(index, NUM_TEMPO_CLASSES)
    return int(np.random.default_rng([seed, 36, block]).permutation(NUM_TEMPO_CLASSES)[pos])


def assign_splits(ids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[str]]:
    """Disjoint train/validation/test lists; validation and test get at least one song when N >= 3."""
    order = list(np.random.default_rng([seed, 7]).permutation(len(ids)))
    n = len(ids)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
    n_train = n - n_test - n_val
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "validation": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }
