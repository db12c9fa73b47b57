"""The out file of a scan: which files are done, and appending finished rows so that a crash loses none.

JSONL (``--out results.jsonl``): one object per file, ``deepguard detect --format jsonl``'s fields plus ``size``,
``mtime_ns`` and ``key`` (see :mod:`deepguard.scan.files`). Append-only: each row is written with one ``write``
as soon as it reaches the driver (so it survives the driver being killed) and fsync'ed in small batches (so it
survives the machine going down). On start the file is read line by line to rebuild the done set; a last line
cut short by a crash is dropped (the file is truncated to the last complete row, which it leaves untouched).

Parquet (``--out results.parquet``, a folder): one ``part-NNNNNN.parquet`` per flushed batch, one row per file,
nested fields (faces, frames, persons) as JSON strings. Each part is written to a temporary name and renamed, so
a part is whole or absent; rows not yet in a part sit in ``_journal.jsonl`` (same rules as above) and become a
part on the next start, so Parquet resumes as losslessly as JSONL.

One scan per out file at a time (an exclusive ``flock``). Rows are never written twice: :meth:`write` ignores a
key already done.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")


def result_row(record: dict, entry: dict) -> dict:
    """The row for one file: the analysis record (``deepguard.output.to_record``) plus the entry's key fields."""
    return {**record, "size": entry["size"], "mtime_ns": entry["mtime_ns"], "key": entry["key"]}


def _key_of(line: bytes) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    key = row.get("key") if isinstance(row, dict) else None
    return key if isinstance(key, str) else None


class LockedError(RuntimeError):
    pass


def _lock(fd: int, name: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(f"{name}: another scan is writing it") from None


class JsonlLedger:
    """Append-only JSONL rows, crash-tolerant on read, fsync'ed every ``fsync_rows`` rows or ``fsync_s`` s."""

    def __init__(self, path: str | os.PathLike, fsync_rows: int = 16, fsync_s: float = 2.0) -> None:
        self.path = Path(path)
        self.fsync_rows, self.fsync_s = fsync_rows, fsync_s
        self.done: set[str] = set()
        self._fd: int | None = None
        self._unsynced, self._synced_at = 0, time.monotonic()

    def open(self) -> set[str]:
        """Lock the file, repair a cut-short last line, and return the keys already done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        _lock(self._fd, self.path)
        for _, key in self._scan(repair=True):
            self.done.add(key)
        return self.done

    def rows(self) -> Iterator[bytes]:
        """The complete rows of the file as JSON bytes (for turning a journal into a Parquet part)."""
        return (line for line, _ in self._scan(repair=False))

    def _scan(self, repair: bool) -> Iterator[tuple[bytes, str]]:
        good = 0
        with open(self.path, "rb") as f:
            for line in f:
                key = _key_of(line)
                if not line.endswith(b"\n") and key is None:  # a row the last run was writing when it died
                    break
                good += len(line)
                if key is None:
                    log.warning("%s: skipping a line that is not a scan row", self.path)
                    continue
                if not line.endswith(b"\n") and repair:  # whole row, newline lost: finish the line
                    os.write(self._fd, b"\n")
                    good += 1
                yield line.rstrip(b"\n"), key
        if repair and good < self.path.stat().st_size:
            log.warning(
                "%s: dropping a cut-short last line (%d bytes)", self.path, self.path.stat().st_size - good
            )
            os.truncate(self.path, good)

    def write(self, key: str, row: str) -> bool:
        """Append ``row`` (one JSON object) unless ``key`` is done; False when it was skipped."""
        if key in self.done:
            return False
        data = (row + "\n").encode()
        while data:
            data = data[os.write(self._fd, data) :]
        self.done.add(key)
        self._unsynced += 1
        if self._unsynced >= self.fsync_rows or time.monotonic() - self._synced_at >= self.fsync_s:
            self.sync()
        return True

    def sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
        self._unsynced, self._synced_at = 0, time.monotonic()

    def clear(self) -> None:
        """Empty the file (a journal whose rows are now in a Parquet part)."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.done.clear()
        self._unsynced = 0

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


def _parquet_schema():
    import pyarrow as pa

    s, f, i = pa.string(), pa.float64(), pa.int64()
    cols = [("path", s), ("kind", s), ("verdict", s), ("score", f), ("n_faces", i), ("n_persons", i)]
    cols += [("frames_sampled", i), ("model", s), ("error", s), ("threshold", f), ("faces", s), ("frames", s)]
    cols += [("persons", s), ("size", i), ("mtime_ns", i), ("key", s)]
    return pa.schema(cols)


def parquet_row(row: dict) -> dict:
    """A result row flattened for Parquet: counts for the lists, the lists themselves as JSON strings."""
    flat = {
        k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in row.items()
    }
    flat["n_faces"], flat["n_persons"] = len(row.get("faces") or []), len(row.get("persons") or [])
    return flat


class ParquetLedger:
    """A folder of Parquet parts plus a JSONL journal of the rows not yet in a part."""

    def __init__(self, path: str | os.PathLike, flush_rows: int = 256, flush_s: float = 30.0) -> None:
        self.path = Path(path)
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.journal = JsonlLedger(self.path / "_journal.jsonl")
        self.done: set[str] = set()
        self._buffer: list[dict] = []
        self._flushed_at = time.monotonic()
        self._next = 0
        self._lock_fd: int | None = None

    def open(self) -> set[str]:
        import pyarrow.parquet as pq

        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path}: --format parquet writes a folder of part files")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / "_lock", os.O_RDWR | os.O_CREAT, 0o644)
        _lock(self._lock_fd, self.path)
        for tmp in self.path.glob(".part-*.tmp"):  # a part the last run was writing when it died
            tmp.unlink()
        parts = sorted(self.path.glob("part-*.parquet"))
        for p in parts:
            self.done.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
        self._next = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        self.journal.open()
        pending = [json.loads(r) for r in self.journal.rows()]
        self._buffer = [r for r in pending if r["key"] not in self.done]
        self.done.update(r["key"] for r in self._buffer)
        self.flush()  # journal rows of a killed run become a part now (or are dropped if already in one)
        return self.done

    def write(self, key: str, row: str) -> bool:
        if key in self.done:
            return False
        self.journal.write(key, row)
        self._buffer.append(json.loads(row))
        self.done.add(key)
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._flushed_at >= self.flush_s:
            self.flush()
        return True

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._buffer:
            table = pa.Table.from_pylist([parquet_row(r) for r in self._buffer], schema=_parquet_schema())
            final = self.path / f"part-{self._next:06d}.parquet"
            tmp = self.path / f".{final.name}.tmp"
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._next += 1
            self._buffer.clear()
        self.journal.clear()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.journal.close()
        self.journal.path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def open_ledger(out: str | os.PathLike, fmt: str = "jsonl") -> JsonlLedger | ParquetLedger:
    """The locked ledger for ``out``; its ``done`` set holds the keys finished by earlier runs."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    ledger = JsonlLedger(out) if fmt == "jsonl" else ParquetLedger(out)
    ledger.open()
    return ledger
