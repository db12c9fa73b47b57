"""Build step: measure the built graphs on black-and-white val faces and store a grey floor when they need one.

Why: the uncertain band's low edge is chosen so that a REAL verdict is right at least 90 % of the time on val
faces - colour faces. A model that learned "grey means real" (runtime/colour.py says how v8 did) puts
desaturated fakes under that edge too, and a REAL on a grey face then means less than the card says. Each graph
scores every val face desaturated (HLS saturation 0, the ``saturation:0`` perturbation) as the runtime would;
where the REAL verdict's precision there misses the band's target in any graph, all graphs get
``grey_floor`` = the band's low edge in their metadata, so grey faces read UNCERTAIN at best.
"""

from __future__ import annotations

import numpy as np

from deepguard.training.data import CropSet


def desaturated(images: np.ndarray) -> np.ndarray:
    """Every crop black and white (what ``--perturb saturation:0`` does to an image)."""
    from deepguard.evaluation.perturb import saturation

    return np.stack([saturation(np.asarray(im), 0.0) for im in images])


def grey_scores(path, images: np.ndarray) -> np.ndarray:
    """The graph's scores of the desaturated crops, without any floor the graph may already carry."""
    from deepguard.runtime.classify import FaceClassifier

    clf = FaceClassifier(path, providers="cpu", batch_size=64)
    clf.grey_floor = None  # measure the model, not a floor an earlier build stored
    grey = desaturated(images)
    return np.concatenate([clf.score(grey[i : i + 512])[0] for i in range(0, len(grey), 512)])


def store_grey_floor(res: dict, cal_meta: dict[str, float], val: CropSet, target: float = 0.9) -> dict:
    """Measure each built graph (``res``: precision -> path) on desaturated val; write the floor where needed.

    Returns what the card reports: per graph the REAL verdict's precision on grey faces and the share of grey
    fakes called real, and the floor stored (None: none needed).
    """
    from deepguard.convert.calibrate import grey_floor
    from deepguard.convert.metadata import drop_metadata, write_metadata

    low = float(cal_meta["uncertain_low"])
    y = np.asarray(val.labels).astype(int)
    report: dict = {"target_precision": target, "low": low, "graphs": {}}
    floors = []
    for prec in ("fp32", "int8"):
        s = grey_scores(res[prec], np.asarray(val.images))
        real = s < low
        report["graphs"][prec] = {
            "real_verdict_precision": _share(y[real] == 0),
            "fakes_called_real": _share(real[y == 1]),
            "reals_called_real": _share(real[y == 0]),
        }
        floors.append(grey_floor(s, y, low, target=target))
    floor = max((f for f in floors if f is not None), default=None)
    report["floor"] = floor
    for prec in ("fp32", "fp16", "int8"):
        if res.get(prec) and floor is None:
            drop_metadata(res[prec], "grey_floor")
        elif res.get(prec):
            write_metadata(res[prec], {"grey_floor": floor})
    if floor is not None:
        print(
            f"[build] black-and-white faces: REAL under {target:.0%} precision, grey floor {floor}",
            flush=True,
        )
    return report


def _share(hits: np.ndarray) -> float | None:
    return float(np.mean(hits)) if hits.size else None
