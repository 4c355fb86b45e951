"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys

# The two Debian SF2 sets load in about half a second; MuseScore's SF3 takes seconds, so only
# the tests of the defaults use it.
FAST_SOUNDFONTS = ["/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``partsim`` command as a user would."""
    return subprocess.run([sys.executable, "-m", "partsim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def service_configs() -> dict[str, type]:
    """Each service's configuration dataclass, by service name (its env prefix is PARTSIM_<NAME>)."""
    from partsim.services.embedder.config import EmbedderConfig
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.searcher.config import SearcherConfig
    from partsim.services.separator.config import SeparatorConfig

    return {"gateway": GatewayConfig, "embedder": EmbedderConfig, "searcher": SearcherConfig,
            "separator": SeparatorConfig}


def read_audio(path):
    """A corpus FLAC file as float32 (asserting the corpus rate, 44.1 kHz)."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32")
    assert sr == 44100
    return data


def song_metadata(root, sid: str) -> dict:
    """``root/sid/metadata.json`` of a corpus song."""
    import json
    from pathlib import Path

    return json.loads((Path(root) / sid / "metadata.json").read_text())
