"""Data sets partsim reads: partsim corpora and Slakh2100, behind one API.

>>> ds = open_dataset("path/to/slakh2100_flac_redux")   # or a partsim corpus
>>> track = ds.tracks("train")[0]
>>> stems = track.load_stems(sr=44100)                  # part -> (n,) float32
"""

from .dataset import MultitrackDataset, Track, open_dataset
from .taxonomy import PARTS, part_for_program, part_for_slakh_stem
from .tempo import NUM_TEMPO_CLASSES, tempo_class

__all__ = [
    "NUM_TEMPO_CLASSES",
    "PARTS",
    "MultitrackDataset",
    "Track",
    "open_dataset",
    "part_for_program",
    "part_for_slakh_stem",
    "tempo_class",
]
