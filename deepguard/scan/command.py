"""``deepguard scan PATH... --out results.jsonl``: the sub-command (argparse only at import) and its run.

Register it in the main CLI with ``add_scan(sub)``; ``python -m deepguard.scan`` runs it on its own.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from deepguard.errors import DeepGuardError
from deepguard.options import add_runtime_args
from deepguard.scan.files import KEY_MODES
from deepguard.scan.ledger import FORMATS


def add_scan(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "scan",
        help="analyse many files on Ray Data into JSONL/Parquet, resumably (pip install 'deepguard[scan]')",
    )
    s.add_argument(
        "paths", nargs="+", metavar="PATH", help="files, folders (recursive) or @list.txt (a path a line)"
    )
    s.add_argument(
        "--out", required=True, help="results file (a folder with --format parquet); rerun with it to resume"
    )
    s.add_argument("--format", choices=FORMATS, default="jsonl")
    s.add_argument(
        "--key",
        choices=KEY_MODES,
        default="stat",
        help="what makes a file done: stat = path+size+mtime (default), hash = path+SHA-256 (reads every file)",
    )
    s.add_argument(
        "--ray-address", metavar="auto|HOST:PORT", help="existing Ray cluster (default: local Ray)"
    )
    s.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    s.add_argument("--actors", type=int, help="detector actors (default: one per GPU, else one per CPU)")
    s.add_argument("--block", type=int, default=4, help="files per Ray task (default 4)")
    add_runtime_args(s)
    s.set_defaults(func=run_scan)


def run_scan(args: argparse.Namespace) -> int:
    import itertools

    from tqdm import tqdm

    from deepguard.scan import ray_scan
    from deepguard.scan.files import iter_entries
    from deepguard.scan.ledger import LockedError, open_ledger

    try:
        ledger = open_ledger(args.out, args.format)
    except (LockedError, NotADirectoryError) as e:
        print(f"deepguard scan: {e}", file=sys.stderr)
        return 2
    stats = {"done before": len(ledger.done), "skipped": 0, "written": 0, "errors": 0}
    queued: set[str] = set()

    def pending():
        for e in iter_entries(args.paths, args.key):
            if e.key in ledger.done or e.key in queued:  # finished earlier, or listed twice
                stats["skipped"] += 1
                continue
            queued.add(e.key)
            yield e

    started = False
    try:
        todo = pending()
        first = next(todo, None)
        if first is not None:
            started = ray_scan.start(args.ray_address, args.num_cpus)
            refs, n = ray_scan.put_blocks(itertools.chain([first], todo), args.block)
            with tqdm(total=n, unit="file", desc="scan", file=sys.stderr, disable=None) as bar:
                for key, verdict, row in ray_scan.results(refs, args):
                    if ledger.write(key, row):
                        stats["written"] += 1
                        stats["errors"] += verdict == "error"
                        bar.update()
    except DeepGuardError as e:  # an unloadable model (reported by the actors)
        print(f"deepguard scan: error: {e}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
        if started:
            import ray

            ray.shutdown()
    print(f"deepguard scan: {', '.join(f'{k} {v}' for k, v in stats.items())} -> {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepguard")
    add_scan(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(["scan", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
