"""The gRPC server end to end: a real server on a loopback ephemeral port, the real client.

Covers the issue's "done when" list: a 200-frame stream equals the in-process runtime, 8 concurrent streams
batch together (metrics), every bad input gets the right status and the server keeps serving, video upload,
face crops, health, reflection and ``deepguard detect --server``.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from deepguard.client import Client, ServerError
from deepguard.proto import deepguard_pb2 as pb
from deepguard.proto import deepguard_pb2_grpc as pb_grpc
from deepguard.runtime import aggregate
from deepguard.runtime.track import track_frames
from deepguard.runtime.types import Frame
from tests.server_support import (
    assert_same_results,
    reference,
    running_server,
    sample_frames,
    scrape,
    shared_detector,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def server():
    with running_server(max_message_bytes=4 * MiB, max_frame_pixels=2_000_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with Client(f"127.0.0.1:{server.port}", timeout=60) as c:
        yield c


def _stub(server) -> pb_grpc.DeepGuardStub:
    return pb_grpc.DeepGuardStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def test_stream_200_frames_in_order_equal_to_in_process(client) -> None:
    frames = sample_frames(200)
    stream = client.stream_frames(frames)
    results = list(stream)
    assert [r.frame.index for r in results] == list(range(200))
    assert_same_results(results, reference(200))
    # The running verdict ends where the final summary (the video-level verdict) is.
    s = stream.summary
    assert (
        s is not None
        and s.frames == 200
        and s.frames_with_faces == sum(1 for fs, _ in reference(200) if fs.n_faces)
    )
    # Persons: the stream's tracker gives the same ids and persons as tracking the in-process faces offline.
    ref_faces = [[replace(f, person=None) for f in faces] for _, faces in reference(200)]
    ref_tracks = track_frames(ref_faces)
    assert [[f.person for f in r.faces] for r in results] == [[f.person for f in ff] for ff in ref_faces]
    ref_persons = ref_tracks.persons(shared_detector().threshold)
    assert [(p.id, p.n_faces, p.first_frame, p.last_frame) for p in s.persons] == [
        (p.id, p.n_faces, p.first_frame, p.last_frame) for p in ref_persons
    ]
    assert len(s.persons) == 1  # one face sliding across, hidden every 7th frame: one person
    ref_score = ref_tracks.score  # one person: the same as the rule over the frame scores
    assert ref_score == pytest.approx(aggregate.video_score([fs.score for fs, _ in reference(200)]), abs=1e-9)
    assert s.score == pytest.approx(ref_score, abs=1e-6)
    det = shared_detector()
    assert s.verdict == aggregate.verdict(ref_score, det.threshold, det.band)
    assert results[-1].running_verdict == s.verdict and results[-1].running_score == pytest.approx(s.score)


def test_8_concurrent_streams_are_batched_together(server, client) -> None:
    def batches(stage: str) -> tuple[float, float]:
        m = scrape(server.metrics_port, "deepguard_batch_size", stage=stage)
        return m.get("deepguard_batch_size_count", 0.0), m.get("deepguard_batch_size_bucket[1.0]", 0.0)

    before = batches("detector")
    frames, ref = sample_frames(200), reference(200)
    out: dict[int, list] = {}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            sl = range(k * 25, (k + 1) * 25)
            out[k] = list(client.stream_frames(Frame(frames[i], i) for i in sl))  # indices echoed back
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for k in range(8):
        assert_same_results(out[k], ref[k * 25 : (k + 1) * 25])  # per-stream order and values kept
    total, size1 = (a - b for a, b in zip(batches("detector"), before, strict=True))
    assert total - size1 > 0, "no detector batch larger than 1 with 8 concurrent streams"
    assert total < 200  # fewer model runs than frames


def _expect(code: grpc.StatusCode, fragment: str, call) -> None:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, e.value.details()
    assert fragment.lower() in (e.value.details() or "").lower(), e.value.details()


def _stream(stub, *msgs):
    return lambda: list(stub.StreamFrames(iter(msgs), timeout=30))


def _raw(h: int, w: int, c: int = 3, order: int = pb.COLOR_ORDER_RGB, n: int | None = None) -> pb.RawImage:
    return pb.RawImage(
        height=h, width=w, channels=c, color_order=order, pixels=bytes(h * w * c if n is None else n)
    )


BAD_INPUTS = {
    "empty message": (grpc.StatusCode.INVALID_ARGUMENT, "empty message", lambda s: _stream(s, pb.Frame())),
    "wrong dimensions": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected 10x20x3 = 600",
        lambda s: _stream(s, pb.Frame(raw=_raw(10, 20, n=599))),
    ),
    "zero size": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be positive",
        lambda s: _stream(s, pb.Frame(raw=_raw(0, 20))),
    ),
    "channels vs colour order": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "has 1 channel(s)",
        lambda s: _stream(s, pb.Frame(raw=_raw(4, 4, c=3, order=pb.COLOR_ORDER_GRAY))),
    ),
    "pixel count over the limit": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "exceeds the limit of 2.0 MP",
        lambda s: _stream(
            s, pb.Frame(raw=pb.RawImage(height=2000, width=1001, channels=3, color_order=1, pixels=b"x"))
        ),
    ),
    "random bytes as JPEG": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "frame 0: ",
        lambda s: _stream(s, pb.Frame(encoded=b"\xff\xd8\xff\xe0" + os.urandom(3000))),
    ),
    "unknown colour order": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown color_order 99",
        lambda s: _stream(s, pb.Frame(raw=_raw(4, 4, order=99))),
    ),
    "colour order not set": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "color_order is not set",
        lambda s: _stream(s, pb.Frame(raw=_raw(4, 4, order=0))),
    ),
    "oversize message": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
        lambda s: _stream(s, pb.Frame(encoded=bytes(5 * MiB))),
    ),
    "image: empty message": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "photo.jpg: empty message",
        lambda s: lambda: s.AnalyzeImage(pb.Image(name="photo.jpg"), timeout=30),
    ),
    "image: random bytes": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "x.png: not an image or corrupt",
        lambda s: lambda: s.AnalyzeImage(pb.Image(encoded=os.urandom(2000), name="x.png"), timeout=30),
    ),
    "faces: empty batch": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty batch",
        lambda s: lambda: s.AnalyzeFaces(pb.FaceBatch(), timeout=30),
    ),
    "video: truncated upload": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "clip.mp4: upload truncated: received 3 of the 1000 bytes",
        lambda s: (
            lambda: list(
                s.AnalyzeVideo(
                    iter(
                        [
                            pb.VideoChunk(
                                options=pb.VideoOptions(name="clip.mp4", total_bytes=1000), data=b"abc"
                            )
                        ]
                    ),
                    timeout=30,
                )
            )
        ),
    ),
    "video: empty upload": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty upload",
        lambda s: lambda: list(s.AnalyzeVideo(iter([]), timeout=30)),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_status_and_server_keeps_serving(server, client, astronaut, case: str) -> None:
    code, fragment, make = BAD_INPUTS[case]
    _expect(code, fragment, make(_stub(server)))
    assert client.health() == "SERVING" and client.health("deepguard.v1.DeepGuard") == "SERVING"
    a = client.analyze_image(astronaut, name="astronaut")  # the next request is answered correctly
    ref = shared_detector().analyze_image(astronaut, "astronaut")
    assert a.verdict == ref.verdict and a.score == pytest.approx(ref.score, abs=1e-5)


def test_bad_frame_mid_stream_ends_it_after_earlier_results(server) -> None:
    frames = sample_frames(200)[:5]
    msgs = [
        pb.Frame(raw=pb.RawImage(height=120, width=160, channels=3, color_order=1, pixels=f.tobytes()))
        for f in frames
    ]
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in _stub(server).StreamFrames(iter([*msgs, pb.Frame(raw=_raw(4, 4, order=42))]), timeout=30):
            got.append(r.index)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "frame 5" in e.value.details()
    assert got == [0, 1, 2, 3, 4]


def test_truncated_video_file_is_invalid_argument(client, face_video: Path) -> None:
    data = face_video.read_bytes()
    with pytest.raises(ServerError) as e:
        client.analyze_video(data[: len(data) // 2], name="half.mp4")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "half.mp4" in e.value.details


def test_video_upload_equals_in_process(client, face_video: Path) -> None:
    progress: list[tuple[int, int]] = []
    a = client.analyze_video(face_video, progress=lambda b, f: progress.append((b, f)), chunk_size=64 * 1024)
    ref = shared_detector().analyze(face_video)
    assert a.kind == "video" and a.frames_sampled == ref.frames_sampled == 3
    assert [f.index for f in a.frames] == [f.index for f in ref.frames]
    assert [f.score for f in a.frames] == pytest.approx([f.score for f in ref.frames], abs=1e-5)
    assert a.verdict == ref.verdict and a.score == pytest.approx(ref.score, abs=1e-5)
    assert [(p.id, p.n_faces) for p in a.persons] == [(p.id, p.n_faces) for p in ref.persons] == [(0, 3)]
    assert [f.person for f in a.faces] == [0, 0, 0] and a.persons[0].score == pytest.approx(a.score, abs=1e-9)
    every = client.analyze_video(io.BytesIO(face_video.read_bytes()), every_frame=True)
    assert every.frames_sampled == 75


def test_analyze_faces_matches_classifier(client, astronaut) -> None:
    det = shared_detector()
    s = det.classifier.input_size
    crops = [np.ascontiguousarray(astronaut[20 : 20 + s, 150 : 150 + s]), np.zeros((s, s, 3), np.uint8)]
    got = client.analyze_faces(crops)
    probs, members = det.classifier.score(np.stack(crops))
    assert [p for p, _ in got] == pytest.approx(probs.tolist(), abs=1e-5)
    assert [m for _, m in got][0] == pytest.approx(members[0].tolist(), abs=1e-5)


def test_model_info_and_reflection(server, client) -> None:
    info = client.model_info()
    det = shared_detector()
    assert info["model"] == det.model_name and info["input_size"] == det.classifier.input_size
    assert int(info["limits"]["max_message_bytes"]) == 4 * MiB
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    services = set(db.get_services())
    assert {"deepguard.v1.DeepGuard", "grpc.health.v1.Health"} <= services
    assert db.FindFileContainingSymbol("deepguard.v1.DeepGuard").name == "deepguard/proto/deepguard.proto"


def test_rpc_metrics_and_structured_logs(server, client, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="deepguard.server"):
        client.model_info()
    rec = [r for r in caplog.records if getattr(r, "event", None) == "rpc"][-1]
    assert rec.method == "GetModelInfo" and rec.code == "OK" and rec.ms >= 0
    from deepguard.serving.logs import JsonFormatter

    assert json.loads(JsonFormatter().format(rec))["method"] == "GetModelInfo"
    m = scrape(server.metrics_port, "deepguard_requests", method="GetModelInfo", code="OK")
    assert m["deepguard_requests_total"] >= 1
    depth = scrape(server.metrics_port, "deepguard_queue_depth", stage="detector")
    assert depth["deepguard_queue_depth"] == 0


def test_cli_detect_via_server(server, t1_jpg: Path, face_video: Path, tmp_path: Path, capsys) -> None:
    from deepguard.cli import main
    from deepguard.output import to_record

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(os.urandom(500))
    assert (
        main(
            [
                "detect",
                str(t1_jpg),
                str(face_video),
                str(bad),
                "--format",
                "jsonl",
                "--server",
                f"127.0.0.1:{server.port}",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    det = shared_detector()
    for got, path in zip(lines[:2], (t1_jpg, face_video), strict=True):
        want = to_record(det.analyze(path))
        assert got["path"] == str(path) and got["verdict"] == want["verdict"] and got["kind"] == want["kind"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5) and len(got["faces"]) == len(
            want["faces"]
        )
    assert lines[2]["verdict"] == "error" and "bad.jpg" in lines[2]["error"]


def test_cli_detect_unreachable_server_exits_2(t1_jpg: Path, capsys) -> None:
    from deepguard.cli import main

    assert main(["detect", str(t1_jpg), "--server", "127.0.0.1:1"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
