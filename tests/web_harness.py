"""What tests/test_web_app.py drives: a cluster that serves the web app (HTTP on, a tiny separator for the stems)
over a small catalog indexed with readable titles, and Debian's headless Chromium through its chromedriver.

Screenshots go to ``$PARTSIM_SCREENSHOTS`` when set, else to a ``web-screenshots`` folder under pytest's
temporary directory; the folder is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from partsim.client import PartsimClient

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60.0  # seconds any one thing in the browser may take (a search on 2 busy cores included)


def song_title(song: Path) -> tuple[str, str]:
    """A title and an artist for a corpus song, from its metadata: "Disco groove in F# minor", "partsim · 81 BPM"."""
    m = json.loads((song / "metadata.json").read_text())
    drums = m.get("parts", {}).get("drums", {}).get("instruments") or [{}]
    style = (drums[0].get("style") or "free").replace("_", " ")
    key = m.get("key", {}).get("name", "")
    return f"{style.capitalize()} groove in {key}".strip(), f"partsim · {float(m.get('tempo', 0)):.0f} BPM"


def plays(song: Path, part: str, t: float) -> bool:
    """Whether ``part`` plays in ``song`` from 2 s before ``t`` to 2 s after it."""
    m = json.loads((song / "metadata.json").read_text())
    return any(a <= t - 2 and t + 2 <= b for a, b in m.get("parts", {}).get(part, {}).get("active", []))


@pytest.fixture(scope="module")
def web_cluster(cluster_with_separator, catalog):
    """The cluster with HTTP and a tiny separator (GetStems; tests/e2e_cluster.py, shared with the other GetStems
    tests), the catalog's songs indexed with titles; yields (cluster, the web app's URL, the indexed songs' folders)."""
    cluster = cluster_with_separator
    songs = sorted(p for p in catalog.iterdir() if p.is_dir())
    with PartsimClient(cluster.gateway, timeout=300) as client:
        for song in songs:
            title, artist = song_title(song)
            client.index_bytes((song / "mix.flac").read_bytes(), song.name, title=title, artist=artist)
    yield cluster, cluster.http, songs


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """``shots(driver, name)`` saves a full-page PNG named ``NN-name.png``; answers its path."""
    folder = Path(os.environ.get("PARTSIM_SCREENSHOTS") or tmp_path_factory.mktemp("web-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb app screenshots: {folder}")
    count = [0]

    def shot(driver, name: str) -> Path:
        import base64

        count[0] += 1
        path = folder / f"{count[0]:02d}-{name}.png"
        # from the top, so that the sticky header and song list sit where they belong in the full page
        scrolled = driver.execute_script("const y = scrollY; scrollTo({top: 0, behavior: 'instant'}); return y")
        width = driver.execute_script("return window.innerWidth")  # the full-page capture drops the scrollbar
        height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
        png = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        driver.execute_script("scrollTo({top: arguments[0], behavior: 'instant'})", scrolled)
        path.write_bytes(base64.b64decode(png["data"]))
        return path

    return shot


def chromium_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            return (
                f"{exe} is missing (Debian packages chromium and chromium-driver; scripts/bootstrap.sh installs them)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return ""


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium at 1360x900, offline but for loopback, a fresh profile; always quit."""
    why = chromium_missing()
    if why:
        pytest.skip(why)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--window-size=1360,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
