"""Score face crops with the fused ensemble ONNX graph (one session run per batch of crops).

The graph does its own resize and normalisation (see ``deepguard.convert.fuse``), so the runtime only hands it
uint8 RGB crops at the size stored in the model's metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.errors import ModelError
from deepguard.runtime.providers import GPU_PROVIDERS, make_session

log = logging.getLogger("deepguard.classify")

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
DEFAULT_NAMES = {
    "fp32": "deepguard-edge-fp32.onnx",
    "int8": "deepguard-edge-int8.onnx",
    "fp16": "deepguard-edge-fp16.onnx",
}


def auto_precision(providers: Sequence[str] | str | None = None) -> str:
    """INT8 when the CPU runs the model (VNNI makes it ~1.6x faster), FP16 on CUDA, FP32 on TensorRT.

    Why FP32 for TensorRT: it builds FP16 engines itself (``trt_fp16_enable``) and, given the FP32 graph, may
    keep precision-sensitive layers in FP32; CUDA runs what it is given, so it gets the FP16 graph.
    """
    from deepguard.runtime.providers import provider_names, resolve_providers

    first = provider_names(resolve_providers(providers))[0]
    return {"CPUExecutionProvider": "int8", "CUDAExecutionProvider": "fp16"}.get(first, "fp32")


def default_model_path(precision: str = "auto", providers: Sequence[str] | str | None = None) -> Path:
    """The shipped model for ``precision`` (``auto``: see :func:`auto_precision`); FP16 falls back to FP32."""
    if precision == "auto":
        precision = auto_precision(providers)
    if precision not in DEFAULT_NAMES:
        raise ModelError(f"unknown precision {precision!r}; choose auto, fp32, fp16 or int8")
    path = DEFAULT_DIR / DEFAULT_NAMES[precision]
    if not path.is_file() and precision == "fp16":
        log.info("no FP16 default model installed; using FP32 (TensorRT still builds FP16 engines)")
        path = DEFAULT_DIR / DEFAULT_NAMES["fp32"]
    if not path.is_file():
        raise ModelError(f"{path}: the default model is not installed (reinstall deepguard)")
    return path


def parse_metadata(raw: dict[str, str]) -> dict:
    """ONNX metadata_props -> dict without the ``deepguard.`` prefix, JSON values decoded."""
    out: dict = {}
    for k, v in raw.items():
        key = k.removeprefix("deepguard.")
        try:
            out[key] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[key] = v
    return out


def model_band(meta: dict, threshold: float, where: object = "model") -> tuple[float, float] | None:
    """The uncertain band ``(lo, hi)`` from ``deepguard.uncertain_low/high``; None (binary verdicts) without it.

    Models built before calibration have no band and keep their binary verdicts. A band that does not contain
    the threshold would make the graded and the binary verdict disagree, so it is refused as a broken model.
    """
    if meta.get("uncertain_low") is None and meta.get("uncertain_high") is None:
        return None
    try:
        lo, hi = float(meta["uncertain_low"]), float(meta["uncertain_high"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{where}: metadata needs both deepguard.uncertain_low and uncertain_high") from e
    if not 0.0 <= lo <= threshold <= hi <= 1.0:
        raise ModelError(
            f"{where}: uncertain band [{lo}, {hi}) must satisfy 0 <= low <= threshold ({threshold}) <= high <= 1"
        )
    return lo, hi


def model_crop_jpeg(meta: dict, where) -> int | None:
    """The JPEG quality the model's crops are re-encoded at before scoring (``deepguard.crop_jpeg_quality``, see
    runtime/crop.py: its training crops all ended in a JPEG re-encode); None (no key) = scored as cut."""
    raw = meta.get("crop_jpeg_quality")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 100:
        raise ModelError(
            f"{where}: metadata deepguard.crop_jpeg_quality must be an integer 1-100, got {raw!r}"
        )
    return raw


def _as_float(raw) -> float:
    """A metadata value as a float; nan (which every range check rejects) when it is not a number."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float("nan")


def model_grey_floor(meta: dict, threshold: float, where) -> float | None:
    """The lowest score a black-and-white face may get (``deepguard.grey_floor``, see runtime/colour.py): set by a
    build whose REAL verdict missed the band's precision on desaturated val faces; None (no key) = no floor."""
    raw = meta.get("grey_floor")
    if raw is None:
        return None
    floor = _as_float(raw)
    if not 0.0 <= floor <= threshold:  # a floor over the fake cut would call every grey face fake
        raise ModelError(
            f"{where}: metadata deepguard.grey_floor must be in [0, threshold {threshold}], got {raw!r}"
        )
    return floor


def model_crop_context(meta: dict, where) -> float | None:
    """The crop rule the model was trained with (``deepguard.crop_context``, see runtime/crop.py): the margin of
    true context its crops keep, the rest mirrored; None (no key) = true context over the whole margin."""
    raw = meta.get("crop_context")
    if raw is None:
        return None
    context = _as_float(raw)
    if not -0.5 < context < 1.0:  # also rejects nan
        raise ModelError(
            f"{where}: metadata deepguard.crop_context must be a margin in (-0.5, 1), got {raw!r}"
        )
    return context


class FaceClassifier:
    """The fused ensemble: uint8 (N, S, S, 3) RGB crops -> P(fake) per crop (+ each member's probability)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        precision: str = "auto",
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        io_binding: bool | None = None,
        spin: bool | None = None,
    ) -> None:
        self.path = Path(model) if model else default_model_path(precision, providers)
        # TensorRT FP16 unless FP32 was asked for explicitly (parity runs, FP32 baselines).
        self.session = make_session(self.path, providers, threads, fp16=precision != "fp32", spin=spin)
        self.meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4:
            raise ModelError(
                f"{self.path}: expected one uint8 NHWC input, got "
                f"{[(i.name, i.type, i.shape) for i in inputs]}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if "prob" not in outputs:
            raise ModelError(
                f"{self.path}: no 'prob' output (outputs: {outputs}); is this a fused DeepGuard model?"
            )
        self.input_name = inputs[0].name
        self.outputs = ["prob"] + (["member_probs"] if "member_probs" in outputs else [])
        try:
            self.input_size = int(self.meta["input_size"])
        except (KeyError, ValueError) as e:
            raise ModelError(f"{self.path}: metadata lacks deepguard.input_size") from e
        self.threshold = float(self.meta.get("threshold", 0.5))
        self.temperature = float(self.meta.get("temperature", 1.0))  # already applied inside the graph
        self.band = model_band(self.meta, self.threshold, self.path)
        self.crop_context = model_crop_context(self.meta, self.path)
        self.crop_jpeg = model_crop_jpeg(self.meta, self.path)
        self.grey_floor = model_grey_floor(self.meta, self.threshold, self.path)
        self.name = (
            f"{self.meta.get('name', self.path.stem)}@{self.meta.get('version', '?')}"
            f"/{self.meta.get('precision', '?')}"
        )
        self.batch_size = batch_size
        # IO binding: on a GPU it lets onnxruntime copy the input once and write outputs straight into
        # CPU buffers; on the CPU provider it measured neutral (benchmarks/), so plain run() stays the default.
        self.io_binding = self.provider in GPU_PROVIDERS if io_binding is None else bool(io_binding)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.io_binding:
            return self.session.run(self.outputs, {self.input_name: batch})
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def crops(self, image: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
        """The model's input crops of ``boxes`` in ``image``: its size and the crop rule it was trained with
        (``crop_context``), so every caller cuts what the model expects."""
        from deepguard.runtime.crop import crop_faces

        return crop_faces(image, boxes, self.input_size, margin, self.crop_context)

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N,) and member probabilities (N, M); batched to bound memory.

        Crops are first re-encoded at the model's ``crop_jpeg`` quality when it names one (runtime/crop.py says
        why), here rather than in :meth:`crops` so that every scored crop gets it: cut from media, or read from
        face-crop files by evaluation. For the same reason a black-and-white crop's probability is raised to the
        model's ``grey_floor`` here, when it has one (runtime/colour.py); member probabilities stay raw."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be (N, H, W, 3) uint8, got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0,), np.float32), np.zeros((0, 0), np.float32)
        if self.crop_jpeg is not None:
            from deepguard.runtime.crop import jpeg_roundtrip

            crops = jpeg_roundtrip(crops, self.crop_jpeg)
        probs, members = [], []
        for i in range(0, len(crops), self.batch_size):
            res = self._run(crops[i : i + self.batch_size])
            probs.append(res[0].reshape(-1))
            members.append(res[1] if len(res) > 1 else res[0].reshape(-1, 1))
        prob = np.concatenate(probs)
        if self.grey_floor is not None:
            from deepguard.runtime.colour import floor_grey

            prob = floor_grey(prob, crops, self.grey_floor)
        return prob, np.concatenate(members)
