"""DeepGuard metadata stored inside ONNX files (``metadata_props``).

Why inside the model: a shipped ``.onnx`` must be self-describing (input size, layout, threshold, members,
provenance) so the runtime never depends on a side-car file that can get lost or go stale. ONNX only stores
string values, so lists/dicts are JSON and a small schema (:data:`KEY_TYPES`) turns the known keys back into
numbers on read. Only ``onnx`` is imported here: the runtime may use it without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

from deepguard.errors import ModelError

PREFIX = "deepguard."

# Known keys and how their string value is decoded. Unknown keys: JSON if it looks like a list/dict, else str.
KEY_TYPES: dict[str, str] = {
    "name": "str",
    "version": "str",
    "members": "json",  # list of {name, weight, input_size, source_sha256}
    "input_size": "int",
    "input_layout": "str",  # "NHWC"
    "color_order": "str",  # "RGB"
    "input_dtype": "str",  # "uint8" (fused) / "float32" (member)
    "threshold": "float",  # on the calibrated prob; score >= threshold is fake (binary verdict)
    "temperature": "float",  # calibration inside the graph: prob = sigmoid(logit(mean) / T); absent = 1
    "uncertain_low": "float",  # graded verdict: real < low <= uncertain < high <= fake; absent = binary
    "uncertain_high": "float",
    "precision": "str",  # "fp32" / "fp16" / "int8"
    "crop_context": "float",  # crop rule: true context margin kept, the rest mirrored (runtime/crop.py)
    "crop_jpeg_quality": "int",  # crops re-encoded as JPEG at this quality before scoring (runtime/crop.py)
    "grey_floor": "float",  # lowest score of a black-and-white face (runtime/colour.py); absent = none
    "training_data": "str",
    "source_sha256": "str",
    "created": "str",  # ISO-8601 UTC
}

# What the runtime needs to run a fused model correctly; everything else is provenance.
REQUIRED_KEYS: tuple[str, ...] = ("members", "input_size", "input_layout", "color_order", "input_dtype")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (model files can be large)."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        with p.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read file to hash it ({exc.strerror or exc})") from exc
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One digest for several source files: sha256 over their hex digests joined by newlines, in order.

    Order matters (members are weighted), so it is kept rather than sorted; a single file gives the same value as
    :func:`sha256_file`.
    """
    digests = [sha256_file(p) for p in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def utc_now() -> str:
    """Creation timestamp in the format stored under ``deepguard.created``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=False, separators=(",", ":"))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    # numpy scalars and the like
    if hasattr(value, "item"):
        return _encode(value.item())
    return str(value)


def _decode(key: str, text: str) -> Any:
    kind = KEY_TYPES.get(key)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "json":
            return json.loads(text)
    except ValueError as exc:
        raise ModelError(f"metadata key {PREFIX}{key} has an unreadable value {text!r} ({exc})") from exc
    if kind is None and text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: model file not found")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise ModelError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def set_metadata(model: onnx.ModelProto, meta: Mapping[str, Any]) -> onnx.ModelProto:
    """Merge ``meta`` into ``model.metadata_props`` in place (keys get the ``deepguard.`` prefix).

    Existing keys with the same name are replaced, all other props (ours or foreign) are kept, so metadata can be
    written in stages (fuse first, then the builder adds provenance).
    """
    encoded = {
        (k if k.startswith(PREFIX) else PREFIX + k): _encode(v) for k, v in meta.items() if v is not None
    }
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in encoded]
    del model.metadata_props[:]
    for key, value in [*kept, *encoded.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model


def write_metadata(
    model_path_or_proto: str | os.PathLike[str] | onnx.ModelProto, meta: Mapping[str, Any]
) -> onnx.ModelProto:
    """Write DeepGuard metadata into a model file (rewritten in place) or a ModelProto (modified in place).

    Values: str as is; lists/dicts as JSON; numbers as their decimal text. Returns the updated proto.
    """
    if isinstance(model_path_or_proto, onnx.ModelProto):
        return set_metadata(model_path_or_proto, meta)
    path = Path(model_path_or_proto)
    model = _load(path)
    set_metadata(model, meta)
    _save(model, path, "with metadata")
    return model


def drop_metadata(path: str | os.PathLike[str], key: str) -> None:
    """Remove one DeepGuard key from a model file, when present (a build step that no longer applies)."""
    path = Path(path)
    model = _load(path)
    props = [(p.key, p.value) for p in model.metadata_props if p.key != PREFIX + key]
    if len(props) == len(model.metadata_props):
        return
    del model.metadata_props[:]
    for k, v in props:
        prop = model.metadata_props.add()
        prop.key, prop.value = k, v
    _save(model, path, f"without {key}")


def _save(model: onnx.ModelProto, path: Path, what: str) -> None:
    """Rewrite ``path``; a read-only or full disk is a ModelError naming the file, not an OSError trace."""
    try:
        onnx.save(model, str(path))
    except OSError as exc:
        raise ModelError(f"{path}: cannot write model {what} ({exc.strerror or exc})") from exc


def metadata_from_map(props: Mapping[str, str]) -> dict[str, Any]:
    """Decode a raw ``{key: str}`` map (e.g. onnxruntime's ``get_modelmeta().custom_metadata_map``).

    Lets the runtime read the metadata from an already-open session without parsing the file twice.
    """
    return {k[len(PREFIX) :]: _decode(k[len(PREFIX) :], v) for k, v in props.items() if k.startswith(PREFIX)}


def read_metadata(
    path_or_proto: str | os.PathLike[str] | onnx.ModelProto, *, required: bool = False
) -> dict[str, Any]:
    """DeepGuard metadata of a model as a dict without the ``deepguard.`` prefix, values decoded.

    With ``required=True`` a model lacking any of :data:`REQUIRED_KEYS` raises :class:`ModelError`, so a foreign
    or half-built ONNX file fails loudly instead of being run with guessed preprocessing.
    """
    model = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else _load(path_or_proto)
    meta = metadata_from_map({p.key: p.value for p in model.metadata_props})
    if required:
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            where = "model" if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
            raise ModelError(
                f"{where}: not a DeepGuard model, metadata lacks {', '.join(PREFIX + k for k in missing)}"
            )
    return meta
