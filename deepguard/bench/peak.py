"""This CPU's theoretical peak (FP32 FMA, INT8 VNNI) and a measured GEMM ceiling, for "% of peak" numbers.

Peak formula (per second, all cores this process may use)::

    FP32 MAC/s = cores x GHz x FMA pipes x FP32 lanes          (lanes: 16 with AVX-512, 8 with AVX2)
    INT8 MAC/s = cores x GHz x VNNI pipes x INT8 MACs per op   (VPDPBUSD: 64 on 512-bit, 32 on 256-bit)

with FMA pipes = VNNI pipes = 2 (AMD Zen 4/5 and Intel server cores with two FMA units issue two 512-bit FMAs /
dot-products per cycle; Zen 4 double-pumps them, which halves its 512-bit rate: set ``DEEPGUARD_CPU_PIPES``).
GHz is the nominal clock from ``/proc/cpuinfo`` (a VM reports the TSC rate; boost clocks make the true peak
higher, so "% of peak" is if anything flattering), overridable with ``DEEPGUARD_CPU_GHZ``.

The measured ceiling (:func:`measured_gemm_ceiling`) runs one large FP32 MatMul and one UINT8xINT8
MatMulInteger through onnxruntime on the same threads: what the runtime's best kernels reach here, a tighter
and more honest bound than the datasheet for a shared, virtualised machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CpuPeak:
    model: str
    cores: int
    ghz: float
    isa: str
    fp32_macs_per_cycle: int  # per core
    int8_macs_per_cycle: int  # per core
    fp32_gmacs: float  # all cores
    int8_gmacs: float
    formula: str

    def as_dict(self) -> dict:
        return asdict(self)


def _cpuinfo() -> tuple[str, float | None, set[str]]:
    model, mhz, flags = "unknown CPU", None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and model == "unknown CPU":
                    model = val
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(val)
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    return model, (mhz / 1000 if mhz else None), flags


def cpu_flags() -> set[str]:
    return _cpuinfo()[2]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_peak(cores: int | None = None, ghz: float | None = None) -> CpuPeak:
    """Theoretical peak of the cores this process may run on (see module docstring for the formula)."""
    model, mhz_ghz, flags = _cpuinfo()
    cores = cores or usable_cores()
    ghz = ghz or float(os.environ.get("DEEPGUARD_CPU_GHZ") or 0) or mhz_ghz or 2.0
    pipes = int(os.environ.get("DEEPGUARD_CPU_PIPES", "2"))
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    if "avx512_vnni" in flags:
        int8_ops, isa8 = 64, "AVX512-VNNI"
    elif "avx_vnni" in flags:
        int8_ops, isa8 = 32, "AVX-VNNI"
    else:  # vpmaddubsw + vpmaddwd: about half a VNNI dot product's rate at the same width
        int8_ops, isa8 = 2 * lanes, "no VNNI"
    fp32 = pipes * lanes
    int8 = pipes * int8_ops
    return CpuPeak(
        model=model,
        cores=cores,
        ghz=round(ghz, 3),
        isa=f"{isa}, {isa8}",
        fp32_macs_per_cycle=fp32,
        int8_macs_per_cycle=int8,
        fp32_gmacs=round(cores * ghz * fp32, 1),
        int8_gmacs=round(cores * ghz * int8, 1),
        formula=(
            f"FP32: {cores} cores x {ghz:.3f} GHz x {pipes} FMA pipes x {lanes} lanes = "
            f"{cores * ghz * fp32:.0f} GMAC/s ({2 * cores * ghz * fp32:.0f} GFLOP/s); "
            f"INT8: {cores} cores x {ghz:.3f} GHz x {pipes} pipes x {int8_ops} MACs/VPDPBUSD = "
            f"{cores * ghz * int8:.0f} GMAC/s"
        ),
    )


def _gemm_session(n: int, integer: bool, threads: int | None):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_t, y_t = TensorProto.UINT8, TensorProto.INT32
    else:
        w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_t, y_t = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("x", x_t, [n, n])],
        [helper.make_tensor_value_info("y", y_t, [n, n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 0
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = (
        rng.integers(0, 256, (n, n), dtype=np.uint8)
        if integer
        else rng.standard_normal((n, n)).astype(np.float32)
    )
    return sess, x


def measured_gemm_ceiling(n: int = 1024, rounds: int = 7, threads: int | None = None) -> dict[str, float]:
    """Median GMAC/s of an n x n x n FP32 MatMul and UINT8xINT8 MatMulInteger on onnxruntime's CPU kernels."""
    import statistics

    out = {}
    for integer in (False, True):
        sess, x = _gemm_session(n, integer, threads)
        sess.run(None, {"x": x})
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            sess.run(None, {"x": x})
            times.append(time.perf_counter() - t)
        out["int8_gmacs" if integer else "fp32_gmacs"] = round(n**3 / statistics.median(times) / 1e9, 1)
    return out


__all__ = ["CpuPeak", "cpu_flags", "cpu_peak", "measured_gemm_ceiling", "usable_cores"]
