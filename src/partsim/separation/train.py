"""``partsim train-separator``: train a small demucs model on a partsim corpus.

Recipe (demucs's, scaled down for a CPU budget):

* examples: random fixed-length windows (``segment`` seconds) of the training split's stems;
  the mix is their sum. With probability ``remix_prob`` each source comes from a different
  random song (random remix); every source gets a random gain in ``[gain_min, gain_max]``
  and a random sign flip.
* loss: L1 between estimated and true source waveforms; Adam.
* an *epoch* is ``epoch_steps`` optimiser steps, followed by validation: plain SDR
  (``10 log10 |s|^2 / |s - s_hat|^2``) per part on fixed 10-s chunks of ``val_songs``
  validation songs, separated with :func:`demucs.apply.apply_model` (split, overlap 0.25),
  silent parts skipped. The best epoch (mean SDR over parts) is kept.
* the run folder holds ``checkpoint.th`` (model, optimiser, best state, history; written
  atomically after every epoch, so a run resumes where it stopped) and ``run.json``.

Tensor shapes: stems ``(batch, sources, 1, samples)``, mix ``(batch, 1, samples)``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import SAMPLE_RATE
from ..data import open_dataset
from ..errors import InvalidArgument, NotFound
from ..provenance import git_commit
from . import SOURCES

SILENCE_POWER = 1e-4  # mean power under which a true stem counts as silent (skipped in SDR)
ARCHS = ("htdemucs", "hdemucs")


@dataclass
class SepConfig:
    """Everything that defines a training run (recorded in ``run.json`` and the package)."""

    arch: str = "htdemucs"  # demucs class: htdemucs (HTDemucs) or hdemucs (HDemucs)
    channels: int = 16  # first-layer channels (x2 per layer)
    depth: int = 4  # encoder/decoder layers; with nfft=1024 the freq axis collapses at 4
    nfft: int = 1024  # STFT size of the spectral branch (hop nfft/4)
    t_layers: int = 2  # HTDemucs cross-domain transformer layers
    segment: float = 3.0  # training window, seconds (also the model's inference segment)
    batch_size: int = 4
    lr: float = 1e-3  # the shipped run; 5e-4 learned too slowly in a 36-min CPU budget
    epoch_steps: int = 60  # optimiser steps per epoch
    epochs: int = 1000  # upper bound; --time-limit usually stops first
    remix_prob: float = 0.5
    gain_min: float = 0.25
    gain_max: float = 1.25
    val_songs: int = 12
    val_seconds: float = 10.0
    seed: int = 0
    time_limit: float | None = None  # minutes of wall time for this invocation

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise InvalidArgument(f"arch {self.arch!r}: expected one of {', '.join(ARCHS)}")
        for name in ("channels", "depth", "nfft", "batch_size", "epoch_steps", "epochs", "val_songs"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.5 <= self.segment <= 30:
            raise InvalidArgument(f"segment {self.segment} s: expected 0.5..30")
        if not 0 <= self.remix_prob <= 1:
            raise InvalidArgument(f"remix_prob {self.remix_prob}: expected 0..1")


def build_model(cfg: SepConfig) -> torch.nn.Module:
    """A fresh demucs model for ``cfg``: mono in, five mono sources out, 44.1 kHz."""
    common = dict(audio_channels=1, channels=cfg.channels, depth=cfg.depth, nfft=cfg.nfft, samplerate=SAMPLE_RATE)
    if cfg.arch == "htdemucs":
        from demucs.htdemucs import HTDemucs

        heads = 4 if (cfg.channels * 2 ** (cfg.depth - 1)) % 4 == 0 else 1
        return HTDemucs(
            list(SOURCES), t_layers=cfg.t_layers, t_heads=heads, bottom_channels=0, segment=cfg.segment, **common
        )
    from demucs.hdemucs import HDemucs

    return HDemucs(list(SOURCES), segment=cfg.segment, **common)


class WindowSampler:
    """Random training windows from a corpus split.

    Windows are read straight from the stem files (``soundfile`` seeks) when they are 44.1 kHz;
    other files fall back to :meth:`Track.load_stem` (cached per track).
    """

    def __init__(self, tracks, length: int):
        self.tracks = [t for t in tracks if t.num_samples() >= length]
        if not self.tracks:
            raise InvalidArgument(f"no track is at least {length / SAMPLE_RATE:.1f} s long")
        self.lengths = [t.num_samples() for t in self.tracks]
        self.length = length
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _read(self, i: int, part: str, start: int) -> np.ndarray:
        """``(length,)`` float32 window of one part of track ``i``."""
        track, n = self.tracks[i], self.length
        out = np.zeros(n, np.float32)
        for f in track.stem_files[part]:
            if sf.info(str(f)).samplerate != SAMPLE_RATE:
                key = (track.id, part)
                if key not in self._cache:
                    self._cache[key] = track.load_stem(part)
                return self._cache[key][start : start + n].astype(np.float32)
            x = sf.read(str(f), start=start, frames=n, dtype="float32", always_2d=True)[0].mean(axis=1)
            out[: len(x)] += x
        return out

    def sample(
        self, rng: np.random.Generator, batch: int, remix_prob: float = 0.0, gains: tuple[float, float] = (1.0, 1.0)
    ) -> torch.Tensor:
        """``(batch, sources, 1, length)`` stems; the mix is their sum over ``sources``."""
        out = np.zeros((batch, len(SOURCES), 1, self.length), np.float32)
        for b in range(batch):
            remix = rng.random() < remix_prob
            song = int(rng.integers(len(self.tracks)))
            start = int(rng.integers(self.lengths[song] - self.length + 1))
            for s, part in enumerate(SOURCES):
                i, st = song, start
                if remix:
                    i = int(rng.integers(len(self.tracks)))
                    st = int(rng.integers(self.lengths[i] - self.length + 1))
                sign = -1.0 if rng.random() < 0.5 else 1.0
                out[b, s, 0] = self._read(i, part, st) * sign * rng.uniform(*gains)
        return torch.from_numpy(out)


def train_step(model, optimizer, stems: torch.Tensor) -> float:
    """One Adam step of L1 loss on ``stems`` ``(B, S, 1, T)``; returns the loss."""
    model.train()
    mix = stems.sum(dim=1)  # (B, 1, T)
    est = model(mix)  # (B, S, 1, T)
    loss = torch.nn.functional.l1_loss(est, stems)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return float(loss.detach())


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Plain SDR in dB of ``est`` against ``ref`` (same shape), demucs's "nSDR"."""
    num = float(np.sum(ref.astype(np.float64) ** 2))
    den = float(np.sum((ref.astype(np.float64) - est) ** 2))
    return 10 * np.log10((num + 1e-8) / (den + 1e-8))


def separate(model, mix: np.ndarray, device: str = "cpu") -> np.ndarray:
    """``(S, T)`` float32 sources of a mono ``(T,)`` mix (apply_model, split, overlap 0.25)."""
    from demucs.apply import apply_model

    x = torch.from_numpy(np.ascontiguousarray(mix, np.float32))[None, None]  # (1, 1, T)
    with torch.no_grad():
        y = apply_model(model, x, shifts=0, split=True, overlap=0.25, device=device)  # (1, S, 1, T)
    return y[0, :, 0].cpu().numpy()


def validation_chunks(tracks, songs: int, seconds: float) -> list[np.ndarray]:
    """Fixed chunks for validation: ``(S, T)`` stems of the middle ``seconds`` of ``songs`` songs."""
    chunks = []
    step = max(1, len(tracks) // songs)
    for t in tracks[::step][:songs]:
        stems = t.load_stems()
        n = len(stems[SOURCES[0]])
        length = min(n, int(seconds * SAMPLE_RATE))
        start = (n - length) // 2
        chunks.append(np.stack([stems[p][start : start + length] for p in SOURCES]))
    return chunks


def validate(model, chunks: list[np.ndarray], device: str = "cpu") -> dict[str, float]:
    """Mean SDR per part (and ``"mean"`` over parts) on ``chunks``; silent parts skipped."""
    per: dict[str, list[float]] = {p: [] for p in SOURCES}
    for stems in chunks:
        est = separate(model, stems.sum(axis=0), device)
        for s, part in enumerate(SOURCES):
            if np.mean(stems[s] ** 2) >= SILENCE_POWER:
                per[part].append(sdr(stems[s], est[s]))
    out = {p: float(np.mean(v)) if v else float("nan") for p, v in per.items()}
    vals = [v for v in out.values() if np.isfinite(v)]
    out["mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise InvalidArgument(f"--device {name!r}: expected auto, cpu or cuda")
    return name


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def train(corpus: Path, out: Path, cfg: SepConfig, device: str = "auto", threads: int | None = None, log=print) -> dict:
    """Train (or resume) a separator in run folder ``out``; returns the run log (``run.json``).

    A run folder that already holds ``checkpoint.th`` is resumed with its recorded config
    (only ``time_limit`` and ``epochs`` are taken from ``cfg``).
    """
    t_start = time.time()
    device = _device(device)
    if threads:
        torch.set_num_threads(threads)
    if not Path(corpus).is_dir():
        raise NotFound(f"corpus folder {corpus} does not exist")
    ds = open_dataset(corpus)
    missing = [p for p in SOURCES if p not in ds.parts]
    if missing:
        raise InvalidArgument(f"corpus {corpus} lacks parts {missing}")
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.th", out / "run.json"

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if ckpt is not None:
        cfg = SepConfig(**{**ckpt["config"], "time_limit": cfg.time_limit, "epochs": cfg.epochs})
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        run = ckpt["run"]
        log(f"resuming {out} after epoch {len(run['epochs'])}")
    else:
        run = {
            "config": asdict(cfg),
            "model": {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())},
            "corpus": {
                "root": str(Path(corpus).resolve()),
                "layout": ds.layout,
                "splits": {k: len(v) for k, v in ds.splits().items()},
            },
            "git_commit": git_commit(),
            "epochs": [],
            "best": None,
            "wall_seconds": 0.0,
            "invocations": [],
        }
    run["invocations"].append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "device": device,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "time_limit_min": cfg.time_limit,
        }
    )
    best_state = ckpt["best_state"] if ckpt is not None else None

    length = int(round(cfg.segment * SAMPLE_RATE))
    sampler = WindowSampler(ds.tracks("train"), length)
    val = validation_chunks(ds.tracks("validation") or ds.tracks("test"), cfg.val_songs, cfg.val_seconds)
    deadline = t_start + 60 * cfg.time_limit if cfg.time_limit else None
    wall0 = run["wall_seconds"]
    log(
        f"{run['model']['class']} {run['model']['parameters'] / 1e6:.2f}M params, {len(sampler.tracks)} train "
        f"songs, {len(val)} validation chunks, device {device}, {torch.get_num_threads()} threads"
    )

    stop = False
    while len(run["epochs"]) < cfg.epochs and not stop:
        epoch = len(run["epochs"])
        rng = np.random.default_rng([cfg.seed, epoch])
        t0, losses = time.time(), []
        for _ in range(cfg.epoch_steps):
            stems = sampler.sample(rng, cfg.batch_size, cfg.remix_prob, (cfg.gain_min, cfg.gain_max)).to(device)
            losses.append(train_step(model, optimizer, stems))
            # leave room for validation (about as long as the last epoch's validation)
            reserve = run["epochs"][-1]["val_seconds"] if run["epochs"] else 0.0
            if deadline is not None and time.time() + reserve > deadline:
                stop = True
                break
        t1 = time.time()
        model.eval()
        scores = validate(model, val, device)
        t2 = time.time()
        run["epochs"].append(
            {
                "epoch": epoch,
                "steps": len(losses),
                "train_loss": float(np.mean(losses)),
                "val_sdr": scores,
                "train_seconds": t1 - t0,
                "val_seconds": t2 - t1,
            }
        )
        run["wall_seconds"] = wall0 + (t2 - t_start)
        if run["best"] is None or scores["mean"] > run["best"]["val_sdr"]["mean"]:
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            run["best"] = {"epoch": epoch, "val_sdr": scores}
        _save_atomic(
            {
                "config": asdict(cfg),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_state": best_state,
                "run": run,
            },
            ckpt_path,
        )
        _write_json(run, log_path)
        log(
            f"epoch {epoch}: loss {np.mean(losses):.4f} ({len(losses)} steps, {t1 - t0:.0f}s) val SDR "
            + " ".join(f"{p} {scores[p]:.2f}" for p in (*SOURCES, "mean"))
            + f" ({t2 - t1:.0f}s)"
        )
    return run


def config_from_args(args) -> SepConfig:
    """A :class:`SepConfig` from argparse attributes of the same names (None = default)."""
    given = {f.name: getattr(args, f.name) for f in fields(SepConfig) if getattr(args, f.name, None) is not None}
    return SepConfig(**given)
