"""A tiny random Demucs model in demucs's own repository format, for the separator and the paths that use it."""

from __future__ import annotations

from pathlib import Path

from .audio import SR

STOCK = ["drums", "bass", "other", "vocals"]  # the stock Demucs sources
PARTS5 = ["drums", "bass", "piano", "guitar", "others"]  # partsim-sep-v1's
MAPPING = "other=others,vocals="


def make_tiny_repo(
    folder: Path,
    name: str = "tiny-sep",
    sources: list[str] = PARTS5,
    channels: int = 1,
    samplerate: int = SR,
    seed: int = 0,
    segment: float = 4.0,
) -> Path:
    """A Demucs model repository holding one tiny random HDemucs as ``<sig>-<sha256[:8]>.th`` (demucs's
    package: klass/args/kwargs/half-precision state/training_args, written by
    ``demucs.states.save_with_checksum``) and a bag ``<name>.yaml`` naming it. Returns ``folder``.

    (``demucs.states.serialize_model`` builds the same dict but needs omegaconf for the training args,
    which the project does not install.)
    """
    import torch
    from demucs.hdemucs import HDemucs
    from demucs.states import get_state, save_with_checksum

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = HDemucs(
        sources=list(sources),
        audio_channels=channels,
        channels=4,
        depth=4,
        nfft=256,
        samplerate=samplerate,
        segment=segment,
    )
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": HDemucs,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
        "training_args": {},
    }
    sig = f"{0xA1B2C3D0 + seed:08x}"  # like demucs's experiment signatures: 8 hex characters
    save_with_checksum(package, folder / f"{sig}.th")
    (folder / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
    return folder


def tiny_server_config(repo: Path, **fields):
    """The separator's ``SeparatorConfig`` for ``tiny-sep`` of ``repo`` (a :func:`make_tiny_repo` of the ``STOCK``
    sources, mapped by ``MAPPING``) on a free loopback port, in 1-s segments; ``fields`` set the rest."""
    from partsim.services.separator.config import SeparatorConfig

    return SeparatorConfig(
        address="127.0.0.1:0", repo=str(repo), model="tiny-sep", parts=MAPPING, segment_seconds=1.0, **fields
    )
