"""The pipelined Detector (reader -> detector -> classifier threads) gives exactly the serial loop's results,
surfaces source errors in order, and leaves no threads behind when the caller stops early."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from deepguard.errors import MediaError
from deepguard.runtime.pipeline import Detector
from tests.conftest import moving_face_frames, write_video

N = 20  # > 2 chunks of 8


@pytest.fixture(scope="module")
def frames(astronaut) -> list[np.ndarray]:
    return moving_face_frames(astronaut[0:260, 120:360], N, size=(320, 240))


@pytest.fixture(scope="module")
def dets() -> tuple[Detector, Detector]:
    return Detector(pipeline=True), Detector(pipeline=False, threads=1)


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("deepguard-")]


def _wait_no_stage_threads(timeout: float = 3.0) -> list[str]:
    end = time.monotonic() + timeout
    while _stage_threads() and time.monotonic() < end:
        time.sleep(0.02)
    return _stage_threads()


def test_pipelined_equals_serial(dets, frames) -> None:
    pipe, serial = dets
    assert pipe.pipeline and not serial.pipeline
    a = list(pipe.iter_frames(iter(frames)))
    b = list(serial.iter_frames(iter(frames)))
    assert [fs for fs, _ in a] == [fs for fs, _ in b]
    assert [[f.box for f in ff] for _, ff in a] == [[f.box for f in ff] for _, ff in b]
    sa = [f.score for _, ff in a for f in ff]
    assert sa == pytest.approx([f.score for _, ff in b for f in ff], abs=1e-6)
    assert sum(fs.n_faces for fs, _ in a) == N
    assert _wait_no_stage_threads() == []


def test_video_file_same_verdict(dets, frames, tmp_path) -> None:
    clip = write_video(tmp_path / "c.mp4", frames)
    pipe, serial = dets
    pipe.every_frame = serial.every_frame = True
    try:
        a, b = pipe.analyze(clip), serial.analyze(clip)
    finally:
        pipe.every_frame = serial.every_frame = False
    assert a.error is None and a.frames_sampled == b.frames_sampled == N
    assert a.score == pytest.approx(b.score, abs=1e-6) and a.verdict == b.verdict


def _failing_source(frames, k: int, exc: Exception):
    for i, f in enumerate(frames):
        if i == k:
            raise exc
        yield f


@pytest.mark.parametrize("k", [3, 13])
def test_source_error_after_the_frames_before_it(dets, frames, k: int) -> None:
    for det in dets:
        got = []
        with pytest.raises(MediaError, match="damaged"):
            for fs, _ in det.iter_frames(_failing_source(frames, k, MediaError("clip.mp4: damaged"))):
                got.append(fs.index)
        assert got == list(range(8 * (k // 8)))  # whole chunks before the failing one, as the serial loop
    assert _wait_no_stage_threads() == []


def test_bad_frame_mid_stream_is_a_media_error(dets, frames) -> None:
    bad = [*frames[:10], np.zeros((5, 5), np.uint8), *frames[10:]]
    for det in dets:
        with pytest.raises(MediaError, match="stream"):
            list(det.iter_frames(iter(bad), name="stream"))


def test_early_stop_leaves_no_threads_and_reads_boundedly(dets, frames) -> None:
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield frames[i % N]

    gen = dets[0].iter_frames(source())
    next(gen)
    gen.close()
    assert _wait_no_stage_threads() == []
    assert len(pulled) < 8 * 8  # bounded look-ahead: a few chunks, not the whole source


def test_short_inputs_run_serially(dets, frames) -> None:
    before = threading.active_count()
    res = dets[0].analyze_frames(frames[:3], name="short")
    assert res.frames_sampled == 3 and threading.active_count() == before


def test_env_switch(monkeypatch) -> None:
    monkeypatch.setenv("DEEPGUARD_PIPELINE", "0")
    from deepguard.runtime.pipeline import pipeline_default

    assert pipeline_default() is False
    monkeypatch.setenv("DEEPGUARD_PIPELINE", "1")
    assert pipeline_default() is True
