"""Stream mode through the gRPC StreamFrames path (deepguard.serving.stream_scoring): same boxes, persons, ages
and scores as the in-process runtime on a real clip, the per-stream ``rescore_rate`` field and its errors, and
the ordering the sequencer and the stream's launcher guarantee."""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future

import grpc
import numpy as np
import pytest

from deepguard.client import Client
from deepguard.proto import deepguard_pb2 as pb
from deepguard.proto import deepguard_pb2_grpc as pb_grpc
from deepguard.runtime.types import FaceBoxes, Frame
from deepguard.serving.flow import Entry, FrameBudget, StreamFlow
from deepguard.serving.stream_scoring import StreamScoring
from tests.server_support import running_server, shared_detector

MiB = 1 << 20


@pytest.fixture(scope="module")
def server():
    with running_server(max_message_bytes=8 * MiB) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with Client(f"127.0.0.1:{server.port}", timeout=120) as c:
        yield c


def _key(f) -> tuple:
    return (f.frame, f.person, f.age, [round(v, 2) for v in f.box])


def test_stream_mode_equals_in_process(client, group_clip: list[Frame]) -> None:
    """Server default rate (5/s) vs Detector.iter_frames at the same rate: every face of every frame boxed,
    the same persons, the same faces classified (age 0), the same scores carried, the same summary."""
    det = shared_detector()
    assert det.rescore_rate == 5.0
    assert det.scan_every == 5  # both sides: full scans every 5th frame, regions in between
    ref = list(det.iter_frames(group_clip))
    a = det.analyze_frames(group_clip)
    stream = client.stream_frames(group_clip)
    results = list(stream)
    assert [r.frame.index for r in results] == list(range(len(group_clip)))
    ref_faces = [f for _, ff in ref for f in ff]
    got_faces = [f for r in results for f in r.faces]
    assert len(got_faces) == len(ref_faces) >= 6 * len(group_clip) - 6
    assert [_key(f) for f in got_faces] == [_key(f) for f in ref_faces]
    assert [f.score for f in got_faces] == pytest.approx([f.score for f in ref_faces], abs=1e-5)
    assert not any(math.isnan(f.score) for f in got_faces)
    scored = sum(f.age == 0 for f in got_faces)
    assert scored < len(got_faces) / 3  # 1 s at 5 re-scores per second: ~5-6 of 25 frames per person
    for r, (fs, _) in zip(results, ref, strict=True):
        assert r.frame.score == pytest.approx(fs.score, abs=1e-5)
    summary = stream.summary
    assert summary is not None and summary.frames == len(group_clip)
    assert [(p.id, p.n_faces) for p in summary.persons] == [(p.id, p.n_faces) for p in a.persons]
    assert summary.score == pytest.approx(a.score, abs=1e-5) and summary.verdict == a.verdict
    per_person = {}
    for f in got_faces:
        per_person[f.person] = per_person.get(f.person, 0) + (f.age == 0)
    for p in summary.persons:  # persons vote with classifier outputs only, never the carried copies
        assert p.n_faces == per_person[p.id]


def test_rate_zero_scores_every_face(client, group_clip: list[Frame]) -> None:
    clip = group_clip[:8]
    dense = list(client.stream_frames(clip, rescore_rate=0))
    faces = [f for r in dense for f in r.faces]
    assert faces and all(f.age == 0 for f in faces)
    default = [f for r in client.stream_frames(clip) for f in r.faces]
    assert [f.frame for f in faces] == [f.frame for f in default]  # every face of every frame boxed
    scans = {0, 5}  # full detector scans; the frames between find the faces in regions around the last boxes
    assert [f.box for f in faces if f.frame in scans] == [f.box for f in default if f.frame in scans]
    assert sum(f.age == 0 for f in default) < len(default)
    by_key = {(f.frame, f.person): f.score for f in faces}
    for f in default:  # a face stream mode classifies is the crop dense mode scored
        if f.age == 0:
            assert f.score == pytest.approx(by_key[(f.frame, f.person)], abs=1e-5)


def _frames(clip: list[Frame], n: int, rates: dict[int, float]) -> list[pb.Frame]:
    out = []
    for i, fr in enumerate(clip[:n]):
        img = fr.image[::4, ::4].copy()
        h, w = img.shape[:2]
        msg = pb.Frame(
            raw=pb.RawImage(
                height=h, width=w, channels=3, color_order=pb.COLOR_ORDER_RGB, pixels=img.tobytes()
            ),
            time=fr.time,
        )
        if i in rates:
            msg.rescore_rate = rates[i]
        out.append(msg)
    return out


@pytest.mark.parametrize(
    ("rates", "fragment", "answered"),
    [
        ({0: -1.0}, "frame 0: rescore_rate must be a finite number >= 0", 0),
        ({0: float("nan")}, "frame 0: rescore_rate must be a finite number >= 0", 0),
        ({0: 5.0, 3: 2.0}, "frame 3: rescore_rate 2 differs from this stream's 5", 3),
        ({3: 2.0}, "frame 3: rescore_rate 2 differs from this stream's 5", 3),
    ],
)
def test_bad_rescore_rate_is_invalid_argument(
    server, client, group_clip: list[Frame], rates: dict, fragment: str, answered: int
) -> None:
    stub = pb_grpc.DeepGuardStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in stub.StreamFrames(iter(_frames(group_clip, 5, rates)), timeout=60):
            got.append(r.index)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in e.value.details()
    assert got == list(range(answered))  # frames before the bad one were answered
    repeat = list(stub.StreamFrames(iter(_frames(group_clip, 3, {0: 5.0, 1: 5.0, 2: 5.0})), timeout=60))
    assert len(repeat) == 4 and repeat[-1].summary.frames == 3  # repeating the rate is fine; still serving


# ------------------------------------------------------------------------------------------- ordering units


def _boxes(n: int, x: float = 100.0) -> FaceBoxes:
    boxes = np.array([[x + 200 * j, 100, x + 200 * j + 100, 200] for j in range(n)], np.float32)
    kps = np.zeros((n, 6, 2), np.float32)
    kps[:, :, 0], kps[:, :, 1] = boxes[:, :1] + 50, 150
    return FaceBoxes(boxes, np.full(n, 0.9, np.float32), kps)


def test_sequencer_plans_in_ticket_order_whatever_the_detection_order() -> None:
    s = StreamScoring(5.0)
    frames = [Frame(np.zeros((4, 4, 3), np.uint8), i, i / 25) for i in range(4)]
    tickets = [s.ticket() for _ in frames]
    calls: list[tuple[int, list[int] | None]] = []

    def then(plan, idx):
        calls.append((plan.frame.index if plan else -1, idx))

    s.detected(tickets[2], frames[2], _boxes(1), then)
    s.detected(tickets[1], frames[1], None, then)  # failed: passed over, not tracked
    assert calls == []  # frame 0 is not detected yet: nothing may be planned
    s.detected(tickets[0], frames[0], _boxes(1), then)
    assert calls == [(0, [0]), (-1, None), (2, [])]  # in order; frame 2's face carries frame 0's score
    s.detected(tickets[3], frames[3], _boxes(2), then)
    assert calls[-1] == (3, [1])  # the new second face is classified, the first still carried
    assert s.tracker.frames == 3


def test_stream_launches_frames_in_start_order() -> None:
    """A finishing frame's callback (live mode: it starts the waiting frame) and the reader may launch at once;
    the engine must still receive the stream's frames in order."""
    order: list[int] = []
    gate = threading.Event()

    def submit(frame: Frame) -> Future:
        order.append(frame.index)
        if frame.index == 0:
            gate.wait(5)  # the first launch is slow: a second launcher arrives meanwhile
        f: Future = Future()
        f.set_result(None)
        return f

    flow = StreamFlow(submit, FrameBudget(1 << 30, 64), window=8, max_bytes=1 << 30, live_window=8, backlog=8)
    with flow._cond:
        for i in range(3):
            e = Entry(i, None, 1, Frame(np.zeros((1, 1, 3), np.uint8), i, None))
            flow._entries.append(e)
            flow._start(e)
    first = threading.Thread(target=flow._launch)
    first.start()
    while not order:
        pass
    second = threading.Thread(target=flow._launch)
    second.start()
    second.join(0.3)
    assert order == [0]  # one launcher at a time: frame 1 is not handed over while frame 0 still is
    gate.set()
    first.join(5)
    second.join(5)
    assert order == [0, 1, 2]


def test_region_mode_lost_faces_and_a_bad_frame(server, client, group_clip: list[Frame]) -> None:
    """Faces that vanish (a cut to grey) force a full scan on the server as in-process; a bad frame in region
    mode ends the stream with INVALID_ARGUMENT after the earlier results (the detection chain does not hang)."""
    blank = Frame(np.full_like(group_clip[4].image, 90), 4, 4 / 25)
    clip = [*group_clip[:4], blank, *group_clip[5:9]]
    ref = list(shared_detector().iter_frames(clip))
    got = list(client.stream_frames(clip))
    assert [len(r.faces) for r in got] == [len(ff) for _, ff in ref]
    assert len(got[4].faces) == 0 and len(got[5].faces) == 6
    assert [_key(f) for r in got for f in r.faces] == [_key(f) for _, ff in ref for f in ff]
    stub = pb_grpc.DeepGuardStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    msgs = _frames(group_clip, 4, {})
    bad = pb.Frame(
        raw=pb.RawImage(height=4, width=4, channels=3, color_order=42, pixels=bytes(48)), time=0.16
    )
    seen = []
    with pytest.raises(grpc.RpcError) as e:
        for r in stub.StreamFrames(iter([*msgs, bad, *msgs]), timeout=60):
            seen.append(r.index)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "frame 4" in e.value.details()
    assert seen == [0, 1, 2, 3]
    assert client.health() == "SERVING"


def test_region_mode_stream_cancelled_midway_frees_the_server(client, group_clip: list[Frame]) -> None:
    stream = client.stream_frames(group_clip)
    it = iter(stream)
    next(it), next(it)
    stream.cancel()
    with pytest.raises(Exception):  # noqa: B017 - the cancelled call ends with the client's error type
        list(it)
    again = list(client.stream_frames(group_clip[:6]))
    assert [r.frame.index for r in again] == list(range(6)) and all(len(r.faces) == 6 for r in again)
