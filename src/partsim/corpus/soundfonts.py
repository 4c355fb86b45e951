"""SoundFonts: the Debian General MIDI sets by default, any SF2/SF3 file on request."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SoundFontError

# Every General MIDI SoundFont Debian packages (each used when installed), in this order:
# fluid-soundfont-gm, timgm6mb-soundfont, musescore-general-soundfont, fluidr3mono-gm-soundfont,
# csound-soundfont, opl3-soundfont (an FM synthesizer, unlike the sample sets). Training corpora
# that hold a SoundFont out for validation name theirs with --soundfont.
DEBIAN_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
    "/usr/share/sounds/sf2/sf_GMbank.sf2",
    "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",
)
DEBIAN_PACKAGES = (
    "fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont fluidr3mono-gm-soundfont "
    "csound-soundfont opl3-soundfont"
)


@dataclass(frozen=True)
class SoundFont:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()


def default_soundfonts() -> list[SoundFont]:
    """The Debian General MIDI SoundFonts that are installed (symlinks resolved, no duplicates)."""
    seen: set[str] = set()
    found = []
    for p in DEBIAN_SOUNDFONTS:
        if os.path.isfile(p):
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                found.append(SoundFont(Path(p)))
    if not found:
        raise SoundFontError(
            "no General MIDI SoundFont found in /usr/share/sounds; install Debian's "
            f"{DEBIAN_PACKAGES} (apt-get install), or pass --soundfont FILE.sf2"
        )
    return found


def check_soundfonts(paths: list[str | os.PathLike]) -> list[SoundFont]:
    """Validate user-given SoundFont paths: each must exist and be a RIFF 'sfbk' file."""
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise SoundFontError(f"SoundFont not found: {path}")
        if not path.is_file():
            raise SoundFontError(f"SoundFont is not a file: {path}")
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError as exc:
            raise SoundFontError(f"cannot read SoundFont {path}: {exc.strerror}") from None
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise SoundFontError(f"not a SoundFont (SF2/SF3 RIFF 'sfbk' header missing): {path}")
        out.append(SoundFont(path))
    names = [sf.name for sf in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SoundFontError(f"two SoundFonts share the file name {sorted(dup)[0]}; metadata names them by file name")
    return out
