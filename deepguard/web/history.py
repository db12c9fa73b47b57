"""Server-side history of web analyses in SQLite, keyed to a browser's random id (no accounts).

Why SQLite: one file, no service to run, survives restarts, safe with the REST server's threads (every call
opens its own short-lived connection; WAL lets readers and the writer overlap). What is stored per analysis:
the result JSON (scores, boxes, small face crops), a small preview and thumbnail (derived JPEGs, never the
upload itself) and, only when the user asked for it, the original file in a folder next to the database
(``<db>-media/``) under a random name - never the client's file name.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client TEXT NOT NULL,
    created REAL NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    verdict TEXT NOT NULL,
    score REAL,
    n_faces INTEGER NOT NULL,
    size INTEGER NOT NULL,
    result TEXT NOT NULL,
    preview BLOB,
    thumb BLOB,
    media TEXT,
    media_type TEXT
);
CREATE INDEX IF NOT EXISTS analyses_client ON analyses (client, id);
"""

LIST_COLUMNS = "id, created, name, kind, verdict, score, n_faces, size, thumb, media IS NOT NULL"


def default_path() -> Path:
    """``$XDG_DATA_HOME/deepguard/history.sqlite3`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deepguard" / "history.sqlite3"


@dataclass
class Entry:
    """One stored analysis as the web app needs it (images as JPEG bytes)."""

    id: int
    created: float
    name: str
    kind: str
    verdict: str
    score: float | None
    n_faces: int
    size: int
    thumb: bytes | None
    media_kept: bool
    result: dict | None = None
    preview: bytes | None = None


#: SQLite's largest integer: an id from a URL beyond it (``/api/history/99999999999999999999``) matches no row, so
#: it is "not found", never an OverflowError from the driver.
ID_MAX = (1 << 63) - 1


def _storable(entry_id: int) -> bool:
    return 0 < entry_id <= ID_MAX


class History:
    """All history reads and writes; every query is scoped to one client id."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.media_dir = self.path.with_name(self.path.name + "-media")
        self._init_lock = threading.Lock()
        self._ready = False

    # -- plumbing --------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """Created lazily, so a server whose web app is never used leaves no file behind."""
        if not self._ready:
            with self._init_lock:
                if not self._ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    con = sqlite3.connect(self.path, timeout=30)
                    try:
                        con.execute("PRAGMA journal_mode=WAL")
                        con.executescript(SCHEMA)
                        con.commit()
                    finally:
                        con.close()
                    self._ready = True
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA foreign_keys=ON")
        return con

    # -- writes -----------------------------------------------------------------------------------------------
    def add(
        self,
        client: str,
        result: dict,
        *,
        name: str,
        size: int,
        preview: bytes | None,
        thumb: bytes | None,
        media: IO[bytes] | None = None,
        media_type: str | None = None,
    ) -> int:
        """Store one analysis (``result``: the web result without images); returns its id."""
        media_name = None
        if media is not None:
            self.media_dir.mkdir(parents=True, exist_ok=True)
            media_name = secrets.token_hex(16)
            media.seek(0)
            with open(self.media_dir / media_name, "wb") as out:
                while chunk := media.read(1 << 20):
                    out.write(chunk)
        con = self._connect()
        try:
            with con:
                cur = con.execute(
                    "INSERT INTO analyses (client, created, name, kind, verdict, score, n_faces, size, result,"
                    " preview, thumb, media, media_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        client,
                        time.time(),
                        name,
                        result["kind"],
                        result["verdict"],
                        result.get("score"),
                        len(result.get("record", {}).get("faces", [])),
                        size,
                        json.dumps(result, separators=(",", ":")),
                        preview,
                        thumb,
                        media_name,
                        media_type,
                    ),
                )
                return int(cur.lastrowid or 0)
        except BaseException:
            if media_name:
                (self.media_dir / media_name).unlink(missing_ok=True)
            raise
        finally:
            con.close()

    def delete(self, client: str, entry_id: int | None = None) -> int:
        """Delete one entry (or all of the client's when ``entry_id`` is None); returns how many went."""
        if entry_id is not None and not _storable(entry_id):
            return 0
        where, args = (
            ("client = ?", [client]) if entry_id is None else ("client = ? AND id = ?", [client, entry_id])
        )
        con = self._connect()
        try:
            with con:
                media = [r[0] for r in con.execute(f"SELECT media FROM analyses WHERE {where}", args) if r[0]]
                n = con.execute(f"DELETE FROM analyses WHERE {where}", args).rowcount
        finally:
            con.close()
        for m in media:
            (self.media_dir / m).unlink(missing_ok=True)
        return n

    # -- reads ------------------------------------------------------------------------------------------------
    def list(self, client: str, limit: int = 50, before: int | None = None) -> tuple[list[Entry], bool]:
        """Newest first; ``before`` pages backwards by id. Returns (entries, more_exist)."""
        con = self._connect()
        try:
            rows = con.execute(
                f"SELECT {LIST_COLUMNS} FROM analyses WHERE client = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (client, min(before, ID_MAX) if before is not None else ID_MAX, limit + 1),
            ).fetchall()
        finally:
            con.close()
        return [_entry(r) for r in rows[:limit]], len(rows) > limit

    def count(self, client: str) -> int:
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM analyses WHERE client = ?", (client,)).fetchone()[0])
        finally:
            con.close()

    def get(self, client: str, entry_id: int) -> Entry | None:
        if not _storable(entry_id):
            return None
        con = self._connect()
        try:
            row = con.execute(
                f"SELECT {LIST_COLUMNS}, result, preview FROM analyses WHERE client = ? AND id = ?",
                (client, entry_id),
            ).fetchone()
        finally:
            con.close()
        if row is None:
            return None
        e = _entry(row[:10])
        e.result, e.preview = json.loads(row[10]), row[11]
        return e

    def media(self, client: str, entry_id: int) -> tuple[Path, str, str] | None:
        """(file, stored name, media type) of a kept original, or None."""
        if not _storable(entry_id):
            return None
        con = self._connect()
        try:
            row = con.execute(
                "SELECT media, name, media_type FROM analyses WHERE client = ? AND id = ? AND media IS NOT NULL",
                (client, entry_id),
            ).fetchone()
        finally:
            con.close()
        if row is None or not (self.media_dir / row[0]).is_file():
            return None
        return self.media_dir / row[0], row[1], row[2] or "application/octet-stream"


def _entry(r: tuple) -> Entry:
    return Entry(
        id=r[0],
        created=r[1],
        name=r[2],
        kind=r[3],
        verdict=r[4],
        score=r[5],
        n_faces=r[6],
        size=r[7],
        thumb=r[8],
        media_kept=bool(r[9]),
    )
