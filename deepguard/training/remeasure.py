"""Re-calibrate and re-measure the installed default model after a change to how the runtime feeds it.

Why: the shipped graphs' calibration (temperature, fake cut, uncertain band) and every number on the model card
are measured on crops as the runtime scores them. When that changes without a retrain - a crop rule
(``crop_context``) or the crop re-encode (``crop_jpeg_quality``, :mod:`deepguard.runtime.crop`) - the stored cut
no longer follows the card's false-alarm rule on what users' crops look like. This refits all of it with the
builder's own steps (:func:`deepguard.training.default.build_default_model`), taking the members' raw
probabilities from the FP32 graph's ``member_probs`` instead of the Keras members (equal within the conversion
parity, |Δlogit| <= 1e-4), and rewrites the temperature inside both graphs, their metadata, ``metrics.json`` and
the card. The weights are untouched.

    python -m deepguard.training.remeasure [--data MANIFEST ...] [--cache runs/cache] [--loso runs/loso/loso.json]

``--loso`` puts a leave-one-source-out run (``deepguard loso``) on the card, as ``train-default`` does with
``RUN/loso/loso.json``; with ``--card-only`` nothing else is done (a LOSO run says nothing new about the shipped
weights).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.training.default import DEFAULT_DATA


def set_temperature(path: Path, temperature: float) -> None:
    """Rewrite the calibration constant inside a fused graph (``prob = sigmoid(logit(mean) / T)``, convert/fuse.py)."""
    import onnx
    from onnx import numpy_helper

    from deepguard.errors import ModelError

    model = onnx.load(str(path))
    hits = [i for i in model.graph.initializer if i.name.endswith("calibrate/inv_temperature")]
    if len(hits) != 1:
        raise ModelError(f"{path}: expected one calibrate/inv_temperature constant, found {len(hits)}")
    hits[0].CopyFrom(numpy_helper.from_array(np.array(1.0 / temperature, np.float32), hits[0].name))
    onnx.save(model, str(path))


def remeasure_default(
    data: Sequence[str | Path] = DEFAULT_DATA,
    cache_dir: str | Path = "runs/cache",
    loso: str | Path | None = None,
    why: str = "crops re-encoded like training crops",
) -> dict:
    """Calibrate the installed FP32/INT8 default on val as the runtime scores it, then re-measure and re-card."""
    from deepguard.convert.calibrate import calibrate
    from deepguard.convert.metadata import write_metadata
    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES, FaceClassifier
    from deepguard.training import default as build
    from deepguard.training.card import write_card_and_metrics
    from deepguard.training.grey import store_grey_floor
    from deepguard.training.recrop import INFERENCE_JPEG_QUALITY
    from deepguard.training.sources import load_sources

    t0 = time.time()
    cache_dir = Path(cache_dir)
    old = json.loads((DEFAULT_DIR / "metrics.json").read_text())
    if loso:
        old["loso"] = json.loads(Path(loso).read_text())
    res = {p: DEFAULT_DIR / DEFAULT_NAMES[p] for p in ("fp32", "int8")}
    res["report"] = json.loads((DEFAULT_DIR / "parity.json").read_text())
    val, _ = load_sources(data, "val", int(old["recipe"]["input_size"]), cache_dir)
    dfdc = build._original_dfdc_val(data, int(old["recipe"]["input_size"]), cache_dir)
    for prec in ("fp32", "int8"):
        write_metadata(res[prec], {"crop_jpeg_quality": INFERENCE_JPEG_QUALITY})
    fp32 = FaceClassifier(res["fp32"], providers="cpu", batch_size=64)
    members = np.concatenate([fp32.score(val.images[i : i + 512])[1] for i in range(0, len(val.images), 512)])
    names = list(old["weights"])
    weights = [float(old["weights"][n]) for n in names]
    p = np.clip(members.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = {n: np.log(p[:, j] / (1 - p[:, j])) for j, n in enumerate(names)}
    cal = calibrate(build.fused_val_probs(logits, weights), val.labels, sources=val.sources)
    fitted = cal.metadata()
    for prec in ("fp32", "int8"):
        set_temperature(res[prec], fitted["temperature"])
        write_metadata(res[prec], fitted)
    scores = {prec: build._onnx_scores(res[prec], val.images) for prec in ("fp32", "int8")}
    cal_meta = build._store_shipped_cut(res, fitted, scores, val)
    grey = store_grey_floor(res, cal_meta, val)
    if grey["floor"] is not None:  # grey val faces now score at least the floor, as users will see them
        scores = {prec: build._onnx_scores(res[prec], val.images) for prec in ("fp32", "int8")}
    summary = {
        **old,
        **build._measured_summary(
            res,
            {"members": old["weights"], **old},
            logits,
            weights,
            cal,
            cal_meta,
            val,
            dfdc,
            cache_dir,
            scores,
        ),
        "parity": res["report"],
        "grey": grey,
        "remeasured": {
            "seconds": round(time.time() - t0, 1),
            "why": why,
        },
    }
    summary["latency"] = build.per_face_latency(
        {p: res[p] for p in ("fp32", "int8")}, np.asarray(val.images[:16])
    )
    write_card_and_metrics(summary, DEFAULT_DIR)
    return summary


def put_loso_on_card(loso: str | Path, model_dir: str | Path | None = None) -> Path:
    """Only re-write the card and ``metrics.json`` of an installed model with a new ``deepguard loso`` run.

    Why: a LOSO run trains models of its own and says nothing new about the shipped weights, so nothing needs
    re-measuring; the card is rendered again from the stored measurements (``metrics.json``, ``parity.json``).
    """
    from deepguard.runtime.classify import DEFAULT_DIR
    from deepguard.training.card import write_card_and_metrics

    model_dir = Path(model_dir) if model_dir else DEFAULT_DIR
    summary = json.loads((model_dir / "metrics.json").read_text())
    summary["loso"] = json.loads(Path(loso).read_text())
    summary["parity"] = json.loads((model_dir / "parity.json").read_text())
    return write_card_and_metrics(summary, model_dir)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=list(DEFAULT_DATA))
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--loso", help="a `deepguard loso` result (loso.json) for the card")
    ap.add_argument(
        "--why", default="crops re-encoded like training crops", help="what changed, for the card"
    )
    ap.add_argument(
        "--card-only", action="store_true", help="only put --loso on the card; measure nothing again"
    )
    args = ap.parse_args(argv)
    if args.card_only:
        if not args.loso:
            ap.error("--card-only needs --loso")
        print(put_loso_on_card(args.loso))
        return
    s = remeasure_default(args.data, args.cache, args.loso, args.why)
    print(
        json.dumps(
            {"calibration": s["calibration"]["stored"], "by_source_int8": s["by_source"]["int8"]}, indent=1
        )
    )


if __name__ == "__main__":
    main()
