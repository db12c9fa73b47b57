"""The CLI starts without the heavy stacks: `import deepguard.cli` and building its parser load none of them.

Checked in a fresh interpreter (this test process has long imported everything), by module name, not by time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("onnx", "onnxruntime", "tensorflow", "keras", "tf2onnx", "torch", "grpc", "flask", "cv2")
ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_parser_load_no_heavy_module() -> None:
    assert _loaded_after("import deepguard.cli\ndeepguard.cli.build_parser()") == []


def test_convert_package_names_resolve_lazily() -> None:
    assert _loaded_after("import deepguard.convert") == []
    # the probe can fail: asking for a converter does load onnx
    assert "onnx" in _loaded_after("import deepguard.convert\ndeepguard.convert.to_int8")


def test_help_runs_without_heavy_modules() -> None:
    code = "import deepguard.cli\ntry:\n    deepguard.cli.main(['--help'])\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []
