"""The performance-regression gate: ratio comparison logic, and a real short pass that must fail when a stage is
deliberately slowed through the harness (never through production code). No wall-time assertions."""

from __future__ import annotations

import json
import time

import pytest

from deepguard.bench import gate
from deepguard.bench.harness import interleaved, median, parse_slow, ratios


def test_parse_slow() -> None:
    assert parse_slow("int8=3, stream=2.5") == {"int8": 3.0, "stream": 2.5}
    assert parse_slow(None) == {} and parse_slow("") == {}
    for bad in ("int8", "int8=0.5", "int8=x"):
        with pytest.raises(ValueError):
            parse_slow(bad)


def test_interleaved_slowdown_stretches_only_its_function() -> None:
    calls: list[str] = []
    fns = {
        "a": lambda: (calls.append("a"), time.sleep(0.004)),
        "b": lambda: (calls.append("b"), time.sleep(0.004)),
    }
    t = interleaved(fns, 4, warmup=1, slow={"b": 4.0})
    assert len(t["a"]) == len(t["b"]) == 4 and calls[:2] == ["a", "b"]
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotating order
    assert median(ratios(t, "b", "a")) > 2.5  # a 4x stretch minus sleep jitter, far from 1


class _Ctx:
    closed = False

    def close(self) -> None:
        self.closed = True


def _fake(values: list[list[float]]) -> gate.Metric:
    """A metric whose successive measurements return the given per-round ratios."""
    it = iter(values)
    return gate.Metric(lambda ctx: lambda rounds, slow: list(next(it)), rounds=3)


def _baseline(**metrics: tuple[float, float]) -> dict:
    return {"metrics": {k: {"value": v, "tolerance": tol} for k, (v, tol) in metrics.items()}}


def test_gate_logic_pass_fail_confirm_skip_error() -> None:
    def broken(ctx):
        raise RuntimeError("model missing")

    metrics = {
        "ok": _fake([[1.9, 2.0, 2.1]]),
        "regressed": _fake([[1.0, 1.1, 0.9], [1.0, 1.0, 1.0, 1.1, 0.9, 1.0]]),
        "burst": _fake([[0.5, 0.6, 2.0], [2.0, 2.0, 2.0, 2.1, 1.9, 2.0]]),  # one bad measurement, then fine
        "needs_gpu_lib": gate.Metric(lambda ctx: None, 3, needs_modules=("no_such_module_xyz",)),
        "broken": gate.Metric(broken, 3),
    }
    base = _baseline(
        ok=(2.0, 0.2), regressed=(2.0, 0.2), burst=(2.0, 0.2), needs_gpu_lib=(1.0, 0.2), broken=(1, 0.2)
    )
    ctx = _Ctx()
    report = gate.run_gate(base, metrics=metrics, ctx=ctx, echo=lambda s: None)
    by = {r.name: r for r in report.results}
    assert by["ok"].status == "pass" and not by["ok"].confirmed and by["ok"].value == pytest.approx(2.0)
    assert (
        by["regressed"].status == "fail" and by["regressed"].confirmed and len(by["regressed"].samples) == 9
    )
    assert by["burst"].status == "pass" and by["burst"].confirmed  # the re-measurement clears a burst
    assert by["needs_gpu_lib"].status == "skip" and "no_such_module_xyz" in by["needs_gpu_lib"].note
    assert by["broken"].status == "error" and "model missing" in by["broken"].note
    assert not report.passed and "regressed" in report.table()
    assert not ctx.closed  # a caller-owned context is left open
    only = gate.run_gate(base, metrics=metrics, only=["ok"], ctx=_Ctx(), echo=lambda s: None)
    assert [r.name for r in only.results] == ["ok"]
    with pytest.raises(ValueError, match="unknown metric"):
        gate.run_gate(base, metrics=metrics, only=["nope"], ctx=_Ctx())


def test_committed_baseline_is_complete() -> None:
    base = gate.load_baseline()
    assert set(base["metrics"]) == set(gate.METRICS)
    for name, spec in base["metrics"].items():
        assert spec["value"] > 0 and 0 < spec["tolerance"] < 1, name
        assert spec.get("what"), name


def test_update_baseline_keeps_tolerances(tmp_path) -> None:
    path = tmp_path / "b.json"
    base = _baseline(ok=(2.0, 0.2))
    report = gate.run_gate(base, metrics={"ok": _fake([[3.0, 3.0, 3.0]])}, ctx=_Ctx(), echo=lambda s: None)
    gate.update_baseline(base, report, path)
    saved = json.loads(path.read_text())
    assert saved["metrics"]["ok"] == {"value": 3.0, "tolerance": 0.2} and "machine" in saved


@pytest.fixture(scope="module")
def ctx():
    why = gate._missing(gate.METRICS["int8_vs_fp32"])
    if why:
        pytest.skip(f"int8_vs_fp32 does not run here: {why}")
    c = gate.GateContext(n_crops=8)
    yield c
    c.close()


def test_real_pass_fails_when_int8_classify_is_slowed(ctx) -> None:
    """The real INT8-vs-FP32 metric: the committed baseline holds, and a 3x slower INT8 stage fails the gate."""
    base = gate.load_baseline()
    quiet = dict(only=["int8_vs_fp32"], rounds_scale=0.4, ctx=ctx, echo=lambda s: None)
    normal = gate.run_gate(base, **quiet)
    slowed = gate.run_gate(base, slow={"int8": 3.0}, **quiet)
    n, s = normal.results[0], slowed.results[0]
    assert n.status == "pass", n
    assert s.status == "fail" and s.confirmed, s
    assert s.value < n.value / 2  # the injected slowdown shows in the ratio, not just past the floor


def test_cli_exit_status_on_injected_slowdown(ctx, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPGUARD_GATE_SLOW", "int8=4")
    code = gate.main(["--only", "int8_vs_fp32", "--rounds-scale", "0.2", "--no-confirm"])
    out = capsys.readouterr().out
    assert code == 1 and "gate: FAIL" in out and "int8_vs_fp32" in out and "injected slowdowns" in out
    assert gate.main(["--only", "nope"]) == 2
