"""onnxruntime execution-provider choice: TensorRT -> CUDA -> CPU, overridable, with a log line saying what ran.

Why one place: the classifier, the face detector and the server must agree on providers and threads, and users
need one switch (``--providers``/``DEEPGUARD_PROVIDERS``) to force CPU on a GPU box or pin TensorRT options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("deepguard.providers")

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def resolve_providers(requested: Sequence[str] | str | None = None) -> list:
    """Providers to hand to ``InferenceSession``: the requested ones that exist, else the best available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None:
        requested = os.environ.get("DEEPGUARD_PROVIDERS") or None
    if isinstance(requested, str):
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    if requested:
        names = [ALIASES.get(r.lower(), r) for r in requested]
        unknown = [n for n in names if n not in available]
        if unknown:
            log.warning("providers %s not available here (have %s); skipping them", unknown, available)
        names = [n for n in names if n in available] or ["CPUExecutionProvider"]
    else:
        names = [p for p in PREFERENCE if p in available]
    out: list = []
    for n in names:
        if n == "TensorrtExecutionProvider":
            cache = Path(os.environ.get("DEEPGUARD_TRT_CACHE", Path.home() / ".cache" / "deepguard" / "trt"))
            out.append(
                (
                    n,
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_fp16_enable": True,
                    },
                )
            )
        else:
            out.append(n)
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")
    return out


def session_options(threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    n = threads if threads is not None else int(os.environ.get("DEEPGUARD_THREADS", "0"))
    so.intra_op_num_threads = n  # 0 = one per physical core
    so.inter_op_num_threads = 1
    return so


def make_session(path: str | Path, providers: Sequence[str] | str | None = None, threads: int | None = None):
    """Open an InferenceSession and log which provider actually runs it (fallbacks are silent otherwise)."""
    import onnxruntime as ort

    from deepguard.errors import ModelError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        sess = ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=resolve_providers(providers)
        )
    except Exception as e:  # onnxruntime raises several unrelated types for a bad file
        raise ModelError(f"{path}: not a loadable ONNX model ({e})") from e
    log.info("%s runs on %s", path.name, sess.get_providers()[0])
    return sess
