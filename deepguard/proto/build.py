"""Regenerate the protobuf/gRPC Python code from ``deepguard.proto``: ``python -m deepguard.proto.build``.

Why a module and not a Makefile line: the same function is what the staleness test calls (into a temporary
folder), so the documented command and the check can never drift apart. The generated files are committed
(users need no grpcio-tools); they are pinned to the grpcio-tools version in the ``dev`` extra, because the
generator stamps its version into them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
#: The include root: the folder that holds the ``deepguard`` package, so generated imports are absolute
#: (``from deepguard.proto import deepguard_pb2``) and the file registers as ``deepguard/proto/deepguard.proto``.
ROOT = PROTO_DIR.parent.parent
PROTO = PROTO_DIR / "deepguard.proto"
GENERATED = ("deepguard_pb2.py", "deepguard_pb2.pyi", "deepguard_pb2_grpc.py")


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the generated files under ``out_root/deepguard/proto``."""
    try:
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - dev extra missing
        raise SystemExit("grpcio-tools is needed to regenerate: pip install -e '.[dev]'") from e

    out_root = Path(out_root)
    (out_root / "deepguard" / "proto").mkdir(parents=True, exist_ok=True)
    rel = PROTO.relative_to(ROOT).as_posix()
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        rel,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [out_root / "deepguard" / "proto" / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepguard.proto.build", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT, help="root to write deepguard/proto/*_pb2*.py* under")
    args = p.parse_args(argv)
    for f in generate(args.out):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
