"""Benchmarks run with pytest-benchmark: ``pytest benchmarks/`` (not part of the unit-test run).

Every benchmark also records its headline numbers with the ``perf`` fixture; they are printed as one table at
the end of the run and written to ``.benchmarks/deepguard-latest.json`` (git-ignored) with the machine they ran
on. Shared inputs (the 720p clip, real face crops, derived models) are built once into
``DEEPGUARD_BENCH_CACHE`` (default ``~/.cache/deepguard/bench``), never into the repository.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_ROWS: list[dict] = []
_OUT = Path(__file__).resolve().parent.parent / ".benchmarks" / "deepguard-latest.json"


class Perf:
    """Collects (section, metric, value, unit, note) rows for the end-of-run table."""

    def add(self, section: str, metric: str, value: float, unit: str = "", note: str = "") -> None:
        _ROWS.append({"section": section, "metric": metric, "value": value, "unit": unit, "note": note})
        print(f"\n[bench] {section} | {metric}: {value:.4g} {unit} {note}".rstrip())


@pytest.fixture(scope="session")
def perf() -> Perf:
    return Perf()


@pytest.fixture(scope="session")
def bench_cache() -> Path:
    from deepguard.bench.models import cache_dir

    return cache_dir()


@pytest.fixture(scope="session")
def clip(bench_cache: Path) -> Path:
    """4 s, 25 fps, 1280x720 H.264 clip with 5-7 moving faces (insightface t1.jpg + skimage astronaut)."""
    pytest.importorskip("skimage")
    from deepguard.bench.clips import clip_720p

    return clip_720p(bench_cache / "clips", seconds=4.0)


@pytest.fixture(scope="session")
def clip_frames(clip: Path) -> list[np.ndarray]:
    from deepguard.runtime.decode import iter_video_frames

    return [f.image for f in iter_video_frames(clip, every_frame=True)]


@pytest.fixture(scope="session")
def face_crops(clip_frames: list[np.ndarray]) -> np.ndarray:
    """Real face crops (160 px) of the clip's frames, as the pipeline cuts them."""
    from deepguard.runtime.crop import crop_faces
    from deepguard.runtime.facedet import load_detector

    det = load_detector(None, ["CPUExecutionProvider"])
    frames = clip_frames[::10]
    boxes = det.detect(frames)
    return np.concatenate([crop_faces(f, b.boxes, 160) for f, b in zip(frames, boxes, strict=True)])


def _machine() -> dict:
    from deepguard.bench.gate import machine_info

    return {
        **machine_info(),
        "python": platform.python_version(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def pytest_terminal_summary(terminalreporter) -> None:
    if not _ROWS:
        return
    machine = _machine()
    w = terminalreporter.write_line
    w("")
    w("=" * 30 + " DeepGuard benchmark summary " + "=" * 30)
    w(f"machine: {machine['cpu']}, {machine['cores']} cores @ {machine['ghz']} GHz nominal, {machine['isa']}")
    sec_w = max(len(r["section"]) for r in _ROWS)
    met_w = max(len(r["metric"]) for r in _ROWS)
    for r in _ROWS:
        value = f"{r['value']:.4g}" if isinstance(r["value"], float) else str(r["value"])
        w(f"{r['section']:<{sec_w}}  {r['metric']:<{met_w}}  {value:>10} {r['unit']:<10} {r['note']}")
    try:
        _OUT.parent.mkdir(parents=True, exist_ok=True)
        _OUT.write_text(
            json.dumps(
                {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine, "rows": _ROWS}, indent=2
            )
            + "\n"
        )
        w(f"written: {_OUT}")
    except OSError as e:
        w(f"could not write {_OUT}: {e}")
