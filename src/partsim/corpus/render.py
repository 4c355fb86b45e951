"""Render parts alone with FluidSynth, one synthesizer reused for every part and song.

Each call renders one part (all its instruments at once, one MIDI channel each) into a mono
float32 stem. Output is FluidSynth's float path (no dither), reverb and chorus are off, and
before every part the synthesizer is reset, rendered until no voice sounds and realigned to
its 64-sample block grid, so nothing of one part leaks into the next: an absent part is exact
zeros.

Bit-exactness: FluidSynth caches per-sample voice-off thresholds inside a loaded SoundFont the
first time a sample plays, so a process's first render of a sample can differ from later ones
in a few samples (seen: up to 1e-2 in a drum transient; the difference over a song stays about
60 dB below the signal). The same song rendered first in a fresh process is bit-identical
every time, and the MIDI and metadata of a seed never vary. A fresh synthesizer with freshly
loaded SoundFonts per song would make all audio bit-exact, but MuseScore_General.sf3 takes
3.5 s to load (FluidSynth's dynamic sample loading re-decodes its samples on every use, which
made the whole pipeline 2.7x slower when tried), so the renderer is reused instead.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import fluidsynth
import numpy as np

from ..errors import SoundFontError
from .song import TICKS_PER_BEAT, Instrument
from .soundfonts import SoundFont

_BLOCK = 64  # FluidSynth renders in blocks of this many samples
_write_float = fluidsynth._fl.fluid_synth_write_float
_write_float.argtypes = [
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_int,
]
_write_float.restype = ctypes.c_int


@dataclass(frozen=True)
class Voice:
    """An instrument bound to a SoundFont preset."""

    instrument: Instrument
    soundfont: str  # SoundFont file name
    bank: int
    program: int


class Renderer:
    """One FluidSynth instance with a set of SoundFonts loaded."""

    def __init__(self, soundfonts: list[SoundFont], sample_rate: int = 44100):
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(
            gain=0.2,
            samplerate=float(sample_rate),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 512},
        )
        self.sfids: dict[str, int] = {}
        for sf in soundfonts:
            sfid = self.synth.sfload(str(sf.path))
            if sfid < 0:
                raise SoundFontError(f"FluidSynth cannot load SoundFont {sf.path}")
            self.sfids[sf.name] = sfid

    @property
    def soundfont_names(self) -> list[str]:
        return list(self.sfids)

    def preset_name(self, soundfont: str, bank: int, program: int) -> str | None:
        return self.synth.sfpreset_name(self.sfids[soundfont], bank, program)

    def close(self) -> None:
        self.synth.delete()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_into(self, out: np.ndarray, start: int, stop: int) -> None:
        """Render frames [start, stop) into the interleaved stereo float32 buffer ``out``."""
        n = stop - start
        if n <= 0:
            return
        ptr = out.ctypes.data + 2 * start * out.itemsize
        if _write_float(self.synth.synth, n, ptr, 0, 2, ptr, 1, 2) != 0:
            raise RuntimeError("fluid_synth_write_float failed")

    def _silence(self) -> None:
        """Reset the synthesizer and render until no voice sounds (released voices die out).

        Rendering whole blocks keeps the block grid aligned; afterwards the next sample
        rendered depends on nothing that came before.
        """
        synth = self.synth
        for ch in range(16):
            synth.cc(ch, 120, 0)  # all sound off
        synth.system_reset()
        scratch = np.empty(2 * _BLOCK, dtype=np.float32)
        # Some presets (e.g. FluidR3's electronic kit) keep sounding for ~15 s after an
        # all-sound-off; rendering a few voices is cheap, so wait for them up to a minute.
        for _ in range(int(60 * self.sample_rate) // _BLOCK):
            self._write_into(scratch, 0, _BLOCK)
            if synth.get_active_voice_count() == 0 and not scratch.any():
                break
        else:
            raise RuntimeError("FluidSynth voices did not die out within 60 s of a reset")
        self._write_into(scratch, 0, _BLOCK)
        if scratch.any():
            raise RuntimeError("FluidSynth produced sound after all voices ended")

    def render(self, voices: list[Voice], tempo: float, num_samples: int) -> np.ndarray:
        """Render ``voices`` for ``num_samples`` samples.

        Returns:
            ``(num_samples,)`` float32 mono (the mean of FluidSynth's left and right outputs).
        """
        synth = self.synth
        self._silence()
        total = -(-num_samples // _BLOCK) * _BLOCK  # keep the block grid aligned across calls
        events: list[tuple[int, int, int, int, int]] = []  # (sample, order, channel, pitch, velocity)
        samples_per_tick = 60.0 / (tempo * TICKS_PER_BEAT) * self.sample_rate
        for v in voices:
            ch = v.instrument.channel
            if synth.program_select(ch, self.sfids[v.soundfont], v.bank, v.program) != 0:
                raise SoundFontError(f"SoundFont {v.soundfont} has no preset bank {v.bank} program {v.program}")
            synth.cc(ch, 7, 100)
            for note in v.instrument.notes:
                on = int(round(note.start * samples_per_tick))
                off = int(round((note.start + note.duration) * samples_per_tick))
                if on >= num_samples:
                    continue
                events.append((on, 1, ch, note.pitch, note.velocity))
                events.append((max(off, on + 1), 0, ch, note.pitch, 0))
        events.sort()
        out = np.empty(2 * total, dtype=np.float32)
        pos = 0
        for sample, kind, ch, pitch, vel in events:
            sample = min(sample, total)
            if sample > pos:
                self._write_into(out, pos, sample)
                pos = sample
            if kind == 1:
                synth.noteon(ch, pitch, vel)
            else:
                synth.noteoff(ch, pitch)
        self._write_into(out, pos, total)
        self._silence()
        mono = 0.5 * (out[0::2] + out[1::2])
        return mono[:num_samples].copy()
