"""Helpers for the web app tests: a real headless Chromium (Debian's chromium + chromedriver) via selenium.

Tests using :func:`chrome` skip - they do not fail - when selenium, chromium or chromedriver is missing
(``scripts/setup.sh`` installs them as root).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--lang=en-US",
]


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) or skip the test."""
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
    chromium = (
        os.environ.get("DEEPGUARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    driver = os.environ.get("DEEPGUARD_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    return chromium, driver


@contextmanager
def chrome(profile: Path, width: int = 1200, height: int = 900):
    """A fresh headless Chromium with its own profile folder; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_screenshot(driver, path: Path, max_height: int = 2600, budget: int = 160_000) -> Path:
    """Full-page PNG: grow the window to the page height, capture, and palette-compress under ``budget``."""
    from PIL import Image

    width = driver.get_window_size()["width"]
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    inner = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(width, min(max_height, height + inner))
    driver.execute_script("window.scrollTo(0, 0)")
    png = driver.get_screenshot_as_png()
    im = Image.open(io.BytesIO(png)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    for colors, scale in ((128, 1.0), (64, 1.0), (64, 0.75), (32, 0.6)):
        shot = (
            im if scale == 1.0 else im.resize((int(im.width * scale), int(im.height * scale)), Image.LANCZOS)
        )
        shot.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
        if path.stat().st_size < budget:
            break
    driver.set_window_size(width, 900)
    return path
