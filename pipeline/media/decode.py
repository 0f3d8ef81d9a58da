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
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ...core.config import (
    CONVERSIONS,
    FRAME_SIZE,
    MISSING_AUDIO,
    SAMPLE_RATE_HZ,
    FeatureSettings,
    check_choice,
    check_range,
)
from ...core.errors import (
    CorruptMedia,
    NoAudioStream,
    TooShort,
)
from ...core.sampling import segment_count
from .audio import AudioTrack
from .container import (
    TS_DISCONT,
    declared_s,
    decoded_frames,
    discontinuity,
    no_audio,
    open_media,
    reason_of,
    short_of,
    truncated,
    video_stream,
)

TIME_EPS_S = 1e-6
# --convert device: a chosen frame travels as its yuv420p planes (Y, then U, then V, rows packed),
# in a slot of this many bytes; a larger frame is first shrunk by swscale to fit (aspect kept)
MAX_PLANE_PIXELS = 1920 * 1088
PLANE_BYTES = MAX_PLANE_PIXELS * 3 // 2 + 2 * 4096


def yuv420_bytes(width: int, height: int) -> int:
    """Bytes of a width x height yuv420p picture, planes packed (odd sizes round the chroma up)."""
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


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
    convert: str = "swscale"  # swscale: [S, S, 3] RGB frames | device: yuv420p planes (`PlaneFormat`)

    def __post_init__(self) -> None:
        check_range("frames_per_segment", self.frames_per_segment, 1)
        check_choice("convert", self.convert, CONVERSIONS)
        if self.segments is not None:
            check_range("segments", self.segments, 1)
        check_choice("on_missing_audio", self.on_missing_audio, MISSING_AUDIO)
        check_range("threads", self.threads, 0)

    @classmethod
    def from_settings(cls, settings: FeatureSettings, **overrides) -> DecodeOptions:
        """What `settings` ask of the decoder (`overrides`: e.g. segments=None for videos of any length)."""
        options = cls(
            frames_per_segment=settings.frames_per_segment,
            segments=settings.segments,
            frame_size=settings.frame_size,
            on_missing_audio=settings.on_missing_audio,
            convert=settings.convert,
        )
        return dataclasses.replace(options, **overrides) if overrides else options

    def frames_shape(self, segments: int) -> tuple[int, ...]:
        """Shape of the frames of `segments` segments: (n, K, S, S, 3), or with --convert
        device (n, K, PLANE_BYTES): each frame's yuv420p planes, packed, at the start of its row."""
        if self.convert == "device":
            return (segments, self.frames_per_segment, PLANE_BYTES)
        return (segments, self.frames_per_segment, self.frame_size, self.frame_size, 3)


@dataclass(frozen=True)
class PlaneFormat:
    """What the model process needs to turn one video's planes into RGB (--convert device):
    the pictures' size, the colour matrix's luma weights (kr, kb) and range, and the display
    rotation (quarter turns counter-clockwise, applied after the resize as swscale's path does)."""

    width: int
    height: int
    kr: float
    kb: float
    full_range: bool
    quarter_turns: int = 0
    chroma_left: bool = False  # chroma sited with the left luma column (MPEG-2, H.264, HEVC), else centred

    @property
    def nbytes(self) -> int:
        return yuv420_bytes(self.width, self.height)


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
    planes: PlaneFormat | None = None  # --convert device: frames are [n, K, PLANE_BYTES] yuv420p planes

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


class RgbConverter:
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


# AVColorSpace -> the luma weights (kr, kb) swscale uses for it; anything else (unspecified
# included) is converted as BT.601, swscale's default
LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
BT601 = (0.299, 0.114)
JPEG_RANGE = 2  # AVCOL_RANGE_JPEG (full); unspecified and MPEG are limited, as swscale reads them
# decoders whose 4:2:0 chroma is left-sited (FFmpeg sets AVCHROMA_LOC_LEFT, which swscale follows);
# PyAV does not show a frame's chroma location, so it is known per codec (others: centred)
CHROMA_LEFT_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg4", "h263"})


class PlaneConverter:
    """Chosen frames -> their yuv420p planes, packed (--convert device): no resize, no RGB.
    The first frame fixes the video's `PlaneFormat`; a frame in another pixel format, or of
    another size (a stream that changes resolution), is converted to it by swscale, and a
    picture over MAX_PLANE_PIXELS is shrunk by swscale to fit (aspect kept)."""

    def __init__(self, threads: int, codec: str = "") -> None:
        self.threads, self.reformatter = threads, VideoReformatter()
        self.chroma_left = codec in CHROMA_LEFT_CODECS
        self.format: PlaneFormat | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.format is None:
            w, h = frame.width, frame.height
            if w * h > MAX_PLANE_PIXELS:
                f = (MAX_PLANE_PIXELS / (w * h)) ** 0.5
                w, h = max(2, int(w * f) // 2 * 2), max(2, int(h * f) // 2 * 2)
            kr, kb = LUMA_WEIGHTS.get(int(frame.colorspace or 2), BT601)
            k = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
            self.format = PlaneFormat(w, h, kr, kb, int(frame.color_range or 0) == JPEG_RANGE, k, self.chroma_left)
        fmt = self.format
        if frame.format.name not in ("yuv420p", "yuvj420p") or (frame.width, frame.height) != (fmt.width, fmt.height):
            frame = self.reformatter.reformat(
                frame,
                format="yuv420p",
                width=fmt.width,
                height=fmt.height,
                dst_color_range="JPEG" if fmt.full_range else "MPEG",
                threads=self.threads,
            )
        out = np.empty(fmt.nbytes, np.uint8)
        at = 0
        for plane, (pw, ph) in zip(
            frame.planes, ((fmt.width, fmt.height),) + 2 * (((fmt.width + 1) // 2, (fmt.height + 1) // 2),)
        ):
            rows = np.frombuffer(plane, np.uint8).reshape(ph, plane.line_size)[:, :pw]
            out[at : at + pw * ph].reshape(ph, pw)[...] = rows
            at += pw * ph
        return out


class SegmentReader:
    """Iterate over the 1-s segments of one video.

    `frames_buffer(t)` gives the [K, S, S, 3] uint8 array that segment t's frames are written
    into (default: a new array); it is called once per segment, in order, and at most two
    are in use at a time (three with a forced count). After iteration: `duration_s` (video content length),
    `num_segments` and `has_audio` are set; with --convert device, `planes` (the `PlaneFormat`) once
    the first frame is chosen. Errors are `MediaError` subclasses naming the file."""

    def __init__(
        self,
        path: str | os.PathLike,
        options: DecodeOptions = DecodeOptions(),
        frames_buffer: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.options = options
        self.frames_buffer = frames_buffer or (lambda t: np.empty(options.frames_shape(1)[1:], np.uint8))
        self.duration_s: float | None = None
        self.num_segments: int | None = None
        self.has_audio: bool | None = None
        self.planes: PlaneFormat | None = None

    def __iter__(self) -> Iterator[Segment]:
        container = open_media(self.path)
        audio = None
        try:
            vstream = video_stream(container, self.path)
            if not container.streams.audio and self.options.on_missing_audio == "error":
                raise no_audio(self.path)
            self.has_audio = bool(container.streams.audio)
            audio = AudioTrack(self.path) if self.has_audio else None
            yield from self._segments(container, vstream, audio)
        except av.error.FFmpegError as e:
            raise CorruptMedia(self.path, f"corrupt stream ({reason_of(e)})") from None
        finally:
            container.close()
            if audio is not None:
                audio.close()

    def _segments(self, container, vstream, audio: AudioTrack | None) -> Iterator[Segment]:
        opts, path = self.options, self.path
        K, forced = opts.frames_per_segment, opts.segments
        if opts.threads == 0:
            vstream.thread_type = "AUTO"
        else:
            vstream.thread_count = opts.threads
            vstream.thread_type = "AUTO" if opts.threads > 1 else "NONE"
        if opts.convert == "device":
            rgb = PlaneConverter(0 if opts.threads == 0 else 1, vstream.codec_context.name)
        else:
            rgb = RgbConverter(opts.frame_size, 0 if opts.threads == 0 else 1)
        rate = vstream.average_rate or vstream.guessed_rate
        fallback_dt = 1.0 / float(rate) if rate else 1.0 / 25.0
        may_restart = bool(container.format.flags & TS_DISCONT)  # MPEG-TS, MPEG-PS, Ogg

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
            if opts.convert == "device":
                filling[1][i, : prev_rgb.size] = prev_rgb
                self.planes = rgb.format
            else:
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
                sound = (
                    audio.samples(t * SAMPLE_RATE_HZ, (t + 1) * SAMPLE_RATE_HZ)
                    if audio is not None
                    else np.zeros(SAMPLE_RATE_HZ, np.float32)
                )
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
        for vframe in decoded_frames(container, vstream, repeated):
            t_abs = vframe.time
            if t_abs is None:  # no time stamp: count frames at the nominal rate
                t_abs = (prev[0] + first_time + fallback_dt) if prev else 0.0
            if first_time is None:
                first_time = t_abs
                if audio is not None:
                    audio.origin_s = first_time  # the audio on the video's time line
            x = t_abs - first_time
            if prev is not None and vframe.time is not None:
                jump = discontinuity(path, prev[0], x, fallback_dt, may_restart, (prev[0] + first_time, t_abs))
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
            self.duration_s = declared_s(vstream) or (container.duration / 1e6 if container.duration else float(forced))
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

    def _check_complete(
        self, container, vstream, audio: AudioTrack | None, video_s: float, video_start_s: float
    ) -> None:
        """Truncation, judged per stream: a stream that declares its own duration must decode
        to about that length, or end about there (Matroska's tags and ASF's headers declare the
        time a stream ends, its start time included). Where the video declares none, the
        streams' content must reach the container's duration, counted from the container's
        start time (a Matroska file whose audio outlasts its video is whole; so is one whose
        video outlasts its audio)."""
        declared_video = declared_s(vstream)
        if short_of(video_s, declared_video, video_start_s):
            raise truncated(self.path, "video", video_s, video_start_s, declared_video)
        end_s = video_start_s + video_s  # where the content ends (on the streams' own clock)
        if audio is not None and (declared_s(audio.stream) is not None or declared_video is None):
            keep = (int(video_s + TIME_EPS_S) + 1) * SAMPLE_RATE_HZ  # the segments still to hand out need these
            audio_s = audio.end_s(keep)
            declared_audio = declared_s(audio.stream)
            if short_of(audio_s, declared_audio, audio.start_s):
                raise truncated(self.path, "audio", audio_s, audio.start_s, declared_audio)
            end_s = max(end_s, (video_start_s if audio.start_s is None else audio.start_s) + audio_s)
        declared = container.duration / 1e6 if declared_video is None and container.duration else None
        start_s = container.start_time / 1e6 if container.start_time is not None else min(video_start_s, end_s)
        if short_of(end_s - start_s, declared):
            raise CorruptMedia(
                self.path, f"truncated or corrupt: decoded {end_s - start_s:.2f} s of {declared:.2f} s declared"
            )


class BatchReader:
    """The segments of one video in batches of `segments_per_batch` (the last one may be
    shorter): what the extractors take in one go. `buffers()` gives an empty batch, a pair
    (frames [n, K, S, S, 3] uint8, audio [n, 16000] float32) that the frames are decoded
    into (default: new arrays; a decoder process gives shared memory). After iteration:
    `duration_s`, `num_segments`, `has_audio`."""

    def __init__(
        self,
        path: str | os.PathLike,
        options: DecodeOptions,
        segments_per_batch: int,
        buffers: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        n = max(1, int(segments_per_batch))
        self.path, self.options, self.n = os.fspath(path), options, n
        self.buffers = buffers or (
            lambda: (np.empty(options.frames_shape(n), np.uint8), np.empty((n, SAMPLE_RATE_HZ), np.float32))
        )
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
                yield SegmentBatch(b * n, frames, audio, planes=self.reader.planes)
        done = self.reader.num_segments
        if done % n:
            frames, audio = self._open.pop(done // n)
            yield SegmentBatch(done - done % n, frames[: done % n], audio[: done % n], planes=self.reader.planes)

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
    container = open_media(path)
    has_audio = bool(container.streams.audio)
    container.close()
    if not has_audio:
        raise NoAudioStream(path, "no audio stream")
    try:
        audio = AudioTrack(path)
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({reason_of(e)})") from None
    try:
        samples = audio.rest()
        if audio.frames == 0:
            raise CorruptMedia(path, "no decodable audio frame")
        return samples
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({reason_of(e)})") from None
    finally:
        audio.close()
