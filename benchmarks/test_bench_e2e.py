"""End-to-end video: our pipeline vs the origin pipeline on the same 720p clip, in the same run; % of CPU peak.

* every frame, dense: ``Detector(every_frame=True, rescore_rate=0).analyze(clip)`` - decode, detect, crop,
  classify every face of every frame, aggregate; pipelined (default), serial, and "before" (serial loop with
  busy-waiting sessions, the runtime before this work);
* every frame, stream mode (the default, ``deepguard.runtime.stream``): detect and track every frame, classify
  each person 5x per second of video; fps, stream / dense in the same run, and their agreement;
* 1 fps: ``Detector().analyze(clip)`` (the CLI default), reported as seconds of video per second;
* origin: MTCNN ``detect_faces`` + Keras ``predict`` of Xception and EfficientNetV2-M at 299 on the first face
  of each frame (``deepguard.bench.origin``), interleaved round by round with ours so both see the same load;
* limit: MACs per frame from the ONNX graphs x achieved frames/s, against this CPU's FP32 / INT8 peak
  (``deepguard.bench.peak``: the formula) and against onnxruntime's own GEMM speed here (measured ceiling).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from deepguard.bench.agreement import person_deltas
from deepguard.bench.harness import interleaved, median, ratios
from deepguard.runtime.pipeline import Detector

SECTION = "end-to-end (720p H.264, 5-7 faces/frame)"
_STATE: dict = {}


@pytest.fixture(scope="module")
def ours() -> Detector:
    d = Detector(every_frame=True, rescore_rate=0)
    _ = d.face_detector
    return d


def pre_issue_detector() -> Detector:
    """The runtime as it was before the speed work: serial chunk loop, sessions that busy-wait, all cores."""
    old = os.environ.get("DEEPGUARD_SPIN")
    os.environ["DEEPGUARD_SPIN"] = "1"
    try:
        return Detector(every_frame=True, rescore_rate=0, pipeline=False)
    finally:
        if old is None:
            del os.environ["DEEPGUARD_SPIN"]
        else:
            os.environ["DEEPGUARD_SPIN"] = old


def test_every_frame_pipelined(benchmark, perf, ours, clip) -> None:
    res = benchmark.pedantic(ours.analyze, args=(clip,), rounds=3, iterations=1, warmup_rounds=1)
    fps = res.frames_sampled / benchmark.stats.stats.median
    faces = len(res.faces) / res.frames_sampled
    _STATE.update(fps=fps, faces_per_frame=faces, frames=res.frames_sampled)
    benchmark.extra_info.update(frames_per_s=round(fps, 2), faces_per_frame=round(faces, 2))
    perf.add(
        SECTION,
        "every frame, pipelined (default)",
        fps,
        "frames/s",
        f"{faces:.1f} faces/frame, target >= 100",
    )
    perf.add(SECTION, "faces scored per second", fps * faces, "faces/s")


@pytest.fixture(scope="module")
def stream() -> Detector:
    d = Detector(every_frame=True)  # stream mode is the default
    _ = d.face_detector
    return d


def test_every_frame_stream(benchmark, perf, stream, ours, clip) -> None:
    res = benchmark.pedantic(stream.analyze, args=(clip,), rounds=3, iterations=1, warmup_rounds=1)
    fps = res.frames_sampled / benchmark.stats.stats.median
    scored = sum(f.age == 0 for f in res.faces)
    benchmark.extra_info.update(
        frames_per_s=round(fps, 2), classified_share=round(scored / len(res.faces), 3)
    )
    perf.add(SECTION, "every frame, stream mode (5 re-scores/person/s)", fps, "frames/s", "target >= 100")
    dense = ours.analyze(clip)
    deltas = person_deltas(dense, res)  # persons paired by their boxes, not ids (deepguard.bench.agreement)
    perf.add(SECTION, "stream vs dense: mean |d person score|", float(np.mean(deltas)), "", "target <= 0.02")
    perf.add(
        SECTION, "stream vs dense: same video verdict", float(res.verdict == dense.verdict), "", "1 = yes"
    )


def test_stream_vs_dense_interleaved(benchmark, perf, stream, ours, clip) -> None:
    """Dense, stream mode with a full detector scan on every frame, and stream mode as shipped (full scans every
    5th frame, regions around the known faces in between: deepguard.runtime.facedet.regions)."""
    scans = Detector(every_frame=True, scan_every=1)
    t = benchmark.pedantic(
        lambda: interleaved(
            {
                "dense": lambda: ours.analyze(clip),
                "stream, full scans": lambda: scans.analyze(clip),
                "stream": lambda: stream.analyze(clip),
            },
            3,
        ),
        rounds=1,
        iterations=1,
    )
    perf.add(SECTION, "stream / dense fps (interleaved)", median(ratios(t, "dense", "stream")), "x")
    perf.add(
        SECTION,
        "stream: regions / full scan every frame (interleaved)",
        median(ratios(t, "stream, full scans", "stream")),
        "x",
    )


def test_every_frame_before(benchmark, perf, clip) -> None:
    before = pre_issue_detector()
    res = benchmark.pedantic(before.analyze, args=(clip,), rounds=3, iterations=1, warmup_rounds=1)
    fps = res.frames_sampled / benchmark.stats.stats.median
    perf.add(SECTION, "every frame, before (serial, spinning sessions)", fps, "frames/s")


def test_one_fps(benchmark, perf, clip) -> None:
    det = Detector()  # CLI default: 1 frame per second
    res = benchmark.pedantic(det.analyze, args=(clip,), rounds=3, iterations=1, warmup_rounds=1)
    seconds = res.frames[-1].time + 1.0 if res.frames else 0.0
    perf.add(SECTION, "1 fps sampling", seconds / benchmark.stats.stats.median, "video s/s", "x realtime")


def test_speedup_interleaved(benchmark, perf, ours, clip) -> None:
    variants = {
        "before": pre_issue_detector(),
        "serial": Detector(
            every_frame=True, rescore_rate=0, pipeline=False
        ),  # today's sessions, no pipelining
        "pipelined": ours,
    }
    t = benchmark.pedantic(
        lambda: interleaved({k: (lambda d=d: d.analyze(clip)) for k, d in variants.items()}, 3),
        rounds=1,
        iterations=1,
    )
    perf.add(SECTION, "now / before (interleaved)", median(ratios(t, "before", "pipelined")), "x")
    perf.add(SECTION, "pipelined / serial, same sessions", median(ratios(t, "serial", "pipelined")), "x")


def test_vs_origin(benchmark, perf, ours, clip, clip_frames) -> None:
    pytest.importorskip("mtcnn")
    pytest.importorskip("tensorflow")
    from deepguard.bench.origin import OriginPipeline

    origin = OriginPipeline()
    origin.warm_up(clip_frames[0])
    n_origin = 3
    pos = [0]
    found = []

    def origin_run():
        k = pos[0] % (len(clip_frames) - n_origin)
        pos[0] += 17
        found.extend(s is not None for s in origin.run(clip_frames[k : k + n_origin]))

    stream = Detector(every_frame=True)

    def run():
        variants = {
            "origin": origin_run,
            "ours": lambda: ours.analyze(clip),
            "stream": lambda: stream.analyze(clip),
        }
        return interleaved(variants, 3, warmup=0)

    t = benchmark.pedantic(run, rounds=1, iterations=1)
    origin_fps = n_origin / median(t["origin"])
    ours_fps = len(clip_frames) / median(t["ours"])
    ratio = median(ratios(t, "origin", "ours", scale=len(clip_frames) / n_origin))
    benchmark.extra_info.update(
        origin_fps=round(origin_fps, 3), ours_fps=round(ours_fps, 2), ratio=round(ratio, 1)
    )
    perf.add(
        "origin baseline (same run)",
        "origin: MTCNN + Keras predict, first face",
        origin_fps,
        "frames/s",
        f"face found in {sum(found)}/{len(found)} frames",
    )
    perf.add("origin baseline (same run)", "ours: every frame, all faces", ours_fps, "frames/s")
    perf.add("origin baseline (same run)", "ours / origin (dense)", ratio, "x")
    stream_ratio = median(ratios(t, "origin", "stream", scale=len(clip_frames) / n_origin))
    perf.add("origin baseline (same run)", "ours stream mode / origin", stream_ratio, "x", "target >= 80")


def test_macs_and_peak(perf, ours, clip_frames) -> None:
    from deepguard.bench.flops import count_macs
    from deepguard.bench.peak import cpu_peak, measured_gemm_ceiling
    from deepguard.runtime.facedet.blazeface import DATA_DIR, MODEL_CONFIGS

    if "fps" not in _STATE:
        pytest.skip("needs test_every_frame_pipelined in the same run")
    face = count_macs(ours.classifier.path)
    view = count_macs(DATA_DIR / MODEL_CONFIGS["full"].file)
    views = len(ours.face_detector._views(clip_frames[:1]))
    faces = _STATE["faces_per_frame"]
    fp32 = views * view.float_macs + faces * face.float_macs
    int8 = views * view.int8_macs + faces * face.int8_macs
    fps = _STATE["fps"]
    peak = cpu_peak()
    ceiling = measured_gemm_ceiling()
    # Time the frame would take at peak (each precision on its own units) over the time it takes.
    ideal = fp32 / (peak.fp32_gmacs * 1e9) + int8 / (peak.int8_gmacs * 1e9)
    ideal_ceiling = fp32 / (ceiling["fp32_gmacs"] * 1e9) + int8 / (ceiling["int8_gmacs"] * 1e9)
    s = "limit (MACs from the ONNX graphs)"
    perf.add(s, "classifier per face", face.gmacs, "GMAC", f"{face.int8_macs / max(face.macs, 1):.0%} INT8")
    perf.add(s, "detector per view", view.gmacs, "GMAC", f"{views} views/frame (FP32)")
    perf.add(s, "per frame", (fp32 + int8) / 1e9, "GMAC", f"{faces:.1f} faces")
    perf.add(s, "achieved", (fp32 + int8) / 1e9 * fps, "GMAC/s", f"at {fps:.1f} frames/s")
    perf.add(s, "% of theoretical peak", 100 * ideal * fps, "%", peak.formula)
    perf.add(
        s,
        "% of measured GEMM ceiling",
        100 * ideal_ceiling * fps,
        "%",
        f"onnxruntime 1024^3 GEMM here: FP32 {ceiling['fp32_gmacs']} / INT8 {ceiling['int8_gmacs']} GMAC/s",
    )
    assert np.isfinite(ideal)
