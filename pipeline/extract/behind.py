"""`WriteBehind`: the part writer in a thread of its own, behind a bounded queue, so that
the model never waits for an HDF5 write (issue #22). What the local engine's model loop
hands it per video, in order:

    with WriteBehind(writer, pooled=True) as behind:
        behind.open(job)                      # the video's group (an unstorable id: recorded here)
        behind.append(visual, audio)          # per batch of segments; never blocks unless `depth` are queued
        behind.close(job, duration_s)         # finished  |  behind.fail(job, failure): its failure recorded
        for job, failure in behind.done():    # the videos written since the last call, in order
            ...

Everything is written exactly as the sequential path (`local.extract_job`) writes it: the
same groups, datasets and failures in the same order, the same bytes. A video's segments are
gathered up to `flush_segments` before one HDF5 append (fewer, larger writes; the chunks are
the writer's own, so the file holds the same values). A write error (CacheError: a full
disk) stops the thread; the model loop gets it at its next call. On the way out the queue is
written to the end (what was finished is committed by the PartWriter; a video cut short is
discarded by it)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from ...core.errors import AvelError, CacheError

DEPTH = 8  # queued operations (a batch's features each) before the model waits for the writer
FLUSH_SEGMENTS = 64  # a video's segments gathered before one HDF5 append


class WriteBehind:
    """The part writer `writer` (a PartWriter) in a thread, fed by a queue of `depth`
    operations. `failure_of(job, error)` makes the record of a video whose id the cache
    cannot store (local.failure_of)."""

    def __init__(
        self,
        writer,
        failure_of: Callable,
        *,
        pooled: bool = False,
        depth: int | None = None,
        flush_segments: int | None = None,
    ) -> None:
        self.writer, self.failure_of, self.pooled = writer, failure_of, pooled
        self.flush_segments = max(1, FLUSH_SEGMENTS if flush_segments is None else flush_segments)
        self.depth = max(1, DEPTH if depth is None else depth)
        self.queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self.max_queued = 0  # the deepest the queue has been (what the bound is tested with)
        self._done: deque = deque()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="avel-part-writer", daemon=True)
        self._thread.start()

    # -- the model loop's side ---------------------------------------------------------------------------
    def _put(self, op: tuple) -> None:
        self._raise()
        while True:
            try:
                self.queue.put(op, timeout=0.2)
                break
            except queue.Full:
                self._raise()  # the writer stopped on an error: do not wait for it forever
        self.max_queued = max(self.max_queued, self.queue.qsize())

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def open(self, job) -> None:
        self._put(("open", job))

    def append(self, visual: np.ndarray, audio: np.ndarray) -> None:
        self._put(("append", visual, audio))

    def close(self, job, duration_s: float) -> None:
        self._put(("close", job, float(duration_s)))

    def fail(self, job, failure) -> None:
        """The video failed while being extracted: what was written of it goes, its failure is recorded."""
        self._put(("fail", job, failure))

    def done(self) -> list[tuple]:
        """(job, failure or None) of the videos written since the last call, in order."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        self._raise()
        return out

    def _stop(self) -> None:
        while self._thread.is_alive():
            try:
                self.queue.put(("stop",), timeout=0.2)
                break
            except queue.Full:
                continue  # the thread is writing (or has just stopped on an error)
        self._thread.join()

    def finish(self, *, raising: bool = True) -> list[tuple]:
        """Write everything queued and stop the thread: the videos written since `done()`.
        A write error is raised (`raising`), else left to the caller's own exception."""
        self._stop()
        out = list(self._done)
        self._done.clear()
        if raising:
            self._raise()
        return out

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop()
        if exc_type is None:
            self._raise()

    # -- the writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        sink, job, skipped = None, None, False
        held: list[tuple] = []  # (visual, audio, pooled vector or None) per batch
        held_n = 0

        def flush() -> None:
            nonlocal held_n
            if not held:
                return
            visual, audio, vec = (
                x[0] if len(held) == 1 else None if x[0] is None else np.concatenate(x) for x in zip(*held)
            )
            held.clear()
            held_n = 0
            sink.append(visual, audio, vec)

        try:
            while True:
                op = self.queue.get()
                kind = op[0]
                if kind == "stop":
                    return
                if kind == "open":
                    job, skipped, held, held_n = op[1], False, [], 0
                    try:
                        sink = self.writer.open_video(job.id, job.path)
                    except CacheError:
                        raise
                    except AvelError as e:  # an id or a name the cache cannot hold
                        failure = self.failure_of(job, e)
                        self.writer.fail(failure)
                        self._done.append((job, failure))
                        sink, skipped = None, True
                elif skipped:
                    continue  # the rest of a video that could not be opened
                elif kind == "append":
                    # the pooled vector per batch, as the sequential path computes it
                    held.append((op[1], op[2], op[1].mean(axis=(1, 2)) if self.pooled else None))
                    held_n += int(op[1].shape[0])
                    if held_n >= self.flush_segments:
                        flush()
                elif kind == "close":
                    flush()
                    sink.close(op[2])
                    sink = None
                    self._done.append((op[1], None))
                elif kind == "fail":
                    held.clear()
                    held_n = 0
                    if sink is not None:
                        sink.discard()
                        sink = None
                    self.writer.fail(op[2])
                    self._done.append((op[1], op[2]))
        except BaseException as e:  # CacheError (a full disk) or a defect: the model loop raises it
            self._error = e
