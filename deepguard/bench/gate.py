"""Performance-regression gate: a short benchmark pass whose *ratios* are compared with a committed baseline.

``python -m deepguard.bench.gate`` (run by ``.ci/run``) measures, in this one run and interleaved round by round
(``deepguard.bench.harness``):

===================== =================================================================================
int8_vs_fp32          classifier faces/s, INT8 over FP32 (default model, 16 real face crops, 1 thread)
pipelined_vs_serial   every-frame 720p clip: pipelined ``Detector`` over the serial loop (same sessions)
ours_vs_origin        frames/s of ours (every frame, all faces) over the origin (MTCNN + Keras predict)
stream_mode_vs_origin the same for stream mode as shipped (tracked every frame, persons re-scored 5x/s)
stream_vs_inprocess   one gRPC stream over in-process ``iter_frames`` (same Detector, 640x360 frames)
===================== =================================================================================

Absolute times on a shared 2-core VM swing by 2x with the neighbours' load; ratios of interleaved rounds barely
move. Each metric is the median of its per-round ratios; it fails when below ``baseline x (1 - tolerance)``.
A failing metric is measured again with twice the rounds and only fails the gate if the pooled median is still
below the floor, so one unlucky burst cannot fail CI while a real regression (which shifts every round) does.

``--slow NAME=FACTOR`` (or ``DEEPGUARD_GATE_SLOW``) stretches one timed function of the harness, e.g.
``--slow int8=3`` makes the INT8 classifier look 3x slower: the gate must then fail (tests/test_bench_gate.py).
``--update`` rewrites the baseline's values from this run (keeping tolerances); commit it with the reason.
Exit status: 0 pass, 1 regression, 2 usage/setup error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from deepguard.bench.harness import interleaved, median, parse_slow, ratios

BASELINE = Path(__file__).with_name("gate_baseline.json")

Sampler = Callable[[int, dict], list[float]]  # (rounds, slow) -> per-round ratios


# ----------------------------------------------------------------------------------------------- inputs


class GateContext:
    """Inputs shared by the metrics, built on first use; ``close()`` stops what the metrics started."""

    def __init__(self, cache: Path | None = None, n_crops: int = 16) -> None:
        from deepguard.bench.models import cache_dir

        self.cache = Path(cache) if cache else cache_dir()
        self.n_crops = n_crops
        self.closers: list[Callable[[], None]] = []

    @cached_property
    def clip(self) -> Path:
        """1 s of the 720p several-faces clip (25 frames)."""
        from deepguard.bench.clips import clip_720p

        return clip_720p(self.cache / "clips", seconds=1.0)

    @cached_property
    def clip_frames(self) -> list[np.ndarray]:
        from deepguard.runtime.decode import iter_video_frames

        return [f.image for f in iter_video_frames(self.clip, every_frame=True)]

    @cached_property
    def crops(self) -> np.ndarray:
        """``n_crops`` real face crops (160 px) from the group photo, repeated."""
        from deepguard.bench.clips import group_photo
        from deepguard.runtime.crop import crop_faces
        from deepguard.runtime.facedet import load_detector

        img = group_photo()
        det = load_detector(None, ["CPUExecutionProvider"], threads=1).detect([img])[0]
        crops = crop_faces(img, det.boxes, 160)
        return np.ascontiguousarray(np.resize(crops, (self.n_crops, *crops.shape[1:])))

    @cached_property
    def origin(self):
        """The origin pipeline (MTCNN + Keras Xception and EfficientNetV2-M), loaded once for both vs-origin metrics."""
        from deepguard.bench.origin import OriginPipeline

        origin = OriginPipeline()
        origin.warm_up(self.clip_frames[0])
        return origin

    def close(self) -> None:
        while self.closers:
            try:
                self.closers.pop()()
            except Exception:  # noqa: BLE001 - cleanup must not mask the gate's result
                pass


# ---------------------------------------------------------------------------------------------- metrics


def _classifier(precision: str):
    from deepguard.runtime.classify import FaceClassifier

    return FaceClassifier(precision=precision, providers="cpu", threads=1, batch_size=16, spin=False)


def prep_int8_vs_fp32(ctx: GateContext) -> Sampler:
    crops, fp32, int8 = ctx.crops, _classifier("fp32"), _classifier("int8")

    def sample(rounds: int, slow: dict) -> list[float]:
        t = interleaved(
            {"fp32": lambda: fp32.score(crops), "int8": lambda: int8.score(crops)}, rounds, slow=slow
        )
        return ratios(t, "fp32", "int8")

    return sample


def _analyze(det, clip: Path) -> None:
    res = det.analyze(clip)
    if res.error is not None or res.frames_sampled == 0:
        raise RuntimeError(f"benchmark clip failed: {res.error}")


def prep_pipelined_vs_serial(ctx: GateContext) -> Sampler:
    from deepguard.runtime.pipeline import Detector

    clip = ctx.clip
    pipe = Detector(every_frame=True, rescore_rate=0, pipeline=True)
    serial = Detector(
        every_frame=True, rescore_rate=0, pipeline=False
    )  # same session settings: measures the pipelining alone

    def sample(rounds: int, slow: dict) -> list[float]:
        t = interleaved(
            {"serial": lambda: _analyze(serial, clip), "pipelined": lambda: _analyze(pipe, clip)},
            rounds,
            slow=slow,
        )
        return ratios(t, "serial", "pipelined")

    return sample


ORIGIN_FRAMES = 2


def prep_ours_vs_origin(ctx: GateContext) -> Sampler:
    from deepguard.runtime.pipeline import Detector

    return _vs_origin(ctx, Detector(every_frame=True, rescore_rate=0))


def prep_stream_mode_vs_origin(ctx: GateContext) -> Sampler:
    """Stream mode as shipped (every frame boxed and tracked, persons re-scored 5x/s, region detection between
    full scans) against the same origin runs: the issue's >= 80x target."""
    from deepguard.runtime.pipeline import Detector

    return _vs_origin(ctx, Detector(every_frame=True))


def _vs_origin(ctx: GateContext, ours) -> Sampler:
    clip, frames, origin = ctx.clip, ctx.clip_frames, ctx.origin
    pos = [0]

    def origin_run() -> None:  # a different pair of frames each round
        k = pos[0] % (len(frames) - ORIGIN_FRAMES)
        pos[0] += ORIGIN_FRAMES
        origin.run(frames[k : k + ORIGIN_FRAMES])

    def sample(rounds: int, slow: dict) -> list[float]:
        t = interleaved({"origin": origin_run, "ours": lambda: _analyze(ours, clip)}, rounds, slow=slow)
        # fps_ours / fps_origin = (n_ours / t_ours) / (n_origin / t_origin)
        return ratios(t, "origin", "ours", scale=len(frames) / ORIGIN_FRAMES)

    return sample


STREAM_FRAMES = 32


def prep_stream_vs_inprocess(ctx: GateContext) -> Sampler:
    from deepguard.bench.clips import sliding_face_frames
    from deepguard.client import Client
    from deepguard.runtime.pipeline import Detector
    from deepguard.server import Server
    from deepguard.serving.config import ServerConfig

    frames = sliding_face_frames(STREAM_FRAMES, (640, 360))
    det = Detector()
    _ = det.face_detector
    srv = Server(ServerConfig(port=0, rest_port=None, metrics_port=None), det).start()
    ctx.closers.append(lambda: srv.stop(2))
    client = Client(f"127.0.0.1:{srv.port}")
    client.__enter__()
    ctx.closers.append(lambda: client.__exit__(None, None, None))

    def sample(rounds: int, slow: dict) -> list[float]:
        t = interleaved(
            {
                "in_process": lambda: list(det.iter_frames(frames)),
                "stream": lambda: list(client.stream_frames(frames)),
            },
            rounds,
            slow=slow,
        )
        return ratios(t, "in_process", "stream")

    return sample


@dataclass(frozen=True)
class Metric:
    prepare: Callable[[GateContext], Sampler]
    rounds: int
    needs_modules: tuple[str, ...] = ()
    needs_cpu: tuple[str, ...] = ()  # any one of these /proc/cpuinfo flags


METRICS: dict[str, Metric] = {
    "int8_vs_fp32": Metric(prep_int8_vs_fp32, 15, needs_cpu=("avx512_vnni", "avx_vnni")),
    "pipelined_vs_serial": Metric(
        prep_pipelined_vs_serial, 5, needs_modules=("av", "skimage", "insightface")
    ),
    "ours_vs_origin": Metric(
        prep_ours_vs_origin, 3, needs_modules=("av", "skimage", "insightface", "mtcnn", "tensorflow")
    ),
    "stream_mode_vs_origin": Metric(
        prep_stream_mode_vs_origin, 3, needs_modules=("av", "skimage", "insightface", "mtcnn", "tensorflow")
    ),
    "stream_vs_inprocess": Metric(prep_stream_vs_inprocess, 5, needs_modules=("grpc", "skimage")),
}


# ------------------------------------------------------------------------------------------------ gate


@dataclass
class Result:
    name: str
    status: str  # pass | fail | skip | error
    baseline: float | None = None
    floor: float | None = None
    value: float | None = None
    samples: list[float] = field(default_factory=list)
    confirmed: bool = False
    note: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    results: list[Result]
    machine: dict

    @property
    def passed(self) -> bool:
        return all(r.status in ("pass", "skip") for r in self.results)

    def table(self) -> str:
        rows = [("metric", "baseline", "floor", "measured", "rounds", "status", "s")]
        for r in self.results:
            f = _fmt
            rows.append(
                (
                    r.name,
                    f(r.baseline),
                    f(r.floor),
                    f(r.value),
                    str(len(r.samples)),
                    r.status + (" (confirmed)" if r.confirmed else "") + (f": {r.note}" if r.note else ""),
                    f"{r.seconds:.0f}",
                )
            )
        widths = [max(len(row[i]) for row in rows[:]) for i in range(len(rows[0]) - 2)]
        lines = []
        for row in rows:
            head = "  ".join(c.ljust(w) for c, w in zip(row[:-2], widths, strict=False))
            lines.append(f"{head}  {row[-1].rjust(3)}  {row[-2]}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "machine": self.machine, "results": [asdict(r) for r in self.results]}


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def machine_info() -> dict:
    from deepguard.bench.peak import cpu_flags, cpu_peak

    p = cpu_peak()
    flags = cpu_flags()
    return {
        "cpu": p.model,
        "cores": p.cores,
        "ghz": p.ghz,
        "isa": p.isa,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
    }


def load_baseline(path: str | Path = BASELINE) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"gate: cannot read baseline {path}: {e}") from e
    if not isinstance(data.get("metrics"), dict):
        raise SystemExit(f"gate: baseline {path} has no 'metrics' object")
    return data


def _missing(metric: Metric) -> str | None:
    gone = [m for m in metric.needs_modules if importlib.util.find_spec(m) is None]
    if gone:
        return f"needs {', '.join(gone)}"
    if metric.needs_cpu:
        from deepguard.bench.peak import cpu_flags

        if not cpu_flags() & set(metric.needs_cpu):
            return f"baseline is for CPUs with {' or '.join(metric.needs_cpu)}"
    return None


def run_gate(
    baseline: dict,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    rounds_scale: float = 1.0,
    slow: dict[str, float] | None = None,
    confirm: bool = True,
    metrics: dict[str, Metric] | None = None,
    ctx: GateContext | None = None,
    echo: Callable[[str], None] = print,
) -> Report:
    """Measure the selected metrics and compare each with ``baseline["metrics"][name]``."""
    metrics = metrics or METRICS
    slow = dict(slow or {})
    names = [n for n in baseline["metrics"] if (not only or n in only) and n not in skip]
    unknown = [n for n in [*(only or []), *skip] if n not in metrics]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(metrics)}")
    own_ctx = ctx is None
    ctx = ctx or GateContext()
    results: list[Result] = []
    try:
        for name in names:
            spec = baseline["metrics"][name]
            base, tol = float(spec["value"]), float(spec.get("tolerance", 0.25))
            r = Result(name, "pass", baseline=base, floor=base * (1 - tol))
            metric = metrics.get(name)
            why = "not implemented in this version" if metric is None else _missing(metric)
            if why:
                r.status, r.note = "skip", why
                results.append(r)
                echo(f"gate: {name}: skipped ({why})")
                continue
            t0 = time.perf_counter()
            try:
                rounds = max(3, round(int(spec.get("rounds", metric.rounds)) * rounds_scale))
                sampler = metric.prepare(ctx)
                r.samples = sampler(rounds, slow)
                r.value = median(r.samples)
                if confirm and not r.value >= r.floor:
                    echo(f"gate: {name}: {r.value:.3g} below floor {r.floor:.3g}; measuring again to confirm")
                    r.samples += sampler(2 * rounds, slow)
                    r.value = median(r.samples)
                    r.confirmed = True
                r.status = "pass" if r.value >= r.floor else "fail"
            except Exception as e:  # noqa: BLE001 - a metric that cannot run is a failure, with its reason
                r.status, r.note = "error", f"{type(e).__name__}: {e}"
            r.seconds = time.perf_counter() - t0
            results.append(r)
            echo(
                f"gate: {name}: {r.status} ({r.value if r.value is None else round(r.value, 3)} vs floor "
                f"{r.floor:.3g}, {r.seconds:.0f} s)"
            )
    finally:
        if own_ctx:
            ctx.close()
    return Report(results, machine_info())


def update_baseline(baseline: dict, report: Report, path: str | Path) -> None:
    for r in report.results:
        if r.value is not None and r.status in ("pass", "fail"):
            baseline["metrics"][r.name]["value"] = round(r.value, 3)
    baseline["machine"] = report.machine
    baseline["updated"] = time.strftime("%Y-%m-%d")
    Path(path).write_text(json.dumps(baseline, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepguard.bench.gate", description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=str(BASELINE), help="baseline JSON (default: the committed one)")
    ap.add_argument("--only", help="comma-separated metrics to run")
    ap.add_argument("--skip", help="comma-separated metrics to leave out")
    ap.add_argument("--rounds-scale", type=float, default=1.0, help="multiply every metric's rounds")
    ap.add_argument(
        "--slow", default=os.environ.get("DEEPGUARD_GATE_SLOW"), help="inject NAME=FACTOR slowdowns"
    )
    ap.add_argument("--no-confirm", action="store_true", help="fail on the first measurement (no re-run)")
    ap.add_argument("--update", action="store_true", help="write this run's values into the baseline")
    ap.add_argument("--json", help="write the full report (all samples) here")
    args = ap.parse_args(argv)
    try:
        baseline = load_baseline(args.baseline)
        slow = parse_slow(args.slow)
        report = run_gate(
            baseline,
            only=_split(args.only) or None,
            skip=_split(args.skip),
            rounds_scale=args.rounds_scale,
            slow=slow,
            confirm=not args.no_confirm,
        )
    except ValueError as e:
        print(f"gate: {e}", file=sys.stderr)
        return 2
    print(report.table())
    if slow:
        print(f"gate: injected slowdowns {slow}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if args.update:
        update_baseline(baseline, report, args.baseline)
        print(f"gate: baseline updated: {args.baseline}")
        return 0
    print("gate: PASS" if report.passed else "gate: FAIL (performance regression, see table)")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
