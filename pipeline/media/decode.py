"""Decoding: the only module that touches PyAV. A video becomes a stream of 1-s segments,
each K RGB frames chosen by time stamp (resized to 224x224 inside swscale, only the chosen
frames converted) and one second of 16-kHz mono audio.

Time origin: the video's first frame (a first video time stamp that is not 0 is the first
frame of segment 0, as AVE's frame-index rule has it). Audio is put on the video's time line
by the streams' start times: audio second t is the sound played with video second t, so
audio that starts after the video's first frame is preceded by silence, and audio before it
is cut (an ASF file whose audio starts 0.687 s after its video; a file whose video starts
late). Files whose streams both start at 0 decode as a wav extracted from the file does.
One time line per file: a video time stamp that goes back more than a few frames (MPEG-TS
files joined with `cat` restart theirs), or in MPEG-TS, MPEG-PS or Ogg jumps ahead more
than a second, is reported as CorruptMedia naming the time, never decoded as half the file.

Segments: floor(D) for content D seconds long, a second counting as whole when the content
reaches its end within the time stamps' precision (half a frame or one tick of the time
base, whichever is larger: Matroska and WebM store whole milliseconds, so a 30-s 24-fps clip
measures 29.999 s); the same rule for a forced count's padding. Empty packets (Theora's
repeated frames) keep the previous frame on screen. Paths are always files, never URLs:
FFmpeg would read `2024-05-01T12:30:00.mp4`, `file:x.mp4` or `pipe:0.mp4` as protocols.

Memory does not grow with the video's length, whatever its time stamps or declared frame
rate: the video stream and the audio stream are read by two demuxers in lockstep (audio is
decoded only as far as the segment being finished needs, so a file that stores all its
video before its audio costs no more), a segment is handed out as soon as its frames are
chosen and the content is known to reach its end, and at most two segments' frames are
held at a time (the one being filled and the one waiting for that proof; three with a
forced segment count, where the last real segment may have to be repeated). Frames are
written straight into buffers the caller may provide (`SegmentReader(frames_buffer=...)`,
`BatchReader(buffers=...)`): the decoder processes of pipeline/media/pool.py decode into
shared memory that the model process reads without a copy.

Where the time goes (a 10-s 640x360 30-fps h264 + AAC video, one core): decoding every
frame is the floor; converting the 160 chosen frames to 224x224 RGB costs about 0.3 ms
each with one shared swscale context (3x that with a context per frame, as
`VideoFrame.to_ndarray(width=, height=)` makes); audio (AAC, channel mean, soxr VHQ) about
10 ms. `benchmarks/bench.py` prints the measured split.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import av
import numpy as np
import soxr
from av.video.reformatter import VideoReformatter

from ...core.config import FRAME_SIZE, MISSING_AUDIO, SAMPLE_RATE_HZ, FeatureSettings, check_choice, check_range
from ...core.errors import (
    CorruptMedia,
    MediaNotFound,
    NoAudioStream,
    NotAMediaFile,
    NoVideoStream,
    TooShort,
)
from ...core.sampling import segment_count

TIME_EPS_S = 1e-6
# A stream that decodes this much shorter than it declares is truncated or corrupt.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.1
# A video time stamp that goes back by more than this many frames is a discontinuity (the
# time line restarts: MPEG-TS files joined with `cat`); so is one that jumps ahead by more
# than that and at least DISCONTINUITY_AHEAD_S in a format that allows discontinuities
# (FFmpeg's AVFMT_TS_DISCONT: MPEG-TS, MPEG-PS, Ogg); elsewhere a gap is a frame held on screen.
DISCONTINUITY_FRAMES = 4
DISCONTINUITY_AHEAD_S = 1.0
_TS_DISCONT = int(av.format.Flags.ts_discont.value)


@dataclass(frozen=True)
class DecodeOptions:
    frames_per_segment: int = 16
    segments: int | None = None  # force N segments (AVE: 10)
    frame_size: int = FRAME_SIZE
    on_missing_audio: str = "error"  # error | silence
    max_shortfall_s: float = 1.0  # with `segments`, how much shorter than N s a video may be
    # FFmpeg threads per decoder: 0 = its automatic frame/slice threading (one decoder alone
    # on the machine), 1 = none (one decoder process per core: the least CPU per frame).
    # The frames decoded are the same either way.
    threads: int = 0

    def __post_init__(self) -> None:
        check_range("frames_per_segment", self.frames_per_segment, 1)
        if self.segments is not None:
            check_range("segments", self.segments, 1)
        check_choice("on_missing_audio", self.on_missing_audio, MISSING_AUDIO)
        check_range("threads", self.threads, 0)

    @classmethod
    def from_settings(cls, settings: FeatureSettings, **overrides) -> "DecodeOptions":
        """What `settings` ask of the decoder (`overrides`: e.g. segments=None for videos of any length)."""
        options = cls(frames_per_segment=settings.frames_per_segment, segments=settings.segments,
                      frame_size=settings.frame_size, on_missing_audio=settings.on_missing_audio)
        return dataclasses.replace(options, **overrides) if overrides else options

    def frames_shape(self, segments: int) -> tuple[int, ...]:
        """Shape of the frames of `segments` segments: (n, K, S, S, 3)."""
        return (segments, self.frames_per_segment, self.frame_size, self.frame_size, 3)


@dataclass
class Segment:
    index: int
    frames: np.ndarray  # [K, S, S, 3] uint8 RGB
    audio: np.ndarray  # [16000] float32 mono in [-1, 1]


@dataclass
class SegmentBatch:
    """Consecutive segments of one video, `first` .. `first + n - 1`: what the extractors
    take in one go. `release` (when set) hands the memory back to its decoder."""

    first: int
    frames: np.ndarray  # [n, K, S, S, 3] uint8 RGB
    audio: np.ndarray  # [n, 16000] float32
    release: Callable[[], None] | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class Video:
    """A whole decoded video (for short videos; long ones are streamed with `SegmentReader`)."""

    path: str
    duration_s: float
    frames: np.ndarray  # [T, K, S, S, 3] uint8
    audio: np.ndarray  # [T, 16000] float32
    has_audio: bool

    @property
    def num_segments(self) -> int:
        return self.frames.shape[0]


# -- opening a file ---------------------------------------------------------------------------
_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def _open(path: str) -> av.container.InputContainer:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaNotFound(path, "no such file") from None
    except OSError as e:
        raise NotAMediaFile(path, f"cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise NotAMediaFile(path, "is a directory, not a media file")
    for test, what in _NOT_REGULAR:
        if test(mode):  # opening a FIFO for reading would wait for a writer forever
            raise NotAMediaFile(path, f"is {what}, not a regular file")
    try:  # a file, never a URL: FFmpeg reads what comes before a colon as a protocol
        return av.open(_as_file_url(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise NotAMediaFile(path, f"not a media file PyAV can open ({_reason(e)})") from None


def _as_file_url(path: str) -> str:
    """The path as FFmpeg's `file:` URL of its absolute path: a name such as
    `2024-05-01T12:30:00.mp4`, `file:blue.mp4` or `pipe:0.mp4` is that file, not a protocol
    (the file protocol is FFmpeg's own for plain paths: reading and seeking are unchanged)."""
    return "file:" + os.path.abspath(path)


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


_STILL = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image


def _video_stream(container, path: str):
    """The first video stream that is a moving picture; NoVideoStream when there is none,
    naming cover art (an audio file's attached picture) for what it is."""
    videos = container.streams.video
    moving = [s for s in videos if not (s.disposition & _STILL)]
    if moving:
        return moving[0]
    if videos:
        raise NoVideoStream(path, "no video stream, only a still image (cover art: an audio file?)")
    raise NoVideoStream(path, "no video stream")


def _declared_s(stream) -> float | None:
    """The stream's own declared duration: its DURATION tag (Matroska's muxer writes one per
    track: the time its last frame ends), else its header's (mp4: the track's length; ASF:
    the time the file ends; FFmpeg fills in the container's where a format declares none),
    else None. A length or an end time, by format: see `_short_of`."""
    for key, value in stream.metadata.items():
        if key.upper().startswith("DURATION"):
            try:
                h, m, s = value.split(":")
                return int(h) * 3600 + int(m) * 60 + float(s)
            except ValueError:
                break
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _decoded(container, stream, on_empty: Callable[[av.Packet], None] | None = None) -> Iterator[av.Frame]:
    """The frames of `stream`, as `container.decode(stream)` gives them, less the packets a
    decoder skips without losing content, as browsers do: an empty packet (Theora marks a
    repeated frame so; FFmpeg refuses one with EINVAL) is the previous frame staying on
    screen; `on_empty` is told of each one that has a time stamp."""
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's own flush packet at the end is empty too
            if on_empty is not None and packet.pts is not None:
                on_empty(packet)
            continue
        yield from packet.decode()
    flush = av.Packet()
    flush.stream, flush.time_base = stream, stream.time_base  # the decoded frames' time base
    yield from flush.decode()


def _short_of(decoded_s: float, declared_s: float | None, start_s: float | None = 0.0) -> bool:
    """Whether a stream that decoded `decoded_s` seconds from its first time stamp `start_s`
    falls short of its declared duration, a length or an end time: it is whole when either
    its length or its end reaches the declared duration (within the tolerance)."""
    if declared_s is None:
        return False
    reach = max(decoded_s, (start_s or 0.0) + decoded_s)
    return reach < declared_s - max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared_s)


def _discontinuity(path: str, before_s: float, at_s: float, frame_s: float, ahead_too: bool,
                   stamps: tuple[float, float]) -> CorruptMedia | None:
    """The error for a jump of the video's time line from `before_s` to `at_s` (seconds from
    the first frame), or None when the step is an ordinary one. Such a file is reported, not
    stitched: its audio is decoded by sample count, and where its second part's sound begins
    relative to its picture is not known to the sample."""
    limit = DISCONTINUITY_FRAMES * frame_s
    jump = at_s - before_s
    if jump >= -limit and not (ahead_too and jump > max(limit, DISCONTINUITY_AHEAD_S)):
        return None
    way = "back" if jump < 0 else "ahead"
    return CorruptMedia(path, f"the video's time stamps jump {way} by {abs(jump):.2f} s after {before_s:.2f} s of "
                              f"video (from {stamps[0]:.2f} s to {stamps[1]:.2f} s): files joined end to end? "
                              f"avel reads one time line; join them with FFmpeg's concat demuxer instead")


def _truncated(path: str, what: str, decoded_s: float, start_s: float | None, declared_s: float) -> CorruptMedia:
    since = f" from {start_s:.2f} s" if start_s else ""
    return CorruptMedia(path, f"truncated or corrupt: decoded {decoded_s:.2f} s of {what}{since}, "
                              f"{declared_s:.2f} s declared")


# -- the pieces: frame times, RGB frames, 16-kHz audio ---------------------------------------------
def wanted_s(index: int, frames_per_segment: int) -> float:
    """The time (from the first frame) of wanted frame `index` of the whole video: frame
    i of segment t is the one on screen at t + i/K (the latest frame whose time stamp is
    not after it, within TIME_EPS_S)."""
    return (index // frames_per_segment) + (index % frames_per_segment) / frames_per_segment


def counted_s(duration_s: float, last_dt: float, fallback_dt: float, time_base) -> float:
    """The content's length as counted in seconds: a second counts as whole when the content
    reaches its end within the time stamps' precision: half a frame (`last_dt`, the last
    frame's duration; `fallback_dt`, the nominal one) or one tick of `time_base`, whichever
    is larger (Matroska and WebM store whole milliseconds: a 30-s 24-fps clip measures 29.999 s)."""
    tick = float(time_base) if time_base else 0.0
    precision = max(0.5 * min(last_dt, fallback_dt), tick)
    whole = float(np.ceil(duration_s - TIME_EPS_S))  # the end of the second the content ends in
    return whole if duration_s < whole <= duration_s + precision + TIME_EPS_S else duration_s


class _Rgb:
    """Chosen frames -> [S, S, 3] RGB views, through one swscale context (a context per
    frame, as `VideoFrame.to_ndarray(width=, height=)` makes, costs 2-3x the conversion)."""

    def __init__(self, size: int, threads: int) -> None:
        self.size, self.threads, self.reformatter = size, threads, VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        s = self.size
        out = self.reformatter.reformat(frame, format="rgb24", width=s, height=s, threads=self.threads)
        plane = out.planes[0]  # the view below keeps the plane (and its frame) alive
        img = np.frombuffer(plane, np.uint8).reshape(s, plane.line_size)[:, : 3 * s].reshape(s, s, 3)
        k = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
        # the display matrix rotates the frame counter-clockwise by `rotation` degrees; the
        # image is square after the resize, so rotating afterwards is equivalent
        return np.rot90(img, k) if k else img


class _Audio:
    """The first audio stream of a file as 16-kHz mono float32, decoded by its own demuxer
    only as far as asked: mean of the channels (as VGGish does; libswresample's downmix is
    not a plain mean), soxr VHQ resampling. With `origin_s` set (before the first samples are
    asked for), sample 0 is at that time (the video's first frame): audio that starts later
    is preceded by silence, audio before it is cut; else sample 0 is the first decoded one."""

    BLOCK = 16384  # source samples resampled at a time

    def __init__(self, path: str, stream=None) -> None:
        self.path = path
        # `stream` given (a live input, pipeline/media/live.py): its frames are handed in by
        # `feed`, not pulled from a demuxer of our own
        self.container = _open(path) if stream is None else None
        self.stream = self.container.streams.audio[0] if stream is None else stream
        self._frames = _decoded(self.container, self.stream) if stream is None else iter(())
        self.origin_s: float | None = None
        self.start_s: float | None = None  # the first decoded sample's time stamp
        self._cut = 0  # samples still to drop (audio that starts before `origin_s`)
        self._resampler = None
        self._soxr = None
        self._chunks: deque[np.ndarray] = deque()
        self.base = 0  # index (16-kHz samples) of the first sample held
        self.held = 0  # samples held
        self.done = False
        self.frames = 0  # audio frames decoded
        self.total = 0  # 16-kHz samples decoded
        self._block: list[np.ndarray] = []  # decoded, not yet resampled
        self._block_n = 0

    def close(self) -> None:
        if self.container is not None:
            self.container.close()

    def _convert(self, frame: av.AudioFrame | None) -> None:
        """Frames -> channel mean -> 16 kHz, a block of BLOCK samples at a time (per frame,
        numpy's and soxr's call overheads cost a third of the audio's time; the output is
        the same bit for bit whatever the blocks)."""
        for f in self._resampler.resample(frame):
            self._block.append(f.to_ndarray())  # [C, n]
            self._block_n += f.samples
        if self._block and (self._block_n >= self.BLOCK or frame is None):
            x = np.concatenate(self._block, axis=1).astype(np.float32, copy=False)
            self._push(self._soxr.resample_chunk(x.mean(axis=0)))  # VGGish: the mean of the channels
            self._block, self._block_n = [], 0

    def _push(self, x: np.ndarray) -> None:
        self.total += x.shape[0]
        if self._cut:
            cut = min(self._cut, x.shape[0])
            x, self._cut = x[cut:], self._cut - cut
        self._hold(x)

    def _hold(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self._chunks.append(x)
            self.held += x.shape[0]

    def _pull(self) -> None:
        """Decode one more frame (or finish the stream)."""
        self.feed(next(self._frames, None))

    def feed(self, frame: av.AudioFrame | None) -> None:
        """Take one decoded frame (None: the stream ended)."""
        if frame is None:
            if self._resampler is not None:
                self._convert(None)
                self._push(self._soxr.resample_chunk(np.zeros(0, np.float32), last=True))
            self.done = True
            return
        if self._resampler is None:
            self._align(frame)
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
            self._soxr = soxr.ResampleStream(frame.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="VHQ")
        self.frames += 1
        self._convert(frame)

    def _align(self, first: av.AudioFrame) -> None:
        """Note the first decoded sample's time, and put it at that time on the `origin_s` time line."""
        start_s = first.time
        if start_s is None and self.stream.start_time is not None and self.stream.time_base is not None:
            start_s = float(self.stream.start_time * self.stream.time_base)
        self.start_s = start_s
        if start_s is None or self.origin_s is None:
            return  # no time stamp at all, or no time line to align to
        offset = round((start_s - self.origin_s) * SAMPLE_RATE_HZ)
        if offset > 0:
            self._hold(np.zeros(offset, np.float32))  # silence until the audio starts
        else:
            self._cut = -offset

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) (16 kHz, zeros past the end of the stream) -> [hi - lo] float32.
        Calls go forward: everything before `hi` is forgotten."""
        while not self.done and self.base + self.held < hi:
            self._pull()
        out = np.zeros(hi - lo, np.float32)
        while self._chunks and self.base < hi:
            chunk = self._chunks[0]
            end = self.base + chunk.shape[0]
            a, b = max(lo, self.base), min(hi, end)
            if b > a:
                out[a - lo : b - lo] = chunk[a - self.base : b - self.base]
            if end <= hi:
                self._chunks.popleft()
                self.held -= chunk.shape[0]
                self.base = end
            else:
                self._chunks[0] = chunk[hi - self.base :]
                self.held -= hi - self.base
                self.base = hi
        return out

    def rest(self) -> np.ndarray:
        """Every sample not yet taken, to the end of the stream -> [S] float32."""
        while not self.done:
            self._pull()
        out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self.base, self.held = self.base + self.held, 0
        self._chunks.clear()
        return out

    def end_s(self, keep_until: int) -> float:
        """The stream's decoded length in seconds: decodes the rest, keeping only the
        samples before index `keep_until` for later `samples` calls."""
        while not self.done:
            self._pull()
            while self._chunks and self.base + self.held > keep_until:  # drop what no segment needs
                cut = min(self._chunks[-1].shape[0], self.base + self.held - keep_until)
                self._chunks[-1] = self._chunks[-1][: self._chunks[-1].shape[0] - cut]
                self.held -= cut
                if not self._chunks[-1].shape[0]:
                    self._chunks.pop()
        return self.total / SAMPLE_RATE_HZ


# -- segments ---------------------------------------------------------------------------------
class SegmentReader:
    """Iterate over the 1-s segments of one video.

    `frames_buffer(t)` gives the [K, S, S, 3] uint8 array that segment t's frames are written
    into (default: a new array); it is called once per segment, in order, and at most two
    are in use at a time (three with a forced count). After iteration: `duration_s` (video content length),
    `num_segments` and `has_audio` are set. Errors are `MediaError` subclasses naming the file."""

    def __init__(self, path: str | os.PathLike, options: DecodeOptions = DecodeOptions(),
                 frames_buffer: Callable[[int], np.ndarray] | None = None) -> None:
        self.path = os.fspath(path)
        self.options = options
        self.frames_buffer = frames_buffer or (lambda t: np.empty(options.frames_shape(1)[1:], np.uint8))
        self.duration_s: float | None = None
        self.num_segments: int | None = None
        self.has_audio: bool | None = None

    def __iter__(self) -> Iterator[Segment]:
        container = _open(self.path)
        audio = None
        try:
            vstream = _video_stream(container, self.path)
            if not container.streams.audio and self.options.on_missing_audio == "error":
                raise _no_audio(self.path)
            self.has_audio = bool(container.streams.audio)
            audio = _Audio(self.path) if self.has_audio else None
            yield from self._segments(container, vstream, audio)
        except av.error.FFmpegError as e:
            raise CorruptMedia(self.path, f"corrupt stream ({_reason(e)})") from None
        finally:
            container.close()
            if audio is not None:
                audio.close()

    def _segments(self, container, vstream, audio: _Audio | None) -> Iterator[Segment]:
        opts, path = self.options, self.path
        K, forced = opts.frames_per_segment, opts.segments
        if opts.threads == 0:
            vstream.thread_type = "AUTO"
        else:
            vstream.thread_count = opts.threads
            vstream.thread_type = "AUTO" if opts.threads > 1 else "NONE"
        rgb = _Rgb(opts.frame_size, 0 if opts.threads == 0 else 1)
        rate = vstream.average_rate or vstream.guessed_rate
        fallback_dt = 1.0 / float(rate) if rate else 1.0 / 25.0
        may_restart = bool(container.format.flags & _TS_DISCONT)  # MPEG-TS, MPEG-PS, Ogg

        filling: tuple[int, np.ndarray] | None = None  # (segment, its frames) being chosen
        complete: deque[tuple[int, np.ndarray]] = deque()  # chosen, waiting for proof the content reaches t + 1
        next_time = 0  # index into the wanted times t + i/K of all segments
        first_time: float | None = None
        prev: tuple[float, av.VideoFrame] | None = None  # the frame on screen (time from the first frame, frame)
        prev_rgb: np.ndarray | None = None  # prev converted, once it is chosen
        last_dt = fallback_dt
        emitted = 0
        keep_last = False  # the last real segment is repeated (forced N): copy its frames
        last: Segment | None = None

        def choose() -> None:
            """The frame on screen at the next wanted time is `prev`."""
            nonlocal next_time, filling, prev_rgb
            t, i = divmod(next_time, K)
            if filling is None or filling[0] != t:
                filling = (t, self.frames_buffer(t))
            if prev_rgb is None:
                prev_rgb = rgb(prev[1])
            filling[1][i] = prev_rgb
            next_time += 1
            if i == K - 1:
                complete.append(filling)
                filling = None

        def hand_out(reach_s: float, final: bool = False) -> Iterator[Segment]:
            """Segments whose frames are chosen and whose second the content covers. With a
            forced count, a segment also waits until the next one is known to be real: the
            last real one may have to be repeated, and its frames must still be at hand."""
            nonlocal emitted, last
            while complete:
                t, frames = complete[0]
                wait = 1 if forced is not None and t + 1 < forced and not final else 0
                if t + 1 + wait > reach_s + TIME_EPS_S or (forced is not None and emitted >= forced):
                    return
                complete.popleft()
                sound = audio.samples(t * SAMPLE_RATE_HZ, (t + 1) * SAMPLE_RATE_HZ) if audio is not None \
                    else np.zeros(SAMPLE_RATE_HZ, np.float32)
                last = Segment(t, frames, sound)
                if final and keep_last and t + 1 == reach_s:
                    last = Segment(t, frames.copy(), sound)  # the frames buffer may be handed back
                yield last
                emitted += 1

        repeated_until: float | None = None  # where the last empty packet (a repeated frame) ends

        def repeated(packet: av.Packet) -> None:
            nonlocal repeated_until
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            repeated_until = end if repeated_until is None else max(repeated_until, end)

        stopped_early = False
        for vframe in _decoded(container, vstream, repeated):
            t_abs = vframe.time
            if t_abs is None:  # no time stamp: count frames at the nominal rate
                t_abs = (prev[0] + first_time + fallback_dt) if prev else 0.0
            if first_time is None:
                first_time = t_abs
                if audio is not None:
                    audio.origin_s = first_time  # the audio on the video's time line
            x = t_abs - first_time
            if prev is not None and vframe.time is not None:
                jump = _discontinuity(path, prev[0], x, fallback_dt, may_restart, (prev[0] + first_time, t_abs))
                if jump is not None:
                    raise jump
            if prev is not None and x <= prev[0]:
                continue  # a non-increasing time stamp: keep the earlier frame
            if prev is not None:
                last_dt = x - prev[0]
                while wanted_s(next_time, K) < x - TIME_EPS_S:  # every wanted time before x shows prev
                    choose()
                    yield from hand_out(x)
            prev, prev_rgb = (x, vframe), None
            yield from hand_out(x)
            if forced is not None and emitted >= forced:
                stopped_early = True
                break

        if stopped_early:
            self.duration_s = _declared_s(vstream) or (container.duration / 1e6 if container.duration else float(forced))
            self.num_segments = emitted
            return
        if prev is None:
            raise CorruptMedia(path, "no decodable video frame")
        duration = prev[0] + last_dt
        if repeated_until is not None and first_time is not None:  # the last frame repeated by empty packets
            duration = max(duration, repeated_until - first_time)
        self.duration_s = duration
        self._check_complete(container, vstream, audio, duration, first_time)
        counted = counted_s(duration, last_dt, fallback_dt, vstream.time_base)
        try:
            total, available = segment_count(counted, forced, opts.max_shortfall_s)
        except ValueError as e:
            raise TooShort(path, str(e)) from None
        keep_last = total > available
        while complete and complete[-1][0] >= available:
            complete.pop()  # chosen, but past the whole seconds of content
        yield from hand_out(float(available), final=True)
        while next_time < available * K:  # the last frame stays on screen until the end of the content
            choose()
            yield from hand_out(float(available), final=True)
        # segments past the real content repeat the last real one (forced N only)
        while emitted < total:
            if last is None:
                raise TooShort(path, "not enough content for one segment")
            frames = self.frames_buffer(emitted)
            frames[...] = last.frames
            yield Segment(emitted, frames, last.audio)
            emitted += 1
        self.num_segments = emitted

    def _check_complete(self, container, vstream, audio: _Audio | None, video_s: float, video_start_s: float) -> None:
        """Truncation, judged per stream: a stream that declares its own duration must decode
        to about that length, or end about there (Matroska's tags and ASF's headers declare the
        time a stream ends, its start time included). Where the video declares none, the
        streams' content must reach the container's duration, counted from the container's
        start time (a Matroska file whose audio outlasts its video is whole; so is one whose
        video outlasts its audio)."""
        declared_video = _declared_s(vstream)
        if _short_of(video_s, declared_video, video_start_s):
            raise _truncated(self.path, "video", video_s, video_start_s, declared_video)
        end_s = video_start_s + video_s  # where the content ends (on the streams' own clock)
        if audio is not None and (_declared_s(audio.stream) is not None or declared_video is None):
            keep = (int(video_s + TIME_EPS_S) + 1) * SAMPLE_RATE_HZ  # the segments still to hand out need these
            audio_s = audio.end_s(keep)
            declared_audio = _declared_s(audio.stream)
            if _short_of(audio_s, declared_audio, audio.start_s):
                raise _truncated(self.path, "audio", audio_s, audio.start_s, declared_audio)
            end_s = max(end_s, (video_start_s if audio.start_s is None else audio.start_s) + audio_s)
        declared = container.duration / 1e6 if declared_video is None and container.duration else None
        start_s = container.start_time / 1e6 if container.start_time is not None else min(video_start_s, end_s)
        if _short_of(end_s - start_s, declared):
            raise CorruptMedia(self.path, f"truncated or corrupt: decoded {end_s - start_s:.2f} s of "
                                          f"{declared:.2f} s declared")


class BatchReader:
    """The segments of one video in batches of `segments_per_batch` (the last one may be
    shorter): what the extractors take in one go. `buffers()` gives an empty batch, a pair
    (frames [n, K, S, S, 3] uint8, audio [n, 16000] float32) that the frames are decoded
    into (default: new arrays; a decoder process gives shared memory). After iteration:
    `duration_s`, `num_segments`, `has_audio`."""

    def __init__(self, path: str | os.PathLike, options: DecodeOptions, segments_per_batch: int,
                 buffers: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        n = max(1, int(segments_per_batch))
        self.path, self.options, self.n = os.fspath(path), options, n
        self.buffers = buffers or (lambda: (np.empty(options.frames_shape(n), np.uint8),
                                            np.empty((n, SAMPLE_RATE_HZ), np.float32)))
        self.reader = SegmentReader(self.path, options, self._frames_buffer)
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # batch index -> its buffers

    def _frames_buffer(self, t: int) -> np.ndarray:
        b = t // self.n
        if b not in self._open:
            self._open[b] = self.buffers()
        return self._open[b][0][t % self.n]

    def __iter__(self) -> Iterator[SegmentBatch]:
        n = self.n
        for seg in self.reader:
            b, i = divmod(seg.index, n)
            frames, audio = self._open[b]
            audio[i] = seg.audio
            if i == n - 1:
                del self._open[b]
                yield SegmentBatch(b * n, frames, audio)
        done = self.reader.num_segments
        if done % n:
            frames, audio = self._open.pop(done // n)
            yield SegmentBatch(done - done % n, frames[: done % n], audio[: done % n])

    def unused(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Buffers taken but not handed out (an error, or segments past the content)."""
        out, self._open = list(self._open.values()), {}
        return out

    @property
    def duration_s(self) -> float | None:
        return self.reader.duration_s

    @property
    def num_segments(self) -> int | None:
        return self.reader.num_segments

    @property
    def has_audio(self) -> bool | None:
        return self.reader.has_audio


def _no_audio(path: str) -> NoAudioStream:
    return NoAudioStream(path, "no audio stream (use --on-missing-audio silence to extract with silent audio)")


@dataclass(frozen=True)
class Probe:
    """What opening a file tells without decoding it: its container's declared duration
    (None when it declares none) and whether it has an audio stream."""

    path: str
    duration_s: float | None
    has_audio: bool


def probe(path: str | os.PathLike, *, require_audio: bool = True) -> Probe:
    """Open `path` and look at its streams, decoding nothing (milliseconds): the MediaError
    that decoding it would raise first (not found, not a media file, no moving picture, no
    audio stream when `require_audio`), else its Probe. A file that passes can still fail
    later (corrupt data, too short): the probe is the check before any model is built."""
    path = os.fspath(path)
    container = _open(path)
    try:
        _video_stream(container, path)
        has_audio = bool(container.streams.audio)
        if require_audio and not has_audio:
            raise _no_audio(path)
        duration = container.duration / av.time_base if container.duration and container.duration > 0 else None
        return Probe(path, duration, has_audio)
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({_reason(e)})") from None
    finally:
        container.close()


def decode_video(path: str | os.PathLike, options: DecodeOptions = DecodeOptions()) -> Video:
    """Decode a whole video into arrays (frames [T, K, S, S, 3], audio [T, 16000])."""
    reader = SegmentReader(path, options)
    segments = list(reader)
    frames = np.stack([s.frames for s in segments])
    audio = np.stack([s.audio for s in segments])
    return Video(os.fspath(path), float(reader.duration_s), frames, audio, bool(reader.has_audio))


def decode_audio_file(path: str | os.PathLike) -> np.ndarray:
    """The whole audio track of any media file as 16-kHz mono float32 -> [S]."""
    path = os.fspath(path)
    container = _open(path)
    has_audio = bool(container.streams.audio)
    container.close()
    if not has_audio:
        raise NoAudioStream(path, "no audio stream")
    try:
        audio = _Audio(path)
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({_reason(e)})") from None
    try:
        samples = audio.rest()
        if audio.frames == 0:
            raise CorruptMedia(path, "no decodable audio frame")
        return samples
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({_reason(e)})") from None
    finally:
        audio.close()
