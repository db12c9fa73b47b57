"""The files a scan covers, listed lazily, and the key that says whether one is already done.

Inputs are files, folders (walked one directory at a time, recursively, media extensions only, hidden entries
skipped, sorted within each directory) and ``@list.txt`` files (one path per line, read line by line; blank lines
and ``#`` comments skipped; a line may name a folder). Nothing is listed into memory as a whole.

Keys (``--key``):

- ``stat`` (default): absolute path + size + mtime (ns). Costs one ``stat`` per file, so a rerun over 100,000
  clips decides what is left in seconds; a file that is replaced or edited in place gets a new key and is
  analysed again.
- ``hash``: absolute path + SHA-256 of the content. For archives whose mtimes are not trustworthy (restored or
  copied with new times, or edited with times kept); costs reading every byte of every file on the driver at each
  start, which for a video archive is hours of I/O before the first result.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

KEY_MODES = ("stat", "hash")


@dataclass(frozen=True)
class Entry:
    """One input file: where it is, what it looked like when listed, and its resume key."""

    path: str
    size: int  # -1 when the file could not be stat'ed (it then gets an error row)
    mtime_ns: int
    key: str

    def to_dict(self) -> dict:
        return asdict(self)


def _extensions() -> frozenset[str]:
    from deepguard.runtime.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    return IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def walk_media(top: str, exts: frozenset[str]) -> Iterator[str]:
    """Media files under ``top``, depth first, each directory's entries sorted; hidden files/folders skipped."""
    for root, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                yield os.path.join(root, name)


def _list_file(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def iter_paths(specs: Iterable[str]) -> Iterator[str]:
    """Absolute paths of every file that ``specs`` (files, folders, ``@list.txt``) name, in order, lazily."""
    exts = _extensions()
    for spec in specs:
        sources = _list_file(spec[1:]) if spec.startswith("@") else (spec,)
        for p in sources:
            if os.path.isdir(p):
                yield from (os.path.abspath(f) for f in walk_media(p, exts))
            else:
                yield os.path.abspath(p)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_entry(path: str, mode: str = "stat") -> Entry:
    """The :class:`Entry` for ``path``; an unreadable file still gets one (its row will be the error)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime_ns
        tag = _sha256(path) if mode == "hash" else f"{size}:{mtime}"
    except OSError:
        size, mtime, tag = -1, -1, "unreadable"
    return Entry(path, size, mtime, f"{path}\t{tag}")


def iter_entries(specs: Iterable[str], mode: str = "stat") -> Iterator[Entry]:
    if mode not in KEY_MODES:
        raise ValueError(f"key mode must be one of {KEY_MODES}, not {mode!r}")
    return (make_entry(p, mode) for p in iter_paths(specs))
