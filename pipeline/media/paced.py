"""Generated media played live: a clip with known events (pipeline/media/synth.py's looks and
sounds) encoded on the fly and written at the pace of its time stamps, to a pipe or a URL
(`udp://127.0.0.1:PORT`). What the live tests and benchmarks/live_latency.py feed `avel live`.

The stream is MPEG-TS (h264 `zerolatency` + AAC, a packet flushed as soon as it is muxed),
so a second is on the wire about when it is played; `pause` holds the writer (a stall);
`copy` receives the same bytes (the saved file that the offline run reads).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from .synth import SynthConfig, VideoPlan, plan_dataset, render_audio, render_frames


@dataclass
class Clip:
    frames: np.ndarray  # [N, H, W, 3] uint8, frame i at i / fps
    audio: np.ndarray  # [S] float32 mono at sample_rate_hz
    fps: int
    sample_rate_hz: int
    plan: VideoPlan  # what each second shows (event or a kind of background)


def event_clip(
    duration_s: int = 8, *, classes: int = 3, seed: int = 0, fps: int = 8, width: int = 128, height: int = 96
) -> Clip:
    """A generated clip with one event of at least 2 s between background seconds."""
    cfg = SynthConfig(
        videos=1,
        classes=classes,
        seed=seed,
        duration_s=duration_s,
        fps=fps,
        width=width,
        height=height,
        full_event_fraction=0.0,
    )
    plan = plan_dataset(cfg)[0]
    rng = np.random.default_rng(list(plan.render_seed))
    frames = render_frames(cfg, plan, rng)
    return Clip(frames, render_audio(cfg, plan, rng), fps, cfg.sample_rate_hz, plan)


class _Tee:
    def __init__(self, *outs: BinaryIO) -> None:
        self.outs = outs

    def write(self, data) -> int:
        for out in self.outs:
            out.write(data)
            out.flush()
        return len(data)


def play(
    out: BinaryIO | str,
    clip: Clip,
    *,
    seconds: float | None = None,
    speed: float = 1.0,
    pause: tuple[float, float] | None = None,
    copy: BinaryIO | None = None,
    stop=None,
    audio_until_s: float | None = None,
) -> float:
    """Encode `clip` (looped to `seconds`, default its length) as MPEG-TS into `out` (a
    binary file object, or a URL FFmpeg writes to), each packet written when the wall clock
    reaches its time stamp / `speed`. `pause` = (at_s, for_s): the writer stops for for_s
    seconds when it reaches at_s. `stop` (a threading.Event) ends it early. `audio_until_s`:
    the audio stops there (the video goes on: a stream that drops its audio). Returns the
    time.monotonic() at which stream time 0 was due."""
    n_frames, n_samples = clip.frames.shape[0], clip.audio.shape[0]
    total_s = float(seconds if seconds is not None else n_frames / clip.fps)
    target = out if isinstance(out, str) else (_Tee(out, copy) if copy is not None else out)
    h, w = clip.frames.shape[1:3]
    with av.open(target, "w", format="mpegts", options={"flush_packets": "1", "pes_payload_size": "0"}) as container:
        vs = container.add_stream("libx264", rate=clip.fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, clip.fps)
        vs.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": "23",
            "threads": "1",
            "g": str(clip.fps),
        }  # a key frame a second: a reader may join at any second
        aus = container.add_stream("aac", rate=clip.sample_rate_hz, layout="mono")
        step = aus.codec_context.frame_size or 1024
        vi, ai = 0, 0
        total_frames = int(round(total_s * clip.fps))
        total_samples = int(round(min(total_s, audio_until_s or total_s) * clip.sample_rate_hz))
        paused = pause is None
        t0 = time.monotonic()
        while vi < total_frames or ai < total_samples:
            if stop is not None and stop.is_set():
                break
            tv = vi / clip.fps if vi < total_frames else float("inf")
            ta = ai / clip.sample_rate_hz if ai < total_samples else float("inf")
            t = min(tv, ta)
            if not paused and t >= pause[0]:
                time.sleep(pause[1])
                t0 += pause[1]
                paused = True
            wait = t0 + t / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if tv <= ta:
                frame = av.VideoFrame.from_ndarray(clip.frames[vi % n_frames], format="rgb24")
                frame.pts = vi
                container.mux(vs.encode(frame))
                vi += 1
            else:
                idx = (np.arange(ai, min(ai + step, total_samples))) % n_samples
                frame = av.AudioFrame.from_ndarray(
                    clip.audio[None, idx].astype(np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = clip.sample_rate_hz, ai
                container.mux(aus.encode(frame))
                ai += step
        container.mux(vs.encode(None))
        container.mux(aus.encode(None))
    return t0
