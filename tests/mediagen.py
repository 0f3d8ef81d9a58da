"""Tiny test media written with PyAV: every video the decoder tests need, made on the fly."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

ColorFn = Callable[[float], tuple[int, int, int]]  # time (s) -> RGB of the whole frame
AudioFn = Callable[[np.ndarray], np.ndarray]  # times (s) [S] -> samples [S] in [-1, 1]


def solid(rgb: tuple[int, int, int]) -> ColorFn:
    return lambda t: rgb


def write_video(
    path,
    *,
    duration_s: float = 3.0,
    fps: float = 16,
    frame_times_s: list[float] | None = None,  # explicit (variable) frame times
    color: ColorFn = solid((200, 30, 30)),
    image: Callable[[float], np.ndarray] | None = None,  # time -> [H, W, 3] uint8 frame
    size: tuple[int, int] = (64, 48),  # width, height
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    audio: AudioFn | None = None,
    audio_rate: int = 16000,
    audio_layout: str = "mono",
    audio_codec: str = "aac",
    audio_duration_s: float | None = None,  # default: duration_s
    video: bool = True,
    rotation: int | None = None,
    start_offset_s: float = 0.0,
) -> str:
    path = str(path)
    time_base = Fraction(1, 1000)
    with av.open(path, "w") as out:
        vs = None
        if video:
            vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height = size
            vs.pix_fmt = pix_fmt
            vs.time_base = time_base
            vs.codec_context.time_base = time_base
            if codec == "libx264":
                vs.options = {"preset": "ultrafast", "crf": "18"}
            if rotation is not None:
                vs.set_display_rotation(rotation)
        as_ = None
        if audio is not None:
            as_ = out.add_stream(audio_codec, rate=audio_rate, layout=audio_layout)
        if vs is not None:
            times = frame_times_s if frame_times_s is not None else list(np.arange(0, duration_s - 1e-9, 1.0 / fps))
            for t in times:
                arr = image(t) if image is not None else np.full((size[1], size[0], 3), color(t), np.uint8)
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                frame.pts = int(round((t + start_offset_s) * 1000))
                frame.time_base = time_base
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        if as_ is not None:
            n = int(round((duration_s if audio_duration_s is None else audio_duration_s) * audio_rate))
            t = np.arange(n) / audio_rate
            mono = np.clip(audio(t), -1, 1).astype(np.float32)
            channels = 2 if audio_layout == "stereo" else 1
            block = 1024
            for i in range(0, n, block):
                chunk = mono[i : i + block]
                data = np.tile(chunk[None, :], (channels, 1))
                if channels == 2:
                    data[1] *= 0.5  # unequal channels: the downmix must be a plain mean
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=audio_layout)
                frame.sample_rate = audio_rate
                frame.pts = i
                for p in as_.encode(frame):
                    out.mux(p)
            for p in as_.encode():
                out.mux(p)
    return path


def tone(freq_hz: float, amp: float = 0.5, start_s: float = 0.0, end_s: float = 1e9) -> AudioFn:
    def f(t: np.ndarray) -> np.ndarray:
        on = (t >= start_s) & (t < end_s)
        return amp * np.sin(2 * np.pi * freq_hz * t) * on

    return f


def quiet_noise(amp: float = 0.01, seed: int = 0) -> AudioFn:
    def f(t: np.ndarray) -> np.ndarray:
        return amp * np.random.default_rng(seed).standard_normal(t.shape[0])

    return f


def write_audio_with_cover(path, *, duration_s: float = 3.0, audio: AudioFn | None = None) -> str:
    """An audio file (mp3 or m4a by its extension) with cover art: an attached picture,
    which FFmpeg shows as a one-frame video stream."""
    path = str(path)
    fmt, codec = ("mp3", "libmp3lame") if path.endswith(".mp3") else ("mp4", "aac")
    with av.open(path, "w", format=fmt) as out:
        a = out.add_stream(codec, rate=44100, layout="stereo")
        v = out.add_stream("mjpeg", rate=1)
        v.width, v.height, v.pix_fmt = 64, 64, "yuvj420p"
        v.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24").reformat(
            format="yuvj420p"
        )
        for p in list(v.encode(picture)) + list(v.encode(None)):
            p.pts = p.dts = 0
            out.mux(p)
        n = int(duration_s * 44100)
        mono = (audio or tone(440))(np.arange(n) / 44100).astype(np.float32)
        step = a.codec_context.frame_size or 1152
        for i in range(0, n, step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(np.tile(mono[None, i : i + step], (2, 1))), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = 44100, i
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    return path
