"""Score face crops with the fused ensemble ONNX graph (one session run per batch of crops).

The graph does its own resize and normalisation (see ``deepguard.convert.fuse``), so the runtime only hands it
uint8 RGB crops at the size stored in the model's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.errors import ModelError
from deepguard.runtime.providers import make_session

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
DEFAULT_NAMES = {
    "fp32": "deepguard-edge-fp32.onnx",
    "int8": "deepguard-edge-int8.onnx",
    "fp16": "deepguard-edge-fp16.onnx",
}


def default_model_path(precision: str = "auto", providers: Sequence[str] | str | None = None) -> Path:
    """The shipped model: INT8 when only the CPU runs it (VNNI makes it ~2x faster), FP32 on a GPU provider."""
    if precision == "auto":
        from deepguard.runtime.providers import resolve_providers

        names = [p if isinstance(p, str) else p[0] for p in resolve_providers(providers)]
        precision = "int8" if names[0] == "CPUExecutionProvider" else "fp32"
    if precision not in DEFAULT_NAMES:
        raise ModelError(f"unknown precision {precision!r}; choose auto, fp32, fp16 or int8")
    path = DEFAULT_DIR / DEFAULT_NAMES[precision]
    if not path.is_file() and precision == "fp16":
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
    ) -> None:
        self.path = Path(model) if model else default_model_path(precision, providers)
        self.session = make_session(self.path, providers, threads)
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
        self.name = (
            f"{self.meta.get('name', self.path.stem)}@{self.meta.get('version', '?')}"
            f"/{self.meta.get('precision', '?')}"
        )
        self.batch_size = batch_size

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N,) and member probabilities (N, M); batched to bound memory."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be (N, H, W, 3) uint8, got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0,), np.float32), np.zeros((0, 0), np.float32)
        probs, members = [], []
        for i in range(0, len(crops), self.batch_size):
            res = self.session.run(self.outputs, {self.input_name: crops[i : i + self.batch_size]})
            probs.append(res[0].reshape(-1))
            members.append(res[1] if len(res) > 1 else res[0].reshape(-1, 1))
        return np.concatenate(probs), np.concatenate(members)
