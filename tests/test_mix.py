"""What a training batch is made of: the mix rule (training/mix.py), the stream that follows it, and its JPEG quality.

The last test is the one that guards against a compression shortcut: the stored files' JPEG quality differs by
source (and so by class); after the training input pipeline the real and fake crops must not differ in it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest

from deepguard.training.data import CropSet
from deepguard.training.mix import SBI, draw, mix_pools, mix_shares

#: (source, label, count): two real-only sources, one swap source (both classes), two fake-only (synthetic).
LAYOUT = [("realA", 0, 10), ("realB", 0, 3), ("swap", 0, 5), ("swap", 1, 8), ("gan1", 1, 4), ("gan2", 1, 6)]


def _labels_sources(layout=LAYOUT):
    labels = np.concatenate([[lab] * n for _, lab, n in layout]).astype(np.float32)
    sources = [s for s, _, n in layout for _ in range(n)]
    return labels, sources


def _drawn(shares: dict[str, float]) -> dict[str, float]:
    """The pools that are drawn at all (with ``sbi_fraction=0`` mix_pools still lists self-blend pools at 0)."""
    return {k: v for k, v in shares.items() if v > 0}


def _expected(sbi_fraction: float) -> dict[str, float]:
    """The rule written out by hand for LAYOUT (module docstring of training/mix.py): shares go as sqrt(size)."""
    sbi = 0.5 * sbi_fraction
    real = {"realA": 10, "realB": 3, "swap": 5}  # real crops per source
    norm = sum(n**0.5 for n in real.values())
    out = {f"{k} real": 0.5 * n**0.5 / norm for k, n in real.items()}
    if sbi:
        out.update({f"{k} {SBI}": sbi * n**0.5 / norm for k, n in real.items()})
    rest = 0.5 - sbi
    swap, synthetic = 8**0.5, 10**0.5  # kinds: swap fakes (8) vs synthetic fakes (gan1 4 + gan2 6)
    out["swap fake"] = rest * swap / (swap + synthetic)
    gan = rest * synthetic / (swap + synthetic)
    out.update({"gan1 fake": gan * 2 / (2 + 6**0.5), "gan2 fake": gan * 6**0.5 / (2 + 6**0.5)})
    return out


@pytest.mark.parametrize("sbi_fraction", [0.0, 1 / 3, 0.6])
def test_mix_shares_follow_the_rule(sbi_fraction) -> None:
    labels, sources = _labels_sources()
    pools = mix_pools(labels, sources, sbi_fraction)
    shares = _drawn(mix_shares(pools))
    want = _expected(sbi_fraction)
    assert set(shares) == set(want)
    for k, v in want.items():
        assert shares[k] == pytest.approx(v, abs=1e-4), k
    assert sum(p.share for p in pools) == pytest.approx(1.0)
    src = np.asarray(sources)
    for p in pools:  # every pool draws from its own source and class only
        kind = p.name.split(" ", 1)[1]
        assert set(src[p.indices]) == {p.name.split(" ")[0]}
        assert set(labels[p.indices].astype(int)) == ({1} if kind == "fake" else {0})
        assert p.self_blend == (kind == SBI) and p.label == (0 if kind == "real" else 1)


def test_draw_frequencies_and_coverage() -> None:
    labels, sources = _labels_sources()
    pools = mix_pools(labels, sources, 1 / 3)
    n = 60_000
    it = draw(pools, seed=5)
    picks = [next(it) for _ in range(n)]
    src = np.asarray(sources)
    freq = Counter()
    per_index = {p.name: Counter() for p in pools}
    for i, blend in picks:
        lab = int(labels[i])
        kind = SBI if blend else ("fake" if lab else "real")
        assert not blend or lab == 0, "self-blends are made from real crops"
        name = f"{src[i]} {kind}"
        freq[name] += 1
        per_index[name][i] += 1
    want = _expected(1 / 3)
    for k, v in want.items():
        assert freq[k] / n == pytest.approx(v, abs=0.01), (k, freq[k] / n, v)
    real = sum(c for k, c in freq.items() if k.endswith(" real")) / n
    assert real == pytest.approx(0.5, abs=0.01)
    # self-blends come from every real source
    assert {k.split(" ")[0] for k in freq if k.endswith(SBI)} == {"realA", "realB", "swap"}
    # reshuffled passes: every crop of a pool is used, none more than once ahead of the others
    for p in pools:
        counts = [per_index[p.name][i] for i in p.indices]
        assert min(counts) > 0 and max(counts) - min(counts) <= 1, (p.name, counts)
    again = draw(pools, seed=5)
    assert [next(again) for _ in range(500)] == picks[:500]  # seeded


def test_missing_kind_and_unusable_self_blend_sources() -> None:
    labels, sources = _labels_sources([("realA", 0, 4), ("realB", 0, 4), ("swap", 0, 2), ("swap", 1, 3)])
    shares = mix_shares(mix_pools(labels, sources, 0.5))
    # no synthetic kind: the swap fakes take the whole rest
    assert shares["swap fake"] == pytest.approx(0.25, abs=1e-4)
    labels, sources = _labels_sources([("realA", 0, 4), ("gan", 1, 3)])
    assert _drawn(mix_shares(mix_pools(labels, sources, 0.0))) == {"realA real": 0.5, "gan fake": 0.5}
    # realB has no crop with usable landmarks: the self-blend share goes to the other real sources
    labels, sources = _labels_sources([("realA", 0, 4), ("realB", 0, 4), ("gan", 1, 3)])
    usable = np.array([1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    pools = {p.name: p for p in mix_pools(labels, sources, 0.5, usable)}
    assert f"realB {SBI}" not in pools
    assert pools[f"realA {SBI}"].share == pytest.approx(0.25)
    assert pools[f"realA {SBI}"].indices.tolist() == [0, 2, 3]
    assert pools["realB real"].share == pytest.approx(0.25)  # still drawn as a real
    # sizes weigh as their square root: 16 crops against 4 get twice the share, not four times
    labels, sources = _labels_sources([("big", 0, 16), ("small", 0, 4), ("gan", 1, 3)])
    shares = mix_shares(mix_pools(labels, sources, 0.0))
    assert shares["big real"] == pytest.approx(2 * shares["small real"], abs=1e-3)
    with pytest.raises(ValueError):
        mix_pools(np.zeros(4), ["a"] * 4)
    single = _drawn(mix_shares(mix_pools(np.array([0, 0, 1, 1, 1]), None)))  # no sources: one source "all"
    assert single == {"all real": 0.5, "all fake": 0.5}


def _crop_set(rng, layout, size: int = 8, fill=None) -> CropSet:
    labels, sources = _labels_sources(layout)
    n = len(labels)
    images = rng.integers(0, 200, (n, size, size, 3)).astype(np.uint8) if fill is None else fill
    return CropSet(images, labels, [f"g{i}" for i in range(n)], [f"p{i}" for i in range(n)], sources)


def test_training_stream_follows_the_mix(monkeypatch) -> None:
    """train.training_stream draws by the mix and self-blends exactly the crops the mix marks (sbi stubbed)."""
    pytest.importorskip("tensorflow")
    import deepguard.training.sbi as sbi
    from deepguard.training.train import TrainConfig, training_stream

    rng = np.random.default_rng(0)
    cs = _crop_set(rng, LAYOUT)
    cs.images[:] = np.arange(len(cs.labels), dtype=np.uint8)[:, None, None, None]  # crop i is filled with i
    blended = []

    def fake_blend(img, pts, _rng):
        blended.append(int(img[0, 0, 0]))
        return np.full_like(img, 255), None

    monkeypatch.setattr(sbi, "self_blend", fake_blend)
    points = np.zeros((len(cs.labels), 5, 2), np.float32)
    cfg = TrainConfig(input_size=8, sbi_fraction=1 / 3, seed=2)
    stream = training_stream(cs, cfg, points, np.ones(len(cs.labels), bool))
    n = 12_000
    freq = Counter()
    src = np.asarray(cs.sources)
    for _ in range(n):
        img, y = next(stream)
        if img[0, 0, 0] == 255:
            assert y.tolist() == [1.0]
            freq[f"{src[blended[-1]]} {SBI}"] += 1
        else:
            i = int(img[0, 0, 0])
            assert y.tolist() == [cs.labels[i]]
            freq[f"{src[i]} {'fake' if cs.labels[i] else 'real'}"] += 1
    assert all(cs.labels[i] == 0 for i in blended)
    for k, v in _expected(1 / 3).items():
        assert freq[k] / n == pytest.approx(v, abs=0.02), (k, freq[k] / n, v)


# --- JPEG quality: the stored quality must not survive into the batches --------------------------------------

SIZE = 64  # a multiple of 8: the last encoder's 8x8 grid is the crop's grid
STORED_Q = {0: 75, 1: 95}  # real sources stored at quality 75, fake sources at 95


def _encode(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def recompress_error(img: np.ndarray) -> float:
    """Mean |pixel change| when re-encoding at quality 90: small for an image already compressed harder."""
    return float(np.abs(_encode(img, 90).astype(np.float64) - img).mean())


def zero_hf_dct(img: np.ndarray) -> float:
    """Share of (near) zero high-frequency DCT coefficients in the 8x8 blocks of the luma: quantisation's trace."""
    y = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32) - 128.0
    n = y.shape[0] // 8 * 8
    blocks = np.stack([cv2.dct(y[i : i + 8, j : j + 8]) for i in range(0, n, 8) for j in range(0, n, 8)])
    return float(np.mean(np.abs(blocks[:, 4:, 4:]) < 0.5))


ESTIMATORS = (recompress_error, zero_hf_dct)


@pytest.fixture(scope="module")
def jpeg_set(astronaut) -> CropSet:
    """Face crops of the astronaut (random framing), real sources stored at q75, fake sources at q95."""
    rng = np.random.default_rng(4)
    layout = [("camA", 0, 24), ("camB", 0, 24), ("swap", 0, 24), ("swap", 1, 24), ("gan", 1, 24)]
    labels, sources = _labels_sources(layout)
    imgs = []
    for lab in labels.astype(int):
        s = int(rng.integers(140, 260))
        y, x = rng.integers(0, 512 - s, 2)
        c = cv2.resize(astronaut[y : y + s, x : x + s], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        imgs.append(_encode(c if rng.random() < 0.5 else c[:, ::-1], STORED_Q[lab]))
    n = len(labels)
    return CropSet(np.stack(imgs), labels, [f"g{i}" for i in range(n)], [f"p{i}" for i in range(n)], sources)


def _batches(cs: CropSet, cfg, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops and labels exactly as training sees them: train.make_datasets (stream + augment map + batching)."""
    from deepguard.training.train import make_datasets

    ds, _ = make_datasets(cs, cs, cfg)
    xs, ys = [], []
    for x, y in ds.take(n_batches):
        xs.append(x.numpy())
        ys.append(y.numpy()[:, 0])
    x = np.clip(np.rint(np.concatenate(xs)), 0, 255).astype(np.uint8)
    return x, np.concatenate(ys).astype(int)


def _ks(x: np.ndarray, y: np.ndarray, f) -> float:
    from scipy.stats import ks_2samp

    v = np.array([f(im) for im in x])
    return float(ks_2samp(v[y == 0], v[y == 1]).statistic)


def test_batches_do_not_tell_the_class_by_jpeg_quality(jpeg_set) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("scipy")
    from deepguard.training.train import TrainConfig

    cfg = TrainConfig(input_size=SIZE, batch_size=50, seed=3)
    # negative control: the same pipeline without augmentation hands the stored crops over, and the estimators
    # separate the classes by their stored quality (so a pipeline that lets it through fails the check below)
    x, y = _batches(jpeg_set, replace(cfg, augment=False), 4)
    assert 0.3 < y.mean() < 0.7
    for f in ESTIMATORS:
        assert _ks(x, y, f) > 0.5, f.__name__
    # the training pipeline: real and fake crops' compression is drawn from one distribution (KS ~0.05-0.1 here;
    # 0.2 is about the 0.1 % critical value for 200 vs 200)
    x, y = _batches(jpeg_set, cfg, 8)
    assert (y == 0).sum() > 150 and (y == 1).sum() > 150
    for f in ESTIMATORS:
        assert _ks(x, y, f) < 0.2, f.__name__


def _is_grey(img: np.ndarray) -> bool:
    c = img.astype(np.int16)
    return int(np.abs(c[..., 0] - c[..., 1]).max()) <= 2 and int(np.abs(c[..., 1] - c[..., 2]).max()) <= 2


def test_black_and_white_is_not_a_real_only_cue(jpeg_set) -> None:
    """Real photo sources hold B/W portraits (Unsplash: 20 %) and no fake source does; training must show grey
    fakes too, or "grey" becomes evidence of "real" (v8 called 49 % of desaturated fakes real)."""
    pytest.importorskip("tensorflow")
    from deepguard.training.augment import AugmentConfig
    from deepguard.training.train import TrainConfig

    imgs = np.asarray(jpeg_set.images).copy()
    real = np.flatnonzero(jpeg_set.labels == 0)
    grey_real = real[::3]  # a third of the real crops are B/W photos, as stored
    imgs[grey_real] = cv2.cvtColor(
        cv2.cvtColor(imgs[grey_real].reshape(-1, SIZE, 3), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB
    ).reshape(imgs[grey_real].shape)
    cs = CropSet(imgs, jpeg_set.labels, jpeg_set.groups, jpeg_set.paths, jpeg_set.sources)
    cfg = TrainConfig(input_size=SIZE, batch_size=50, seed=5)
    # negative control: without augmentation every grey crop is real
    x, y = _batches(cs, replace(cfg, augment=False), 4)
    grey = np.array([_is_grey(im) for im in x])
    assert grey[y == 0].mean() > 0.15 and grey[y == 1].sum() == 0
    # the training pipeline desaturates crops of both classes (p_grey), so a grey crop can be fake
    x, y = _batches(cs, cfg, 8)
    grey = np.array([_is_grey(im) for im in x])
    p = AugmentConfig().p_grey
    assert p > 0 and 0.4 * p < grey[y == 1].mean() < 2.0 * p
