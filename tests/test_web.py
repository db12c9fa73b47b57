"""The web app in a real headless Chromium against a real server on 127.0.0.1.

One browser and one history database for the module: upload a photo (face boxes) and a video (chart),
find both in the history after a reload and after a server restart, switch to Arabic (rtl) and the dark
theme, and write a screenshot of every page in both languages (``docs/screenshots/`` unless
``$DEEPGUARD_SCREENSHOTS`` names another folder). Skips when chromium / chromedriver / selenium are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from deepguard.web import STATIC_DIR
from tests.server_support import running_server
from tests.web_support import browser_paths, chrome, free_port, save_screenshot

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("DEEPGUARD_SCREENSHOTS") or ROOT / "docs" / "screenshots")
STRINGS = json.loads((STATIC_DIR / "strings.json").read_text(encoding="utf-8"))
EVIL_NAME = "t1 <img src=x onerror=alert(1)>.jpg"  # a legal file name that is also HTML
LIMITS = {"max_message_bytes": 1 << 20, "max_video_bytes": 4 << 20}  # 1 MiB photos, 4 MiB videos

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory, t1_jpg: Path, face_video: Path):
    browser_paths()  # skip before starting anything when there is no browser
    tmp = tmp_path_factory.mktemp("web")
    photo = tmp / EVIL_NAME
    shutil.copy(t1_jpg, photo)
    big = tmp / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom((1 << 20) + 4096))
    state = {"tmp": tmp, "photo": photo, "video": face_video, "big": big, "db": tmp / "history.sqlite3"}
    state["port"] = free_port()
    with chrome(tmp / "profile") as driver:
        state["driver"] = driver
        yield state


class Server:
    """The web server under test; ``restart()`` keeps the port and the history file."""

    def __init__(self, env) -> None:
        self.env = env
        self._cm = None

    def start(self):
        self._cm = running_server(
            metrics_port=None, rest_port=self.env["port"], history_db=str(self.env["db"]), **LIMITS
        )
        self.srv = self._cm.__enter__()
        self.url = f"http://127.0.0.1:{self.srv.rest_port}"
        return self

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


@pytest.fixture(scope="module")
def server(env):
    s = Server(env).start()
    env["server"] = s
    yield s
    s.stop()


# ------------------------------------------------------------------------------------------------ helpers


def wait(driver, cond, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d))


def css(driver, sel: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, sel)


def open_page(driver, url: str) -> None:
    """Load and wait until the app has its strings and the server's config (html.ready)."""
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.documentElement.classList.contains('ready')"))


def go(driver, route: str) -> None:
    driver.execute_script("location.hash = arguments[0]", route)
    wait(driver, lambda d: d.execute_script("return location.hash") == route)


def upload(driver, path: Path, fps: str | None = None) -> None:
    css(driver, "#file-input")[0].send_keys(str(path))
    wait(driver, lambda d: css(d, "#analyze-btn")[0].is_displayed())
    if fps:
        css(driver, f"#fps option[value='{fps}']")[0].click()
    css(driver, "#analyze-btn")[0].click()
    wait(
        driver,
        lambda d: css(d, "#result")[0].is_displayed() or css(d, "#error")[0].is_displayed(),
        timeout=60,
    )
    error = css(driver, "#error")[0]
    assert not error.is_displayed(), error.text


def history_names(driver) -> list[str]:
    """File names listed in the history table; re-reads when the table re-renders mid-read (slow, busy CI)."""
    from selenium.common.exceptions import StaleElementReferenceException

    wait(driver, lambda d: css(d, "#history-table tbody tr") or css(d, "#history-empty")[0].is_displayed())
    for _ in range(20):
        try:
            return [a.text for a in css(driver, "#history-table tbody tr a.filename")]
        except StaleElementReferenceException:
            time.sleep(0.1)
    return [a.text for a in css(driver, "#history-table tbody tr a.filename")]


# ------------------------------------------------------------------------------------------------ tests


def test_classify_photo_and_video_then_history_survives_reload_and_restart(env, server) -> None:
    d = env["driver"]
    open_page(d, server.url + "/#/analyze")

    # Too large for this server: a clear message before anything is uploaded.
    css(d, "#file-input")[0].send_keys(str(env["big"]))
    wait(d, lambda d: css(d, "#error")[0].is_displayed())
    assert "too large" in css(d, "#error")[0].text and "1 MB" in css(d, "#error")[0].text

    # Photo -> verdict, probability, one box per face drawn over it, a crop per face.
    upload(d, env["photo"])
    verdict = css(d, "#result .verdict")[0]
    assert verdict.get_attribute("class").split()[1] in ("real", "fake")
    assert "%" in css(d, "#result .verdict .score")[0].text
    boxes = css(d, "#result svg.boxes g.box rect:not(.tag)")
    assert len(boxes) >= 4, "t1.jpg has six faces"
    assert all(float(b.get_attribute("width")) > 10 for b in boxes)
    assert len(css(d, "#result .face-card img")) == len(boxes)
    # The file name is shown as text, never interpreted as HTML.
    assert css(d, "#result dd.filename")[0].text == EVIL_NAME
    assert not css(d, "#result dd.filename img")
    assert d.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0

    # Video -> score-over-time chart with the person's points and the threshold line.
    upload(d, env["video"], fps="5")
    assert css(d, "#result svg.chart polyline.line")
    assert len(css(d, "#result svg.chart circle.pt")) >= 10
    assert css(d, "#result svg.chart line.threshold")
    assert css(d, "#result svg.boxes g.box"), "the sampled frame's face box"
    assert d.execute_script("return document.getElementById('analysis-progress').value") == 100

    go(d, "#/history")
    assert history_names(d) == ["moving.mp4", EVIL_NAME]
    d.refresh()
    wait(d, lambda d: d.execute_script("return document.documentElement.classList.contains('ready')"))
    assert history_names(d) == ["moving.mp4", EVIL_NAME]

    server.stop()
    server.start()
    d.refresh()
    wait(d, lambda d: d.execute_script("return document.documentElement.classList.contains('ready')"))
    assert history_names(d) == ["moving.mp4", EVIL_NAME]

    # A past result opens again: chart for the video, boxes for the photo.
    css(d, "#history-table tbody tr a.filename")[0].click()
    wait(d, lambda d: css(d, "#entry svg.chart"))
    go(d, "#/history")
    history_names(d)
    css(d, "#history-table tbody tr a.filename")[1].click()
    # The video entry has a face box too: wait for the photo entry's own file name (read in the page, so a
    # re-render between find and read cannot go stale), then check its boxes.
    js = "const e = document.querySelector('#entry dd.filename'); return e ? e.textContent : null"
    wait(d, lambda d: d.execute_script(js) == EVIL_NAME)
    assert css(d, "#entry svg.boxes g.box")


def test_arabic_rtl_dark_theme_both_remembered(env, server) -> None:
    d = env["driver"]
    open_page(d, server.url + "/#/")
    html = css(d, "html")[0]
    assert html.get_attribute("dir") == "ltr"
    css(d, "#lang-toggle")[0].click()
    assert html.get_attribute("dir") == "rtl" and html.get_attribute("lang") == "ar"
    nav = [a.text for a in css(d, "#nav a")]
    assert nav == [
        STRINGS["ar"][k]
        for k in ("nav_home", "nav_analyze", "nav_history", "nav_samples", "nav_model", "nav_faq")
    ]
    assert css(d, "[data-page=home] h1")[0].text == STRINGS["ar"]["home_title"]

    css(d, "#theme-toggle")[0].click()
    assert html.get_attribute("data-theme") == "dark"
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert sum(int(v) for v in bg[bg.index("(") + 1 : -1].split(",")[:3]) < 150, bg

    d.refresh()  # both choices are remembered
    wait(d, lambda d: d.execute_script("return document.documentElement.classList.contains('ready')"))
    html = css(d, "html")[0]
    assert html.get_attribute("dir") == "rtl" and html.get_attribute("data-theme") == "dark"
    assert css(d, "#nav a")[0].text == STRINGS["ar"]["nav_home"]

    css(d, "#lang-toggle")[0].click()
    css(d, "#theme-toggle")[0].click()
    assert html.get_attribute("dir") == "ltr" and html.get_attribute("data-theme") == "light"


def test_every_control_has_a_name_and_keyboard_reaches_the_upload(env, server) -> None:
    d = env["driver"]
    open_page(d, server.url + "/#/analyze")
    unnamed = d.execute_script(
        """
        const out = [];
        for (const el of document.querySelectorAll('button, a[href], input, select')) {
          const label = el.labels && el.labels.length ? el.labels[0].textContent : '';
          const name = (el.getAttribute('aria-label') || label || el.textContent || el.getAttribute('title') || '').trim();
          if (!name) out.push(el.outerHTML.slice(0, 80));
        }
        return out;"""
    )
    assert unnamed == []
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    # Tab from the top of a freshly loaded page: the skip link first, then on to the upload button.
    d.refresh()
    wait(d, lambda d: d.execute_script("return document.documentElement.classList.contains('ready')"))

    def tab() -> str:
        ActionChains(d).send_keys(Keys.TAB).perform()
        return d.execute_script("const e = document.activeElement; return e.id || e.className")

    assert tab() == "skip"
    for _ in range(20):
        if tab() == "pick":
            break
    assert d.execute_script("return document.activeElement.id") == "pick"
    ActionChains(d).send_keys(Keys.ENTER).perform()  # opens the file chooser: nothing to assert headless


PAGES = [
    ("home", "#/"),
    ("analyze", "#/analyze"),
    ("history", "#/history"),
    ("result-photo", None),
    ("result-video", None),
    ("samples", "#/samples"),
    ("model", "#/model"),
    ("faq", "#/faq"),
]


def test_screenshots_of_every_page_in_both_languages(env, server) -> None:
    d = env["driver"]
    open_page(d, server.url + "/#/history")
    history_names(d)
    ids = [r.get_attribute("data-id") for r in css(d, "#history-table tbody tr")]
    routes = dict(PAGES)
    if len(ids) >= 2:
        routes["result-video"], routes["result-photo"] = f"#/history/{ids[0]}", f"#/history/{ids[1]}"
    written = []
    for lang in ("en", "ar"):
        if css(d, "html")[0].get_attribute("lang") != lang:
            css(d, "#lang-toggle")[0].click()
        for name, route in routes.items():
            if route is None:
                continue
            go(d, route)
            if name.startswith("result"):
                wait(d, lambda d: css(d, "#entry .verdict"))
            elif name == "model":
                wait(d, lambda d: css(d, "#model-body table"))
            elif name == "history":
                history_names(d)
            d.execute_script("return document.fonts.ready")
            written.append(save_screenshot(d, SHOTS / f"{name}-{lang}.png"))
    # and the dark theme, once per language
    css(d, "#theme-toggle")[0].click()
    for lang in ("ar", "en"):
        if css(d, "html")[0].get_attribute("lang") != lang:
            css(d, "#lang-toggle")[0].click()
        go(d, routes["result-video"] or "#/")
        wait(
            d,
            lambda d: (
                css(d, "#entry .verdict")
                or not d.execute_script("return location.hash.includes('/history/')")
            ),
        )
        written.append(save_screenshot(d, SHOTS / f"dark-{lang}.png"))
    css(d, "#theme-toggle")[0].click()
    for p in written:
        assert p.is_file() and 0 < p.stat().st_size < 200_000, p
    assert len(written) >= 14
