"""FluidSynth rendering: isolation between parts, timing, and the taxonomy it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from partsim.corpus.render import Renderer, Voice
from partsim.corpus.song import TICKS_PER_BEAT, Instrument, Note
from partsim.corpus.soundfonts import check_soundfonts
from partsim.data.taxonomy import part_for_program, part_for_slakh_stem
from partsim.errors import SoundFontError

from .util import FAST_SOUNDFONTS

SR = 44100
TEMPO = 120.0  # one beat = 0.5 s


@pytest.fixture(scope="module")
def renderer():
    r = Renderer(check_soundfonts(FAST_SOUNDFONTS[:1]))
    yield r
    r.close()


def _voice(part, program, notes, channel=0, is_drum=False):
    inst = Instrument(
        part,
        program,
        is_drum,
        "test",
        channel=channel,
        notes=[Note(int(b * TICKS_PER_BEAT), int(d * TICKS_PER_BEAT), p, 100) for b, d, p in notes],
    )
    return Voice(inst, "TimGM6mb.sf2", 128 if is_drum else 0, program)


def test_nothing_leaks_from_one_part_into_the_next(renderer):
    # a loud, long-ringing part (crash cymbals and a sustained pad) cut off at the end ...
    loud = [
        _voice("drums", 0, [(b, 0.25, 49) for b in range(8)], channel=9, is_drum=True),
        _voice("others", 48, [(0, 8, 60), (0, 8, 64), (0, 8, 67)], channel=1),
    ]
    first = renderer.render(loud, TEMPO, 4 * SR)
    assert np.abs(first).max() > 0.01
    # ... then a part whose first note is at beat 4 (2.0 s): everything before it is exact silence
    later = renderer.render([_voice("bass", 33, [(4, 1, 40)])], TEMPO, 4 * SR)
    onset = np.flatnonzero(later)[0]
    assert 2.0 * SR - 64 <= onset <= 2.0 * SR + 128  # FluidSynth applies events per 64-sample block
    assert renderer.render([], TEMPO, SR).any() == False  # noqa: E712 - an empty part is silence


def test_same_notes_render_the_same_once_warm(renderer):
    part = [_voice("piano", 0, [(0, 1, 60), (1, 1, 64), (2, 2, 67)])]
    renderer.render(part, TEMPO, 2 * SR)
    a = renderer.render(part, TEMPO, 2 * SR)
    b = renderer.render(part, TEMPO, 2 * SR)
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == (2 * SR,)


def test_missing_preset_is_a_clear_error(renderer):
    with pytest.raises(SoundFontError, match="no preset bank 5 program 3"):
        renderer.render(
            [Voice(Instrument("piano", 3, False, "x", channel=0, notes=[Note(0, 10, 60, 90)]), "TimGM6mb.sf2", 5, 3)],
            TEMPO,
            SR,
        )


@pytest.mark.parametrize(
    "program, part",
    [
        (0, "piano"),
        (7, "piano"),
        (8, "others"),
        (23, "others"),
        (24, "guitar"),
        (31, "guitar"),
        (32, "bass"),
        (39, "bass"),
        (40, "others"),
        (127, "others"),
    ],
)
def test_program_classes_follow_slakh(program, part):
    assert part_for_program(program) == part
    assert part_for_program(program, is_drum=True) == "drums"


def test_slakh_inst_class_grouping():
    assert part_for_slakh_stem({"inst_class": "Drums", "is_drum": True, "program_num": 128}) == "drums"
    assert part_for_slakh_stem({"inst_class": "Chromatic Percussion", "program_num": 11}) == "others"
    assert part_for_slakh_stem({"inst_class": "Guitar", "program_num": 30}) == "guitar"
    assert part_for_slakh_stem({"program_num": 34}) == "bass"
    with pytest.raises(ValueError):
        part_for_program(128)
