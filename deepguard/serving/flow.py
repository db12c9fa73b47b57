"""Flow control for frames: a global byte/frame budget and each stream's ordered, bounded window.

Why: a gRPC stream already has flow control (HTTP/2 windows). A server that stops reading a stream it cannot
serve yet makes that client wait; a server that reads eagerly into one shared queue has to fail streams when
the queue fills and holds every queued frame in memory. So frames are admitted in two steps, both *waits*,
never errors:

* :class:`StreamFlow` (one per stream): at most ``window`` frames read but not answered, and at most
  ``max_bytes`` of this stream's frames waiting for analysis. While either is full the stream's reader does
  not read, so its next message stays in the transport and the sender is slowed down.
* :class:`FrameBudget` (one per server): all callers' queued frames together (bytes and count), granted
  first come first served, so a burst of large frames cannot starve the others and memory has one ceiling.

A frame's bytes go back to both budgets as soon as its analysis is done (the result is small); its window
slot goes back when its answer is taken for sending. A client that never reads its answers therefore fills
only its own window and holds no budget.

Live mode (per frame, ``Frame.live``): a camera wants the newest frame analysed, not every frame late. A live
frame that arrives while its stream already has its share of the live frames in analysis (:class:`LiveShare`)
waits in one slot; a newer frame replaces it and the older one is answered ``skipped`` in its place, so the
client still gets one answer per frame, in order. Live streams keep being read (that is how newer frames are
seen) up to a ``backlog`` of unanswered entries (a client that does not read its answers is then paused too).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from deepguard.runtime.types import Frame
from deepguard.serving.batcher import Cancelled

Predicate = Callable[[], bool]
POLL_S = 0.2  # how often a waiter re-checks its caller's cancellation


class FrameBudget:
    """Bytes and count of queued frames across all callers; ``acquire`` waits its turn (FIFO), never fails.

    A single frame larger than the whole budget is still admitted when nothing else is held, so no frame can
    be refused forever.
    """

    def __init__(self, max_bytes: int, max_items: int) -> None:
        if max_bytes < 1 or max_items < 1:
            raise ValueError("max_bytes and max_items must be >= 1")
        self.max_bytes, self.max_items = int(max_bytes), int(max_items)
        self.bytes = 0
        self.items = 0
        self.peak_bytes = 0
        self._cond = threading.Condition()
        self._turns: deque[object] = deque()

    def _fits(self, nbytes: int) -> bool:
        return self.items == 0 or (self.bytes + nbytes <= self.max_bytes and self.items < self.max_items)

    def acquire(self, nbytes: int, gone: Predicate | None = None) -> None:
        """Wait until it is this caller's turn and ``nbytes`` fit; Cancelled if ``gone()`` turns true first."""
        turn = object()
        with self._cond:
            self._turns.append(turn)
            try:
                while not (self._turns[0] is turn and self._fits(nbytes)):
                    if gone is not None and gone():
                        raise Cancelled("caller cancelled while waiting for the frame budget")
                    self._cond.wait(POLL_S)
                self.bytes += nbytes
                self.items += 1
                self.peak_bytes = max(self.peak_bytes, self.bytes)
            finally:
                self._turns.remove(turn)
                self._cond.notify_all()

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.bytes -= nbytes
            self.items -= 1
            self._cond.notify_all()


class LiveShare:
    """Live-mode frames in analysis, server-wide (``--live-window``), shared by the open live streams, each
    allowed at least one.

    Why shared: every frame in analysis beyond what keeps the cores busy is only queueing, i.e. latency.
    Measured with 720p JPEG cameras at 25 frames/s: four cameras analysed as many frames/s with one frame each in
    analysis as with two (14.5-16.8 vs 14.8-16.2) at half the latency (p50 ~290 vs ~530 ms); one camera alone
    analysed 1.3x more with two (22-25 vs 17-18 frames/s) at the same latency.
    """

    def __init__(self, frames: int) -> None:
        self.frames = max(1, frames)
        self._streams = 0
        self._lock = threading.Lock()

    def join(self) -> None:
        with self._lock:
            self._streams += 1

    def leave(self) -> None:
        with self._lock:
            self._streams -= 1

    def window(self) -> int:
        """One live stream's frames in analysis now."""
        return max(1, self.frames // max(1, self._streams))


@dataclass(eq=False)
class DeferredFrame:
    """A frame whose pixels are decoded only when it is handed to the engine.

    Why: a live stream skips most frames (a camera sends faster than the server analyses), and decoding every
    JPEG it sends took more of the CPU than analysing the frames it kept. ``nbytes`` is the decoded size, what
    the budgets hold for it meanwhile; a decoding error is that frame's answer, as it would have been on arrival.
    """

    index: int
    time: float | None
    nbytes: int
    decode: Callable[[], np.ndarray]

    def load(self) -> Frame:
        return Frame(self.decode(), self.index, self.time)


@dataclass(eq=False)
class Entry:
    """One answer owed to the client, in stream order: a frame, or the stream's end / error marker."""

    index: int = 0
    time: float | None = None
    nbytes: int = 0
    frame: Frame | DeferredFrame | None = None  # held until handed to the engine (or skipped)
    future: Future | None = None  # set when handed to the engine; resolves to a FrameOutcome
    skipped: bool = False  # live mode: a newer frame was analysed instead
    final: object | None = None  # not None: the end of the stream (a sentinel or the exception that ends it)

    def ready(self) -> bool:
        return self.skipped or self.final is not None or (self.future is not None and self.future.done())


class StreamFlow:
    """One stream's window: the reader ``add``s frames in order, the writer takes ``next_answer`` in order.

    ``submit(frame) -> Future`` hands a frame to the engine; it must not block (the budget was acquired before).
    Frames reach ``submit`` in stream order, one call at a time (stream mode tracks them in that order).
    ``launcher``: where a waiting live frame is handed over (a :class:`DeferredFrame` decoded first) once a slot
    frees up; inline if None. Why: the thread that frees the slot is an engine batcher's, which must not spend
    milliseconds decoding, nor wait while this stream's reader decodes the frame it launches.
    """

    def __init__(
        self,
        submit: Callable[[Frame], Future],
        budget: FrameBudget,
        *,
        window: int,
        max_bytes: int,
        live_window: int | LiveShare,
        backlog: int,
        launcher: Executor | None = None,
    ) -> None:
        self._submit = submit
        self._launcher = launcher
        self._budget = budget
        self.window, self.max_bytes = max(1, window), max(1, max_bytes)
        self._live = live_window
        self._joined = False  # counted among a LiveShare's streams (from its first live frame to close)
        self.backlog = max(self.window, backlog)
        self._cond = threading.Condition()
        self._entries: deque[Entry] = deque()
        self._held = 0  # frames handed to the engine and not yet answered: the window
        self._bytes = 0  # bytes of this stream's frames not yet analysed
        self._computing = 0  # frames handed to the engine and not done
        self._waiting: Entry | None = None  # live: the newest frame, waiting for a compute slot
        self._started: deque[Entry] = deque()  # counted as in analysis, not yet handed to the engine
        self._launching = threading.RLock()  # one launcher at a time; re-entered by a future done at once
        self._closed = False
        self.skipped = 0

    # -- reader side ----------------------------------------------------------------------------------------------
    def wait_for_room(self, gone: Predicate) -> bool:
        """Block while the window is full, *before* reading the next message; False once ``gone()``."""
        with self._cond:
            while self._held >= self.window or len(self._entries) >= self.backlog:
                if gone() or self._closed:
                    return False
                self._cond.wait(POLL_S)
            return not self._closed

    def add(self, frame: Frame | DeferredFrame, live: bool, gone: Predicate) -> None:
        """Admit one frame (waits for this stream's and the global byte budget); Cancelled if gone."""
        n = frame.nbytes if isinstance(frame, DeferredFrame) else int(frame.image.nbytes)
        if live:
            self._join_live()
            self._skip_waiting()  # a newer frame is here: the one still waiting is obsolete
        self._reserve(n, gone)
        try:
            self._budget.acquire(n, gone)
        except BaseException:
            self._unreserve(n)
            raise
        entry = Entry(frame.index, frame.time, n, frame)
        with self._cond:
            closed = self._closed
            if not closed:
                self._entries.append(entry)
                launch = not live or self._computing < self.live_window()
                if launch:
                    self._start(entry)
                else:
                    self._waiting = entry
                self._cond.notify_all()
        if closed:
            self._unreserve(n)
            self._budget.release(n)
        elif launch:
            self._launch()

    def finish(self, final: object) -> None:
        """The stream's last entry: a sentinel for a clean end, or the exception that ends it."""
        with self._cond:
            self._entries.append(Entry(final=final))
            self._cond.notify_all()

    def _join_live(self) -> None:
        """Count this stream among its LiveShare's live streams, from its first live frame until ``close``."""
        if self._joined or not isinstance(self._live, LiveShare):
            return  # the common case, every live frame after the first: no lock taken
        with self._cond:
            join = not (self._joined or self._closed)
            self._joined = self._joined or join
        if join:
            self._live.join()

    def live_window(self) -> int:
        """Live frames this stream may have in analysis now (its share of the server's, within its window)."""
        cap = self._live.window() if isinstance(self._live, LiveShare) else self._live
        return max(1, min(cap, self.window))

    def _reserve(self, n: int, gone: Predicate) -> None:
        with self._cond:
            while self._bytes and self._bytes + n > self.max_bytes:
                if gone() or self._closed:
                    raise Cancelled("stream ended while waiting for its byte budget")
                self._cond.wait(POLL_S)
            self._bytes += n

    def _unreserve(self, n: int) -> None:
        with self._cond:
            self._bytes -= n
            self._cond.notify_all()

    def _skip_waiting(self) -> None:
        with self._cond:
            w, self._waiting = self._waiting, None
            if w is None:
                return
            w.skipped, w.frame = True, None
            self._bytes -= w.nbytes
            self.skipped += 1
            self._cond.notify_all()
        self._budget.release(w.nbytes)

    # -- engine side ----------------------------------------------------------------------------------------------
    def _start(self, entry: Entry) -> None:
        """Count ``entry`` as in analysis and in the window (caller holds the lock; ``_launch`` follows)."""
        self._computing += 1
        self._held += 1
        self._started.append(entry)

    def _launch(self) -> None:
        """Hand the started entries to the engine in start order. The reader and a finishing frame's callback
        (live mode: it starts the waiting frame) may both launch at once; one launcher drains the queue, so a
        newer frame is never submitted before an older one."""
        with self._launching:
            while True:
                with self._cond:
                    if not self._started:
                        return
                    entry = self._started.popleft()
                frame, entry.frame = entry.frame, None
                try:
                    if isinstance(frame, DeferredFrame):
                        frame = frame.load()
                    fut = self._submit(frame)  # type: ignore[arg-type]
                except BaseException as e:  # noqa: BLE001 - answered in order through the entry
                    fut = Future()
                    fut.set_exception(e)
                with self._cond:
                    entry.future = fut
                    self._cond.notify_all()
                fut.add_done_callback(lambda _f, e=entry: self._done(e))

    def _done(self, entry: Entry) -> None:
        """A frame's analysis finished (or failed): free its bytes, start the waiting live frame, wake the writer."""
        with self._cond:
            self._computing -= 1
            self._bytes -= entry.nbytes
            nxt = None
            if self._waiting is not None and not self._closed and self._computing < self.live_window():
                nxt, self._waiting = self._waiting, None
                self._start(nxt)
            self._cond.notify_all()
        self._budget.release(entry.nbytes)
        if nxt is None:
            return
        if self._launcher is not None:  # not on this thread: it may wait while the reader decodes its launch
            try:
                self._launcher.submit(self._launch)
                return
            except RuntimeError:  # the launcher is shut down (the engine is closing): launch here
                pass
        self._launch()

    # -- writer side ----------------------------------------------------------------------------------------------
    def next_answer(self, gone: Predicate, idle: Callable[[], object | None]) -> Entry:
        """The oldest entry once it can be answered (in order). Cancelled once ``gone()``.

        ``idle()`` is asked while nothing is owed at all; a non-None value ends the wait as a final entry (the
        server stops an idle stream when it shuts down).
        """
        with self._cond:
            while not (self._entries and self._entries[0].ready()):
                if gone():
                    raise Cancelled("stream cancelled")
                if not self._entries and (final := idle()) is not None:
                    return Entry(final=final)
                self._cond.wait(POLL_S)
            entry = self._entries.popleft()
            if entry.future is not None:
                self._held -= 1
            self._cond.notify_all()
            return entry

    def close(self) -> None:
        """The stream ended: wake the reader, give back the budget of a live frame that never started."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            leave, self._joined = self._joined, False
            w, self._waiting = self._waiting, None
            if w is not None:
                self._bytes -= w.nbytes
            self._entries.clear()
            self._cond.notify_all()
        if leave:
            self._live.leave()  # type: ignore[union-attr]
        if w is not None:
            self._budget.release(w.nbytes)

    @property
    def held(self) -> int:
        return self._held

    @property
    def queued_bytes(self) -> int:
        return self._bytes
