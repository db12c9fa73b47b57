"""End-to-end runtime on real photos and generated videos with the shipped default model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepguard.runtime.pipeline import Detector
from deepguard.runtime.types import Frame
from tests.conftest import moving_face_frames, write_video


@pytest.fixture(scope="module")
def det() -> Detector:
    return Detector()


def _check_scores(a) -> None:
    assert a.score is None or 0.0 <= a.score <= 1.0
    for f in a.faces:
        assert 0.0 <= f.score <= 1.0 and len(f.box) == 4 and f.box[2] > f.box[0] and f.box[3] > f.box[1]


def test_group_photo_every_face_scored(det: Detector, t1_jpg: Path) -> None:
    a = det.analyze(t1_jpg)
    assert a.kind == "image" and a.error is None
    assert len(a.faces) == 6
    assert a.verdict in ("real", "uncertain", "fake")
    _check_scores(a)
    assert a.score == pytest.approx(max(f.score for f in a.faces))  # frame = max over faces
    assert [f.person for f in a.faces] == [p.id for p in a.persons] == list(range(6))  # a face = a person
    assert a.model == det.model_name and a.threshold == det.threshold


def test_astronaut_one_face(det: Detector, astronaut: np.ndarray) -> None:
    a = det.analyze_image(astronaut, "astronaut")
    assert len(a.faces) == 1 and a.verdict in ("real", "uncertain", "fake")


def test_default_model_calls_no_shipped_real_photo_fake() -> None:
    """Every real photo installed packages ship (the card's out-of-domain check) gets a face and no FAKE verdict.

    The README's promise for its first command; before crops were re-encoded like training crops, the astronaut
    scored 0.97 (FAKE) and this failed."""
    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES
    from deepguard.training.default import real_photo_scores

    scores = real_photo_scores(DEFAULT_DIR / DEFAULT_NAMES["int8"])
    cut = Detector(model=str(DEFAULT_DIR / DEFAULT_NAMES["int8"])).threshold
    assert {"insightface t1.jpg", "insightface Tom_Hanks_54745.png", "scikit-image astronaut"} <= set(scores)
    assert len(scores["insightface t1.jpg"]) == 6 and len(scores["insightface Tom_Hanks_54745.png"]) == 1
    assert all(s < cut for faces in scores.values() for s in faces), scores


def test_no_face_image(det: Detector) -> None:
    a = det.analyze_image(np.zeros((240, 320, 3), np.uint8), "black")
    assert a.verdict == "no_face" and a.score is None and a.faces == []


def test_video_sampling_and_aggregation(det: Detector, face_video: Path) -> None:
    a = det.analyze(face_video)  # 1 fps over 3 s
    assert a.kind == "video" and a.error is None
    assert a.frames_sampled == 3 and [f.index for f in a.frames] == [0, 25, 50]
    assert all(f.n_faces == 1 for f in a.frames)
    _check_scores(a)
    # the sliding face is one person (tracked across 1 s steps); its rule score is the video score
    assert [(p.id, p.n_faces, p.first_frame, p.last_frame) for p in a.persons] == [(0, 3, 0, 50)]
    assert a.score == a.persons[0].score and [f.person for f in a.faces] == [0, 0, 0]
    every = Detector(every_frame=True).analyze(face_video)
    assert every.frames_sampled == 75
    assert sum(f.n_faces for f in every.frames) >= 70


def test_analyze_frames_stream_equals_file(det: Detector, astronaut: np.ndarray) -> None:
    frames = moving_face_frames(astronaut[0:260, 120:360], 5)
    a = det.analyze_frames(frames, name="stream")
    b = det.analyze_frames([Frame(f, i, i / 25) for i, f in enumerate(frames)], name="stream")
    assert [f.score for f in a.frames] == pytest.approx([f.score for f in b.frames], abs=1e-6)
    single = [det.analyze_image(f).score for f in frames]  # batching across frames changes nothing
    assert [f.score for f in a.frames] == pytest.approx(single, abs=1e-5)


def test_face_crops_mode(astronaut: np.ndarray, tmp_path: Path) -> None:
    import cv2

    p = tmp_path / "crop.png"
    cv2.imwrite(str(p), cv2.cvtColor(astronaut[20:220, 150:330], cv2.COLOR_RGB2BGR))
    a = Detector(face_crops=True).analyze(p)
    assert len(a.faces) == 1 and a.verdict in ("real", "uncertain", "fake") and a.faces[0].det_score == 1.0


@pytest.mark.parametrize("case", ["empty", "random", "truncated_mp4", "missing"])
def test_bad_inputs_give_clear_errors(det: Detector, face_video: Path, tmp_path: Path, case: str) -> None:
    p = (
        tmp_path
        / {"empty": "e.jpg", "random": "r.jpg", "truncated_mp4": "t.mp4", "missing": "nope.png"}[case]
    )
    if case == "empty":
        p.write_bytes(b"")
    elif case == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "truncated_mp4":
        p.write_bytes(face_video.read_bytes()[:1024])
    a = det.analyze(p)
    assert a.verdict == "error" and a.score is None
    assert str(p) in a.error


def test_one_frame_video(det: Detector, astronaut: np.ndarray, tmp_path: Path) -> None:
    v = write_video(tmp_path / "one.mp4", moving_face_frames(astronaut[0:260, 120:360], 1))
    a = det.analyze(v)
    assert a.error is None and a.frames_sampled == 1 and a.verdict in ("real", "uncertain", "fake")


def test_bad_frame_shape_is_rejected(det: Detector) -> None:
    from deepguard.errors import MediaError

    with pytest.raises(MediaError, match="bad"):
        det.analyze_image(np.zeros((10, 10), np.uint8), "bad")
