"""Labelled evaluation sets: a ``real/`` + ``fake/`` folder tree or a CSV manifest.

Both forms resolve to the same list of :class:`Sample` so the evaluation harness never cares where
labels came from. Every path is checked up front: an evaluation that dies after an hour on a typo
in row 9,000 is worse than one that refuses to start.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from deepguard.errors import DeepGuardError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
)
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

_LABEL_WORDS = {"real": 0, "0": 0, "fake": 1, "1": 1}


class DatasetError(DeepGuardError, ValueError):
    """An evaluation set is malformed: missing folders/columns/files, bad labels, empty split."""


@dataclass(frozen=True)
class Sample:
    """One labelled file. ``group`` ties files that belong together (frames of one video);
    None means the file is a group of its own (see :attr:`group_key`). ``source`` names where the
    file comes from (a manifest's ``source`` column; None without one): metrics are then also
    reported per source (:mod:`deepguard.evaluation.by_source`)."""

    path: Path
    label: int  # 1 = fake, 0 = real
    group: str | None = None
    source: str | None = None

    @property
    def group_key(self) -> str:
        return self.group if self.group is not None else str(self.path)


def load_labelled(
    source: str | Path,
    split: str | None = None,
    group_pattern: str | re.Pattern[str] | None = None,
    group_column: str = "group",
) -> list[Sample]:
    """Load a labelled set from a folder (``real/`` and/or ``fake/``) or a CSV manifest.

    Folder: media files are collected recursively from ``source/real`` and ``source/fake`` (or
    ``source/<split>/real|fake`` when ``split`` is given). ``group_pattern`` is searched in each
    file's path relative to its class folder (posix separators, so for a flat folder just the file
    name); the group is the named group ``group``, else the first capture group, else the whole
    match. ``'^(\\w+?)_\\d+'`` groups ``abc_0001.jpg`` as ``abc``; ``'^([^/]+)/'`` groups by
    sub-folder. Without a pattern every file is its own group.

    Manifest (a file): CSV with columns ``file`` and ``label`` (real/fake or 0/1), optional
    ``group``, ``split`` and ``source``; relative paths are resolved against the CSV's folder. ``split``
    keeps only matching rows. ``group_pattern`` is searched in the file name of rows whose group
    cell is empty or absent.
    """
    src = Path(source)
    pattern = re.compile(group_pattern) if isinstance(group_pattern, str) else group_pattern
    if not src.exists():
        raise DatasetError(f"{src}: evaluation source does not exist")
    if src.is_dir():
        return _load_folder(src, split, pattern)
    return _load_manifest(src, split, pattern, group_column.strip().lower())


def _group_from(pattern: re.Pattern[str] | None, text: str, where: str) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(text)
    if m is None:
        raise DatasetError(f"{where}: group pattern {pattern.pattern!r} does not match {text!r}")
    if "group" in pattern.groupindex:
        return m.group("group")
    return m.group(1) if pattern.groups else m.group(0)


def _load_folder(root: Path, split: str | None, pattern: re.Pattern[str] | None) -> list[Sample]:
    if split is not None:
        root = root / split
        if not root.is_dir():
            raise DatasetError(f"{root}: no folder for split {split!r}")
    class_dirs = [(root / name, label) for name, label in (("real", 0), ("fake", 1))]
    if not any(d.is_dir() for d, _ in class_dirs):
        raise DatasetError(f"{root}: expected a 'real/' and/or 'fake/' sub-folder (or a CSV manifest)")
    samples: list[Sample] = []
    for class_dir, label in class_dirs:
        if not class_dir.is_dir():
            continue
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file()
            and p.suffix.lower() in MEDIA_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        for p in files:
            rel = p.relative_to(class_dir).as_posix()
            samples.append(Sample(p, label, _group_from(pattern, rel, str(p))))
    if not samples:
        exts = ", ".join(sorted(MEDIA_EXTENSIONS))
        raise DatasetError(f"{root}: no image/video files under real/ or fake/ (looked for {exts})")
    return samples


def _parse_label(raw: str | None, where: str) -> int:
    key = (raw or "").strip().lower()
    if key not in _LABEL_WORDS:
        raise DatasetError(f"{where}: label {raw!r} is not one of real, fake, 0, 1")
    return _LABEL_WORDS[key]


def _load_manifest(
    csv_path: Path, split: str | None, pattern: re.Pattern[str] | None, group_column: str = "group"
) -> list[Sample]:
    base = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise DatasetError(f"{csv_path}: manifest is empty (expected a header with file,label)")
            columns = {name.strip().lower(): name for name in reader.fieldnames if name is not None}
            missing = [c for c in ("file", "label") if c not in columns]
            if missing:
                found = ", ".join(reader.fieldnames) or "none"
                raise DatasetError(
                    f"{csv_path}: manifest lacks column(s) {', '.join(missing)} (found: {found})"
                )
            if split is not None and "split" not in columns:
                raise DatasetError(
                    f"{csv_path}: split {split!r} requested but the manifest has no split column"
                )
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not a UTF-8 CSV manifest ({exc.reason})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: malformed CSV ({exc})") from exc

    samples: list[Sample] = []
    missing_files: list[str] = []
    seen_splits: set[str] = set()
    for line_no, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path}:{line_no}"
        if "split" in columns:
            row_split = (row.get(columns["split"]) or "").strip()
            seen_splits.add(row_split)
            if split is not None and row_split != split:
                continue
        file_cell = (row.get(columns["file"]) or "").strip()
        if not file_cell:
            raise DatasetError(f"{where}: empty file cell")
        label = _parse_label(row.get(columns["label"]), where)
        path = Path(file_cell).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            missing_files.append(f"{where}: {path}")
            continue
        group = (row.get(columns[group_column]) or "").strip() if group_column in columns else ""
        if not group:
            group = _group_from(pattern, Path(file_cell).name, where)
        source = (row.get(columns["source"]) or "").strip() if "source" in columns else ""
        samples.append(Sample(path, label, group or None, source or None))

    if missing_files:
        shown = "\n  ".join(missing_files[:10])
        more = f"\n  ... and {len(missing_files) - 10} more" if len(missing_files) > 10 else ""
        raise DatasetError(f"{csv_path}: {len(missing_files)} listed file(s) not found:\n  {shown}{more}")
    if not samples:
        if split is not None:
            available = ", ".join(sorted(repr(s) for s in seen_splits)) or "none"
            raise DatasetError(f"{csv_path}: no rows for split {split!r} (splits present: {available})")
        raise DatasetError(f"{csv_path}: manifest has no rows")
    return samples
