"""Session fixtures: small generated corpora and a tiny trained model (real renders, real training), and the
k8s/ manifests rendered once (tests/k8s_render.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from partsim.corpus.make import CorpusConfig, make_corpus
from partsim.corpus.soundfonts import check_soundfonts

from .util import FAST_SOUNDFONTS

TINY_WIDTHS = [2, 4, 4, 8, 8]
TINY_DIM = 8


def tiny_train_config(corpus: Path, out: Path | str, **fields):
    """A ``TrainConfig`` of the tiny network (``TINY_WIDTHS``, ``TINY_DIM``) on ``corpus`` writing to ``out``, a
    few steps long (batch 4, one epoch of 2 steps, 2 steps of each pre-training phase, 4 validation draws);
    ``fields`` set any other field or override these."""
    from partsim.model.nets import NetConfig
    from partsim.model.train import TrainConfig

    short = dict(batch=4, epochs=1, steps_per_epoch=2, partnet_steps=2, pretrain_steps=2, val_draws=4)
    net = NetConfig(subspace_dim=TINY_DIM, widths=TINY_WIDTHS)
    return TrainConfig(corpus=str(corpus), out=str(out), net=net, **{**short, **fields})


@pytest.fixture(scope="session")
def render_corpus(tmp_path_factory):
    """``render_corpus(name, songs, seconds, seed)``: a corpus in a new folder, every song rendered by
    FluidSynth with one fast SoundFont; its path."""

    def render(name: str, songs: int, seconds: float, seed: int) -> Path:
        out = tmp_path_factory.mktemp(name) / "corpus"
        make_corpus(
            CorpusConfig(
                out=out, songs=songs, seconds=seconds, seed=seed, soundfonts=check_soundfonts(FAST_SOUNDFONTS[:1])
            ),
            progress=False,
        )
        return out

    return render


@pytest.fixture(scope="session")
def tiny_corpus(render_corpus) -> Path:
    return render_corpus("tiny", songs=10, seconds=8.0, seed=5)


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    """A model trained through all three phases for a few steps (not a good model: a real one)."""
    from partsim.model.train import Trainer

    out = tmp_path_factory.mktemp("run") / "tiny"
    Trainer(tiny_train_config(tiny_corpus, out, epochs=2), progress=False).run()
    return out


@pytest.fixture(scope="session")
def k8s_renders() -> dict[str, list[dict]]:
    """Every kustomization of k8s/ rendered (tests/k8s_render.py); skipped on a machine without kubectl."""
    from .k8s_render import KUBECTL, render_all

    if KUBECTL is None:
        pytest.skip("this machine has no kubectl (with its embedded kustomize): k8s/ cannot be rendered here")
    return render_all()


# fixtures of the helper modules: the running cluster of tests/test_cluster_e2e_*.py (session-scoped: started
# once for all of them), a redis-server per module, a searcher on a new catalog for tests/test_searcher_*.py
from .e2e_cluster import catalog, client, cluster, indexed, redis  # noqa: F401,E402
from .limits_harness import tiny_fs  # noqa: F401,E402 - a tmpfs to fill up (tests/test_security_limits*.py)
from .redis_server import redis_server, redis_url  # noqa: F401,E402
from .searcher_harness import searcher  # noqa: F401,E402
from .tls_harness import certs, mtls_searcher, other_ca  # noqa: F401,E402 - tests/test_security_tls*.py
