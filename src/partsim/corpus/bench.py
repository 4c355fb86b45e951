"""``partsim corpus bench``: how fast the generator composes and renders.

Prints, from one run on this machine: the real-time factor of rendering one stem (seconds
of audio per second of wall time, FluidSynth alone), of composing, and of the whole pipeline
(compose + render + encode + write) with 1 worker and with ``os.cpu_count()`` workers, side by
side, with their ratio.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..data.taxonomy import PARTS
from .compose import compose
from .make import CorpusConfig, _choose_voices, make_corpus, tempo_class_for
from .render import Renderer
from .soundfonts import check_soundfonts, default_soundfonts


def run_bench(songs: int = 24, seconds: float = 30.0, seed: int = 0, soundfonts: list[str] | None = None) -> dict:
    sfs = check_soundfonts(soundfonts) if soundfonts else default_soundfonts()
    t0 = time.perf_counter()
    renderer = Renderer(sfs)
    load_s = time.perf_counter() - t0
    n = int(round(seconds * SAMPLE_RATE))
    compose_s, stem_rtf, render_s = [], [], 0.0
    for i in range(songs):
        rng = np.random.default_rng([seed, i])
        t0 = time.perf_counter()
        song = compose(rng, seconds, tempo_class_for(seed, i))
        compose_s.append(time.perf_counter() - t0)
        voices = _choose_voices(song, rng, renderer)
        for part in PARTS:
            part_voices = [v for v in voices if v.instrument.part == part]
            if not part_voices:
                continue
            t0 = time.perf_counter()
            renderer.render(part_voices, song.tempo, n)
            dt = time.perf_counter() - t0
            render_s += dt
            stem_rtf.append(seconds / dt)
    renderer.close()

    workers = max(1, os.cpu_count() or 1)
    wall = {}
    with tempfile.TemporaryDirectory(prefix="partsim-bench-") as tmp:
        for w in sorted({1, workers}):
            cfg = CorpusConfig(
                out=Path(tmp) / f"w{w}", songs=songs, seconds=seconds, seed=seed, soundfonts=list(sfs), workers=w
            )
            t0 = time.perf_counter()
            make_corpus(cfg, progress=False)
            wall[w] = time.perf_counter() - t0
    audio_s = songs * seconds
    result = {
        "songs": songs,
        "seconds": seconds,
        "soundfonts": [sf.name for sf in sfs],
        "soundfont_load_s": load_s,
        "stem_render_rtf": len(stem_rtf) * seconds / render_s,
        "stem_render_rtf_median": statistics.median(stem_rtf),
        "stem_render_rtf_min": min(stem_rtf),
        "compose_rtf_median": seconds / statistics.median(compose_s),
        "pipeline_rtf": {w: audio_s / t for w, t in wall.items()},
        "cpu_count": workers,
    }
    print(
        f"corpus bench: {songs} songs x {seconds:g} s, SoundFonts {', '.join(result['soundfonts'])}, {workers} CPU(s)"
    )
    print(f"  SoundFont load (once per process)    {load_s:8.2f} s")
    print(
        f"  render stems, real-time factor       {result['stem_render_rtf']:8.0f}x overall "
        f"(stem audio / render time, one process; {len(stem_rtf)} stems)"
    )
    print(
        f"    per stem                           {result['stem_render_rtf_median']:8.0f}x median, "
        f"{result['stem_render_rtf_min']:.0f}x slowest"
    )
    print(f"  compose one song, real-time factor   {result['compose_rtf_median']:8.0f}x median")
    for w, rtf in result["pipeline_rtf"].items():
        print(
            f"  whole pipeline, {w} worker(s)          {rtf:8.1f}x real time (song seconds per wall second, "
            f"incl. SoundFont loading)"
        )
    if len(wall) > 1:
        print(f"  speed-up {workers} workers vs 1          {wall[1] / wall[workers]:8.2f}x")
    return result
