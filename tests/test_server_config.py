"""Server settings are checked at start (issue 16): a bad limit, port, history file or model path is a usage error
(exit 2) whose message names the flag, before any model is loaded or port bound."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from deepguard.serving.config import ConfigError, ServerConfig


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("max_message_bytes", 0, "--max-message-mb"),
        ("max_frame_pixels", -1, "--max-frame-pixels"),
        ("max_video_bytes", math.nan, "--max-video-mb"),
        ("max_video_seconds", math.inf, "--max-video-seconds"),
        ("request_budget_s", 0.0, "--request-budget-s"),
        ("read_timeout_s", math.nan, "--read-timeout-s"),
        ("max_uploads", 0, "--max-uploads"),
    ],
)
def test_every_limit_must_be_positive_and_finite(field: str, value: float, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        ServerConfig(**{field: value}).validate()


def test_ports_must_be_in_range() -> None:
    with pytest.raises(ConfigError, match="--port must be between 0 and 65535"):
        ServerConfig(port=70000).validate()


def test_health_port_in_range_and_its_own() -> None:
    with pytest.raises(ConfigError, match="--health-port must be between"):
        ServerConfig(health_port=70000, rest_port=None).validate()
    with pytest.raises(ConfigError, match="--health-port 50051 is already"):
        ServerConfig(health_port=50051, rest_port=None).validate()
    ServerConfig(health_port=50052, rest_port=None).validate()
    ServerConfig(port=0, health_port=0, rest_port=None).validate()  # both ephemeral: the OS picks two ports


def test_history_db_must_be_a_writable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        ServerConfig(rest_port=0, history_db=str(tmp_path)).validate()  # a folder
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        ServerConfig(rest_port=0, history_db=str(blocker / "sub" / "h.sqlite3")).validate()
    ServerConfig(
        rest_port=0, history_db=str(tmp_path / "new" / "h.sqlite3")
    ).validate()  # created on first use
    assert not (tmp_path / "new").exists()  # the check leaves nothing behind


def test_serve_model_must_be_a_file(tmp_path: Path, capsys) -> None:
    from deepguard.cli import main

    assert main(["serve", "--model", str(tmp_path), "--port", "0"]) == 2
    assert "is a folder; give the fused .onnx model file" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing.onnx"), "--port", "0"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_serve_help_does_not_offer_face_crops(capsys) -> None:
    from deepguard.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--max-streams" in out and "--face-crops" not in out


def test_metrics_listen_on_loopback_only_when_a_token_guards_the_server() -> None:
    """The Prometheus exporter cannot check the token: with one set, /metrics is not reachable from outside."""
    from deepguard.server import metrics_address

    assert metrics_address(ServerConfig(host="0.0.0.0", token="t")) == "127.0.0.1"
    assert metrics_address(ServerConfig(host="[::]", token="t")) == "::1"
    assert metrics_address(ServerConfig(host="0.0.0.0", allow_insecure=True)) == "0.0.0.0"
    assert metrics_address(ServerConfig(host="127.0.0.1", token="t")) == "127.0.0.1"
