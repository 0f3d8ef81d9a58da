"""Live sources: a stream that is still playing becomes 1-s segments as soon as each second
is complete (`avel live`, pipeline/apps/live.py).

Sources: anything PyAV opens as a live input.
  * `-`: a stream piped on stdin (MPEG-TS, Matroska: the demuxer is probed); a file object
    or a FIFO path the same way. Reads wait with `select`, so a stop (Ctrl-C, `on_stall=end`)
    ends them even when the writer is silent.
  * a URL: udp://, rtp://, rtsp://, rtmp://, http(s)://, srt://, tcp:// ... (FFmpeg's own
    protocols; read with a read timeout when the run ends on a stall).
  * capture devices, two inputs combined: `video_device` (v4l2, e.g. /dev/video0) and
    `audio_device` (ALSA `default`, `hw:0`; `pulse:NAME` for PulseAudio). Both devices stamp
    their packets with the wall clock, so their time stamps align.

Segments are the decoder's (pipeline/media/decode.py, whose pieces are used here): frame i
of segment t is the frame on screen at t + i/K (`wanted_s`), converted through one swscale
context (`RgbConverter`); the audio is the first audio stream as 16-kHz mono (`AudioTrack`: the channel
mean, soxr VHQ), put on the video's time line by the time stamps (the first video frame is
time 0), not by the order packets arrive in. The last second is counted by the decoder's
rule (`counted_s`). Second t is handed out once a video frame at or after t + 1 and the audio
through t + 1 have been decoded: latency is the stream's own interleaving plus a frame.

What is reported, as `StreamEvent`s between the segments: `stall` (no packet for `stall_s`;
then `resumed` when packets come again, or the run ends with `on_stall="end"`),
`audio_lost` (the audio falls `audio_lag_s` behind the video, or stops: from then on the
segments carry silence), `dropped` (a complete second that the consumer did not take in
time: at most `max_pending` segments wait, the oldest goes first), `ended` (the stream
ended, or the run was stopped).

Memory is bounded whatever the stream does: at most `max_pending` complete segments wait for
the consumer, and the segments being assembled are those within `audio_lag_s` of the video.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from ...core.config import (
    FRAME_SIZE,
    MAX_FRAMES_PER_SEGMENT,
    MAX_SEGMENTS,
    MISSING_AUDIO,
    SAMPLE_RATE_HZ,
    check_choice,
    check_range,
)
from ...core.errors import (
    ConfigError,
    CorruptMedia,
    MediaNotFound,
    NoAudioStream,
    NotAMediaFile,
)
from .audio import AudioTrack
from .container import reason_of, video_stream
from .decode import TIME_EPS_S, RgbConverter, Segment, counted_s, wanted_s

STALL_CHOICES = ("wait", "end")
MAX_PENDING = 3600  # seconds that may wait for the model (an hour of stream, flat memory still bounded)
URL_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "tcp", "hls", "pipe", "file")
PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}  # a live start: 1 s of stream, 1 MB at most
PENDING_AUDIO_FRAMES = 512  # audio frames held until the first video frame sets the time line
POLL_S = 0.1  # how often a waiting read or the consumer looks at the clock and the stop flag


@dataclass(frozen=True)
class LiveOptions:
    frames_per_segment: int = 16
    frame_size: int = FRAME_SIZE
    on_missing_audio: str = "error"  # a stream without an audio stream: error | silence
    stall_s: float = 5.0  # no packet for this long: a stall
    on_stall: str = "wait"  # wait | end
    max_pending: int = 2  # complete segments waiting for the consumer; one more drops the oldest
    audio_lag_s: float = 3.0  # audio this far behind the video is lost (the segments get silence)
    format: str | None = None  # the demuxer or device format (default: probed; v4l2 / alsa for devices)
    open_timeout_s: float = 30.0  # a URL or device that does not answer

    def __post_init__(self) -> None:
        check_range("frames_per_segment", self.frames_per_segment, 1, MAX_FRAMES_PER_SEGMENT)
        check_choice("on_missing_audio", self.on_missing_audio, MISSING_AUDIO)
        check_choice("on_stall", self.on_stall, STALL_CHOICES)
        check_range("stall_s", self.stall_s, 0.0, MAX_SEGMENTS, lo_open=True)
        check_range("max_pending", self.max_pending, 1, MAX_PENDING)
        if not self.audio_lag_s > 0:
            raise ConfigError("audio_lag_s", self.audio_lag_s, "must be > 0 s")


@dataclass
class LiveSegment:
    segment: Segment
    end_clock_s: float  # time.monotonic() when the stream's clock passed the segment's end (see `_Clock`)
    ready_clock_s: float  # time.monotonic() when the segment was complete


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # stall | resumed | audio_lost | dropped | ended
    at_s: float | None  # the stream time it concerns (seconds from the first video frame)
    message: str
    clock_s: float  # time.monotonic() when it happened
    segment: int | None = None  # dropped: the second


# -- reading without blocking forever -------------------------------------------------------------------
class _Pipe:
    """A readable file descriptor (stdin, a pipe, a FIFO) as the file object PyAV reads:
    `read` waits with select in POLL_S steps, so that `stop` ends it (an end of file) even
    when the writer is silent."""

    def __init__(self, fd: int | None, stop: threading.Event, path: str | None = None) -> None:
        self.fd, self.stop, self.path = fd, stop, path

    def read(self, n: int) -> bytes:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)  # a FIFO: waits for its writer
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], POLL_S)
            if ready:
                return os.read(self.fd, n)  # b"" at the end of the stream
        return b""


@dataclass(frozen=True)
class _Input:
    name: str  # as the user gave it (messages)
    target: object  # what av.open takes: a URL, a device name, or a `_Pipe`
    format: str | None
    video: bool  # what this input contributes
    audio: bool
    options: dict


def live_inputs(
    source: str | BinaryIO | int | None,
    options: LiveOptions,
    stop: threading.Event,
    *,
    video_device: str | None = None,
    audio_device: str | None = None,
) -> list[_Input]:
    """The inputs of a source: one (`-`, a file object or fd, a FIFO, a URL, a file) or two
    (a video device and an audio device). ConfigError for an impossible combination."""
    probe = dict(PROBE_OPTIONS)
    if video_device is not None or audio_device is not None:
        if source is not None:
            raise ConfigError("video_device", video_device, f"give either a SOURCE ({source}) or devices, not both")
        if video_device is None:
            raise ConfigError("video_device", None, "a video device is needed (e.g. /dev/video0)")
        inputs = [_Input(video_device, video_device, options.format or "v4l2", True, audio_device is None, probe)]
        if audio_device is not None:
            fmt, name = (
                ("pulse", audio_device[len("pulse:") :])
                if audio_device.startswith("pulse:")
                else ("alsa", audio_device)
            )
            inputs.append(_Input(audio_device, name or "default", fmt, False, True, probe))
        return inputs
    if source is None:
        raise ConfigError("video_device", None, "no source: give `-`, a URL, a FIFO, or a video device")
    if isinstance(source, int) or hasattr(source, "fileno"):
        fd = source if isinstance(source, int) else source.fileno()
        pipe = _Pipe(fd, stop)
        pipe.owner = source  # a file object closes its fd when it is collected
        return [_Input(f"fd {fd}", pipe, options.format, True, True, probe)]
    source = os.fspath(source)
    if source == "-":
        return [_Input("stdin", _Pipe(sys.stdin.fileno(), stop), options.format, True, True, probe)]
    scheme = source.split("://", 1)[0].lower() if "://" in source else None
    if scheme is not None:
        if scheme not in URL_SCHEMES:
            raise NotAMediaFile(source, f"unknown protocol {scheme!r}; one of {', '.join(URL_SCHEMES)}")
        return [_Input(source, source, options.format, True, True, probe)]
    try:
        mode = os.stat(source).st_mode
    except OSError:
        raise MediaNotFound(
            source, "no such file, and not `-` or a URL (udp://, rtsp://, http://, srt://...)"
        ) from None
    if stat.S_ISFIFO(mode):  # opened by the input thread: opening waits for a writer
        return [_Input(source, _Pipe(None, stop, path=source), options.format, True, True, probe)]
    if stat.S_ISCHR(mode):  # a capture device given as SOURCE: its video alone
        return [_Input(source, source, options.format or "v4l2", True, False, probe)]
    if stat.S_ISDIR(mode):
        raise NotAMediaFile(source, "is a directory, not a stream")
    return [
        _Input(source, "file:" + os.path.abspath(source), options.format, True, True, probe)
    ]  # read as fast as it decodes


# -- the stream's clock ------------------------------------------------------------------------------
class _Clock:
    """When did the stream's clock pass a time stamp? A live source delivers time stamp p no
    earlier than at offset + p; the smallest (arrival - time stamp) seen so far is the best
    estimate of that offset (packets that come late only raise it), so the end of second t
    passed at `offset + origin + t + 1`, never after the packet that proved it arrived."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self.last_packet: float = time.monotonic()

    def packet(self, now: float, stamp_s: float | None) -> None:
        self.last_packet = now
        if stamp_s is not None and (self.offset is None or now - stamp_s < self.offset):
            self.offset = now - stamp_s

    def at(self, stamp_s: float, fallback: float) -> float:
        return fallback if self.offset is None else min(self.offset + stamp_s, fallback)


# -- assembling segments from frames as they come ---------------------------------------------------------
class _LiveAudio(AudioTrack):
    BLOCK = 1024  # resample often: a live second must not wait for 16384 source samples (same samples)


class _Assembler:
    """Decoded frames in (from one or two inputs, under the reader's lock), complete 1-s
    segments out (handed to the reader). The decoder's rule: the video's first frame is time 0; frame i
    of second t is the one on screen at t + i/K; the audio is put on that time line."""

    def __init__(self, reader: LiveReader, vstream, astream) -> None:
        o = reader.options
        self.reader, self.K = reader, o.frames_per_segment
        self.vstream = vstream
        self.rgb = RgbConverter(o.frame_size, 1)
        self.audio = _LiveAudio(reader.name, astream) if astream is not None else None
        self.audio_lost = astream is None
        rate = vstream.average_rate or vstream.guessed_rate
        self.fallback_dt = 1.0 / float(rate) if rate else 1.0 / 25.0
        self.last_dt = self.fallback_dt
        self.origin_abs: float | None = None  # the first video frame's time stamp
        self.prev: tuple[float, av.VideoFrame] | None = None
        self.prev_rgb: np.ndarray | None = None
        self.next_time = 0
        self.filling: tuple[int, np.ndarray] | None = None
        self.complete: deque[tuple[int, np.ndarray]] = deque()
        self.waiting_audio: deque[av.AudioFrame] = deque(maxlen=PENDING_AUDIO_FRAMES)
        self.emitted = 0

    # video
    def video(self, frame: av.VideoFrame) -> None:
        t_abs = frame.time
        if t_abs is None:
            t_abs = (self.prev[0] + self.origin_abs + self.fallback_dt) if self.prev else 0.0
        if self.origin_abs is None:
            self.origin_abs = t_abs
            if self.audio is not None:
                self.audio.origin_s = t_abs
                while self.waiting_audio:
                    self._feed_audio(self.waiting_audio.popleft())
        x = t_abs - self.origin_abs
        if self.prev is not None and x <= self.prev[0]:
            return  # a non-increasing time stamp: keep the earlier frame
        if self.prev is not None:
            self.last_dt = x - self.prev[0]
            while wanted_s(self.next_time, self.K) < x - TIME_EPS_S:
                self._choose()
        self.prev, self.prev_rgb = (x, frame), None
        self._hand_out(x)

    def _choose(self) -> None:
        t, i = divmod(self.next_time, self.K)
        if self.filling is None or self.filling[0] != t:
            self.filling = (t, np.empty((self.K, self.rgb.size, self.rgb.size, 3), np.uint8))
        if self.prev_rgb is None:
            self.prev_rgb = self.rgb(self.prev[1])
        self.filling[1][i] = self.prev_rgb
        self.next_time += 1
        if i == self.K - 1:
            self.complete.append(self.filling)
            self.filling = None

    # audio
    def audio_frame(self, frame: av.AudioFrame) -> None:
        if self.audio is None or self.audio_lost:
            return
        if self.origin_abs is None:
            self.waiting_audio.append(frame)  # bounded: the oldest would be cut anyway
            return
        self._feed_audio(frame)
        if self.prev is not None:
            self._hand_out(self.prev[0])

    def _feed_audio(self, frame: av.AudioFrame) -> None:
        self.audio.feed(frame)

    def audio_reach_s(self) -> float:
        if self.audio is None or self.audio.done:
            return float("inf")
        return (self.audio.base + self.audio.held) / SAMPLE_RATE_HZ

    def lose_audio(self, why: str) -> None:
        if self.audio_lost:
            return
        self.audio_lost = True
        at = None if self.audio is None else (self.audio.base + self.audio.held) / SAMPLE_RATE_HZ
        if self.audio is not None:
            self.audio.feed(None)  # what was decoded stays; silence from there on
        self.reader._event(
            "audio_lost", at, f"{self.reader.name}: {why}; the segments from {at or 0:.2f} s carry silence"
        )

    # segments
    def _hand_out(self, reach_s: float, final: bool = False) -> None:
        while self.complete:
            t, frames = self.complete[0]
            if t + 1 > reach_s + TIME_EPS_S:
                return
            end = (t + 1) * SAMPLE_RATE_HZ
            if not self.audio_lost and not final and self.audio_reach_s() < t + 1 - TIME_EPS_S:
                if reach_s - self.audio_reach_s() <= self.reader.options.audio_lag_s:
                    return  # the audio of this second is still on its way
                self.lose_audio(f"the audio is more than {self.reader.options.audio_lag_s:g} s behind the video")
            self.complete.popleft()
            sound = (
                self.audio.samples(t * SAMPLE_RATE_HZ, end)
                if self.audio is not None
                else np.zeros(SAMPLE_RATE_HZ, np.float32)
            )
            self.reader._segment(Segment(t, frames, sound), self.origin_abs + t + 1)
            self.emitted += 1

    def finish(self) -> None:
        """The stream ended: the last frame stays on screen to the end of the content; the
        seconds the content covers (the decoder's count) are handed out."""
        if self.prev is None:
            return
        if self.audio is not None and not self.audio.done:
            self.audio.feed(None)
        duration = self.prev[0] + self.last_dt
        available = int(
            np.floor(counted_s(duration, self.last_dt, self.fallback_dt, self.vstream.time_base) + TIME_EPS_S)
        )
        while self.complete and self.complete[-1][0] >= available:
            self.complete.pop()
        self._hand_out(float(available), final=True)
        while self.next_time < available * self.K:
            self._choose()
            self._hand_out(float(available), final=True)


# -- the reader ----------------------------------------------------------------------------------------
class LiveReader:
    """Iterate over a live source: `LiveSegment`s as each second completes, `StreamEvent`s
    between them; the last item is the `ended` event. Decoding runs in a thread per input,
    ahead of the consumer; `close()` (or leaving the loop) stops it. Errors before the first
    segment (not a stream PyAV can open, no video, no audio with on_missing_audio=error)
    are raised as MediaErrors naming the source."""

    def __init__(
        self,
        source: str | BinaryIO | int | None,
        options: LiveOptions = LiveOptions(),
        *,
        video_device: str | None = None,
        audio_device: str | None = None,
    ) -> None:
        self.options = options
        self.stop = threading.Event()
        self.inputs = live_inputs(source, options, self.stop, video_device=video_device, audio_device=audio_device)
        self.name = " + ".join(i.name for i in self.inputs)
        self.clock = _Clock()
        self.dropped = 0
        self.segments = 0
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._pending = 0  # segments in _items
        self._lock = threading.Lock()  # the assembler's
        self._assembler: _Assembler | None = None
        self._ready = threading.Barrier(len(self.inputs) + 1) if len(self.inputs) > 1 else None
        self._streams: dict[str, object] = {}
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._stalled = False
        self.stalls = 0
        self.ended_on_stall = False
        self._error: BaseException | None = None
        self._ended = False

    # called from the input threads
    def _put(self, item, segment: bool = False) -> None:
        with self._cond:
            if segment and self._pending >= self.options.max_pending:
                for k, old in enumerate(self._items):  # the oldest waiting segment makes room
                    if isinstance(old, LiveSegment):
                        t = old.segment.index
                        self._items[k] = StreamEvent(
                            "dropped",
                            float(t),
                            f"{self.name}: second {t} dropped: the model is "
                            f"behind ({self.options.max_pending} seconds waiting)",
                            time.monotonic(),
                            t,
                        )
                        self._pending -= 1
                        self.dropped += 1
                        break
            self._items.append(item)
            self._pending += bool(segment)
            self._cond.notify_all()

    def _segment(self, segment: Segment, end_abs_s: float) -> None:
        now = time.monotonic()
        self.segments += 1
        self._put(LiveSegment(segment, self.clock.at(end_abs_s, now), now), segment=True)

    def _event(self, kind: str, at_s: float | None, message: str) -> None:
        self._put(StreamEvent(kind, at_s, message, time.monotonic()))

    def _packet(self, packet: av.Packet) -> None:
        now = time.monotonic()
        stamp = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else None
        with self._cond:
            self.clock.packet(now, stamp)
            if self._stalled:
                self._stalled = False
                self._items.append(StreamEvent("resumed", self._stream_s(), f"{self.name}: packets again", now))
                self._cond.notify_all()

    def _stream_s(self) -> float | None:
        a = self._assembler
        return None if a is None or a.prev is None else round(a.prev[0], 3)

    def _open(self, inp: _Input):
        timeout = (self.options.open_timeout_s, self.options.stall_s if self.options.on_stall == "end" else None)
        try:
            return av.open(
                inp.target, format=inp.format, options=inp.options, timeout=timeout, metadata_errors="ignore"
            )
        except av.error.FFmpegError as e:
            raise NotAMediaFile(inp.name, f"not a stream PyAV can open ({reason_of(e)})") from None

    def _run(self, inp: _Input) -> None:
        container = None
        try:
            container = self._open(inp)
            if inp.video:
                vstream = video_stream(container, inp.name)
                vstream.thread_type = "SLICE"  # frame threading would hold frames back
                self._streams["video"] = vstream
            if inp.audio and container.streams.audio:
                self._streams["audio"] = container.streams.audio[0]
            if self._ready is not None:
                self._ready.wait(timeout=self.options.open_timeout_s)
            with self._lock:
                if self._assembler is None:
                    if "audio" not in self._streams and self.options.on_missing_audio == "error":
                        raise NoAudioStream(
                            self.name, "no audio stream (use --on-missing-audio silence to go on with silent audio)"
                        )
                    self._assembler = _Assembler(self, self._streams["video"], self._streams.get("audio"))
            assembler = self._assembler
            wanted = [
                s
                for s in (self._streams.get("video"), self._streams.get("audio"))
                if s is not None and s.container is container
            ]
            for packet in container.demux(wanted):
                if self.stop.is_set():
                    break
                if packet.size == 0 and packet.pts is not None:
                    continue  # an empty packet: the previous frame stays on screen
                if packet.size:
                    self._packet(packet)
                for frame in packet.decode():
                    with self._lock:
                        if packet.stream.type == "video":
                            assembler.video(frame)
                        else:
                            assembler.audio_frame(frame)
        except av.error.ExitError:
            pass  # the read timed out: a stall, when the run ends on one
        except av.error.FFmpegError as e:
            self._error = self._error or CorruptMedia(inp.name, f"corrupt stream ({reason_of(e)})")
        except threading.BrokenBarrierError:
            pass  # the other input failed: its error is the one to report
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self._error = self._error or e
        finally:
            if container is not None:
                container.close()
            if self._ready is not None:
                self._ready.abort()
            with self._cond:
                self._running -= 1
                last = self._running == 0
            if last:
                self._end()

    def _end(self) -> None:
        a = self._assembler
        if a is not None and self._error is None:
            with self._lock:
                a.finish()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # the watchdog: stalls are noticed on the stream's clock, whatever the consumer is doing
    def _watch(self) -> None:
        opts = self.options
        while not self.stop.is_set():
            with self._cond:
                if self._ended:
                    return
                now = time.monotonic()
                started = self.clock.offset is not None  # opening (probing) is the open timeout's business
                if started and not self._stalled and now - self.clock.last_packet >= opts.stall_s:
                    self._stalled = True
                    self.stalls += 1
                    self._items.append(
                        StreamEvent(
                            "stall",
                            self._stream_s(),
                            f"{self.name}: no packet for {opts.stall_s:g} s"
                            + ("; ending" if opts.on_stall == "end" else "; waiting"),
                            now,
                        )
                    )
                    self._cond.notify_all()
                    if opts.on_stall == "end":
                        self.ended_on_stall = True
                        self.stop.set()  # a pipe's read ends within POLL_S, a URL's at its read timeout
                        return
            time.sleep(POLL_S)

    # the consumer
    def __iter__(self) -> Iterator[LiveSegment | StreamEvent]:
        self._running = len(self.inputs)
        self.clock.last_packet = time.monotonic()
        for inp in self.inputs:
            th = threading.Thread(target=self._run, args=(inp,), name=f"avel-live-{inp.name}", daemon=True)
            self._threads.append(th)
            th.start()
        watchdog = threading.Thread(target=self._watch, name="avel-live-watchdog", daemon=True)
        watchdog.start()
        try:
            yield from self._consume()
        finally:
            self.close()

    def _consume(self) -> Iterator[LiveSegment | StreamEvent]:
        while True:
            with self._cond:
                while not self._items and not self._ended:
                    self._cond.wait(POLL_S)
                if not self._items:
                    break
                item = self._items.popleft()
                self._pending -= isinstance(item, LiveSegment)
            yield item
        if self._error is not None:
            if self.segments == 0 or not isinstance(self._error, Exception):
                raise self._error
            yield StreamEvent("ended", self._stream_s(), f"{self._error}", time.monotonic())
            return
        if self.segments == 0 and not self.stop.is_set():
            raise CorruptMedia(self.name, "the stream ended before one whole second of video")
        why = "ended on a stall" if self.ended_on_stall else "stopped" if self.stop.is_set() else "the stream ended"
        yield StreamEvent("ended", self._stream_s(), f"{self.name}: {why}", time.monotonic())

    def close(self) -> None:
        """Stop the input threads (a pipe read ends within POLL_S; a URL read at its timeout)."""
        self.stop.set()
        for th in self._threads:
            th.join(timeout=2 * POLL_S)
        if not any(th.is_alive() for th in self._threads):
            with self._lock:
                if self._assembler is not None and self._assembler.audio is not None:
                    self._assembler.audio.release()
