"""The web app's JSON API and static files without a browser: history scoping, limits, safety, strings."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from deepguard.runtime.aggregate import verdict
from deepguard.runtime.track import Tracker
from deepguard.runtime.types import Face
from deepguard.web import STATIC_DIR
from deepguard.web.history import History
from tests.server_support import running_server, scrape

TOKEN = "web-token-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("webapi") / "h.sqlite3"
    with running_server(max_message_bytes=1 << 20, max_video_bytes=2 << 20, history_db=str(db)) as srv:
        yield srv, f"http://127.0.0.1:{srv.rest_port}", db


def analyze(s: requests.Session, url: str, name: str, data: bytes, **form) -> dict:
    r = s.post(f"{url}/api/analyze", files={"file": (name, data)}, data=form, timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    for _ in range(300):
        j = s.get(f"{url}/api/jobs/{job}", timeout=10).json()
        if j["state"] != "running":
            return j
        time.sleep(0.05)
    raise AssertionError("analysis did not finish")


def test_analyze_saves_to_history_scoped_to_the_browser(server, t1_jpg: Path) -> None:
    _, url, db = server
    a, b = requests.Session(), requests.Session()
    j = analyze(a, url, "t1.jpg", t1_jpg.read_bytes())
    assert j["state"] == "done" and j["total"] == 1 and j["done"] == 1
    res = j["result"]
    assert res["verdict"] in ("real", "uncertain", "fake") and len(res["record"]["faces"]) == 6
    # every face carries the model's graded verdict (the page colours boxes by it, not by score vs 0.5)
    thr, band = res["threshold"], res["band"]
    assert res["face_verdicts"] == [
        verdict(f["score"], thr, tuple(band) if band else None) for f in res["record"]["faces"]
    ]
    assert res["frame"] == {"index": 0, "time": None, "width": 1280, "height": 886}
    assert len(res["crops"]) == 6 and all(
        c["src"].startswith("data:image/jpeg;base64,") for c in res["crops"]
    )
    assert res["preview"].startswith("data:image/jpeg") and res["thumb"].startswith("data:image/jpeg")
    assert res["media_kept"] is False
    cookie = a.cookies.get("dg_client")
    assert cookie and len(cookie) >= 22

    assert [e["id"] for e in a.get(f"{url}/api/history").json()["items"]] == [res["id"]]
    # another browser sees nothing of it and cannot open or delete it
    assert b.get(f"{url}/api/history").json() == {"items": [], "more": False, "total": 0}
    analyze(b, url, "t1-b.jpg", t1_jpg.read_bytes())
    assert b.get(f"{url}/api/history/{res['id']}").status_code == 404
    assert b.delete(f"{url}/api/history/{res['id']}").status_code == 404
    assert a.get(f"{url}/api/history/{res['id']}").json()["record"] == res["record"]
    assert a.delete(f"{url}/api/history/{res['id']}").json() == {"deleted": 1}
    assert a.get(f"{url}/api/history").json()["total"] == 0
    assert b.get(f"{url}/api/history").json()["total"] == 1
    assert b.delete(f"{url}/api/history").json() == {"deleted": 1}
    assert db.is_file()


def test_video_with_kept_media_and_progress(server, face_video: Path) -> None:
    _, url, _ = server
    s = requests.Session()
    data = face_video.read_bytes()
    j = analyze(s, url, "clip.mp4", data, fps="2", keep="1")
    assert j["state"] == "done" and j["total"] == 6 and j["done"] == 6
    res = j["result"]
    assert res["kind"] == "video" and len(res["record"]["frames"]) == 6
    assert len(res["persons"]) == 1 and res["face_person"] == [0] * len(res["record"]["faces"])
    assert len(res["crops"]) == 1 and res["media_kept"] is True
    m = s.get(f"{url}/api/history/{res['id']}/media")
    assert m.status_code == 200 and m.content == data
    assert "attachment" in m.headers["Content-Disposition"]
    s.delete(f"{url}/api/history/{res['id']}")
    assert s.get(f"{url}/api/history/{res['id']}/media").status_code == 404


@pytest.mark.parametrize(
    ("name", "head", "size", "status", "code"),
    [
        ("big.jpg", b"\xff\xd8\xff", 1 << 20, 413, "too_large"),  # over the photo limit
        ("huge.mp4", b"", 4 << 20, 413, "too_large"),  # over the whole request limit
        ("e.png", b"", 0, 400, "empty"),
        ("notes.txt", b"hello world, not media", 0, 400, "unsupported"),
    ],
    ids=["photo-too-large", "request-too-large", "empty", "not-media"],
)
def test_upload_limits_and_bad_files_are_explained(server, name, head, size, status, code) -> None:
    _, url, _ = server
    r = requests.post(f"{url}/api/analyze", files={"file": (name, head + bytes(size))}, timeout=30)
    assert r.status_code == status and r.json()["code"] == code, r.text
    if code == "too_large":
        assert r.json()["limit"] in (1 << 20, 2 << 20) and "limit" in r.json()["error"]


def test_undecodable_media_fails_in_the_job_with_a_message(server) -> None:
    _, url, _ = server
    j = analyze(requests.Session(), url, "x.jpg", b"\xff\xd8\xff" + bytes(500))
    assert j["state"] == "error" and j["code"] == "bad_media" and "x.jpg" in j["error"]


def test_cross_site_requests_are_refused(server) -> None:
    _, url, _ = server
    r = requests.delete(f"{url}/api/history", headers={"Origin": "http://evil.example"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = requests.post(f"{url}/api/analyze", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert r.status_code == 403


def test_page_shell_headers_and_pwa(server) -> None:
    srv, url, _ = server
    r = requests.get(f"{url}/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    manifest = requests.get(f"{url}/manifest.webmanifest", timeout=10)
    assert manifest.headers["Content-Type"].startswith("application/manifest+json")
    assert manifest.json()["display"] == "standalone"
    for icon in manifest.json()["icons"]:
        assert requests.get(url + icon["src"], timeout=10).status_code == 200
    sw = requests.get(f"{url}/sw.js", timeout=10)
    assert sw.status_code == 200 and "__VERSION__" not in sw.text and "deepguard-" in sw.text
    for p in re.findall(r'"(/[^"]+)"', sw.text.split("const SHELL")[1].split("];")[0]):
        assert requests.get(url + p, timeout=10).status_code == 200, p
    # history ids and job ids do not become metric labels
    requests.get(f"{url}/api/history/12345", timeout=10)
    labels = scrape(srv.metrics_port, "deepguard_requests")
    assert not any("12345" in k for k in labels)


def test_token_protects_the_api_not_the_page_shell(tmp_path) -> None:
    with running_server(token=TOKEN, history_db=str(tmp_path / "h.sqlite3")) as srv:
        url = f"http://127.0.0.1:{srv.rest_port}"
        assert requests.get(f"{url}/", timeout=10).status_code == 200
        assert requests.get(f"{url}/assets/app.js", timeout=10).status_code == 200
        assert requests.get(f"{url}/api/config", timeout=10).status_code == 401
        assert requests.get(f"{url}/api/history", timeout=10).status_code == 401
        ok = requests.get(f"{url}/api/config", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["limits"]["image_bytes"] > 0
        assert requests.post(f"{url}/predict_image", timeout=10).status_code == 401


def test_model_details(server) -> None:
    _, url, _ = server
    m = requests.get(f"{url}/api/model", timeout=10).json()
    assert m["meta"]["name"] == "deepguard-edge" and [x["name"] for x in m["meta"]["members"]] == list(
        m["metrics"]["weights"]
    )
    assert m["metrics"]["val"]["fp32"]["roc_auc"] > 0.5
    assert set(m["parity"]["checks"]) >= {"keras_vs_onnx_fp32", "int8_vs_fp32"}


# ------------------------------------------------------------------------------------------ without a server


def test_history_store_roundtrip(tmp_path) -> None:
    h = History(tmp_path / "sub" / "h.sqlite3")
    assert not (tmp_path / "sub").exists()  # nothing is created until it is used
    media = tmp_path / "m.bin"
    media.write_bytes(b"0123")
    result = {"kind": "image", "verdict": "real", "score": 0.1, "record": {"faces": [{}, {}]}}
    with open(media, "rb") as f:
        i = h.add("c" * 24, result, name="a.jpg", size=4, preview=b"p", thumb=b"t", media=f, media_type=None)
    j = h.add("c" * 24, result, name="b.jpg", size=4, preview=None, thumb=None)
    items, more = h.list("c" * 24, limit=1)
    assert [e.id for e in items] == [j] and more
    assert [e.id for e in h.list("c" * 24, limit=1, before=j)[0]] == [i]
    e = h.get("c" * 24, i)
    assert e is not None and e.result == result and e.preview == b"p" and e.n_faces == 2 and e.media_kept
    path, name, _ = h.media("c" * 24, i)
    assert path.read_bytes() == b"0123" and name == "a.jpg"
    assert h.get("d" * 24, i) is None and h.delete("d" * 24) == 0
    assert History(tmp_path / "sub" / "h.sqlite3").count("c" * 24) == 2  # survives a new instance
    assert h.delete("c" * 24) == 2 and not path.exists()


def test_tracker_links_faces_across_frames() -> None:
    """The page's persons are the runtime tracker's (more cases in tests/test_track.py)."""

    def face(x: float, frame: int) -> Face:
        return Face([x, 10, x + 40, 50], 0.9, [], frame, frame * 1.0, 0.5)

    tr = Tracker()
    ids = [tr.update([face(10 + 5 * i, i), face(300 - 5 * i, i)]) for i in range(4)]
    assert ids == [[0, 1]] * 4
    assert tr.update([face(150, 4)]) == [2]  # far from both: a new person
    # sparse sampling: no overlap any more, but still the nearest face of the same size
    jumpy = Tracker()
    assert [jumpy.update([face(10 + 50 * i, i)])[0] for i in range(4)] == [0, 0, 0, 0]


def test_strings_complete_and_used() -> None:
    strings = json.loads((STATIC_DIR / "strings.json").read_text(encoding="utf-8"))
    assert set(strings) == {"en", "ar"} and set(strings["en"]) == set(strings["ar"])
    assert all(v.strip() for lang in strings.values() for v in lang.values())
    for k, en in strings["en"].items():  # same placeholders in both languages
        assert set(re.findall(r"\{(\w+)\}", en)) == set(re.findall(r"\{(\w+)\}", strings["ar"][k])), k
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n="(\w+)"', html)) | set(
        re.findall(r'data-i18n-attr="[\w-]+:(\w+)"', html)
    )
    used |= set(re.findall(r'\bt\("(\w+)"[,)]', js))
    used |= {
        f"{p}{v}" for p in ("verdict_", "chip_") for v in ("real", "fake", "uncertain", "no_face", "error")
    }
    used |= {f"faq_{qa}{n}" for qa in "qa" for n in range(1, 12)}
    assert len(used) > 150 and used - set(strings["en"]) == set()


def test_faq_covers_false_positives_and_uncertain_in_every_language() -> None:
    strings = json.loads((STATIC_DIR / "strings.json").read_text(encoding="utf-8"))
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    shown = {int(n) for n in re.search(r"\[([\d, ]+)\]\.map\(\(n\) =>", js).group(1).split(",")}
    assert {10, 11} <= shown
    en = strings["en"]
    assert "sharp" in en["faq_a10"] and "studio" in en["faq_a10"] and "colour-graded" in en["faq_a10"]
    assert "not as proof" in en["faq_a10"] and "uncertain" in en["faq_q11"].lower()
    for lang in strings.values():
        assert all(lang.get(f"faq_{qa}{n}", "").strip() for qa in "qa" for n in (10, 11))
    assert strings["ar"]["faq_a10"] != en["faq_a10"] and strings["ar"]["faq_a11"] != en["faq_a11"]


def test_static_files_are_self_contained() -> None:
    """No CDN, no outside fonts, no inline script (the CSP forbids it), no innerHTML."""
    for p in STATIC_DIR.rglob("*"):
        if p.suffix not in (".html", ".js", ".css", ".json", ".webmanifest", ".svg"):
            continue
        text = p.read_text(encoding="utf-8")
        urls = [u for u in re.findall(r"https?://[^\s\"')]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == [], (p.name, urls)
        assert "@import" not in text and "@font-face" not in text, p.name
        if p.suffix == ".js":
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
            assert not re.search(
                r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(", code
            ), p.name
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\s(on[a-z]+|style)\s*=", html), "inline handler or style"
