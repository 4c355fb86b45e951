"""The instrumental-part taxonomy of the data sets partsim reads and writes.

Thesis Chapter 4 (after Slakh2100's recipe): drums, bass, piano and guitar are their own
parts and every other instrument is mixed into "others". Instruments are classed by General
MIDI program (0-based): piano 0-7, guitar 24-31, bass 32-39, drums are anything on the
percussion channel (MIDI channel 10); everything else is "others".

This is the taxonomy of the *data*. A trained model carries its own part list in its
manifest; services read the part list from there, never from this module.
"""

from __future__ import annotations

PARTS: tuple[str, ...] = ("drums", "bass", "piano", "guitar", "others")

# Slakh2100's ``inst_class`` names (metadata.yaml) grouped into the five parts.
_SLAKH_CLASS_TO_PART = {
    "drums": "drums",
    "bass": "bass",
    "piano": "piano",
    "guitar": "guitar",
}


def part_for_program(program: int, is_drum: bool = False) -> str:
    """Part of a General MIDI instrument.

    Args:
        program: 0-based General MIDI program number (0..127).
        is_drum: True for instruments on the percussion channel, whatever their program.
    """
    if is_drum:
        return "drums"
    if not 0 <= int(program) <= 127:
        raise ValueError(f"MIDI program {program} is outside 0..127")
    if program <= 7:
        return "piano"
    if 24 <= program <= 31:
        return "guitar"
    if 32 <= program <= 39:
        return "bass"
    return "others"


def part_for_slakh_stem(stem: dict) -> str:
    """Part of one stem entry of a Slakh2100 ``metadata.yaml``.

    Slakh's recipe classes by ``inst_class`` ("Piano", "Guitar", "Bass", "Drums", ...);
    ``is_drum`` and ``program_num`` decide where ``inst_class`` is missing.
    """
    if stem.get("is_drum"):
        return "drums"
    inst_class = str(stem.get("inst_class") or "").strip().lower()
    if inst_class in _SLAKH_CLASS_TO_PART:
        return _SLAKH_CLASS_TO_PART[inst_class]
    if inst_class:
        return "others"
    program = stem.get("program_num")
    if program is None:
        raise ValueError("stem has neither inst_class, is_drum nor program_num")
    return part_for_program(int(program))
