"""Calibration of the fused ensemble on validation: temperature, threshold and the "uncertain" band.

Why: the fused ``prob`` is a weighted average of member sigmoids, trained with cross-entropy on class-balanced
batches; it ranks faces well but is not a probability (averaging pulls scores towards the middle, early stopping
on AUC does not care about calibration). One temperature ``T`` fitted by minimising the validation NLL,
``calibrated = sigmoid(logit(p) / T)``, fixes most of that without changing any decision (it is monotone), and is
small enough to live inside the ONNX graph (:func:`deepguard.convert.fuse.fuse_members`), so every consumer of
``score`` sees the same calibrated number.

Verdicts. ``threshold`` = Youden's J on the calibrated validation scores (class-prior free; identical decisions to
J on the raw scores). The *uncertain band* ``[lo, hi)`` is chosen so that each confident verdict is right at least
``target`` (default 90 %) of the time on validation:

- ``lo`` = the largest cut ``<= threshold`` such that at least ``target`` of the val faces scoring ``< lo`` are
  real (the "real" verdict's negative predictive value);
- ``hi`` = the smallest cut ``>= threshold`` such that at least ``target`` of the val faces scoring ``>= hi`` are
  fake (the "fake" verdict's precision);
- each side needs ``min_support`` faces; when no cut reaches the target on a side, that side falls back to a
  narrow band of ``fallback`` (0.05) around the threshold and ``fallback_used`` says so.

Verdict = real below ``lo``, uncertain in ``[lo, hi)``, fake at or above ``hi`` (:func:`deepguard.runtime.aggregate.
verdict`); ``lo <= threshold <= hi`` always, so a graded verdict never contradicts the binary one, and a model that
already reaches the target at the threshold gets an empty band (``lo == hi == threshold``). The precisions are
measured at the validation class balance (DFDC val is 1:1); at another base rate they shift, as does the meaning
of a calibrated probability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit, here and in the ONNX graph
T_BOUNDS = (0.05, 20.0)
ECE_BINS = 15


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``: what the fused graph computes for ``prob`` (in float64; T == 1: ``p`` as is)."""
    if float(temperature) == 1.0:
        return np.asarray(p, np.float64)
    return 1.0 / (1.0 + np.exp(-logit(p) / float(temperature)))


def nll(p: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary negative log-likelihood (log-loss) of P(fake) ``p`` for labels 0=real / 1=fake."""
    z, y = logit(p), np.asarray(labels, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def ece(p: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake): equal-width bins, sum of |fake rate - mean p| weighted by bin size."""
    p, y = np.asarray(p, np.float64), np.asarray(labels, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / max(1, len(p)))


def fit_temperature(p: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in :data:`T_BOUNDS` minimising the NLL of ``sigmoid(logit(p) / T)`` (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    z, y = logit(p), np.asarray(labels, np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("fit_temperature needs both real (0) and fake (1) labels")

    def loss(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cut maximising TPR - FPR (balanced accuracy); faces with ``score >= threshold`` are fake."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, scores)
    return float(np.clip(thr[int(np.argmax(tpr - fpr))], 1e-3, 1 - 1e-3))


#: Most of any one real source's validation faces that may score "fake" under the source-aware rule.
MAX_FALSE_ALARM = 0.05


def false_alarm_cut(
    scores: np.ndarray, labels: np.ndarray, sources, max_rate: float = MAX_FALSE_ALARM
) -> float:
    """The lowest cut at which no real source has more than ``max_rate`` of its real faces scoring ``>= cut``.

    Why per source: a pooled false-alarm rate is dominated by the largest real source; a newsroom's photos are
    not DFDC video frames, so every kind of real face must rarely be called fake, the worst source included.
    """
    s, y, src = np.asarray(scores, np.float64), np.asarray(labels).astype(int), np.asarray(sources)
    cut = 0.0
    for name in np.unique(src[y == 0]):
        real = np.sort(s[(y == 0) & (src == name)])[::-1]
        k = int(np.floor(max_rate * len(real)))  # this many may score >= cut
        if k < len(real):
            cut = max(cut, float(np.nextafter(real[k], np.inf)))
    return float(np.clip(cut, 1e-3, 1 - 1e-3))


def choose_band(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    target: float = 0.9,
    min_support: int = 10,
    fallback: float = 0.05,
) -> tuple[float, float, list[str]]:
    """``(lo, hi, fallback_sides)`` by the rule in the module docstring; ``fallback_sides`` lists "low"/"high"."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    real_below = np.concatenate([[0], np.cumsum(y == 0)])  # real faces among the first k (lowest) scores
    fake_from = np.concatenate([np.cumsum((y == 1)[::-1])[::-1], [0]])  # fake faces among scores k..n-1
    cuts = np.unique(np.concatenate([s, [threshold]]))
    k = np.searchsorted(s, cuts, side="left")  # faces with score < cut are s[:k]
    below_ok = (k >= min_support) & (real_below[k] >= target * np.maximum(k, 1))
    above_n = n - k
    above_ok = (above_n >= min_support) & (fake_from[k] >= target * np.maximum(above_n, 1))
    fell_back = []
    low = cuts[below_ok & (cuts <= threshold)]
    if low.size:
        lo = float(low.max())
    else:
        lo, fell_back = max(0.0, threshold - fallback), [*fell_back, "low"]
    high = cuts[above_ok & (cuts >= threshold)]
    if high.size:
        hi = float(high.min())
    else:
        hi, fell_back = min(1.0, threshold + fallback), [*fell_back, "high"]
    return lo, hi, fell_back


def grey_floor(
    grey_scores: np.ndarray, labels: np.ndarray, low: float, *, target: float = 0.9, min_support: int = 10
) -> float | None:
    """The floor for black-and-white faces (runtime/colour.py): ``low`` when, on desaturated val faces, the REAL
    verdict (score < ``low``) is right less often than ``target`` - the precision that defines the band - else None.

    Why: the band's low edge is chosen on colour faces; a model that learned "grey means real" puts desaturated
    fakes under it too, and its REAL on a grey face then means less than the card says. Too few grey faces under
    ``low`` (< ``min_support``) to tell: no floor.
    """
    s, y = np.asarray(grey_scores, np.float64).reshape(-1), np.asarray(labels).astype(int).reshape(-1)
    called_real = s < low
    if called_real.sum() < min_support:
        return None
    return float(low) if float(np.mean(y[called_real] == 0)) < target else None


def graded_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, band: tuple[float, float] | None
) -> dict:
    """How the graded verdicts do on labelled faces: share uncertain, accuracy and precision of real/fake verdicts.

    Without a band the numbers describe the binary verdict (nothing uncertain).
    """
    s, y = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).astype(int).reshape(-1)
    lo, hi = band if band is not None else (threshold, threshold)
    real, fake = s < lo, s >= hi
    sure = real | fake

    def frac(a: np.ndarray, of: np.ndarray) -> float | None:
        return float(np.mean(a[of])) if of.any() else None

    return {
        "n": int(len(s)),
        "uncertain_fraction": float(np.mean(~sure)) if len(s) else 0.0,
        "accuracy_outside_band": frac(fake == (y == 1), sure),
        "real_verdict_precision": frac(y == 0, real),
        "fake_verdict_precision": frac(y == 1, fake),
    }


@dataclass
class Calibration:
    """Everything the builder stores (metadata, metrics.json, model card) about calibration and verdicts."""

    temperature: float
    threshold: float
    uncertain_low: float
    uncertain_high: float
    target_precision: float
    fallback_sides: list[str]
    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    uncertain_fraction: float  # of val faces landing in [lo, hi)
    accuracy_outside_band: float | None  # of the real/fake verdicts on val (None if every face is uncertain)
    real_verdict_precision: float | None  # share of val faces scoring < lo that are real
    fake_verdict_precision: float | None  # share of val faces scoring >= hi that are fake
    accuracy_at_threshold: float  # binary accuracy at the threshold, for comparison
    #: None: Youden threshold; else the false-alarm rule's cap (no real source above it called fake on val)
    max_false_alarm: float | None = None

    def metadata(self, digits: int = 4) -> dict[str, float]:
        """The ``deepguard.*`` keys, rounded (rounding is monotone, so ``lo <= threshold <= hi`` still holds)."""
        return {
            "temperature": round(self.temperature, 6),
            "threshold": round(self.threshold, digits),
            "uncertain_low": round(self.uncertain_low, digits),
            "uncertain_high": round(self.uncertain_high, digits),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    sources=None,
    max_false_alarm: float = MAX_FALSE_ALARM,
    target: float = 0.9,
    min_support: int = 10,
) -> Calibration:
    """Fit T on raw fused val probabilities, then threshold and band on the calibrated ones.

    Without ``sources``: Youden threshold and the precision band of the module docstring. With ``sources`` (one
    name per face) the *false-alarm rule*: threshold = the fake cut = :func:`false_alarm_cut` (no real source
    over ``max_false_alarm`` called fake), and the band's low edge by the same "real" precision rule, so the band
    is ``[lo, threshold)`` and "fake" means the score passed the false-alarm-controlled cut.
    """
    p, y = np.asarray(probs, np.float64).reshape(-1), np.asarray(labels).astype(int).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"{len(y)} labels for {len(p)} probabilities")
    t = fit_temperature(p, y)
    c = apply_temperature(p, t)
    if sources is None:
        thr = youden_threshold(c, y)
        lo, hi, fell_back = choose_band(c, y, thr, target=target, min_support=min_support)
    else:
        thr = false_alarm_cut(c, y, sources, max_false_alarm)
        lo, _, fell_back = choose_band(c, y, thr, target=target, min_support=min_support)
        hi, fell_back = thr, [x for x in fell_back if x != "high"]
    graded = graded_metrics(c, y, thr, (lo, hi))
    return Calibration(
        temperature=t,
        threshold=thr,
        uncertain_low=lo,
        uncertain_high=hi,
        target_precision=target,
        fallback_sides=fell_back,
        n=len(p),
        nll_before=nll(p, y),
        nll_after=nll(c, y),
        ece_before=ece(p, y),
        ece_after=ece(c, y),
        uncertain_fraction=graded["uncertain_fraction"],
        accuracy_outside_band=graded["accuracy_outside_band"],
        real_verdict_precision=graded["real_verdict_precision"],
        fake_verdict_precision=graded["fake_verdict_precision"],
        accuracy_at_threshold=float(np.mean((c >= thr) == (y == 1))),
        max_false_alarm=None if sources is None else float(max_false_alarm),
    )
