"""Aggregation: max per frame, DFDC confident-frames rule per video, verdict threshold."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.aggregate import frame_score, verdict, video_score


def test_frame_score_is_max_over_faces():
    assert frame_score([0.1, 0.9, 0.3]) == pytest.approx(0.9)
    assert frame_score(np.array([0.2], np.float32)) == pytest.approx(0.2)
    assert frame_score([]) is None
    assert frame_score(np.zeros((0,))) is None
    assert frame_score(None) is None


def test_video_score_no_faces():
    assert video_score([]) is None
    assert video_score([None, None]) is None


def test_confident_fake_branch():
    # 5 scored frames, 3 > 0.8 (60 % > 40 %) -> mean(0.9, 0.95, 0.85) = 0.9; None frames are ignored
    s = [0.9, None, 0.95, 0.1, 0.85, 0.5]
    assert video_score(s) == pytest.approx(0.9)


def test_fake_fraction_is_strict():
    # exactly 40 % (2 of 5) is not "more than 40 %": falls through to the mean of all
    s = [0.9, 0.9, 0.1, 0.1, 0.5]
    assert video_score(s) == pytest.approx(2.5 / 5)
    # 0.8 itself is not a confident fake
    assert video_score([0.8, 0.8, 0.8]) == pytest.approx(0.8)


def test_few_false_positive_frames_are_averaged_in():
    # 2 of 10 frames confidently fake (20 %) and not 90 % confident real -> plain mean
    s = [0.95, 0.95] + [0.1] * 8
    assert video_score(s) == pytest.approx((1.9 + 0.8) / 10)


def test_confident_real_branch():
    # 10 frames, 10 < 0.2 -> mean of them
    assert video_score([0.1] * 5 + [0.05] * 5) == pytest.approx(0.075)
    # 19 of 20 < 0.2 (95 % > 90 %): the one 0.7 outlier is dropped
    assert video_score([0.1] * 19 + [0.7]) == pytest.approx(0.1)


def test_real_fraction_is_strict():
    # exactly 90 % (9 of 10) is not "more than 90 %" -> mean of all
    assert video_score([0.1] * 9 + [0.6]) == pytest.approx((0.9 + 0.6) / 10)


def test_mean_branch():
    assert video_score([0.3, 0.5, 0.7]) == pytest.approx(0.5)
    assert video_score([0.55]) == pytest.approx(0.55)


def test_fake_branch_takes_precedence():
    # single very fake frame: 100 % > 40 %
    assert video_score([0.99]) == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (None, "no_face"),
        (0.5, "fake"),
        (0.5000001, "fake"),
        (0.4999999, "real"),
        (0.0, "real"),
        (1.0, "fake"),
    ],
)
def test_verdict_threshold(score, expected):
    assert verdict(score, 0.5) == expected


def test_verdict_other_threshold():
    assert verdict(0.7, 0.73) == "real"
    assert verdict(0.73, 0.73) == "fake"


def test_counts_as_person():
    from deepguard.runtime.aggregate import MIN_PERSON_FACES, counts_as_person

    assert MIN_PERSON_FACES == 2
    assert not counts_as_person(1, longest=5) and counts_as_person(2, longest=5)
    assert counts_as_person(1, longest=1)  # no longer track: a one-face track is all the evidence there is
