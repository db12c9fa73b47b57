"""Person tracking and person-level video scores on synthetic face sequences whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime import aggregate
from deepguard.runtime.track import MAX_GAP, Tracker, track_frames
from deepguard.runtime.types import Face, FrameScore

THR = 0.5


def face(cx: float, cy: float, frame: int, score: float, size: float = 80.0, kps: bool = True) -> Face:
    """A face box of ``size`` px centred at (cx, cy) with BlazeFace-like keypoints (eyes, nose, mouth, ears)."""
    s = size
    pts = [(-0.2, -0.1), (0.2, -0.1), (0, 0.05), (0, 0.22), (-0.45, 0), (0.45, 0)]
    return Face(
        box=[cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2],
        det_score=0.9,
        keypoints=[[cx + dx * s, cy + dy * s] for dx, dy in pts] if kps else [],
        frame=frame,
        time=float(frame),
        score=score,
    )


def ids(frames: list[list[Face]]) -> list[list[int | None]]:
    return [[f.person for f in ff] for ff in frames]


def rule_per_person(faces: list[Face]) -> float | None:
    """The documented rule from scratch: video_score per voting person, max over persons."""
    by: dict[int, list[float]] = {}
    for f in faces:
        assert f.person is not None
        by.setdefault(f.person, []).append(f.score)
    longest = max((len(v) for v in by.values()), default=0)
    scores = [aggregate.video_score(v) for v in by.values() if aggregate.counts_as_person(len(v), longest)]
    return max(scores) if scores else None  # type: ignore[type-var]


def test_fake_person_makes_video_fake_where_frame_maxima_dilute() -> None:
    # A real person in all 12 sampled frames walks right; a swapped face is in frames 3-6 only, walking left.
    rng = np.random.default_rng(0)
    frames = []
    for i in range(12):
        ff = [face(60 + 25 * i + rng.normal(0, 2), 200, i, 0.05 + rng.uniform(-0.02, 0.02))]
        if 3 <= i <= 6:
            ff.append(face(560 - 30 * i, 180, i, 0.95 + rng.uniform(-0.02, 0.02), size=70))
        frames.append(ff)
    tr = track_frames(frames)
    assert ids(frames) == [[0]] * 3 + [[0, 1]] * 4 + [[0]] * 5
    persons = tr.persons(THR)
    assert [(p.id, p.n_faces, p.first_frame, p.last_frame, p.verdict) for p in persons] == [
        (0, 12, 0, 11, "real"),
        (1, 4, 3, 6, "fake"),
    ]
    assert tr.score == pytest.approx(persons[1].score) and tr.score > 0.9
    # The frame-level rule on the same faces: 4 confident-fake frames of 12 (33 %) -> mean of all -> real.
    old = aggregate.video_score([aggregate.frame_score([f.score for f in ff]) for ff in frames])
    assert old is not None and old < 0.4 and aggregate.verdict(old, THR) == "real"
    for p in persons:  # a person's score is exactly the confident-frames rule over its faces
        mine = [f.score for ff in frames for f in ff if f.person == p.id]
        assert p.score == pytest.approx(aggregate.video_score(mine), abs=1e-12)


def test_crossing_with_occlusion_keeps_identity() -> None:
    # A walks right, B walks left; they meet mid-frame and A hides B for 2 frames (<= MAX_GAP).
    frames = []
    for i in range(11):
        ff = [face(100 + 40 * i, 200, i, 0.95)]
        if i not in (5, 6):
            ff.append(face(500 - 40 * i, 205, i, 0.05))
        frames.append(ff)
    tr = track_frames(frames)
    assert ids(frames) == [[0, 1]] * 5 + [[0]] * 2 + [[0, 1]] * 4
    assert [(p.id, p.n_faces, p.verdict) for p in tr.persons(THR)] == [(0, 11, "fake"), (1, 9, "real")]


def test_gap_beyond_max_gap_starts_a_new_person() -> None:
    within = [[face(200, 200, i, 0.1)] if i < 3 or i > 2 + MAX_GAP else [] for i in range(8)]
    track_frames(within)
    assert {f.person for ff in within for f in ff} == {0}
    beyond = [[face(200, 200, i, 0.1)] if i < 3 or i > 3 + MAX_GAP else [] for i in range(9)]
    tr = track_frames(beyond)
    assert ids(beyond) == [[0]] * 3 + [[]] * (MAX_GAP + 1) + [[1]] * (5 - MAX_GAP)
    assert [p.id for p in tr.persons(THR)] == [0, 1]


def test_far_jump_or_size_change_is_another_person() -> None:
    frames = [[face(100, 200, 0, 0.1)], [face(400, 200, 1, 0.1)], [face(400, 200, 2, 0.1, size=250)]]
    track_frames(frames)
    assert ids(frames) == [[0], [1], [2]]


def test_sparse_sampling_follows_a_face_without_overlap() -> None:
    # 1 fps: the face moves a whole face width per sample (IoU 0), still the same person.
    frames = [[face(60 + 80 * i, 200, i * 25, 0.3)] for i in range(6)]
    tr = track_frames(frames)
    assert ids(frames) == [[0]] * 6 and tr.persons(THR)[0].last_frame == 125


def test_single_spurious_detection_does_not_make_a_real_video_fake() -> None:
    frames = [[face(200 + 5 * i, 200, i, 0.05)] for i in range(10)]
    frames[4].append(face(500, 80, 4, 0.99, size=40))  # one false detection somewhere else
    tr = track_frames(frames)
    assert ids(frames)[4] == [0, 1]
    assert [p.id for p in tr.persons(THR)] == [0]  # the 1-face track does not vote
    assert tr.score == pytest.approx(0.05) and aggregate.verdict(tr.score, THR) == "real"


def test_when_no_track_is_long_every_track_counts() -> None:
    # Fast cuts: every face is seen once (far apart) -> all vote, the video is as fake as its worst face.
    frames = [[face(100 + 300 * (i % 2), 100 + 150 * i, i, s)] for i, s in enumerate([0.1, 0.9, 0.2])]
    tr = track_frames(frames)
    assert [p.id for p in tr.persons(THR)] == [0, 1, 2] and tr.score == pytest.approx(0.9)


def test_image_each_face_is_a_person() -> None:
    faces = [face(100, 100, 0, 0.2), face(300, 100, 0, 0.7), face(500, 100, 0, 0.4)]
    tr = track_frames([faces])
    assert [f.person for f in faces] == [0, 1, 2]
    assert [p.score for p in tr.persons(THR)] == [0.2, 0.7, 0.4]
    assert tr.score == aggregate.frame_score([0.2, 0.7, 0.4])


def test_faces_without_keypoints_use_box_centres() -> None:
    frames = [
        [face(100 + 30 * i, 200, i, 0.5, kps=False), face(500, 200, i, 0.5, kps=False)] for i in range(4)
    ]
    track_frames(frames)
    assert ids(frames) == [[0, 1]] * 4


def test_no_faces_at_all() -> None:
    tr = track_frames([[], [], []])
    assert tr.score is None and tr.persons(THR) == [] and tr.frames == 3 and tr.frames_with_faces == 0


def _random_scene(seed: int, n: int = 60) -> list[list[Face]]:
    """People entering, leaving, hiding and crossing with random scores; some spurious one-frame faces."""
    rng = np.random.default_rng(seed)
    people = []
    for _ in range(int(rng.integers(1, 5))):
        start, stop = sorted(rng.integers(0, n, 2).tolist())
        people.append(
            {
                "start": start,
                "stop": stop + 1,
                "x": rng.uniform(50, 600),
                "y": rng.uniform(50, 400),
                "v": rng.uniform(-20, 20),
                "size": rng.uniform(50, 120),
                "kind": rng.choice(["fake", "real", "mixed"]),
            }
        )
    frames = []
    for i in range(n):
        ff = []
        for p in people:
            if p["start"] <= i < p["stop"] and rng.random() > 0.15:
                s = {"fake": rng.uniform(0.8, 1), "real": rng.uniform(0, 0.2), "mixed": rng.random()}[
                    p["kind"]
                ]
                ff.append(face(p["x"] + p["v"] * (i - p["start"]), p["y"], i, float(s), p["size"]))
        if rng.random() < 0.05:
            ff.append(face(rng.uniform(0, 640), rng.uniform(0, 480), i, float(rng.random()), 40))
        frames.append(ff)
    return frames


@pytest.mark.parametrize("seed", range(20))
def test_streaming_score_equals_offline_rule_at_every_step(seed: int) -> None:
    frames = _random_scene(seed)
    tr, seen = Tracker(), []
    for ff in frames:
        tr.update(ff)
        seen.extend(ff)
        want = rule_per_person(seen)
        assert (tr.score is None) == (want is None)
        if want is not None:
            assert tr.score == pytest.approx(want, abs=1e-12)
    # a second, offline pass over fresh copies gives the same ids and persons
    copies = [[Face(**{**f.__dict__, "person": None}) for f in ff] for ff in frames]
    offline = track_frames(copies)
    assert ids(copies) == ids(frames) and offline.persons(THR) == tr.persons(THR)


def test_server_accumulator_reports_persons() -> None:
    from deepguard.serving.engine import Accumulator, FrameOutcome

    frames = _random_scene(3)
    acc = Accumulator("clip", "video", "m", THR)
    for i, ff in enumerate(frames):
        acc.add(FrameOutcome(FrameScore(i, None, aggregate.frame_score([f.score for f in ff]), len(ff)), ff))
    a = acc.result()
    ref = track_frames([[Face(**{**f.__dict__, "person": None}) for f in ff] for ff in frames])
    assert a.persons == ref.persons(THR) and a.score == ref.score and a.persons
    assert a.verdict == aggregate.verdict(ref.score, THR)
    assert all(f.person is not None for f in a.faces)


def test_persons_survive_the_wire() -> None:
    from deepguard.runtime.types import Analysis
    from deepguard.serving import wire

    frames = _random_scene(5)
    tr = track_frames(frames)
    faces = [f for ff in frames for f in ff]
    a = Analysis("x", "video", "real", tr.score, faces=faces, persons=tr.persons(THR), threshold=THR)
    b = wire.analysis_from_pb(wire.analysis_to_pb(a))
    assert [f.person for f in b.faces] == [f.person for f in faces]
    assert [(p.id, p.n_faces, p.first_frame, p.last_frame, p.verdict) for p in b.persons] == [
        (p.id, p.n_faces, p.first_frame, p.last_frame, p.verdict) for p in a.persons
    ]
    assert [p.score for p in b.persons] == pytest.approx([p.score for p in a.persons])
