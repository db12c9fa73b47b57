"""``deepguard scan`` on a local Ray (2 CPUs): one row per file, bad files as error rows, resume after a kill.

The corpus (built here, ~56 files): photos from installed packages (insightface's ``t1.jpg``, scikit-image's
astronaut, coffee and chelsea) cropped, resized and re-encoded; short H.264 clips made with PyAV; and bad files
(truncated JPEG/MP4, random bytes named .mp4, empty files, text named .png). One Ray is started for the module
by the scan's own ``start`` in a helper process; every scan runs in a subprocess that joins it with
``--ray-address``, so pytest itself never becomes a Ray driver.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepguard.scan.files import iter_entries, iter_paths, make_entry
from deepguard.scan.ledger import LockedError, ParquetLedger, open_ledger
from tests.conftest import write_video

ROOT = Path(__file__).resolve().parents[1]
SCAN_OPTS = ["--max-frames", "2", "--actors", "2", "--block", "1"]
BAD = {
    "trunc.jpg",
    "trunc2.jpg",
    "random.mp4",
    "random2.mp4",
    "empty.jpg",
    "empty.mp4",
    "text.png",
    "trunc.mp4",
}


def _save(img: np.ndarray, path: Path, **kw) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, **kw)


def _images(root: Path, t1: np.ndarray, astro: np.ndarray) -> None:
    import skimage.data as sk
    from PIL import Image

    small = lambda a, w: np.asarray(Image.fromarray(a).resize((w, a.shape[0] * w // a.shape[1])))  # noqa: E731
    (root / "photos" / "t1").mkdir(parents=True)
    for i, (y, x) in enumerate(
        [(0, 0), (200, 300), (300, 500), (100, 700), (250, 100), (400, 600), (0, 400), (350, 0), (150, 500)]
    ):
        _save(t1[y : y + 480, x : x + 560], root / "photos" / "t1" / f"crop{i}.jpg", quality=90)
    for w in (320, 480, 640, 800):
        _save(small(t1, w), root / "photos" / "t1" / f"t1_{w}.png")
        _save(small(astro, w // 2), root / "photos" / f"astro_{w}.jpg", quality=85)
    for i, (y, x) in enumerate(
        [(0, 100), (20, 140), (40, 80), (0, 160), (60, 120), (10, 60), (30, 100), (5, 130)]
    ):
        _save(astro[y : y + 300, x : x + 280], root / "photos" / f"astro_crop{i}.webp", quality=80)
    for i, a in enumerate((astro[:, ::-1], astro[::2, ::2], astro[:, :, ::-1])):
        _save(np.ascontiguousarray(a), root / "photos" / f"astro_var{i}.png")
    for k in range(4):
        _save(np.ascontiguousarray(np.rot90(astro[::2, ::2], k)), root / "photos" / f"astro_rot{k}.bmp")
    (root / "noface").mkdir()
    for name, a in (("coffee", sk.coffee()), ("chelsea", sk.chelsea())):  # no face
        _save(small(a, 320), root / "noface" / f"{name}.jpg")
        _save(small(a, 240), root / "noface" / f"{name}_small.png")
    _save(small(t1, 400), root / "photos" / ".hidden.jpg")  # skipped by the folder walk
    (root / "photos" / "notes.txt").write_text("not media: skipped\n")


def _videos(root: Path, astro: np.ndarray) -> None:
    from deepguard.bench.clips import sliding_face_frames

    (root / "clips").mkdir()
    face = astro[0:260, 120:360]
    for i in range(8):
        frames = sliding_face_frames(6 + i, (240 + 16 * i, 180), face[::2, ::2])
        write_video(root / "clips" / f"clip{i}.mp4", frames, fps=5)
    clip = (root / "clips" / "clip0.mp4").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "trunc.mp4").write_bytes(clip[: len(clip) // 3])


def _bad(root: Path) -> None:
    rng = np.random.default_rng(0)
    jpg = (root / "photos" / "astro_640.jpg").read_bytes()
    (root / "bad" / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "bad" / "trunc2.jpg").write_bytes(jpg[:700])
    (root / "bad" / "random.mp4").write_bytes(rng.bytes(4096))
    (root / "bad" / "random2.mp4").write_bytes(rng.bytes(300))
    (root / "bad" / "empty.jpg").write_bytes(b"")
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "text.png").write_text("this is not a PNG\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, t1_jpg, astronaut) -> tuple[Path, set[str]]:
    """The input folder and the absolute paths a scan of it must cover (hidden and non-media files excluded)."""
    from deepguard.runtime.decode import load_image

    root = tmp_path_factory.mktemp("corpus")
    _images(root, load_image(t1_jpg), astronaut)
    _videos(root, astronaut)
    _bad(root)
    expected = {
        str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".txt"
    }
    assert len(expected) >= 50
    return root, expected


_HOLD_RAY = """
import sys
import ray
from deepguard.scan import ray_scan
ray_scan.start(None, num_cpus=2)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # held until the test module closes this pipe
ray.shutdown()
"""


@dataclass(frozen=True)
class RayCluster:
    address: str
    pid: int  # the process that started it: its raylet and actor workers are its descendants


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """A local Ray (2 CPUs) started and owned by a helper process; scans join it as subprocesses.

    Why not in pytest's own process: a Ray driver can be ended by Ray itself (its core worker exits the process
    when it loses its node), and a CI run of the whole suite ended with exit 1 and no summary during this
    module's teardown, which was ``ray.shutdown()`` in pytest. Here pytest never connects to Ray.
    """
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    log = tmp_path_factory.mktemp("ray") / "holder.log"  # a file, not a pipe nobody drains while tests run
    with open(log, "w") as err:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_RAY],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    address = holder.stdout.readline().decode().strip()
    if not address:
        holder.kill()
        holder.wait()
        pytest.fail(f"local Ray did not start: {log.read_text()[-3000:]}")
    try:
        yield RayCluster(address, holder.pid)
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=120)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _scan(ray: RayCluster, *args) -> subprocess.CompletedProcess:
    """``deepguard scan ARGS`` in a subprocess joined to the module's Ray (options after SCAN_OPTS win)."""
    cmd = [sys.executable, "-m", "deepguard.scan", *SCAN_OPTS, "--ray-address", ray.address, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _ok(done: subprocess.CompletedProcess) -> bool:
    assert done.returncode == 0, done.stderr[-3000:]
    return True


def _check_complete(rows: list[dict], expected: set[str]) -> None:
    counts = collections.Counter(r["path"] for r in rows)
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    by_name = {Path(r["path"]).name: r for r in rows}
    for name in BAD:
        assert by_name[name]["verdict"] == "error" and name in by_name[name]["error"], by_name[name]
    for r in rows:
        assert {"path", "kind", "verdict", "score", "faces", "frames", "model", "error"} <= r.keys()
        assert r["key"] == f"{r['path']}\t{r['size']}:{r['mtime_ns']}"
        if Path(r["path"]).name not in BAD:
            assert r["verdict"] != "error", r
        if "/clips/" in r["path"]:
            assert r["kind"] == "video" and 1 <= r["frames_sampled"] <= 2
    assert all(by_name[f"crop{i}.jpg"]["faces"] for i in range(3))
    assert by_name["coffee.jpg"]["verdict"] == "no_face"


def test_scan_gives_every_file_exactly_one_row_and_a_rerun_writes_nothing(
    corpus, ray_cluster, tmp_path
) -> None:
    root, expected = corpus
    out = tmp_path / "results.jsonl"
    assert _ok(_scan(ray_cluster, root, "--out", out))
    _check_complete(_rows(out), expected)
    before = out.read_bytes()
    assert _ok(_scan(ray_cluster, root, "--out", out))  # everything done: Ray is not even used
    assert out.read_bytes() == before


def _complete_lines(out: Path) -> list[bytes]:
    data = out.read_bytes() if out.exists() else b""
    return data.split(b"\n")[:-1]


def _ray_workers(ray: RayCluster) -> list[int]:
    """Pids of the Ray Data actor processes (descendants of the process that started the local Ray)."""
    parent = {}
    for d in Path("/proc").iterdir():
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    mine, pids = {ray.pid}, sorted(parent)
    for _ in range(4):  # holder -> raylet -> workers (a few levels suffice)
        mine |= {p for p in pids if parent[p] in mine}
    return [p for p in mine if b"MapWorker" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _kill_a_worker_after(ray: RayCluster, out: Path, rows: int, killed: list[int]) -> None:
    deadline = time.monotonic() + 600
    while len(_complete_lines(out)) < rows and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _ray_workers(ray)[:1]:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)


def test_scan_killed_midway_resumes_without_loss_or_duplicates(corpus, ray_cluster, tmp_path) -> None:
    root, expected = corpus
    listing = tmp_path / "list.txt"
    listing.write_text("# every input, one a line\n\n" + "".join(f"{p}\n" for p in sorted(expected)))
    out = tmp_path / "results.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "deepguard.scan",
        f"@{listing}",
        "--out",
        str(out),
        "--ray-address",
        ray_cluster.address,
    ]
    proc = subprocess.Popen(
        [*cmd, *SCAN_OPTS, "--actors", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while len(_complete_lines(out)) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the driver dies; its Ray job (the actors) goes with it
    _, err = proc.communicate(timeout=60)
    before = _complete_lines(out)
    assert 6 <= len(before) < len(expected), err.decode()[-3000:]
    with open(out, "ab") as f:  # as if the driver died in the middle of a row
        f.write(b'{"path": "/cut/short.jpg", "kind": "ima')
    killed: list[int] = []  # and in the rerun, one actor is killed midway: Ray Data retries its block
    killer = threading.Thread(target=_kill_a_worker_after, args=(ray_cluster, out, len(before) + 3, killed))
    killer.start()
    assert _ok(_scan(ray_cluster, f"@{listing}", "--out", out))
    killer.join()
    assert killed
    after = _complete_lines(out)
    assert after[: len(before)] == before  # rows of the killed run untouched
    _check_complete(_rows(out), expected)


def test_scan_parquet_one_row_per_file_and_a_rerun_adds_no_part(corpus, ray_cluster, tmp_path) -> None:
    import pyarrow.parquet as pq

    root, expected = corpus
    some = sorted(
        p for p in expected if p.endswith(("/trunc.jpg", "/random.mp4", "/clip0.mp4", "/astro_320.jpg"))
    )
    out = tmp_path / "results.parquet"
    assert _ok(_scan(ray_cluster, *some, "--out", out, "--format", "parquet", "--actors", "1"))
    table = pq.read_table(out)
    assert sorted(table.column("path").to_pylist()) == some
    rows = {Path(r["path"]).name: r for r in table.to_pylist()}
    assert rows["trunc.jpg"]["verdict"] == "error" and rows["astro_320.jpg"]["n_faces"] >= 1
    assert (
        isinstance(rows["clip0.mp4"]["faces"], str) and 1 <= len(json.loads(rows["clip0.mp4"]["frames"])) <= 2
    )
    parts = sorted(out.iterdir())
    assert _ok(_scan(ray_cluster, *some, "--out", out, "--format", "parquet"))
    assert sorted(out.iterdir()) == parts and not (out / "_journal.jsonl").exists()


def test_scan_with_an_unloadable_model_exits_2_and_writes_nothing(corpus, ray_cluster, tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    done = _scan(ray_cluster, corpus[0] / "noface", "--out", out, "--model", tmp_path / "missing.onnx")
    assert done.returncode == 2 and "missing.onnx: model file not found" in done.stderr, done.stderr
    assert out.read_bytes() == b""


def _row(key: str, **kw) -> str:
    return json.dumps({"path": key, "verdict": "real", "key": key, **kw})


def test_ledger_drops_a_cut_short_last_line_and_keeps_earlier_rows(tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    good = "".join(_row(f"k{i}") + "\n" for i in range(3))
    out.write_text(good + '{"path": "k3", "verdict": "fa')
    led = open_ledger(out)
    assert led.done == {"k0", "k1", "k2"}
    assert out.read_text() == good
    assert led.write("k3", _row("k3")) and not led.write("k1", _row("k1"))
    led.close()
    assert [json.loads(x)["key"] for x in out.read_text().splitlines()] == ["k0", "k1", "k2", "k3"]
    out.write_text(good + _row("k3"))  # a whole last row whose newline was lost is kept
    led = open_ledger(out)
    assert led.done == {"k0", "k1", "k2", "k3"} and out.read_text() == good + _row("k3") + "\n"
    led.close()


def test_ledger_is_locked_while_a_scan_writes(tmp_path) -> None:
    led = open_ledger(tmp_path / "r.jsonl")
    with pytest.raises(LockedError):
        open_ledger(tmp_path / "r.jsonl")
    led.close()
    open_ledger(tmp_path / "r.jsonl").close()


def test_parquet_journal_of_a_killed_run_becomes_a_part(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    led = ParquetLedger(tmp_path / "p", flush_rows=2)
    led.open()
    for i in range(3):
        led.write(f"k{i}", _row(f"k{i}", faces=[], frames=[{"index": 0}]))
    os.close(led.journal._fd)  # killed: k2 is only in the journal
    os.close(led._lock_fd)
    again = ParquetLedger(tmp_path / "p")
    assert again.open() == {"k0", "k1", "k2"}
    again.close()
    table = pq.read_table(tmp_path / "p")
    assert sorted(table.column("key").to_pylist()) == ["k0", "k1", "k2"]
    assert table.column("n_faces").to_pylist() == [0, 0, 0]


def test_listing_is_lazy_and_keys_follow_size_and_mtime(tmp_path) -> None:
    (tmp_path / "a" / ".git").mkdir(parents=True)
    (tmp_path / "a" / "b").mkdir()
    for rel in ("a/z.jpg", "a/b/y.MP4", "a/x.txt", "a/.git/h.png", "a/b/.w.png", "one.png"):
        (tmp_path / rel).write_bytes(b"1")
    listing = tmp_path / "l.txt"
    listing.write_text(f"# comment\n\n{tmp_path / 'one.png'}\n{tmp_path / 'a' / 'b'}\n")
    paths = iter_paths([str(tmp_path / "a"), f"@{listing}", str(tmp_path / "missing.jpg")])
    assert next(paths) == str(tmp_path / "a" / "z.jpg")  # a generator: nothing is listed up front
    rest = ("a/b/y.MP4", "one.png", "a/b/y.MP4", "missing.jpg")  # a folder's files, then its sub-folders
    assert list(paths) == [str(tmp_path / p) for p in rest]
    f = tmp_path / "one.png"
    k1 = make_entry(str(f)).key
    os.utime(f, ns=(0, 10**18))
    assert make_entry(str(f)).key != k1
    h1 = make_entry(str(f), "hash").key
    os.utime(f, ns=(0, 2 * 10**18))
    assert make_entry(str(f), "hash").key == h1  # hash keys ignore times, follow content
    assert make_entry(str(tmp_path / "missing.jpg")).size == -1
    assert [e.path for e in iter_entries([str(f)])] == [str(f)]


def test_scan_command_imports_nothing_heavy() -> None:
    heavy = ("ray", "pyarrow", "pandas", "onnx", "onnxruntime", "tensorflow", "torch", "grpc", "flask", "cv2")
    code = (
        "import sys, deepguard.scan.command as c\nc.build_parser().parse_args(['scan', 'x', '--out', 'y'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
