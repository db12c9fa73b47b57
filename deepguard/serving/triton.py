"""``deepguard export-triton OUT_DIR``: a Triton Inference Server model repository for DeepGuard's two models.

Why: a site that already runs Triton wants DeepGuard's models served there (its batching, GPU scheduling and
metrics), not a second model server. The repository holds the fused classifier and the BlazeFace face detector,
each as ``OUT_DIR/<name>/config.pbtxt`` + ``OUT_DIR/<name>/1/model.onnx`` (a copy of the ONNX file DeepGuard
itself runs), for Triton's onnxruntime backend.

Every tensor name, data type and shape in ``config.pbtxt`` is read from the ONNX graph, never typed in, so a
retrained model exports correctly. The text is written with protobuf ``text_format`` from Triton's own
``ModelConfig`` message (``tritonclient``'s ``model_config_pb2``), so a misspelt field fails here and not at
Triton's start-up.

What Triton does not do for you: face detection's anchor decoding and NMS, crop extraction and score
aggregation stay in the caller (see ``deepguard.runtime``); the classifier's threshold and uncertain band are
in its ONNX metadata (``deepguard.*`` keys), which Triton does not expose - read them from the model file.

Heavy imports (onnx, tritonclient) happen inside the functions so registering the CLI command stays cheap.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deepguard.errors import DeepGuardError, ModelError

CLASSIFIER_NAME = "deepguard_classifier"
DETECTOR_NAME = "deepguard_face_detector"
# The server's own batch limits (deepguard.serving.config.ServerConfig) as defaults: the same trade-off applies.
CLASSIFIER_MAX_BATCH = 32
DETECTOR_MAX_BATCH = 8
MAX_QUEUE_DELAY_US = 5000  # ServerConfig.max_wait_ms
TENSORRT_WORKSPACE_BYTES = 1 << 30

# ONNX TensorProto.DataType -> Triton DataType name (only the types Triton's onnxruntime backend accepts).
_TRITON_TYPES = {
    1: "TYPE_FP32",  # FLOAT
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",  # DOUBLE
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


class ExportError(DeepGuardError):
    """The requested export cannot work (flags that contradict each other, a model Triton cannot batch)."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as ONNX declares it; ``shape`` uses -1 for every symbolic or unknown dim."""

    name: str
    onnx_type: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelOptions:
    """How Triton should run one model; the defaults suit the shipped models on a CPU."""

    max_batch_size: int
    device: str = "cpu"  # cpu | gpu -> instance_group kind
    instances: int = 1
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US
    tensorrt_fp16: bool = False


def onnx_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's real inputs (initializers listed as inputs are weights, not inputs) and its outputs."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, ... for a file that is not a model
        raise ModelError(f"{path}: not a readable ONNX model ({e})") from e
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        # Why refuse: only model.onnx is copied, so Triton would fail to find the weight files.
        raise ModelError(f"{path}: weights in external data files are not supported; save them inline")
    weights = {t.name for t in model.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(v.name, t.elem_type, dims)

    inputs = [spec(v) for v in model.graph.input if v.name not in weights]
    return inputs, [spec(v) for v in model.graph.output]


def triton_type(spec: TensorSpec) -> str:
    if spec.onnx_type not in _TRITON_TYPES:
        raise ModelError(f"tensor {spec.name!r}: ONNX data type {spec.onnx_type} has no Triton equivalent")
    return _TRITON_TYPES[spec.onnx_type]


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """A quarter, half and all of the limit: Triton forms the largest of these it can without waiting longer."""
    return sorted({n for n in (max_batch_size // 4, max_batch_size // 2, max_batch_size) if n >= 1})


def model_config(name: str, path: Path, opts: ModelOptions):
    """The ``inference.ModelConfig`` message for the ONNX model at ``path``.

    With ``max_batch_size > 0`` Triton adds the batch dimension itself, so the first dim of every tensor is
    dropped - and it must be dynamic in the graph (a fixed one means the model cannot batch: export it with
    max_batch_size 0). A tensor that is only the batch dim (the classifier's ``prob``: shape [N]) is declared
    ``dims: [1]`` with ``reshape { shape: [] }``, the form Triton documents for it.
    """
    mc = _model_config_pb2()
    inputs, outputs = onnx_signature(path)
    if opts.max_batch_size < 0:
        raise ExportError(f"{name}: max_batch_size must be >= 0, got {opts.max_batch_size}")
    if opts.tensorrt_fp16 and opts.device != "gpu":
        raise ExportError("the TensorRT accelerator needs GPU instances (--device gpu)")
    if opts.instances < 1:
        raise ExportError(f"{name}: instance count must be >= 1, got {opts.instances}")
    if opts.max_queue_delay_us < 0:
        raise ExportError(f"the queue delay must be >= 0 microseconds, got {opts.max_queue_delay_us}")
    batching = opts.max_batch_size > 0
    cfg = mc.ModelConfig(
        name=name, platform="onnxruntime_onnx", backend="onnxruntime", max_batch_size=opts.max_batch_size
    )
    for specs, add in ((inputs, cfg.input.add), (outputs, cfg.output.add)):
        for s in specs:
            dims = list(s.shape)
            if batching:
                if not dims or dims[0] != -1:
                    raise ExportError(
                        f"{path}: tensor {s.name!r} has shape {list(s.shape)}, no dynamic batch dimension; "
                        "export it with max batch size 0"
                    )
                dims = dims[1:]
            t = add(name=s.name, data_type=mc.DataType.Value(triton_type(s)))
            if dims:
                t.dims.extend(dims)
            else:  # a scalar per batch item
                t.dims.append(1)
                t.reshape.SetInParent()
    if batching:
        cfg.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes(opts.max_batch_size))
        cfg.dynamic_batching.max_queue_delay_microseconds = opts.max_queue_delay_us
    kind = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}[opts.device]
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(kind), count=opts.instances)
    if opts.tensorrt_fp16:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = "FP16"
        acc.parameters["max_workspace_size_bytes"] = str(TENSORRT_WORKSPACE_BYTES)
    return cfg


def write_model(repo: Path, src: Path, cfg) -> Path:
    """``repo/<name>/config.pbtxt`` and ``repo/<name>/1/model.onnx`` (a byte copy of ``src``); returns the folder."""
    from google.protobuf import text_format

    folder = repo / cfg.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    return folder


def classifier_path(model: str | None, precision: str | None, device: str) -> Path:
    """``--model`` as given, else the shipped model: INT8 for CPU instances, FP32 for GPU ones.

    Why that default: the runtime picks the same (``deepguard.runtime.classify.auto_precision``): INT8 is the
    fast graph on CPUs, and on GPUs FP32 is what CUDA runs well and what TensorRT builds FP16 engines from.
    """
    from deepguard.runtime.classify import default_model_path

    if model is not None:
        if precision is not None:
            raise ExportError("--precision picks a shipped model; it cannot be combined with --model")
        p = Path(model)
        if not p.is_file():
            raise ModelError(f"--model {model}: no such file")
        return p
    return default_model_path(precision or ("int8" if device == "cpu" else "fp32"))


def detector_path(variant: str = "full") -> Path:
    """The BlazeFace ONNX file the runtime loads for ``blazeface:<variant>`` (the default detector is full)."""
    from deepguard.runtime.facedet.blazeface import DATA_DIR, MODEL_CONFIGS

    if variant not in MODEL_CONFIGS:
        raise ExportError(f"unknown BlazeFace variant {variant!r}; use {' or '.join(MODEL_CONFIGS)}")
    path = DATA_DIR / MODEL_CONFIGS[variant].file
    if not path.is_file():
        raise ModelError(f"{path}: the face detector is not installed (reinstall deepguard)")
    return path


def export_repository(
    out_dir: str | Path,
    *,
    model: str | None = None,
    precision: str | None = None,
    detector: str = "full",
    device: str = "cpu",
    instances: int = 1,
    classifier_max_batch: int = CLASSIFIER_MAX_BATCH,
    detector_max_batch: int = DETECTOR_MAX_BATCH,
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US,
    tensorrt_fp16: bool = False,
) -> list[Path]:
    """Write both models into the repository ``out_dir`` (created; other models in it are left alone)."""
    if tensorrt_fp16 and device != "gpu":
        raise ExportError("the TensorRT accelerator needs GPU instances (--device gpu)")
    cls_src = classifier_path(model, precision, device)
    if tensorrt_fp16 and model is None and cls_src.name.endswith("-int8.onnx"):
        raise ExportError(
            "TensorRT FP16 builds from the FP32 graph: use --precision fp32 (the default on GPU)"
        )
    common = {"device": device, "instances": instances, "max_queue_delay_us": max_queue_delay_us}
    plan = [
        (CLASSIFIER_NAME, cls_src, ModelOptions(classifier_max_batch, tensorrt_fp16=tensorrt_fp16, **common)),
        (
            DETECTOR_NAME,
            detector_path(detector),
            ModelOptions(detector_max_batch, tensorrt_fp16=tensorrt_fp16, **common),
        ),
    ]
    configs = [(src, model_config(name, src, opts)) for name, src, opts in plan]  # all checked before writing
    repo = Path(out_dir)
    return [write_model(repo, src, cfg) for src, cfg in configs]


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as e:  # tritonclient.grpc raises RuntimeError when grpcio is missing
        raise DeepGuardError(
            f"export-triton needs tritonclient, grpcio and protobuf: pip install 'deepguard[triton]' ({e})"
        ) from e
    return model_config_pb2


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="model repository folder (created; other models kept)")
    p.add_argument("--model", help="fused classifier ONNX file (default: the shipped model)")
    p.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        help="which shipped classifier (default: int8 for --device cpu, fp32 for gpu)",
    )
    p.add_argument("--detector", choices=["full", "short"], default="full", help="BlazeFace variant")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="instance_group kind")
    p.add_argument("--instances", type=int, default=1, help="model instances per device")
    p.add_argument(
        "--max-batch", type=int, default=DETECTOR_MAX_BATCH, help="detector max_batch_size (0 = no batching)"
    )
    p.add_argument(
        "--max-crops",
        type=int,
        default=CLASSIFIER_MAX_BATCH,
        help="classifier max_batch_size (0 = no batching)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=MAX_QUEUE_DELAY_US,
        help="longest a request waits for a batch to fill",
    )
    p.add_argument(
        "--tensorrt-fp16", action="store_true", help="run on GPUs through TensorRT FP16 (needs --device gpu)"
    )


def run(args: argparse.Namespace) -> int:
    """The ``export-triton`` command: write the repository, print each model folder."""
    folders = export_repository(
        args.out_dir,
        model=args.model,
        precision=args.precision,
        detector=args.detector,
        device=args.device,
        instances=args.instances,
        classifier_max_batch=args.max_crops,
        detector_max_batch=args.max_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        tensorrt_fp16=args.tensorrt_fp16,
    )
    for f in folders:
        print(f)
    return 0


def add_export_triton(sub: argparse._SubParsersAction) -> None:
    """Register ``export-triton`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "export-triton",
        help="write a Triton model repository (classifier + face detector, onnxruntime backend)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m deepguard.serving.triton``), same flags as the sub-command."""
    import sys

    p = argparse.ArgumentParser(prog="python -m deepguard.serving.triton", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except DeepGuardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
