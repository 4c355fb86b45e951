"""Demucs models from a model repository folder, as the separator uses them.

:func:`load_model` is ``demucs.pretrained.get_model(name, repo=folder)`` (``<sig>-<sha8>.th``
packages whose sha256 prefix is checked, bag ``.yaml`` files) with errors that name the model and
the folder; nothing is ever downloaded (``HF_HUB_OFFLINE=1`` before demucs is imported). It also
applies :func:`real_dc_bins` (CUDA's stems equal CPU's). :class:`FullSplit` pads a short split to
the split length; :func:`resolve_parts` maps the model's sources to catalog parts.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before demucs (and huggingface_hub) is imported: never download

from partsim.errors import FailedPrecondition, InvalidArgument, NotFound


def resolve_parts(sources: list[str], mapping: dict[str, str], what: str = "parts") -> dict[str, str]:
    """Every source -> its catalog part: ``mapping``'s entry, else the part of the same name.

    Raises:
        InvalidArgument: ``mapping`` names a source the model lacks, or two sources end up as one part.
    """
    unknown = [s for s in mapping if s not in sources]
    if unknown:
        raise InvalidArgument(f"{what}: the model has no source {unknown[0]!r} (its sources: {', '.join(sources)})")
    out = {s: mapping.get(s, s) for s in sources}
    used = [p for p in out.values() if p]
    dup = sorted({p for p in used if used.count(p) > 1})
    if dup:
        raise InvalidArgument(
            f"{what}: part {dup[0]!r} would come from more than one source "
            f"({', '.join(s for s, p in out.items() if p == dup[0])}); map one to another part "
            f"or to nothing ('SOURCE=')"
        )
    return out


def load_model(repo: Path, name: str):
    """``demucs.pretrained.get_model(name, repo)`` with errors that name the model and the folder.

    Raises:
        NotFound: the folder does not exist, or holds no model of that name.
        FailedPrecondition: the checkpoint's sha256 does not match its file name, or it cannot be read.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise NotFound(f"separator model {name!r}: the model repository folder {repo} does not exist")
    from demucs.pretrained import get_model
    from demucs.repo import ModelLoadingError

    bags = sorted(p.stem for p in repo.glob("*.yaml"))
    sigs = sorted(p.stem.rsplit("-", 1)[0] if "-" in p.stem else p.stem for p in repo.glob("*.th"))
    if name not in bags and name not in sigs:
        have = ", ".join(bags + sigs) or "nothing"
        raise NotFound(
            f"separator model {name!r} is not in {repo}: expected {name}.yaml (a bag of models) or "
            f"{name}-<sha256[:8]>.th; the folder has {have}"
        )
    try:
        model = get_model(name, repo=repo)
    except ModelLoadingError as exc:  # a checksum mismatch, a signature the bag names but the folder lacks
        raise FailedPrecondition(f"cannot load separator model {name!r} from {repo}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: torch/pickle/yaml errors
        raise FailedPrecondition(
            f"cannot load separator model {name!r} from {repo}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    model.eval()
    real_dc_bins(model)
    return model


def real_dc_bins(model) -> None:
    """Make each HTDemucs in ``model`` drop the imaginary part of the DC bin before its inverse STFT.

    The spectrum of a real signal has a real DC bin, but the network's complex-as-channels output
    need not (1.6 % of the spectrogram's energy on the shipped model, measured by the diagnosis that
    scripts/gpu_check.py carried until the fix landed; it is in git history before commit 613b846).
    CPU's inverse real FFT ignores that imaginary part and cuFFT does not, so without this CUDA's stems
    differed from CPU's by up to 8 % (19 dB SDR between them); with it they agree to 6e-4
    (scripts/gpu_check.py on an H200, deploy/gpu-check.json). On the CPU it changes nothing.
    """
    for m in list(model.models) if hasattr(model, "models") else [model]:
        if not hasattr(m, "_ispec") or getattr(m, "_partsim_real_dc", False):
            continue
        m._ispec = _RealDcIspec(m._ispec)
        m._partsim_real_dc = True


class _RealDcIspec:
    def __init__(self, ispec):
        self.ispec = ispec

    def __call__(self, z, length=None, scale=0):
        z = z.clone()
        z[..., 0, :].imag.zero_()
        return self.ispec(z, length, scale)


class FullSplit:
    """``valid_length`` for a model that takes any length: at least the split length."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, length: int) -> int:
        return max(int(length), self.length)
