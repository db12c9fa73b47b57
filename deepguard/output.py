"""Render analyses for the terminal and for machines: table, JSON lines, CSV.

One JSON object per file with at least ``path, kind, verdict, score, faces, frames, model, error`` (the CLI
contract; tests check it). ``score`` is P(fake) in [0, 1], or null when no face was seen. ``verdict`` is real,
fake, no_face or error, and also uncertain for calibrated models with an uncertain band (see
:func:`deepguard.runtime.aggregate.verdict`). ``persons`` lists the tracked persons (id, score, n_faces,
first/last frame, verdict; the video score is the max of their scores) and each face carries its ``person`` id.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TextIO

from deepguard.runtime.types import Analysis

CSV_FIELDS = ["path", "kind", "verdict", "score", "n_faces", "n_persons", "frames_sampled", "model", "error"]


def to_record(a: Analysis) -> dict:
    d = a.to_dict()
    d["score"] = None if a.score is None else round(float(a.score), 6)
    return d


def write_jsonl(a: Analysis, out: TextIO) -> None:
    out.write(json.dumps(to_record(a), ensure_ascii=False) + "\n")


def write_csv(a: Analysis, out: TextIO, header: bool) -> None:
    w = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
    if header:
        w.writeheader()
    rec = to_record(a)
    rec["n_faces"] = len(a.faces)
    rec["n_persons"] = len(a.persons)
    w.writerow(rec)


def table_row(a: Analysis, width: int = 48) -> str:
    path = a.path if len(a.path) <= width else "…" + a.path[-(width - 1) :]
    score = "-" if a.score is None else f"{a.score:6.3f}"
    extra = a.error or (
        f"{len(a.faces)} face(s)"
        + (f", {len(a.persons)} person(s), {a.frames_sampled} frames" if a.kind == "video" else "")
    )
    return f"{path:<{width}}  {a.kind:<5}  {a.verdict.upper():<9}  {score:>6}  {extra}"


def table_header(width: int = 48) -> str:
    return f"{'PATH':<{width}}  {'KIND':<5}  {'VERDICT':<9}  {'SCORE':>6}  DETAILS"


def render(a: Analysis, fmt: str) -> str:
    buf = io.StringIO()
    if fmt == "jsonl":
        write_jsonl(a, buf)
    elif fmt == "csv":
        write_csv(a, buf, header=False)
    else:
        buf.write(table_row(a) + "\n")
    return buf.getvalue()
