"""``partsim corpus make``: compose, render and write a Slakh-style multitrack corpus.

Layout (read back by :func:`partsim.data.open_dataset`)::

    DIR/index.json                 config, part list, train/validation/test split, per-song summary
    DIR/<song_id>/mix.flac         16-bit mono 44.1 kHz; exactly the sum of the stems
    DIR/<song_id>/stems/<part>.flac  one per part; an absent part is all zeros
    DIR/<song_id>/song.mid
    DIR/<song_id>/metadata.json

Two composers make songs: partsim's own procedural composer (:mod:`.compose`) and Debian's MMA
(:mod:`.mma`, grooves from its style library); ``--composer mixed`` draws each song's composer
from its index, half and half. Both give a :class:`~.compose.Song`, which one code path
renders, levels and writes. Song *i* of seed *K* is a pure function of (K, i, seconds,
SoundFonts, composer, groove set): a corpus of N songs
is a prefix of a corpus of M > N songs made with the same settings, and an interrupted run
resumes where it stopped. Each song is written into ``DIR/.tmp-<id>-<pid>`` and renamed into
place when complete; ``index.json`` is written last, through a temporary name too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from ..data.taxonomy import PARTS
from ..errors import InvalidArgument, PartsimError
from .build import BuiltSong, _choose_voices, build_song, write_song  # noqa: F401  (re-exported)
from .config import (  # noqa: F401  (re-exported)
    AUGMENTATION_NOTE,
    COMPOSERS,
    GENERATOR,
    MAX_SECONDS,
    PARTSIM_LICENSE,
    SPLITS,
    STATE_FILE,
    CorpusConfig,
    assign_splits,
    composer_for,
    song_id,
    tempo_class_for,
)
from .mma_library import MMA_LICENSE
from .render import Renderer
from .soundfonts import default_soundfonts

# --------------------------------------------------------------------------------------------
# Whole corpus


def prepare_output(cfg: CorpusConfig) -> None:
    """Create (or reopen for resuming) the output folder; refuse a folder we cannot own."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"output path exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidArgument(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    state = out / STATE_FILE
    identity = cfg.identity()
    if state.is_file():
        try:
            previous = json.loads(state.read_text())
        except ValueError:
            previous = None
        if isinstance(previous, dict):
            previous.setdefault("composer", "partsim")
        if previous != identity:
            diff = (
                ", ".join(
                    f"{k} {previous.get(k)!r} vs {v!r}"
                    for k, v in identity.items()
                    if isinstance(previous, dict) and previous.get(k) != v
                )
                or "unreadable state file"
            )
            raise InvalidArgument(f"{out} holds a corpus made with other settings ({diff}); choose another folder")
    elif any(p.name != STATE_FILE for p in out.iterdir()):
        raise InvalidArgument(
            f"output folder {out} is not empty and holds no partsim corpus; choose an empty or new folder"
        )
    for leftover in out.glob(".tmp-*"):  # from an interrupted run
        shutil.rmtree(leftover, ignore_errors=True)
    state.write_text(json.dumps(identity, indent=1) + "\n")


_worker_renderer: Renderer | None = None
_worker_cfg: CorpusConfig | None = None


def _init_worker(cfg: CorpusConfig) -> None:
    global _worker_renderer, _worker_cfg
    _worker_renderer = Renderer(cfg.soundfonts)
    _worker_cfg = cfg


def _work(index: int) -> tuple[int, dict]:
    assert _worker_renderer is not None and _worker_cfg is not None
    return index, write_song(index, _worker_cfg, _worker_renderer)


def make_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    """Write the corpus described by ``cfg``; returns the index (also written to index.json)."""
    if not cfg.soundfonts:
        cfg.soundfonts = default_soundfonts()
    cfg.validate()
    prepare_output(cfg)
    started = time.monotonic()
    summaries: dict[int, dict] = {}
    bar = tqdm(total=cfg.songs, desc="songs", unit="song", disable=not progress, dynamic_ncols=True)
    try:
        if cfg.workers == 1 or cfg.songs == 1:
            renderer = Renderer(cfg.soundfonts)
            try:
                for i in range(cfg.songs):
                    summaries[i] = write_song(i, cfg, renderer)
                    bar.update()
            finally:
                renderer.close()
        else:
            # spawn, not fork: a forked child inherits FluidSynth/GLib locks held by other threads.
            with ProcessPoolExecutor(
                max_workers=min(cfg.workers, cfg.songs),
                initializer=_init_worker,
                initargs=(cfg,),
                mp_context=multiprocessing.get_context("spawn"),
            ) as pool:
                try:
                    for i, summary in pool.map(_work, range(cfg.songs), chunksize=1):
                        summaries[i] = summary
                        bar.update()
                except BrokenProcessPool:
                    raise PartsimError(
                        f"a render worker died (out of memory? each holds its SoundFonts); finished songs "
                        f"are kept in {cfg.out}; rerun the same command with fewer --workers to resume"
                    ) from None
    finally:
        bar.close()
    ids = [song_id(i) for i in range(cfg.songs)]
    splits = assign_splits(ids, cfg.seed, cfg.split)
    split_of = {sid: name for name, members in splits.items() for sid in members}
    index = {
        "format": "partsim-corpus",
        "version": 1,
        "parts": list(PARTS),
        "config": {
            **cfg.identity(),
            "songs": cfg.songs,
            "split": list(cfg.split),
            "soundfont_sha256": {sf.name: sf.sha256() for sf in cfg.soundfonts},
            "licenses": {"partsim": PARTSIM_LICENSE, "mma": f"{MMA_LICENSE} (MMA and its groove library)"},
            "augmentation": AUGMENTATION_NOTE,
        },
        "splits": splits,
        "songs": {sid: {"split": split_of[sid], **summaries[i]} for i, sid in enumerate(ids)},
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    tmp = cfg.out / f".index.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, cfg.out / "index.json")
    return index
