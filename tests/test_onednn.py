"""Training commands ask TensorFlow for oneDNN kernels (2x faster steps on AVX2-only hosts), unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from deepguard.training.onednn import use_onednn; use_onednn(); "
    "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
)


def _probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("given", "expected"), [(None, "True"), ("1", "True"), ("0", "False")])
def test_use_onednn_turns_it_on_unless_the_caller_said_no(given, expected):
    assert _probe(given) == expected


def test_training_commands_ask_for_onednn(monkeypatch):
    """Each TensorFlow training command sets the switch before its first TensorFlow import."""
    from deepguard import cli

    calls = []

    def stop_here() -> None:  # a command that reached args (or TensorFlow) first would fail differently
        calls.append(1)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "use_onednn", stop_here)
    for cmd in (cli.cmd_train, cli.cmd_train_default, cli.cmd_loso):
        with pytest.raises(SystemExit):
            cmd(None)
    assert len(calls) == 3
