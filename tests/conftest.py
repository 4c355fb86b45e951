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
def k8s_renders():
    """Every kustomization of k8s/, rendered when first used (tests/k8s_render.py); skipped on a machine
    without kubectl."""
    from .k8s_render import KUBECTL, Renders

    if KUBECTL is None:
        pytest.skip("this machine has no kubectl (with its embedded kustomize): k8s/ cannot be rendered here")
    renders = Renders()
    yield renders
    renders.close()


def pytest_collection_modifyitems(items):
    """The k8s tests of the renders with two to six components are slow (about 110 kustomize runs); the base,
    both overlays, each component alone and all seven together stay in make test-fast."""
    from .k8s_render import COMPONENTS, RENDER_NAMES

    for item in items:
        name = getattr(item, "callspec", None) and item.callspec.params.get("name")
        if name in RENDER_NAMES and 1 < len(name.split("+")) < len(COMPONENTS):
            item.add_marker(pytest.mark.slow)


# fixtures of the helper modules: the running cluster of tests/test_cluster_e2e_*.py (session-scoped: started
# once for all of them), a redis-server per module, a searcher on a new catalog for tests/test_searcher_*.py
from .e2e_cluster import catalog, client, cluster, cluster_with_separator, indexed, redis  # noqa: F401,E402
from .limits_harness import tiny_fs  # noqa: F401,E402 - a tmpfs to fill up (tests/test_security_limits*.py)
from .redis_server import redis_server, redis_url  # noqa: F401,E402
from .searcher_harness import searcher  # noqa: F401,E402
from .tls_harness import certs, mtls_searcher, other_ca  # noqa: F401,E402 - tests/test_security_tls*.py
