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
