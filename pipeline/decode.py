"""Decoding: the only module that touches PyAV. A video becomes a stream of 1-s
segments, each K RGB frames chosen by time stamp (resized to 224x224 inside swscale,
only the chosen frames converted) and one second of 16-kHz mono audio.

Time origin: each stream's own first time stamp (a first video time stamp that is not 0
is the first frame of segment 0, as AVE's frame-index rule has it; audio starts at its
first sample, as a wav extracted from the file does). Memory does not grow with the
video's length: segments are yielded as soon as their frames and audio are complete.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np
import soxr

from avel.pipeline.config import FRAME_SIZE, MISSING_AUDIO, SAMPLE_RATE_HZ, FeatureSettings, check_choice, check_range
from avel.pipeline.errors import (
    CorruptMedia,
    MediaError,
    MediaNotFound,
    NoAudioStream,
    NoVideoStream,
    NotAMediaFile,
    TooShort,
)
from avel.pipeline.sampling import segment_count

TIME_EPS_S = 1e-6
# A decoded video this much shorter than its container declares is truncated or corrupt.
TRUNCATION_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class DecodeOptions:
    frames_per_segment: int = 16
    segments: int | None = None  # force N segments (AVE: 10)
    frame_size: int = FRAME_SIZE
    on_missing_audio: str = "error"  # error | silence
    max_shortfall_s: float = 1.0  # with `segments`, how much shorter than N s a video may be

    def __post_init__(self) -> None:
        check_range("frames_per_segment", self.frames_per_segment, 1)
        if self.segments is not None:
            check_range("segments", self.segments, 1)
        check_choice("on_missing_audio", self.on_missing_audio, MISSING_AUDIO)

    @classmethod
    def from_settings(cls, settings: FeatureSettings, **overrides) -> "DecodeOptions":
        """What `settings` ask of the decoder (`overrides`: e.g. segments=None for videos of any length)."""
        options = cls(frames_per_segment=settings.frames_per_segment, segments=settings.segments,
                      frame_size=settings.frame_size, on_missing_audio=settings.on_missing_audio)
        return dataclasses.replace(options, **overrides) if overrides else options


@dataclass
class Segment:
    index: int
    frames: np.ndarray  # [K, S, S, 3] uint8 RGB
    audio: np.ndarray  # [16000] float32 mono in [-1, 1]


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


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise MediaNotFound(path, "no such file")
    if os.path.isdir(path):
        raise NotAMediaFile(path, "is a directory, not a media file")
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise NotAMediaFile(path, f"not a media file PyAV can open ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


class SegmentReader:
    """Iterate over the 1-s segments of one video.

    After iteration: `duration_s` (video content length) and `num_segments` are set.
    Errors are `MediaError` subclasses naming the file."""

    def __init__(self, path: str | os.PathLike, options: DecodeOptions = DecodeOptions()) -> None:
        self.path = str(path)
        self.options = options
        self.duration_s: float | None = None
        self.num_segments: int | None = None
        self.has_audio: bool | None = None

    # -- helpers ---------------------------------------------------------------------
    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:  # -> [S, S, 3] uint8
        s = self.options.frame_size
        img = frame.to_ndarray(format="rgb24", width=s, height=s)
        rotation = getattr(frame, "rotation", 0) or 0
        k = int(round(rotation / 90.0)) % 4
        # the display matrix rotates the frame counter-clockwise by `rotation` degrees;
        # the image is square after the resize, so rotating afterwards is equivalent
        return np.ascontiguousarray(np.rot90(img, k)) if k else img

    def __iter__(self) -> Iterator[Segment]:
        opts = self.options
        K = opts.frames_per_segment
        container = _open(self.path)
        try:
            yield from self._segments(container, K)
        except av.error.FFmpegError as e:
            raise CorruptMedia(self.path, f"corrupt stream ({_reason(e)})") from None
        finally:
            container.close()

    def _segments(self, container, K: int) -> Iterator[Segment]:
        opts, path = self.options, self.path
        if not container.streams.video:
            raise NoVideoStream(path, "no video stream")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        if astream is None and opts.on_missing_audio == "error":
            raise NoAudioStream(path, "no audio stream (use --on-missing-audio silence to extract with silent audio)")
        self.has_audio = astream is not None
        declared_s = _declared_duration(container, vstream)

        rate = vstream.average_rate or vstream.guessed_rate
        fallback_dt = 1.0 / float(rate) if rate else 1.0 / 25.0

        resampler = None
        soxr_stream = None
        audio_chunks: list[np.ndarray] = []  # 16-kHz mono, not yet handed out
        audio_have = 0  # samples in audio_chunks
        audio_done = astream is None
        audio_base = 0  # index (in 16-kHz samples) of audio_chunks[0][0]

        seg_frames: list[list[np.ndarray]] = []  # chosen frames per segment, in order
        next_time_index = 0  # index into the global list of wanted times t + i/K
        first_time: float | None = None
        prev_frame = None  # (relative time, av.VideoFrame)
        prev_rgb: np.ndarray | None = None
        last_dt = fallback_dt
        emitted = 0
        forced = opts.segments

        def wanted(n: int) -> float:
            return n // K + (n % K) / K

        def assign(rgb: np.ndarray) -> None:
            nonlocal next_time_index
            t = next_time_index // K
            while len(seg_frames) <= t - emitted:
                seg_frames.append([])
            seg_frames[t - emitted].append(rgb)
            next_time_index += 1

        def take_audio(t: int) -> np.ndarray:
            nonlocal audio_chunks, audio_have, audio_base
            lo, hi = t * SAMPLE_RATE_HZ, (t + 1) * SAMPLE_RATE_HZ
            if not audio_chunks:
                buf = np.zeros(0, np.float32)
            else:
                buf = np.concatenate(audio_chunks) if len(audio_chunks) != 1 else audio_chunks[0]
            out = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
            piece = buf[max(0, lo - audio_base): max(0, hi - audio_base)]
            out[: piece.shape[0]] = piece
            keep = buf[max(0, hi - audio_base):]
            audio_chunks, audio_have, audio_base = [keep], keep.shape[0], hi
            return out

        last_seg: Segment | None = None

        def ready_segments(final: bool) -> Iterator[Segment]:
            nonlocal emitted, last_seg
            while seg_frames and len(seg_frames[0]) == K:
                if forced is not None and emitted >= forced:
                    return
                if not final and not audio_done and audio_base + audio_have < (emitted + 1) * SAMPLE_RATE_HZ:
                    return  # wait for audio to catch up
                if not final and (prev_frame is None or prev_frame[0] < emitted + 1 - TIME_EPS_S):
                    return  # the segment's full second has not been seen yet
                frames = np.stack(seg_frames.pop(0))
                last_seg = Segment(emitted, frames, take_audio(emitted))
                yield last_seg
                emitted += 1

        def add_audio(frame: av.AudioFrame) -> None:
            nonlocal resampler, soxr_stream, audio_have
            if resampler is None:
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
                soxr_stream = soxr.ResampleStream(frame.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="VHQ")
            for f in resampler.resample(frame):
                mono = f.to_ndarray().astype(np.float32, copy=False).mean(axis=0)  # VGGish: mean of channels
                out = soxr_stream.resample_chunk(mono)
                audio_chunks.append(out)
                audio_have += out.shape[0]

        streams = [vstream] + ([astream] if astream is not None else [])
        stopped_early = False
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                for aframe in packet.decode():
                    add_audio(aframe)
            else:
                for vframe in packet.decode():
                    t_abs = vframe.time
                    if t_abs is None:  # no time stamp: count frames at the nominal rate
                        t_abs = (prev_frame[0] + first_time + fallback_dt) if prev_frame else 0.0
                    if first_time is None:
                        first_time = t_abs
                    x = t_abs - first_time
                    if prev_frame is not None and x <= prev_frame[0]:
                        continue  # a non-increasing time stamp: keep the earlier frame
                    if prev_frame is not None:
                        last_dt = x - prev_frame[0]
                        # every wanted time before this frame shows the previous frame
                        while wanted(next_time_index) < x - TIME_EPS_S:
                            if prev_rgb is None:
                                prev_rgb = self._rgb(prev_frame[1])
                            assign(prev_rgb)
                    prev_frame, prev_rgb = (x, vframe), None
            yield from ready_segments(final=False)
            if forced is not None and emitted >= forced:
                stopped_early = True
                break

        if not stopped_early:
            if resampler is not None:
                for f in resampler.resample(None):
                    mono = f.to_ndarray().astype(np.float32, copy=False).mean(axis=0)
                    audio_chunks.append(soxr_stream.resample_chunk(mono))
                audio_chunks.append(soxr_stream.resample_chunk(np.zeros(0, np.float32), last=True))
                audio_have = sum(c.shape[0] for c in audio_chunks)
            audio_done = True
            if prev_frame is None:
                raise CorruptMedia(path, "no decodable video frame")
            duration = prev_frame[0] + last_dt
            self.duration_s = duration
            if declared_s is not None and duration < declared_s - max(TRUNCATION_TOLERANCE_S, 0.1 * declared_s):
                raise CorruptMedia(path, f"truncated or corrupt: decoded {duration:.2f} s of {declared_s:.2f} s declared")
            try:
                total, available = segment_count(duration, forced, opts.max_shortfall_s)
            except ValueError as e:
                raise TooShort(path, str(e)) from None
            # the last frame stays on screen until the end of the content
            while next_time_index < available * K:
                if prev_rgb is None:
                    prev_rgb = self._rgb(prev_frame[1])
                assign(prev_rgb)
            del seg_frames[max(0, available - emitted):]
            yield from ready_segments(final=True)
            # segments past the real content repeat the last real one (forced N only)
            while emitted < total:
                if last_seg is None:
                    raise TooShort(path, "not enough content for one segment")
                yield Segment(emitted, last_seg.frames, last_seg.audio)
                emitted += 1
        else:
            self.duration_s = declared_s if declared_s else float(forced)
        self.num_segments = emitted


def _declared_duration(container, vstream) -> float | None:
    if vstream.duration is not None and vstream.time_base is not None:
        return float(vstream.duration * vstream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def decode_video(path: str | os.PathLike, options: DecodeOptions = DecodeOptions()) -> Video:
    """Decode a whole video into arrays (frames [T, K, S, S, 3], audio [T, 16000])."""
    reader = SegmentReader(path, options)
    segments = list(reader)
    frames = np.stack([s.frames for s in segments])
    audio = np.stack([s.audio for s in segments])
    return Video(str(path), float(reader.duration_s), frames, audio, bool(reader.has_audio))


def decode_or_error(path: str, options: DecodeOptions) -> tuple[Video | None, tuple[str, str] | None]:
    """(video, None) or (None, (kind, one-line message)): what a decoder worker returns.
    Lives here, not with the models, so worker processes never import torch."""
    try:
        return decode_video(path, options), None
    except MediaError as e:
        return None, (e.kind, str(e))
    except Exception as e:  # anything else a broken file can raise: recorded, never fatal
        return None, ("error", f"{path}: {type(e).__name__}: {e}")


def decode_audio_file(path: str | os.PathLike) -> np.ndarray:
    """The whole audio track of any media file as 16-kHz mono float32 -> [S]."""
    path = str(path)
    container = _open(path)
    try:
        if not container.streams.audio:
            raise NoAudioStream(path, "no audio stream")
        astream = container.streams.audio[0]
        resampler = None
        stream = None
        out: list[np.ndarray] = []
        for frame in container.decode(astream):
            if resampler is None:
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
                stream = soxr.ResampleStream(frame.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="VHQ")
            for f in resampler.resample(frame):
                out.append(stream.resample_chunk(f.to_ndarray().astype(np.float32, copy=False).mean(axis=0)))
        if resampler is None:
            raise CorruptMedia(path, "no decodable audio frame")
        for f in resampler.resample(None):
            out.append(stream.resample_chunk(f.to_ndarray().astype(np.float32, copy=False).mean(axis=0)))
        out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
        return np.concatenate(out)
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({_reason(e)})") from None
    finally:
        container.close()
