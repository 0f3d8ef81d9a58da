"""Generated videos for the benchmark, written frame by frame (any length, little memory).

`write_ave_like` defaults to AVE-like clips: 640x360 at 30 fps, h264 (libx264 veryfast,
crf 23: B-frames and CABAC, as web video) + AAC 44.1 kHz stereo, 10 s. The picture is a
textured scene that pans, a moving disc and film grain, so the decoder has real residuals
to decode (flat synthetic pictures decode several times faster than camera video and would
flatter every ratio that has decoding in it). Deterministic for a seed.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AVE_SIZE = (640, 360)
AVE_FPS = 30
AVE_AUDIO_HZ = 44100


def write_ave_like(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    seconds: float = 10.0,
    size: tuple[int, int] = AVE_SIZE,
    fps: int = AVE_FPS,
    audio_hz: int = AVE_AUDIO_HZ,
) -> str:
    path = Path(path)
    rng = np.random.default_rng(seed)
    width, height = size
    cell = 8
    texture = rng.integers(30, 226, (height // cell + 4, width // cell + 4, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((cell, cell, 1), np.float32))  # (H + 4 cells, W + 4 cells, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.uniform(60, 255, 3).astype(np.float32)
    radius = 0.18 * height
    frames = int(round(seconds * fps))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.time_base = Fraction(1, fps)
            video.options = {"preset": "veryfast", "crf": "23"}
            audio = out.add_stream("aac", rate=audio_hz, layout="stereo")
            for i in range(frames):
                dx, dy = (2 * i) % (4 * cell), i % (4 * cell)  # a slow pan
                img = texture[dy : dy + height, dx : dx + width].copy()
                cx = width / 2 + width / 3 * np.sin(i / (0.7 * fps))
                cy = height / 2 + height / 4 * np.cos(i / (0.5 * fps))
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = colour
                img += rng.normal(0, 6, img.shape).astype(np.float32)  # grain
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            n = int(round(seconds * audio_hz))
            step = audio.codec_context.frame_size or 1024
            freq = rng.uniform(200, 2000)
            for s in range(0, n, step):
                t = np.arange(s, min(n, s + step)) / audio_hz
                left = 0.3 * np.sin(2 * np.pi * freq * t) + 0.03 * rng.standard_normal(t.size)
                block = np.stack([left, 0.5 * left]).astype(np.float32)  # unequal channels
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = audio_hz, s
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)
