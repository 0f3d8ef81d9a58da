"""Decoding ahead of the models, in a thread or in decoder processes, with memory bounded
and nothing to clean up after a crash. No torch here: decoder processes import this module
and pipeline/media/decode.py only.

    with open_decoders(workers, options, segments_per_batch, check=stop.check) as decoders:
        for path, source in zip(paths, decoders.videos(paths)):
            for batch in source:            # SegmentBatch: [n, K, S, S, 3] frames, [n, 16000] audio
                ...                         # the extractors
                batch.release()
            source.duration_s, source.num_segments

Videos come back in the order given, each as a stream of `SegmentBatch`es; a video that
fails raises its `MediaError` from its stream and the next one follows.

`ThreadDecoders` (workers = 0): one thread decodes video after video, at most `ahead`
batches ahead of the consumer.

`DecoderPool` (workers > 0): W decoder processes (`python -c ... serve`), each with its own
socket pair to the model process and its own slots in one shared memory block. A worker
decodes a video straight into its slots (the decoder writes each chosen frame into shared
memory: no pickling, no copy on the way to the models) and sends a few bytes per batch;
the model process reads the slot in place and hands it back. Each worker has enough slots
to decode one AVE-length video ahead while the models work on another, so W workers decode
W videos at once; the memory is W x slots x one batch, whatever the videos' lengths.

Clean-up needs nothing: the shared memory is an anonymous memfd (an unlinked file where
there is no memfd), so it has no name in /dev/shm and the kernel frees it when the last
process unmaps it, even after kill -9 of everything. There are no semaphores and no locks
shared between processes (one socket per worker), so a worker that dies holds nothing the
others need. Decoder processes ignore SIGINT (a terminal's Ctrl-C reaches the whole
process group; the model process decides), exit when the model process goes away (end of
file on their socket, or a broken pipe), and are stopped by `close()`: a word on the
socket, then SIGTERM, then SIGKILL.

A decoder process that dies fails the video it was reading (`DecoderCrashed`, recorded
like any bad input) and is replaced; the videos queued behind it go to the replacement.
A decoder killed by SIGINT, SIGTERM or SIGHUP means the run is being stopped:
KeyboardInterrupt.
"""

from __future__ import annotations

import mmap
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import numpy as np

from ...core.config import SAMPLE_RATE_HZ
from ...core.errors import MEDIA_ERRORS, DecodeFailed, DecoderCrashed, MediaError
from .decode import BatchReader, DecodeOptions, SegmentBatch

AVE_SEGMENTS = 12  # a worker's slots hold this many segments: one AVE video (10 s) decoded ahead, and some
POLL_S = 0.2  # how often a waiting model process looks at its stop flag
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- a thread ahead of its consumer ----------------------------------------------------------------
def prefetch(items: Iterable, maxsize: int) -> Iterator:
    """Iterate `items` in a background thread, up to `maxsize` ahead. Exceptions are
    re-raised in the consumer; closing the consumer stops the thread (and closes a
    generator, so a decoder's container is closed)."""
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((done, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a generator: run its cleanup (closes the container)
                close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# -- Ctrl-C and SIGTERM at safe points --------------------------------------------------------------
class StopSignals:
    """While active (in the main thread), the first SIGINT or SIGTERM only records itself;
    `check()` raises KeyboardInterrupt (naming the signal) where stopping is safe. A second
    one raises at once. Elsewhere than the main thread nothing is installed."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(signal.Signals(self.received).name)


# -- one video's batches, as a decoder hands them out ------------------------------------------------
class VideoSource:
    """The decoded batches of one video, in order. Iterate for `SegmentBatch`es (hand each
    back with `batch.release()` when done with it, where it has one); a failed video raises
    its MediaError. After the last batch: `duration_s`, `num_segments`, `has_audio`."""

    def __init__(self, path: str, next_event: Callable[[], tuple], on_close: Callable[[], None] | None = None) -> None:
        self.path, self._next, self._on_close = path, next_event, on_close
        self.duration_s: float | None = None
        self.num_segments: int | None = None
        self.has_audio: bool | None = None
        self.finished = False

    def __iter__(self) -> Iterator[SegmentBatch]:
        while not self.finished:
            kind, value = self._next()
            if kind == "batch":
                yield value
                continue
            self.finished = True
            if kind == "error":
                raise value
            self.duration_s, self.num_segments, self.has_audio = value

    def close(self) -> None:
        """Skip what is left of this video (its batches are handed back)."""
        while not self.finished:
            kind, value = self._next()
            if kind == "batch":
                if value.release is not None:
                    value.release()
            else:
                self.finished = True
        if self._on_close is not None:
            self._on_close()


def _error(path: str, kind: str, problem: str) -> MediaError:
    return MEDIA_ERRORS.get(kind, DecodeFailed)(path, problem)


def decode_events(
    path: str,
    options: DecodeOptions,
    segments_per_batch: int,
    buffers: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> Iterator[tuple]:
    """One video as events: ("batch", SegmentBatch)..., then ("end", (duration_s,
    num_segments, has_audio)) or ("error", MediaError). Never raises for a bad file.
    (A plain function: what a thread, a decoder process or a Ray task runs per video.)"""
    reader = BatchReader(path, options, segments_per_batch, buffers)
    try:
        for batch in reader:
            yield "batch", batch
        yield "end", (float(reader.duration_s), int(reader.num_segments), bool(reader.has_audio))
    except MediaError as e:
        yield "error", e
    except Exception as e:  # anything else a broken file can raise: recorded, never fatal
        yield (
            "error",
            DecodeFailed(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")),
        )
    finally:
        reader.unused()


# -- a decoding thread ---------------------------------------------------------------------------------
class ThreadDecoders:
    """Decode video after video in one background thread, at most `ahead` batches ahead."""

    def __init__(self, options: DecodeOptions, segments_per_batch: int, ahead: int = 2) -> None:
        self.options, self.n, self.ahead = options, segments_per_batch, ahead

    def videos(self, paths: Sequence[str]) -> Iterator[VideoSource]:
        def events():
            for i, path in enumerate(paths):
                for kind, value in decode_events(path, self.options, self.n):
                    yield i, kind, value

        stream = prefetch(events(), maxsize=self.ahead)
        try:
            for path in paths:
                source = VideoSource(path, lambda: next(stream)[1:])
                yield source
                source.close()
        finally:
            stream.close()

    def close(self) -> None:
        pass

    def __enter__(self) -> ThreadDecoders:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- decoder processes -------------------------------------------------------------------------------
def _memory(size: int) -> int:
    """A file descriptor of `size` bytes of shared memory that has no name anywhere."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("avel-decoders", os.MFD_CLOEXEC)
    else:  # an unlinked temporary file (in RAM where /dev/shm exists)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        f = tempfile.TemporaryFile(dir=folder)
        fd = os.dup(f.fileno())
        f.close()
    os.ftruncate(fd, size)
    return fd


@dataclass(frozen=True)
class Layout:
    """The shared memory: `slots` slots of `segments` segments each, frames then audio (with
    --convert device a frame's row holds yuv420p planes up to the largest size decode.py takes;
    the pages a smaller video does not write are never touched, so they cost no memory)."""

    options: DecodeOptions
    segments: int  # per slot (one extractor batch)
    slots: int

    @property
    def frames_bytes(self) -> int:
        return int(np.prod(self.options.frames_shape(self.segments)))

    @property
    def slot_bytes(self) -> int:
        return self.frames_bytes + self.segments * SAMPLE_RATE_HZ * 4

    def views(self, buffer, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames [n, K, S, S, 3] uint8, audio [n, 16000] float32) of a slot."""
        offset = slot * self.slot_bytes
        frames = np.ndarray(self.options.frames_shape(self.segments), np.uint8, buffer, offset)
        audio = np.ndarray((self.segments, SAMPLE_RATE_HZ), np.float32, buffer, offset + self.frames_bytes)
        return frames, audio


@dataclass
class _Worker:
    slots: range
    proc: subprocess.Popen | None = None
    conn: Connection | None = None
    jobs: deque | None = None  # job numbers sent, oldest (the one being decoded) first


class DecoderPool:
    """W decoder processes over shared memory (the module docstring says how)."""

    def __init__(
        self,
        workers: int,
        options: DecodeOptions,
        segments_per_batch: int,
        *,
        slots_per_worker: int | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        if workers < 1:
            raise ValueError("a DecoderPool needs at least one worker")
        n = max(1, int(segments_per_batch))
        per_worker = slots_per_worker or max(3, -(-AVE_SEGMENTS // n))  # 3: what one video can hold at once
        self.layout = Layout(options, n, workers * per_worker)
        self.check = check
        self._fd = _memory(self.layout.slots * self.layout.slot_bytes)
        self._mm = mmap.mmap(self._fd, self.layout.slots * self.layout.slot_bytes)
        self._base = np.frombuffer(self._mm, np.uint8).ctypes.data
        self._workers = [_Worker(range(w * per_worker, (w + 1) * per_worker)) for w in range(workers)]
        self._held: set[int] = set()  # slots whose batches wait for the consumer or are being read
        self._paths: list[str] = []
        self._unassigned: list[int] = []  # job numbers not given to a worker, ascending
        self._events: dict[int, deque] = {}  # job number -> its events received
        self._current = 0  # the job the consumer reads
        for w in self._workers:
            self._start(w)

    # -- processes ---------------------------------------------------------------------------------
    def _start(self, w: _Worker) -> None:
        """Start (or replace) the decoder process of `w`: its slots not held by batches
        still waiting for the consumer are its free ones."""
        ours, theirs = socket.socketpair()
        code = "import sys; from avel.pipeline.media.pool import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # imports as this process does
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited: no Ctrl-C tracebacks
        try:
            w.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(self._fd)],
                pass_fds=(theirs.fileno(), self._fd),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
            theirs.close()
        w.conn = Connection(ours.detach())
        w.jobs = deque()
        w.conn.send(("init", self.layout, [s for s in w.slots if s not in self._held]))

    def _died(self, w: _Worker) -> None:
        """A decoder process ended: its video fails, its queued videos go to a replacement."""
        rc = w.proc.wait()
        w.conn.close()
        if rc < 0 and -rc in STOP_SIGNALS:
            raise KeyboardInterrupt(signal.Signals(-rc).name)
        self.check()
        jobs = list(w.jobs)
        if jobs:
            how = f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit status {rc}"
            events = self._events.setdefault(jobs[0], deque())  # (the consumer may be waiting on this very deque)
            for kind, value in events:  # the video fails: its batches are not read
                if kind == "batch":
                    self._held.discard(self._slot(value))
            events.clear()
            events.append(("error", DecoderCrashed(self._paths[jobs[0]], f"the decoder process died ({how})")))
            self._unassigned = sorted(self._unassigned + jobs[1:])
        self._start(w)

    # -- jobs and messages --------------------------------------------------------------------------
    def _assign(self) -> None:
        horizon = self._current + 4 * len(self._workers)  # never further ahead than this
        for w in self._workers:
            while self._unassigned and len(w.jobs) < 2 and self._unassigned[0] < horizon:
                job = self._unassigned.pop(0)
                w.jobs.append(job)
                w.conn.send(("job", job, self._paths[job]))

    def _receive(self, w: _Worker, message: tuple) -> None:
        kind, job = message[0], message[1]
        events = self._events.setdefault(job, deque())
        if kind == "batch":
            slot, first, n, planes = message[2:]
            frames, audio = self.layout.views(self._mm, slot)
            self._held.add(slot)
            events.append(
                (
                    "batch",
                    SegmentBatch(first, frames[:n], audio[:n], lambda w=w, slot=slot: self._free(w, slot), planes),
                )
            )
            return
        w.jobs.popleft()
        if kind == "end":
            events.append(("end", tuple(message[2:])))
        else:
            events.append(("error", _error(self._paths[job], *message[2:])))

    def _slot(self, batch: SegmentBatch) -> int:
        return (batch.frames.ctypes.data - self._base) // self.layout.slot_bytes

    def _free(self, w: _Worker, slot: int) -> None:
        """The consumer is done with `slot`: back to the process that owns it now."""
        self._held.discard(slot)
        try:
            w.conn.send(("free", slot))
        except OSError:
            pass  # it just died: its replacement is told when it starts

    def _pump(self, timeout: float = POLL_S) -> None:
        """Wait (`timeout` at most) for messages and process them."""
        self._assign()
        conns = {w.conn: w for w in self._workers}
        for conn in wait(list(conns), timeout=timeout):
            w = conns[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self._died(w)
                continue
            self._receive(w, message)
        self.check()

    def _next_event(self, job: int) -> tuple:
        events = self._events.setdefault(job, deque())
        # Messages are read and jobs handed out only here: do it on every call, not only when
        # this video's batches have run out, or decoders that finished their jobs sit idle
        # while the consumer is busy (measured on a GPU: 5 of 16 decoder processes busy)
        self._pump(timeout=0)
        while not events:
            self._pump()
        return events.popleft()

    def videos(self, paths: Sequence[str]) -> Iterator[VideoSource]:
        start = len(self._paths)
        self._paths.extend(paths)
        self._unassigned.extend(range(start, len(self._paths)))
        for job in range(start, len(self._paths)):
            self._current = job
            source = VideoSource(
                self._paths[job],
                lambda job=job: self._next_event(job),
                on_close=lambda job=job: self._events.pop(job, None),
            )
            yield source
            source.close()

    @property
    def pids(self) -> list[int]:
        """The decoder processes (for measuring them)."""
        return [w.proc.pid for w in self._workers]

    # -- the end ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the decoder processes (a word, then SIGTERM, then SIGKILL) and let go of the memory."""
        for w in self._workers:
            try:
                w.conn.send(("stop",))
            except OSError:
                pass
        for stop, patience_s in ((None, 0.5), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            for w in self._workers:
                if stop is not None and w.proc.poll() is None:
                    w.proc.send_signal(stop)
            for w in self._workers:
                try:
                    w.proc.wait(timeout=patience_s)
                except subprocess.TimeoutExpired:
                    pass
            if all(w.proc.poll() is not None for w in self._workers):
                break
        for w in self._workers:
            w.conn.close()
        self._events.clear()
        try:
            self._mm.close()
        except BufferError:  # a batch still viewed somewhere: unmapped when it goes
            pass
        os.close(self._fd)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_decoders(
    workers: int, options: DecodeOptions, segments_per_batch: int, *, check: Callable[[], None] = lambda: None
) -> ThreadDecoders | DecoderPool:
    """`workers` decoder processes, or (0) one decoding thread."""
    if workers > 0:
        return DecoderPool(workers, options, segments_per_batch, check=check)
    return ThreadDecoders(options, segments_per_batch)


# -- the decoder process -----------------------------------------------------------------------------
def serve(conn_fd: int, memory_fd: int) -> None:
    """A decoder process's main loop (see the module docstring): jobs and freed slots in,
    batches (slot numbers) and ends out, until told to stop or the model process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(conn_fd)
    try:
        _, layout, slots = conn.recv()
        size = layout.slots * layout.slot_bytes
        memory = mmap.mmap(memory_fd, size)
        os.close(memory_fd)
        base = np.frombuffer(memory, np.uint8).ctypes.data
        free, taken, jobs = set(slots), set(), deque()

        def handle(message: tuple) -> None:
            if message[0] == "job":
                jobs.append(message[1:])
            elif message[0] == "free":
                free.add(message[1])
            else:
                raise SystemExit(0)

        def buffers() -> tuple[np.ndarray, np.ndarray]:
            while not free:
                handle(conn.recv())
            slot = free.pop()
            taken.add(slot)
            return layout.views(memory, slot)

        def slot_of(frames: np.ndarray) -> int:
            return (frames.ctypes.data - base) // layout.slot_bytes

        while True:
            while not jobs:
                handle(conn.recv())
            job, path = jobs.popleft()
            taken.clear()
            for kind, value in decode_events(path, layout.options, layout.segments, buffers):
                if kind == "batch":
                    slot = slot_of(value.frames)
                    taken.discard(slot)
                    conn.send(("batch", job, slot, value.first, len(value), value.planes))  # planes: --convert device
                elif kind == "end":
                    conn.send(("end", job, *value))
                else:
                    conn.send(("error", job, value.kind, value.problem))
            free.update(taken)  # slots taken for segments that were never handed out
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the model process is gone
