"""Helpers for the server tests: one shared Detector, test frames, servers on ephemeral loopback ports."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import moving_face_frames

os.environ.setdefault("OMP_NUM_THREADS", "1")


@functools.cache
def shared_detector():
    """One Detector (threads=1: the CPU is shared) for every server test and every in-process reference."""
    from deepguard.runtime.pipeline import Detector

    return Detector(threads=1)


@functools.cache
def sample_frames(n: int = 200) -> tuple[np.ndarray, ...]:
    """160x120 frames of the astronaut's face sliding across; every 7th frame is blank (no face)."""
    skdata = pytest.importorskip("skimage.data")
    frames = moving_face_frames(skdata.astronaut()[0:260, 120:360], n, size=(160, 120))
    for i in range(0, n, 7):
        frames[i] = np.full_like(frames[i], 90)
    return tuple(frames)


@functools.cache
def reference(n: int = 200) -> tuple:
    """In-process results for sample_frames(n): ((FrameScore, [Face]), ...)."""
    return tuple(shared_detector().iter_frames(list(sample_frames(n))))


def assert_same_results(remote, ref) -> None:
    """Server StreamResults vs in-process (FrameScore, faces): same frames, faces, boxes and scores."""
    assert len(remote) == len(ref)
    for r, (fs, faces) in zip(remote, ref, strict=True):
        assert r.frame.index == fs.index and r.frame.n_faces == fs.n_faces == len(r.faces)
        if fs.score is None:
            assert r.frame.score is None
        else:
            assert r.frame.score == pytest.approx(fs.score, abs=1e-5)
        for a, b in zip(r.faces, faces, strict=True):
            assert a.box == pytest.approx(b.box, abs=0.011)
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert a.member_scores == pytest.approx(b.member_scores, abs=1e-5)


@contextmanager
def running_server(**overrides):
    """A real server (gRPC + REST + metrics) on 127.0.0.1 ephemeral ports with the shared Detector."""
    from deepguard.server import Server
    from deepguard.serving.config import ServerConfig

    cfg = ServerConfig(port=0, rest_port=0, metrics_port=0, grace_s=2.0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    srv = Server(cfg, shared_detector()).start()
    try:
        yield srv
    finally:
        srv.stop(overrides.get("grace_s", 2.0))


def scrape(port: int, name: str, **labels) -> dict[str, float]:
    """Samples of one metric family from /metrics, keyed by sample name (+ the ``le`` label)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                key = s.name + (f"[{s.labels['le']}]" if "le" in s.labels else "")
                out[key] = out.get(key, 0.0) + s.value
    return out


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 / localhost (the `cryptography` package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def serve_subprocess(log_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180.0):
    """``deepguard serve --port 0`` (gRPC only) in its own process, so its RSS is the server's alone.

    Returns ``(process, port)`` once the "serving" log line names the port; fails with the log otherwise.
    """
    import json
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    full_env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    cmd = [sys.executable, "-m", "deepguard", "serve", "--port", "0", "--no-rest", "--no-metrics", *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def port() -> int | None:
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "serving":
                return int(json.loads(line)["port"])
        return None

    end = time.monotonic() + timeout
    while port() is None and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    if port() is None:
        proc.kill()
        raise AssertionError(log_path.read_text()[-3000:])
    return proc, port()
