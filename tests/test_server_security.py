"""TLS + bearer token on every front-end, and the refusal to expose an unauthenticated server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import requests

from deepguard.client import Client, ServerError
from deepguard.serving.auth import token_ok
from deepguard.serving.config import ConfigError, ServerConfig
from tests.server_support import running_server, self_signed_cert

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    with running_server(tls_cert=str(cert), tls_key=str(key), token=TOKEN) as srv:
        yield srv, cert


def test_grpc_tls_token_required(tls_server, astronaut) -> None:
    srv, cert = tls_server
    target = f"127.0.0.1:{srv.port}"
    with Client(target, tls_ca=cert, timeout=30) as anon:
        assert anon.health() == "SERVING"  # probes need no token
        for call in (
            anon.model_info,
            lambda: anon.analyze_image(astronaut),
            lambda: list(anon.stream_frames([astronaut])),
        ):
            with pytest.raises(ServerError) as e:
                call()
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in e.value.details
    with Client(target, tls_ca=cert, token="wrong", timeout=30) as bad, pytest.raises(ServerError) as e:
        bad.model_info()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(target, tls_ca=cert, token=TOKEN, timeout=30) as ok:
        assert ok.analyze_image(astronaut).verdict in ("real", "uncertain", "fake")
        assert len(list(ok.stream_frames([astronaut, astronaut]))) == 2
    with Client(target, timeout=5) as plain, pytest.raises(ServerError) as e:  # no TLS: the handshake fails
        plain.model_info()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_rest_and_metrics_use_tls_and_token(tls_server, t1_jpg: Path) -> None:
    srv, cert = tls_server
    url = f"https://127.0.0.1:{srv.rest_port}"
    files = {"file": ("t1.jpg", t1_jpg.read_bytes())}
    r = requests.post(f"{url}/predict_image", files=files, verify=str(cert), timeout=60)
    assert (
        r.status_code == 401 and r.json()["msg"]["result"] == "Error" and "bearer token" in r.json()["error"]
    )
    r = requests.post(
        f"{url}/predict_image",
        files=files,
        verify=str(cert),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["msg"]["result"] in ("Real", "Fake")
    assert requests.get(f"{url}/healthz", verify=str(cert), timeout=10).status_code == 200
    assert (
        "deepguard_requests_total"
        in requests.get(f"https://127.0.0.1:{srv.metrics_port}/metrics", verify=str(cert), timeout=10).text
    )


def test_token_comparison() -> None:
    assert token_ok("Bearer abc", "abc") and token_ok("bearer  abc ", "abc")
    assert not token_ok(None, "abc") and not token_ok("abc", "abc") and not token_ok("Bearer abd", "abc")
    assert not token_ok("Basic abc", "abc")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_non_loopback_without_auth_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-insecure"):
        ServerConfig(host=host).validate()
    with pytest.raises(ConfigError, match="TLS"):
        ServerConfig(host=host, token="t").validate()
    cert, key = self_signed_cert(tmp_path)
    ServerConfig(host=host, token="t", tls_cert=str(cert), tls_key=str(key)).validate()
    ServerConfig(host=host, allow_insecure=True).validate()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.1.2.3"])
def test_loopback_needs_no_auth(host: str) -> None:
    ServerConfig(host=host).validate()


def test_cli_serve_refuses_before_loading_models(capsys, monkeypatch) -> None:
    from deepguard.cli import main

    monkeypatch.delenv("DEEPGUARD_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--log-format", "text"]) == 2
    assert "refusing to serve on non-loopback address '0.0.0.0'" in capsys.readouterr().err
