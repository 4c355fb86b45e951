"""Demucs model repositories: export a training run, load a model back.

A repository is a folder demucs's :class:`demucs.repo.LocalRepo`/``BagOnlyRepo`` read:

* ``<sig>-<sha256[:8]>.th``: a package ``{"klass", "args", "kwargs", "state",
  "training_args"}`` saved with :func:`torch.save` (what :func:`demucs.states.serialize_model`
  writes, weights in float16); ``sha256[:8]`` is the prefix of the file's own hash, checked
  on load.
* ``<name>.yaml``: a bag ``{"models": [<sig>]}`` so ``get_model(name, repo=folder)`` works.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
import yaml

from ..assets import DEFAULT_SEPARATION_MODEL as DEFAULT_NAME
from ..assets import shipped_separator_repo as shipped_repo
from ..errors import FailedPrecondition, InvalidArgument, NotFound


def package_model(model: torch.nn.Module, training_args: dict, half: bool = True) -> dict:
    """The demucs package of ``model`` (built by a ``capture_init`` class), as ``serialize_model``."""
    from demucs.states import get_state

    args, kwargs = model._init_args_kwargs
    return {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=half),
        "training_args": training_args,
    }


def save_package(package: dict, repo: Path, name: str) -> Path:
    """Write ``package`` as ``repo/<sig>-<sha8>.th`` plus the bag ``repo/<name>.yaml``; returns the .th.

    ``sig`` is derived from ``name`` and the model's constructor arguments; an older package
    with the same ``sig`` is replaced (demucs refuses duplicate signatures).
    """

    if not name or "/" in name or name.startswith("."):
        raise InvalidArgument(f"model name {name!r}: expected a plain file name")
    repo.mkdir(parents=True, exist_ok=True)
    desc = json.dumps([name, package["klass"].__name__, repr(package["args"]), repr(sorted(package["kwargs"].items()))])
    sig = hashlib.sha256(desc.encode()).hexdigest()[:8]
    buf = io.BytesIO()
    torch.save(package, buf)
    data = buf.getvalue()
    for old in repo.glob(f"{sig}-*.th"):
        old.unlink()
    path = repo / f"{sig}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    (repo / f"{name}.yaml").write_text(yaml.safe_dump({"models": [sig]}, sort_keys=False))
    return path


def export_run(run: Path, repo: Path, name: str = DEFAULT_NAME) -> Path:
    """Export the best model of training run folder ``run`` into ``repo`` as ``name``; returns the .th.

    Raises:
        NotFound: ``run`` holds no ``checkpoint.th``.
    """
    from .train import SepConfig, build_model

    ckpt_path = Path(run) / "checkpoint.th"
    if not ckpt_path.exists():
        raise NotFound(f"no checkpoint.th in run folder {run}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = SepConfig(**ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["best_state"] or ckpt["model"])
    best = ckpt["run"].get("best") or {}
    training_args = {
        "config": ckpt["config"],
        "corpus": ckpt["run"].get("corpus"),
        "git_commit": ckpt["run"].get("git_commit"),
        "best_epoch": best.get("epoch"),
        "val_sdr": best.get("val_sdr"),
    }
    return save_package(package_model(model, training_args), Path(repo), name)


def load_separator(name: str = DEFAULT_NAME, repo: Path | None = None):
    """``demucs.pretrained.get_model(name, repo)`` (a ``BagOfModels`` for a bag name), in eval mode.

    Raises:
        NotFound: the folder does not exist or holds no model or bag of that name.
        FailedPrecondition: a file's sha256 does not match its name, or it cannot be read.
    """
    from demucs.pretrained import get_model
    from demucs.repo import ModelLoadingError

    repo = Path(repo) if repo is not None else shipped_repo()
    if not repo.is_dir():
        raise NotFound(f"separator repository {repo} is not a folder")
    sigs = {p.stem.rsplit("-", 1)[0] for p in repo.glob("*.th")}
    if name not in sigs and not (repo / f"{name}.yaml").exists():
        raise NotFound(f"no separator model {name!r} in {repo} (models: {', '.join(sorted(sigs)) or 'none'})")
    try:
        model = get_model(name, repo=repo)
    except ModelLoadingError as exc:
        raise FailedPrecondition(f"cannot load separator model {name!r} from {repo}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files: pickle/torch/yaml errors
        raise FailedPrecondition(
            f"cannot load separator model {name!r} from {repo}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    model.eval()
    return model
