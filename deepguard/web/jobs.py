"""Background analyses for the web app, so the page can show analysis progress while a video is scored.

``POST /api/analyze`` takes the upload (the browser shows upload progress), hands it to a :class:`Job` and
answers at once; the page then polls ``GET /api/jobs/<id>`` for ``done`` / ``total`` frames until the result
(already saved to the history) or an error arrives. A job whose page stopped polling for two minutes is
cancelled, so an abandoned tab never keeps the models busy.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from deepguard.errors import MediaError
from deepguard.serving.batcher import Cancelled, Closed, Overloaded
from deepguard.serving.budget import OverBudget
from deepguard.serving.engine import ShuttingDown

log = logging.getLogger("deepguard.server.web")

ABANDONED_S = 120.0  # no poll for this long -> the job is cancelled
KEEP_FINISHED_S = 600.0  # finished jobs stay readable this long
MAX_JOBS = 256


@dataclass
class Job:
    id: str
    client: str
    name: str
    kind: str
    state: str = "running"  # running | done | error | cancelled
    done: int = 0
    total: int | None = None
    result: dict | None = None
    error: str | None = None
    code: str | None = None
    cancel: bool = False
    polled: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def cancelled(self) -> bool:
        return self.cancel or time.monotonic() - self.polled > ABANDONED_S

    def view(self) -> dict:
        out: dict = {
            "id": self.id,
            "state": self.state,
            "kind": self.kind,
            "done": self.done,
            "total": self.total,
        }
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"], out["code"] = self.error, self.code
        return out


class Jobs:
    """Thread-per-job registry; the caller has already admitted the job (upload slots, size limits)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(
        self,
        client: str,
        name: str,
        kind: str,
        work: Callable[[Job], dict],
        stream: IO[bytes],
        release: Callable[[], None],
    ) -> Job:
        """Run ``work(job)`` in a thread; its return value becomes the result. ``release`` runs at the end."""
        job = Job(secrets.token_urlsafe(12), client, name, kind)
        with self._lock:
            self._expire()
            self._jobs[job.id] = job

        def run() -> None:
            try:
                job.result = work(job)
                job.state = "done"
            except MediaError as e:
                self._fail(job, "bad_media", str(e))
            except Cancelled:
                self._fail(job, "cancelled", "the analysis was cancelled", state="cancelled")
            except (Overloaded, OverBudget) as e:
                self._fail(job, "busy", str(e))
            except (ShuttingDown, Closed) as e:
                self._fail(job, "shutting_down", str(e) or "server is shutting down")
            except Exception as e:  # noqa: BLE001 - reported to the page, logged with its traceback
                log.error("web analysis of %s failed: %s", name, e, exc_info=e)
                self._fail(job, "internal", f"internal error: {type(e).__name__}")
            finally:
                job.finished = time.monotonic()
                try:
                    stream.close()
                finally:
                    release()

        threading.Thread(target=run, name=f"web-job-{job.id[:6]}", daemon=True).start()
        return job

    @staticmethod
    def _fail(job: Job, code: str, message: str, state: str = "error") -> None:
        job.code, job.error, job.state = code, message, state

    def get(self, job_id: str, client: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not secrets.compare_digest(job.client, client):
            return None
        job.polled = time.monotonic()
        return job

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, j in self._jobs.items() if j.finished and now - j.finished > KEEP_FINISHED_S]:
            del self._jobs[k]
        if len(self._jobs) >= MAX_JOBS:
            for k in sorted(
                (k for k, j in self._jobs.items() if j.finished), key=lambda k: self._jobs[k].finished
            )[: len(self._jobs) - MAX_JOBS + 1]:
                del self._jobs[k]
