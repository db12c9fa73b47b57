"""onnxruntime execution-provider choice and session tuning: TensorRT -> CUDA -> CPU, with a log line saying what ran.

Why one place: the classifier, the face detector and the server must agree on providers and threads, and users
need one switch (``--providers``/``DEEPGUARD_PROVIDERS``) to force CPU on a GPU box or pin TensorRT options.

GPU (``pip install '.[gpu]'``, i.e. onnxruntime-gpu):

* TensorRT gets FP16 (``trt_fp16_enable``; off when FP32 is asked for explicitly), a persistent engine and timing
  cache (``DEEPGUARD_TRT_CACHE``, default ``~/.cache/deepguard/trt``: building an engine takes minutes, loading
  it milliseconds) and, when the model is known, an optimisation profile over the dynamic batch dimension
  (min 1, opt ``DEEPGUARD_TRT_OPT_BATCH`` = 16, max ``DEEPGUARD_TRT_MAX_BATCH`` = 64; spatial dims pinned to the
  model's ``input_size``), so one engine serves every batch the batchers form instead of one rebuild per shape.
* CUDA uses heuristic cuDNN algorithm search (exhaustive search re-runs for every new batch size) and an arena
  that grows by what is asked for, not in powers of two.
* :func:`make_session` tries the chain in order and drops a provider whose session cannot be created (no
  libnvinfer, no cuDNN, an unsupported op); the log line names the provider that runs and the ones that failed.

CPU knobs (:func:`session_options`): ``DEEPGUARD_THREADS`` (intra-op threads; 0 = one per core),
``DEEPGUARD_SPIN`` (default ``0``: idle worker threads sleep instead of busy-waiting for the next op), full graph
optimisation, memory arena and pattern planning on, denormals flushed to zero. Why no spinning by default:
spinning workers steal the core that the pipeline's other stage, the server's other batcher or another process
needs. On the shared 2-core VM (a neighbour busy on one core), INT8 classifier 6.15 -> 5.03 ms/face and
BlazeFace 34.7 -> 26.4 ms per 720p frame with 2 threads; single-threaded sessions are unaffected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("deepguard.providers")

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})

#: Dynamic-batch optimisation profile for TensorRT (min is always 1).
TRT_OPT_BATCH = 16
TRT_MAX_BATCH = 64
TRT_WORKSPACE_BYTES = 2 << 30


def _env_flag(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return default
    return v.strip().lower() not in ("0", "false", "no", "off")


def trt_cache_dir() -> Path:
    """Where TensorRT engines and timing caches persist between runs (``DEEPGUARD_TRT_CACHE``)."""
    return Path(os.environ.get("DEEPGUARD_TRT_CACHE") or Path.home() / ".cache" / "deepguard" / "trt")


def provider_names(providers: Sequence[Any]) -> list[str]:
    """Names of a provider list whose entries are names or ``(name, options)`` pairs."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def model_inputs(path: str | Path) -> tuple[list[tuple[str, list[int | str | None]]], int | None]:
    """(name, dims) of a model's real inputs (not initialisers) and its ``deepguard.input_size`` (or None).

    Read without external weights; one parse serves both because TensorRT profiles need both.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims: list[int | str | None] = []
        for d in i.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append((i.name, dims))
    size = next((p.value for p in model.metadata_props if p.key == "deepguard.input_size"), None)
    try:
        return out, int(size) if size else None
    except ValueError:
        return out, None


def trt_profile_shapes(
    path: str | Path,
    *,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    input_size: int | None = None,
) -> dict[str, str] | None:
    """TensorRT min/opt/max shape strings (``name:1x160x160x3``) for a model with a dynamic batch dimension.

    Dynamic spatial dims (the fused ensemble accepts any H, W) are pinned to ``input_size`` (default: the
    model's ``deepguard.input_size`` metadata), because the runtime always feeds that size. None when the model
    has no dynamic dimension (TensorRT then needs no profile) or a dynamic dim cannot be resolved.
    """
    opt_batch = int(opt_batch or os.environ.get("DEEPGUARD_TRT_OPT_BATCH") or TRT_OPT_BATCH)
    max_batch = int(max_batch or os.environ.get("DEEPGUARD_TRT_MAX_BATCH") or TRT_MAX_BATCH)
    opt_batch = max(1, min(opt_batch, max_batch))
    try:
        inputs, meta_size = model_inputs(path)
    except Exception as e:  # noqa: BLE001 - the session will report the unreadable file itself
        log.debug("%s: cannot read inputs for a TensorRT profile (%s)", path, e)
        return None
    if not any(not isinstance(d, int) or d <= 0 for _, dims in inputs for d in dims):
        return None
    size = input_size or meta_size
    mins, opts, maxs = [], [], []
    for name, dims in inputs:
        fixed: list[int] = []
        for k, d in enumerate(dims[1:], start=1):
            if isinstance(d, int) and d > 0:
                fixed.append(d)
            elif size and len(dims) == 4 and k in (1, 2):  # NHWC spatial dims
                fixed.append(int(size))
            else:
                log.debug("%s: input %s dim %d is dynamic and unknown; no TensorRT profile", path, name, k)
                return None
        rest = "x".join(str(d) for d in fixed)
        mins.append(f"{name}:1x{rest}")
        opts.append(f"{name}:{opt_batch}x{rest}")
        maxs.append(f"{name}:{max_batch}x{rest}")
    return {
        "trt_profile_min_shapes": ",".join(mins),
        "trt_profile_opt_shapes": ",".join(opts),
        "trt_profile_max_shapes": ",".join(maxs),
    }


def tensorrt_options(model_path: str | Path | None = None, *, fp16: bool | None = None) -> dict[str, Any]:
    """TensorRT EP options: FP16, engine/timing cache, workspace and the dynamic-batch profile."""
    cache = trt_cache_dir()
    fp16 = _env_flag("DEEPGUARD_TRT_FP16", True) if fp16 is None else fp16
    opts: dict[str, Any] = {
        "device_id": int(os.environ.get("DEEPGUARD_GPU_DEVICE", "0")),
        "trt_fp16_enable": bool(fp16),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_max_workspace_size": TRT_WORKSPACE_BYTES,
    }
    if model_path is not None:
        opts.update(trt_profile_shapes(model_path) or {})
    return opts


def cuda_options() -> dict[str, Any]:
    """CUDA EP options (see module docstring for why)."""
    return {
        "device_id": int(os.environ.get("DEEPGUARD_GPU_DEVICE", "0")),
        "cudnn_conv_algo_search": os.environ.get("DEEPGUARD_CUDNN_SEARCH", "HEURISTIC"),
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }


def resolve_providers(
    requested: Sequence[str] | str | None = None,
    *,
    model_path: str | Path | None = None,
    fp16: bool | None = None,
) -> list:
    """Providers to hand to ``InferenceSession``: the requested ones that exist, else the best available.

    Entries are names (CPU) or ``(name, options)`` pairs (GPU). CPU is always appended as the last resort.
    ``model_path`` lets TensorRT get a dynamic-batch profile; ``fp16`` (default on) toggles TensorRT FP16.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None:
        requested = os.environ.get("DEEPGUARD_PROVIDERS") or None
    if isinstance(requested, str):
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    if requested:
        names = [ALIASES.get(r.lower(), r) if isinstance(r, str) else r[0] for r in requested]
        unknown = [n for n in names if n not in available]
        if unknown:
            log.warning("providers %s not available here (have %s); skipping them", unknown, available)
        names = [n for n in dict.fromkeys(names) if n in available] or ["CPUExecutionProvider"]
    else:
        names = [p for p in PREFERENCE if p in available]
    out: list = []
    for n in names:
        if n == "TensorrtExecutionProvider":
            out.append((n, tensorrt_options(model_path, fp16=fp16)))
        elif n == "CUDAExecutionProvider":
            out.append((n, cuda_options()))
        else:
            out.append(n)
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")
    return out


def session_options(threads: int | None = None, *, spin: bool | None = None):
    """CPU session options; ``threads`` None -> ``DEEPGUARD_THREADS`` (0 = one per physical core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    n = threads if threads is not None else int(os.environ.get("DEEPGUARD_THREADS", "0"))
    so.intra_op_num_threads = max(0, int(n))  # 0 = one per physical core
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    spin = _env_flag("DEEPGUARD_SPIN", False) if spin is None else spin
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


def make_session(
    path: str | Path,
    providers: Sequence[str] | str | None = None,
    threads: int | None = None,
    *,
    fp16: bool | None = None,
    spin: bool | None = None,
):
    """Open an InferenceSession, falling back TensorRT -> CUDA -> CPU, and log which provider actually runs.

    A provider whose session cannot be created is dropped and the next one tried; onnxruntime's own silent
    fallbacks are caught too by comparing what was asked with ``get_providers()``. One log line per model says
    what runs (INFO), or what runs instead of what was asked and why (WARNING).
    """
    import onnxruntime as ort

    from deepguard.errors import ModelError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    chain = resolve_providers(providers, model_path=path, fp16=fp16)
    wanted = provider_names(chain)[0]
    failures: list[str] = []
    sess = None
    last: Exception | None = None
    for i in range(len(chain)):
        try:
            sess = ort.InferenceSession(
                str(path), sess_options=session_options(threads, spin=spin), providers=chain[i:]
            )
            break
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file or a broken EP
            last = e
            failures.append(
                f"{provider_names(chain)[i]}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
            )
    if sess is None:
        raise ModelError(f"{path}: not a loadable ONNX model ({last})") from last
    ran = sess.get_providers()[0]
    tried = " -> ".join(provider_names(chain))
    if ran == wanted:
        log.info("%s runs on %s (chain: %s)", path.name, ran, tried)
    else:
        log.warning(
            "%s runs on %s, not %s (chain: %s)%s",
            path.name,
            ran,
            wanted,
            tried,
            f"; failed: {'; '.join(failures)}" if failures else "",
        )
    return sess


__all__ = [
    "ALIASES",
    "GPU_PROVIDERS",
    "PREFERENCE",
    "cuda_options",
    "make_session",
    "model_inputs",
    "provider_names",
    "resolve_providers",
    "session_options",
    "tensorrt_options",
    "trt_cache_dir",
    "trt_profile_shapes",
]
