"""Several data roots, each row tagged with its source, re-cropped like inference (training/sources.py).

The data are generated here: the scikit-image astronaut's face, scaled and placed in synthetic frames (so the
product's BlazeFace finds it), written as small JPEGs under a source-aware manifest and a real/ fake/ folder tree.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepguard.errors import MediaError
from deepguard.training.recrop import CONTEXT_MARGIN
from deepguard.training.sources import context_of, list_sourced, load_sources, manifest_sources

#: Manifest rows per (source, label, split): counts of face images (+ images without a face, dropped).
MANIFEST = {
    ("swap", "real", "train"): 3,
    ("swap", "fake", "train"): 3,
    ("photos", "real", "train"): 3,
    ("gan", "fake", "train"): 3,
    ("swap", "real", "val"): 2,
    ("swap", "fake", "val"): 2,
    ("photos", "real", "val"): 2,
    ("gan", "fake", "val"): 2,
}
NO_FACE = {("photos", "real", "train"): 1}
#: The folder root "extra": real/ and fake/ per split.
FOLDER = {("real", "train"): 2, ("fake", "train"): 2, ("real", "val"): 2, ("fake", "val"): 1}


def face_image(astronaut: np.ndarray, rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A portrait-like frame: the astronaut's face at a random scale and place on a noisy coloured background."""
    face = astronaut[0:260, 120:360]
    s = rng.uniform(0.35, 0.6)
    f = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    h, w = f.shape[:2]
    H, W = h + int(rng.integers(0, 40)), w + int(rng.integers(0, 40))
    bg = rng.integers(40, 200, 3)
    img = np.clip(bg + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    img[y : y + h, x : x + w] = f
    if fake:  # a visible difference the tiny end-to-end training can pick up
        img = np.clip(img.astype(np.int16) + np.array([25, -10, -10]), 0, 255).astype(np.uint8)
    return img


def no_face_image(rng: np.random.Generator) -> np.ndarray:
    ramp = np.linspace(0, 255, 90).astype(np.uint8)
    img = np.tile(ramp[None, :, None], (110, 1, 3)) // np.array([1, 2, 3], np.uint8)
    return (img + np.uint8(rng.integers(0, 20))).astype(np.uint8)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def write_sourced_data(root: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    """``(manifest with a source column, real/ fake/ folder root)`` under ``root``."""
    rng = np.random.default_rng(0)
    multi = root / "multi"
    rows = []
    for (src, lab, split), n in MANIFEST.items():
        for i in range(n + NO_FACE.get((src, lab, split), 0)):
            name = f"{src}/{split}_{lab}_{i}.jpg"
            img = face_image(astronaut, rng, lab == "fake") if i < n else no_face_image(rng)
            _write(multi / name, img)
            rows.append([name, lab, src, f"{src}-{lab}-{i // 2}", split])
    with (multi / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "source", "group", "split"])
        w.writerows(rows)
    extra = root / "extra"
    for (lab, split), n in FOLDER.items():
        for i in range(n):
            _write(extra / split / lab / f"{lab}{i}.jpg", face_image(astronaut, rng, lab == "fake"))
    return multi / "manifest.csv", extra


def expected_counts(split: str) -> dict[str, dict[str, int]]:
    """Per source: files, faces, no_face (what load_sources must report)."""
    out: dict[str, dict[str, int]] = {}
    for (src, lab, sp), n in MANIFEST.items():
        if sp == split:
            d = out.setdefault(src, {"files": 0, "faces": 0, "no_face": 0})
            extra = NO_FACE.get((src, lab, sp), 0)
            d["files"] += n + extra
            d["faces"] += n
            d["no_face"] += extra
    n = sum(v for (_, sp), v in FOLDER.items() if sp == split)
    out["extra"] = {"files": n, "faces": n, "no_face": 0}
    return dict(sorted(out.items()))


@pytest.fixture(scope="module")
def data(tmp_path_factory, astronaut) -> tuple[Path, Path]:
    return write_sourced_data(tmp_path_factory.mktemp("sources"), astronaut)


def test_manifest_sources(data) -> None:
    manifest, _ = data
    col = manifest_sources(manifest)
    assert col is not None and len(col) == sum(MANIFEST.values()) + sum(NO_FACE.values())
    assert set(col) == {"swap", "photos", "gan"}
    plain = manifest.parent / "plain.csv"
    plain.write_text("file,label\nswap/train_real_0.jpg,real\n")
    assert manifest_sources(plain) is None


def test_list_sourced(data) -> None:
    manifest, extra = data
    paths, labels, groups, sources = list_sourced([manifest, extra], "train")
    assert len(paths) == len(labels) == len(groups) == len(sources)
    for p, lab, src in zip(paths, labels, sources, strict=True):
        if src == "extra":  # a folder root: the folder's name, labels from real/ fake/
            assert p.parent.parent.parent == extra and p.parent.name == ("fake" if lab else "real")
        else:  # the manifest's column, which is also the sub-folder the file was written to
            assert p.parent.name == src and ("_fake_" in p.name) == bool(lab) and "train_" in p.name
    n_train = {s: 0 for s in ("swap", "photos", "gan")}
    for (src, _, sp), n in MANIFEST.items():
        n_train[src] += (n + NO_FACE.get((src, _, sp), 0)) if sp == "train" else 0
    for s, n in n_train.items():
        assert sources.count(s) == n
    assert sources.count("extra") == 4
    assert all(g.startswith("multi/") for g, s in zip(groups, sources, strict=True) if s != "extra")
    assert all(g.startswith("extra/") for g, s in zip(groups, sources, strict=True) if s == "extra")
    # a manifest without a source column is one source named after its folder
    plain = manifest.parent.parent / "dfdc-like" / "manifest.csv"
    plain.parent.mkdir(exist_ok=True)
    plain.write_text("file,label,split\n../multi/swap/train_real_0.jpg,real,train\nx.jpg,fake,val\n")
    p, lab, _, src = list_sourced([plain], "train")
    assert (
        src == ["dfdc-like"] and lab == [0] and p[0].resolve() == (manifest.parent / "swap/train_real_0.jpg")
    )
    # split None: every row
    p_all, *_, s_all = list_sourced([manifest], None)
    assert len(p_all) == len(s_all) == sum(MANIFEST.values()) + sum(NO_FACE.values())


def test_context_of_is_seeded_by_file_name() -> None:
    a, b = context_of("/x/abc.jpg"), context_of("/y/abc.jpg")
    assert a == b and CONTEXT_MARGIN[0] <= a <= CONTEXT_MARGIN[1]
    vals = {context_of(f"f{i}.jpg") for i in range(50)}
    assert len(vals) == 50 and min(vals) < -0.03 and max(vals) > 0.0


def test_load_sources_report_crops_and_cache(data, tmp_path, monkeypatch) -> None:
    import deepguard.training.sources as sources_mod
    from deepguard.runtime.crop import crop_faces
    from deepguard.runtime.facedet import load_detector
    from deepguard.training.recrop import detect_padded, pick_face

    manifest, extra = data
    cache = tmp_path / "cache"
    cs, report = load_sources([manifest, extra], "train", 48, cache)
    assert report == expected_counts("train")
    n = sum(v["faces"] for v in report.values())
    assert cs.images.shape == (n, 48, 48, 3) and cs.images.dtype == np.uint8
    assert len(cs.labels) == len(cs.groups) == len(cs.paths) == len(cs.sources) == n
    paths, labels, groups, srcs = list_sourced([manifest, extra], "train")
    by_path = {str(p): (lab, g, s) for p, lab, g, s in zip(paths, labels, groups, srcs, strict=True)}
    for p, lab, g, s in zip(cs.paths, cs.labels, cs.groups, cs.sources, strict=True):
        assert by_path[p] == (int(lab), g, s)
    assert [p for p in map(str, paths) if p not in cs.paths] == [
        str(manifest.parent / "photos/train_real_3.jpg")
    ]
    # each crop is the runtime crop of the detected face with the file's own context band
    det = load_detector(None)
    for k in (0, n - 1):
        img = cv2.cvtColor(cv2.imread(cs.paths[k]), cv2.COLOR_BGR2RGB)
        (d,) = detect_padded([img], det)
        want = crop_faces(img, d.boxes[pick_face(d)][None], 48, 0.3, context_of(cs.paths[k]))[0]
        np.testing.assert_array_equal(cs.images[k], want)
    assert cs.images.reshape(n, -1).std(axis=1).min() > 5  # real crops, not zero fill
    # the cache: a second call re-crops nothing and returns the same set
    assert len(list(cache.glob("recrop-train-48-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("re-cropped despite the cache")

    monkeypatch.setattr(sources_mod, "recrop_files", boom)
    cs2, report2 = load_sources([manifest, extra], "train", 48, cache)
    assert report2 == report and cs2.paths == cs.paths and cs2.sources == cs.sources
    np.testing.assert_array_equal(cs2.images, cs.images)


def test_val_crops_are_cut_as_inference_cuts_them(data, tmp_path) -> None:
    """Validation crops keep the model's inference context, not a per-file one: val numbers are the runtime's."""
    from deepguard.runtime.crop import crop_faces
    from deepguard.runtime.facedet import load_detector
    from deepguard.training.recrop import INFERENCE_CONTEXT, detect_padded, pick_face

    manifest, extra = data
    cs, _ = load_sources([manifest, extra], "val", 48, tmp_path)
    det = load_detector(None)
    differs = 0
    for k in range(len(cs.paths)):
        img = cv2.cvtColor(cv2.imread(cs.paths[k]), cv2.COLOR_BGR2RGB)
        (d,) = detect_padded([img], det)
        box = d.boxes[pick_face(d)][None]
        np.testing.assert_array_equal(cs.images[k], crop_faces(img, box, 48, 0.3, INFERENCE_CONTEXT)[0])
        differs += not np.array_equal(cs.images[k], crop_faces(img, box, 48, 0.3, context_of(cs.paths[k]))[0])
    assert differs > 0  # a per-file context would have cut some of them differently


def test_load_sources_without_rows_is_an_error(data, tmp_path) -> None:
    manifest, _ = data
    with pytest.raises(MediaError, match="no images"):
        load_sources([manifest], "test", 32, tmp_path)
