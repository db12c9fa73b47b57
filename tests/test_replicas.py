"""Replicas: one client balancing over several servers with gRPC's round_robin + health checking, calls retried
on another replica only before they started, and a replica draining on SIGTERM without losing a result."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from deepguard.client import Client, ServerError, channel_target, service_config
from deepguard.errors import DeepGuardError
from tests.server_support import running_server, sample_frames, scrape, self_signed_cert, serve_subprocess
from tests.test_server_lifecycle import _wait_for

TOKEN = "replica-token"


def _paced(frames, delay: float):
    for f in frames:
        time.sleep(delay)
        yield f


def _calls(srv, method: str, code: str = "OK") -> float:
    """Finished calls of one method on an in-process server, from its Prometheus /metrics."""
    if srv.config.tls:  # /metrics is HTTPS then: read the same counter from the registry it serves
        labels = {"method": method, "code": code}
        return srv.metrics.registry.get_sample_value("deepguard_requests_total", labels) or 0.0
    return scrape(srv.metrics_port, "deepguard_requests", method=method, code=code).get(
        "deepguard_requests_total", 0.0
    )


# -- addresses ------------------------------------------------------------------------------------------------
def test_address_forms() -> None:
    one = channel_target("127.0.0.1:50051")
    assert (one.target, one.balanced) == ("127.0.0.1:50051", False)  # one server: a plain channel, as before
    two = channel_target("127.0.0.1:5001, 127.0.0.1:5002")
    assert (two.target, two.balanced, two.tls_name) == (
        "ipv4:127.0.0.1:5001,127.0.0.1:5002",
        True,
        "127.0.0.1",
    )
    assert channel_target("[::1]:5001,[::1]:5002").target == "ipv6:[::1]:5001,[::1]:5002"
    mixed = channel_target("127.0.0.1:5001,[::1]:5002")
    assert mixed.target == "ipv6:[::ffff:127.0.0.1]:5001,[::1]:5002"
    named = channel_target("localhost:5001,127.0.0.1:5002")
    assert named.target.startswith(("ipv4:", "ipv6:")) and named.tls_name == "localhost"
    dns = channel_target("dns:///deepguard.deepguard.svc.cluster.local:50051")
    assert dns.balanced and dns.tls_name is None and dns.target.startswith("dns:///")
    ipv4 = channel_target("ipv4:127.0.0.1:5001,127.0.0.1:5002")
    assert (
        ipv4.balanced and ipv4.tls_name == "127.0.0.1" and ipv4.target == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    )
    for bad in ("127.0.0.1:5001,nowhere", ",", "127.0.0.1:5001,:5002"):
        with pytest.raises(DeepGuardError):
            channel_target(bad)


def test_service_config_matches_the_server() -> None:
    from deepguard.server import SERVICE_NAME

    cfg = json.loads(service_config())
    assert cfg["loadBalancingConfig"] == [{"round_robin": {}}]
    assert cfg["healthCheckConfig"] == {"serviceName": ""}  # the server sets "" (and its service) SERVING
    (method_cfg,) = cfg["methodConfig"]
    assert {n["service"] for n in method_cfg["name"]} == {SERVICE_NAME}
    assert {n["method"] for n in method_cfg["name"]} == {"AnalyzeImage", "AnalyzeFaces", "GetModelInfo"}
    assert method_cfg["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


# -- in-process replicas --------------------------------------------------------------------------------------
@pytest.fixture
def pair():
    with running_server() as a, running_server() as b:
        yield a, b


def _both_ready(client: Client, servers, method: str = "GetModelInfo") -> bool:
    """Calls until every replica has answered one (round_robin only picks replicas already connected)."""
    return _wait_for(lambda: client.model_info() and all(_calls(s, method) for s in servers), 30)


class _Msg:
    def __init__(self, name: str) -> None:
        self.name = name

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        return 10


def test_retry_starts_while_the_failed_try_is_blocked_in_the_callers_generator() -> None:
    """A failed try's gRPC thread can be blocked inside the caller's generator (waiting for the next frame)
    when the retry starts: the retry must replay what was taken and get the next item, not wait on that thread
    (it used to: CI saw a stream end DEADLINE_EXCEEDED after 120 s instead of reaching the other replica)."""
    from deepguard.client import _Replay

    go = threading.Event()

    def source():
        yield _Msg("a")
        yield _Msg("b")
        go.wait(10)
        yield _Msg("c")

    replay = _Replay(source())
    first, stale = replay.attempt(), []
    t1 = threading.Thread(target=lambda: stale.extend(m.name for m in first), daemon=True)
    t1.start()
    deadline = time.monotonic() + 5
    while len(stale) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stale == ["a", "b"]  # and t1 now waits inside the generator
    got: list[str] = []
    t2 = threading.Thread(target=lambda: got.extend(m.name for m in replay.attempt()), daemon=True)
    t2.start()
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == ["a", "b"]  # replayed at once, though t1 is still blocked in the source
    go.set()
    t1.join(5)
    t2.join(5)
    assert not t1.is_alive() and not t2.is_alive()
    assert got == ["a", "b", "c"] and stale == ["a", "b"]  # the item t1 read went to the live attempt
    assert replay.retryable
    replay.commit()
    assert not replay.retryable


def test_replay_stops_keeping_past_its_limit_and_sends_everything_once() -> None:
    from deepguard.client import _Replay

    replay = _Replay((_Msg(str(i)) for i in range(5)), limit=25)
    assert [m.name for m in replay.attempt()] == ["0", "1", "2", "3", "4"]
    assert not replay.retryable  # 50 bytes read: over the limit, so no retry will be offered
    assert replay._items == []  # nothing kept once no retry can use it


def test_stream_retried_elsewhere_only_before_its_first_result(pair) -> None:
    a, b = pair
    frames = sample_frames(200)[:5]
    with Client(f"127.0.0.1:{a.port},127.0.0.1:{b.port}", timeout=120) as c:
        assert _both_ready(c, pair)
        b.engine.begin_drain(3600)  # b refuses new calls (UNAVAILABLE) while its health still says SERVING
        release = threading.Event()
        try:
            before = _calls(a, "StreamFrames"), _calls(a, "GetModelInfo")
            for _ in range(4):  # round_robin sends about half the tries to b: each is retried on a
                s = c.stream_frames(frames)
                assert [r.frame.index for r in s] == list(range(5)) and s.summary.frames == 5
                assert c.model_info()["model"]  # unary calls: gRPC's retry policy
            assert _calls(a, "StreamFrames") - before[0] == 4 and _calls(a, "GetModelInfo") - before[1] == 4
            assert (
                _calls(b, "StreamFrames", "UNAVAILABLE") >= 1
                and _calls(b, "GetModelInfo", "UNAVAILABLE") >= 1
            )
            assert _calls(b, "StreamFrames") == 0

            # A stream that has produced results is never replayed: cut mid-stream, it fails on its replica.
            def two_then_wait():
                yield from frames[:2]
                release.wait(120)  # set once the stream has failed

            s, got = c.stream_frames(two_then_wait()), []
            with pytest.raises(ServerError) as e:
                for r in s:
                    got.append(r.frame.index)
                    if len(got) == 2:
                        a.engine.begin_drain(0)  # a stops reading: summary, then UNAVAILABLE
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and got == [0, 1] and s.summary.frames == 2
            assert _calls(a, "StreamFrames", "UNAVAILABLE") == 1 and _calls(b, "StreamFrames") == 0
        finally:
            release.set()


def test_drain_notice_health_not_serving_and_new_calls_unavailable(pair, monkeypatch) -> None:
    a, _ = pair
    monkeypatch.setattr("deepguard.server.DRAIN_NOTICE_S", 5.0)  # (1 s by default) room for a busy CPU
    frames = sample_frames(200)[:2]
    with Client(f"127.0.0.1:{a.port}", timeout=30) as c:  # one address: no balancing, it sees a itself
        assert c.health() == "SERVING"
        stop = threading.Thread(target=a.stop, args=(20.0,))  # notice: min(DRAIN_NOTICE_S, grace / 2)
        stop.start()
        assert _wait_for(lambda: a.engine.draining, 10)
        assert c.health() == "NOT_SERVING"  # the port still answers health in the notice period
        with pytest.raises(ServerError) as e:
            list(c.stream_frames(frames))
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and "retry on another replica" in e.value.details
        assert _calls(a, "StreamFrames", "UNAVAILABLE") == 1
        stop.join(30)


def test_tls_and_token_with_two_addresses(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = {"tls_cert": str(cert), "tls_key": str(key), "token": TOKEN}
    with running_server(**tls) as a, running_server(**tls) as b:
        ips = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
        for target, name in (
            (ips, None),
            (f"localhost:{a.port},localhost:{b.port}", None),
            (ips, "localhost"),
        ):
            with Client(target, tls_ca=cert, token=TOKEN, timeout=30, tls_server_name=name) as c:
                assert c.health() == "SERVING"
                assert _both_ready(c, (a, b))
        with (
            Client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", tls_ca=cert, timeout=30) as anon,
            pytest.raises(ServerError) as e,
        ):
            anon.model_info()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_cli_detect_with_two_servers(pair, t1_jpg: Path, capsys) -> None:
    from deepguard.cli import main

    a, b = pair
    assert (
        main(
            ["detect", str(t1_jpg), "--format", "jsonl", "--server", f"127.0.0.1:{a.port},127.0.0.1:{b.port}"]
        )
        == 0
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["path"] == str(t1_jpg) and line["verdict"] in ("real", "fake", "uncertain") and line["faces"]


# -- two `deepguard serve` processes, one drained by SIGTERM ----------------------------------------------------
def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]


def _rpcs(path: Path, method: str, code: str | None = "OK") -> list[dict]:
    return [
        e
        for e in _log(path)
        if e.get("event") == "rpc" and e["method"] == method and code in (None, e["code"])
    ]


def _ts(entry: dict) -> float:
    return datetime.fromisoformat(entry["ts"]).timestamp()


@pytest.fixture
def replicas(tmp_path: Path):
    """Two `deepguard serve` processes on free loopback ports: [(process, port, log path)] * 2."""
    logs = [tmp_path / f"replica{k}.log" for k in range(2)]
    args = ("--threads", "1", "--grace-s", "120")  # a generous drain: this CPU may be shared and slow
    with ThreadPoolExecutor(2) as ex:
        futures = [ex.submit(serve_subprocess, log, *args, env={"OMP_NUM_THREADS": "1"}) for log in logs]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        for f in futures:
            if f.exception() is not None:
                raise f.exception()
        yield [(proc, port, log) for (proc, port), log in zip(started, logs, strict=True)]
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.mark.slow  # ~55-100 s on a shared 2-core CPU: two model loads and 96 frames
def test_two_replicas_share_8_streams_and_one_drains_on_sigterm(replicas) -> None:
    (proc_a, port_a, log_a), (proc_b, port_b, log_b) = replicas
    n = 12
    frames = sample_frames(200)[:n]
    got: list[list[int]] = [[] for _ in range(8)]  # result indices per stream, as they arrive

    def camera_stream(k: int):
        stream = c.stream_frames(_paced(frames, 0.25))  # a camera: >= 3 s a stream
        got[k].extend(r.frame.index for r in stream)
        return stream.summary

    with (
        Client(f"127.0.0.1:{port_a},127.0.0.1:{port_b}", timeout=300) as c,
        ThreadPoolExecutor(8) as pool,
    ):
        assert _wait_for(lambda: c.model_info() and all(_rpcs(p, "GetModelInfo") for p in (log_a, log_b)), 60)
        first = [pool.submit(camera_stream, k) for k in range(4)]
        assert _wait_for(lambda: all(got[:4]) or any(f.done() for f in first), 120)
        assert not any(f.done() for f in first), "a stream ended before SIGTERM"
        proc_a.send_signal(signal.SIGTERM)
        assert _wait_for(lambda: any(e.get("event") == "draining" for e in _log(log_a)), 30)
        second = [pool.submit(camera_stream, k) for k in range(4, 8)]  # during the drain notice
        summaries = [f.result(300) for f in first + second]  # a failed stream raises here
        assert got == [list(range(n))] * 8 and [s.frames for s in summaries] == [n] * 8  # none lost or twice
        assert proc_a.wait(60) == 0
        assert c.model_info()["model"]  # the survivor still serves

    events_a = _log(log_a)
    drained = next(e for e in events_a if e.get("event") == "draining")
    assert events_a[-1]["event"] == "stopped"
    on_a, on_b = _rpcs(log_a, "StreamFrames"), _rpcs(log_b, "StreamFrames")
    assert len(on_a) + len(on_b) == 8 and on_a and on_b  # both replicas were used
    # a's streams are the ones in flight at SIGTERM, finished in full; every stream started later went to b
    assert all(e["frames"] == n and _ts(e) - e["ms"] / 1e3 < _ts(drained) for e in on_a)
    assert len(on_b) >= 4
    refused = _rpcs(log_a, "StreamFrames", "UNAVAILABLE")  # new streams a refused in its notice: retried on b
    assert all(_ts(e) >= _ts(drained) for e in refused)
