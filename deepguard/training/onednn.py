"""Turn TensorFlow's oneDNN kernels on for training, whatever CPU the run lands on.

Why: TensorFlow enables oneDNN by default only on CPUs with AVX-512 VNNI / BF16 / AMX. On an AVX2-only host (the
2-core AMD EPYC this project trains on) it falls back to Eigen kernels that run the default member's training step
(MobileNetV2, batch 32) on about one core: 1.37 s a step, against 0.68 s with oneDNN on the same host. The switch
is read once, when TensorFlow is imported, so it must be set before anything imports it.
"""

from __future__ import annotations

import os

SWITCH = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn() -> None:
    """Ask for oneDNN unless the caller already chose (an explicit ``TF_ENABLE_ONEDNN_OPTS=0`` is kept)."""
    os.environ.setdefault(SWITCH, "1")
