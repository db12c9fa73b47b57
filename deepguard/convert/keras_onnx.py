"""Keras 3 member -> ONNX (input ``pixels`` float32 NHWC [N, S, S, 3] in [0, 255], output ``logit`` [N, 1]).

Why a ``tf.function`` and not ``tf2onnx.convert.from_keras``: with Keras 3, tf2onnx 1.17's ``from_keras`` reads
Keras-2 internals and dies with ``KeyError: keras_tensor``. Tracing ``model(x, training=False)`` in a
``tf.function`` with an explicit input signature sidesteps Keras internals entirely, fixes the input/output names,
freezes BatchNorm/Dropout in inference mode and keeps the batch dimension dynamic.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from deepguard.errors import ModelError

INPUT_NAME = "pixels"
OUTPUT_NAME = "logit"
BATCH_DIM = "N"

_log = logging.getLogger(__name__)


def _register_custom_layers() -> None:
    """Importing ``deepguard.models`` registers the project's custom Keras layers (if that module exists)."""
    try:
        import deepguard.models  # noqa: F401
    except ImportError:
        pass
    except Exception as exc:  # a broken sibling module must not hide the real load error below
        _log.warning("importing deepguard.models failed (%s); custom layers may be unknown", exc)


def load_keras(model_or_path: Any) -> Any:
    """A ``keras.Model`` from a model or a ``.keras`` / ``.h5`` path; :class:`ModelError` names a bad path."""
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise ModelError(f"{path}: Keras model file not found")
    _register_custom_layers()
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # zip/h5/json errors come in many types; all mean "this file is not usable"
        raise ModelError(f"{path}: cannot load Keras model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path}: file holds a {type(model).__name__}, not a Keras model")
    return model


def keras_input_size(model: Any, input_size: int | None = None, where: str = "model") -> int:
    """Square input size S of a single-input NHWC model (``input_size`` overrides unknown spatial dims)."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelError(f"{where}: a member must have exactly one input, found {len(inputs)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelError(f"{where}: member input must be NHWC with 3 channels, found shape {shape}")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if input_size is None:
            raise ModelError(f"{where}: input has no fixed spatial size {shape}; pass input_size")
        return int(input_size)
    if h != w:
        raise ModelError(f"{where}: member input must be square, found {h}x{w}")
    if input_size is not None and int(input_size) != h:
        raise ModelError(f"{where}: input_size={input_size} contradicts the model's input {h}x{w}")
    return int(h)


def keras_to_onnx(
    model_or_path: Any,
    out_path: str | os.PathLike[str],
    opset: int = 17,
    *,
    input_size: int | None = None,
) -> Path:
    """Convert one Keras member to ONNX with a dynamic batch dimension; returns ``out_path``.

    ``model_or_path``: a ``keras.Model`` or a ``.keras``/``.h5`` file. ``input_size`` is only needed when the model
    was built with ``None`` spatial dims (ONNX members are fixed-size so the fused graph knows where to resize).
    """
    import tensorflow as tf

    where = str(model_or_path) if not hasattr(model_or_path, "inputs") else f"model {model_or_path.name!r}"
    model = load_keras(model_or_path)
    size = keras_input_size(model, input_size, where)

    import tf2onnx  # after TF; tf2onnx logs every graph pass at INFO

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    spec = (tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def serve(pixels):
        y = model(pixels, training=False)
        if isinstance(y, dict):
            y = next(iter(y.values()))
        elif isinstance(y, (list, tuple)):
            y = y[0]
        y = tf.cast(y, tf.float32)  # mixed-precision members emit float16 logits
        return {OUTPUT_NAME: tf.reshape(y, [-1, 1])}

    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] != 1:
        found = [tuple(o.shape) for o in outputs]
        raise ModelError(f"{where}: member must have one output of shape (N, 1) (a logit), found {found}")
    try:
        captured = _captured_constants(serve.get_concrete_function())
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ModelError(f"{where}: tf2onnx conversion failed ({type(exc).__name__}: {exc})") from exc

    _fold_captured_inputs(proto, captured, where)
    _name_batch_dim(proto)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(proto, str(out))
    return out


def _captured_constants(concrete: Any) -> dict[str, Any]:
    """Non-variable tensors the traced function captured from Python, by their placeholder name in the graph.

    Keras 3 layers keep some constants as plain eager tensors, not variables (e.g. ``Normalization``'s
    mean/variance when given at construction). tf2onnx freezes variables but leaves such captures as extra graph
    *inputs* (``.../Sub/y:0``), which would make every caller feed the ImageNet mean. We fold them back.
    """
    import tensorflow as tf

    out = {}
    for value, placeholder in zip(concrete.captured_inputs, concrete.graph.internal_captures, strict=False):
        if placeholder.dtype != tf.resource:
            out[placeholder.name] = value.numpy()
    return out


def _fold_captured_inputs(proto: Any, captured: dict[str, Any], where: str) -> None:
    """Turn graph inputs that are captured constants into initializers; any other extra input is an error."""
    from onnx import numpy_helper

    init_names = {t.name for t in proto.graph.initializer}
    keep = []
    for inp in proto.graph.input:
        if inp.name == INPUT_NAME or inp.name in init_names:
            keep.append(inp)
            continue
        value = captured.get(inp.name)
        if value is None:
            value = captured.get(inp.name + ":0") if not inp.name.endswith(":0") else None
        if value is None:
            raise ModelError(f"{where}: converted graph has an unexpected extra input {inp.name!r}")
        proto.graph.initializer.append(numpy_helper.from_array(value, inp.name))
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    # Some captures are dead after tf2onnx's folding; drop them so ORT does not warn about unused initializers.
    used = _used_names(proto.graph) | {o.name for o in proto.graph.output}
    dead = [t for t in proto.graph.initializer if t.name not in used]
    for t in dead:
        proto.graph.initializer.remove(t)


def _used_names(graph: Any) -> set[str]:
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _used_names(g)
    return names


def _name_batch_dim(proto: Any) -> None:
    """tf2onnx names the dynamic batch ``unk__12``; a stable ``N`` makes the I/O self-explanatory."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
