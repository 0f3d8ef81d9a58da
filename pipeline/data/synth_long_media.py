"""Long generated MEDIA with known events: a LongVideoPlan (pipeline/data/synth_long.py, the one
source of truth for events, distractors, subsets and the ActivityNet ground truth) rendered into
an h264 + AAC mp4 of any length, with the looks and sounds of `avel synth`'s classes
(pipeline/media/synth.py: class k's colour and shape, class k's harmonic tone).

    render_long_video(cfg, plan, "v.mp4")                     # one video, streamed
    write_long_media(out_dir, cfg)                            # videos/*.mp4 + ground_truth.json

Per second t of a video:
    event (s <= t < e of an event of class c)   c's object on screen AND c's tone
    distractor run, modality "visual"           c's object on screen, an unrelated sound
    distractor run, modality "audio"            c's tone, an unrelated look
    background                                  an unrelated look and an unrelated sound
(unrelated looks and sounds are the 10-s generator's: a grey object or an empty scene; a
sweep, band noise, clicks or quiet). The object sits where the plan's 7x7 cells of that event
or run are (their centre, mapped into the middle of the frame) and drifts slowly; its size,
drift, shade and tone jitter are drawn per (video, class). Frame i is at i/fps s, inside second
i // fps; the audio of second t is samples [t * sr, (t + 1) * sr).

Memory: the video is rendered and encoded one second of frames at a time, its audio one block
of BLOCK_S seconds at a time, each block from its own generators (seed, 30, v, block): a
60-minute video never holds more than a block of audio and a second of frames. Deterministic
for a config: libx264 with threads=1, so the same config gives the same bytes."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from ...core import jsonio
from ...core.atomic import atomic_path, write_text_atomic
from ..media.synth import (
    DISTRACTOR_SOUNDS,
    SynthConfig,
    _distractor_sound,
    _gate,
    class_image,
    class_specs,
    class_tone,
    draw_motion,
    draw_scene,
    draw_unrelated_look,
    finish_frame,
    unrelated_image,
)
from .synth_long import BLOCK_S, LongSynthConfig, LongVideoPlan, class_names, long_plans, write_ground_truth

VIDEO_DIR = "videos"
GROUND_TRUTH = "ground_truth.json"
MANIFEST = "synth_long.json"
GRID = 7  # the plan's cells are on AVE's 7x7 grid
KINDS = ("background", "event", "visual_only", "audio_only")  # what second t holds (kind codes 0..3)


def second_kinds(plan: LongVideoPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per second of the video: kind code (KINDS), class (-1 for background) and span index
    into `spans(plan)` (-1 for background) -> three int arrays [duration_s]."""
    T = plan.duration_s
    kind = np.zeros(T, dtype=np.int64)
    cls = np.full(T, -1, dtype=np.int64)
    span = np.full(T, -1, dtype=np.int64)
    for i, (s, e, c, k, _) in enumerate(spans(plan)):
        kind[s:e] = KINDS.index(k)
        cls[s:e] = c
        span[s:e] = i
    return kind, cls, span


def spans(plan: LongVideoPlan) -> list[tuple[int, int, int, str, tuple]]:
    """(start_s, end_s, class, kind, cells) of every event and distractor run (kind: "event",
    "visual_only" or "audio_only"). They never overlap: a distractor run lies in a gap."""
    out = [(s, e, c, "event", cells) for s, e, c, cells in plan.events]
    out += [(s, e, c, f"{m}_only", cells) for s, e, c, m, cells in plan.distractors]
    return sorted(out)


def _centre(cells: tuple, W: int, H: int) -> tuple[float, float]:
    """The object's centre for its cells: their mean cell centre, mapped into the middle half of
    the frame's width and the middle 40 % of its height (the 10-s generator's range)."""
    rows = np.array([c // GRID for c in cells], dtype=np.float64)
    cols = np.array([c % GRID for c in cells], dtype=np.float64)
    fx, fy = (cols.mean() + 0.5) / GRID, (rows.mean() + 0.5) / GRID
    return float((0.25 + 0.5 * fx) * W), float((0.3 + 0.4 * fy) * H)


@dataclasses.dataclass(frozen=True)
class ClassLook:
    """Class c's look and sound in one video (drawn from (seed, 31, v, c))."""

    colour: np.ndarray  # float32 RGB after brightness jitter
    frequency_hz: float  # the tone after +-1 % jitter
    motion: object  # media.synth.Motion (its centre replaced per span)
    loudness: float  # the tone's peak bound


def _class_look(cfg: LongSynthConfig, media: SynthConfig, v: int, c: int) -> tuple[ClassLook, np.random.Generator]:
    """The look of class c in video v and the generator, positioned where the tone's phases are
    drawn (the same for every block: the tone is continuous across blocks)."""
    spec = class_specs(cfg.classes)[c]
    rng = np.random.default_rng([cfg.seed, 31, v, c])
    brightness = rng.uniform(0.8, 1.0)
    frequency = float(spec.frequency_hz * rng.uniform(0.99, 1.01))
    motion = draw_motion(rng, media.height, media.width)
    loudness = rng.uniform(0.25, 0.4)
    colour = np.asarray([int(round(x * brightness)) for x in spec.rgb], dtype=np.float32)
    return ClassLook(colour, frequency, motion, loudness), rng


def _block_audio(
    cfg: LongSynthConfig, media: SynthConfig, plan: LongVideoPlan, kinds, start: int, B: int, rng
) -> np.ndarray:
    """The audio of seconds [start, start + B): float32 [B * sr] in [-1, 1]."""
    kind, cls, _ = kinds
    sr, T = media.sample_rate_hz, plan.duration_s
    specs = class_specs(cfg.classes)
    audible = np.where((kind == 1) | (kind == 3), cls, -1)
    t = (start * sr + np.arange(B * sr)) / sr
    x = np.zeros(B * sr)
    lo, hi = max(0, start - 1), min(T, start + B + 1)  # one second of context: fades only at real switches
    for c in sorted(set(audible[start : start + B].tolist()) - {-1}):
        look, crng = _class_look(cfg, media, plan.index, c)
        tone = class_tone(specs[c], look.frequency_hz, t, sr, crng)
        bound = sum(1 / k for k in range(1, specs[c].harmonics + 1) if k * look.frequency_hz < 0.45 * sr)
        gate = _gate(audible[lo:hi] == c, sr)[(start - lo) * sr : (start - lo + B) * sr]
        x += tone * (look.loudness / bound) * gate
    x += rng.standard_normal(B * sr) * rng.uniform(0.004, 0.015)  # noise floor
    for s in range(B):
        if kind[start + s] in (0, 2):  # background or visual-only: an unrelated sound
            sound = DISTRACTOR_SOUNDS[int(rng.integers(len(DISTRACTOR_SOUNDS)))]
            x[s * sr : (s + 1) * sr] += _distractor_sound(sound, sr, rng)
    return np.clip(x, -1, 1).astype(np.float32)


def render_long_video(
    cfg: LongSynthConfig, plan: LongVideoPlan, path: str | os.PathLike, media: SynthConfig | None = None
) -> Path:
    """Render `plan` into an h264 + AAC mp4 at `path` (atomically), streamed (see the module
    doc). `media`: the picture and sound settings (fps, width, height, sample_rate_hz, crf,
    audio_bit_rate; default SynthConfig's: 128x96 at 16 fps, 16 kHz)."""
    media = media or SynthConfig()
    H, W, fps, sr = media.height, media.width, media.fps, media.sample_rate_hz
    specs = class_specs(cfg.classes)
    kinds = second_kinds(plan)
    kind, cls, span = kinds
    all_spans = spans(plan)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    scene = draw_scene(np.random.default_rng([cfg.seed, 32, plan.index]), H, W, yy)
    looks = {c: _class_look(cfg, media, plan.index, c)[0] for c in sorted(set(cls.tolist()) - {-1})}
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
            vs.codec_context.time_base = Fraction(1, fps)
            vs.options = {"preset": "veryfast", "crf": str(media.crf), "threads": "1"}
            aus = container.add_stream("aac", rate=sr, layout="mono")
            aus.bit_rate = media.audio_bit_rate
            step = aus.codec_context.frame_size or 1024
            pending = np.zeros(0, dtype=np.float32)
            sent = 0  # audio samples encoded so far

            def encode_audio(samples: np.ndarray) -> None:
                nonlocal sent
                frame = av.AudioFrame.from_ndarray(samples[None].copy(), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sr, sent
                container.mux(aus.encode(frame))
                sent += len(samples)

            for b, start in enumerate(range(0, plan.duration_s, BLOCK_S)):
                B = min(BLOCK_S, plan.duration_s - start)
                rng = np.random.default_rng([cfg.seed, 30, plan.index, b])
                audio = _block_audio(cfg, media, plan, kinds, start, B, rng)
                for s in range(B):
                    t = start + s
                    unrelated = draw_unrelated_look(rng, H, W) if kind[t] in (0, 3) else None
                    if unrelated is None:
                        look = looks[int(cls[t])]
                        cx0, cy0 = _centre(all_spans[int(span[t])][4], W, H)
                        motion = dataclasses.replace(look.motion, cx0=cx0, cy0=cy0)
                    noise = rng.standard_normal((fps, H, W, 3), dtype=np.float32)
                    noise *= 5.0
                    for j in range(fps):
                        time_s = (t * fps + j) / fps
                        if unrelated is None:
                            img = class_image(specs[int(cls[t])].shape, look.colour, motion, time_s, xx, yy, scene)
                        else:
                            img = unrelated_image(unrelated, t, time_s, xx, yy, scene)
                        frame = av.VideoFrame.from_ndarray(finish_frame(img, noise[j]).astype(np.uint8), format="rgb24")
                        frame.pts = t * fps + j
                        container.mux(vs.encode(frame))
                    pending = np.concatenate([pending, audio[s * sr : (s + 1) * sr]])
                    while len(pending) >= step:
                        encode_audio(pending[:step])
                        pending = pending[step:]
            container.mux(vs.encode(None))
            if len(pending):
                encode_audio(pending)
            container.mux(aus.encode(None))
    return path


def _render_job(args) -> str:
    cfg, plan, path, media = args
    return str(render_long_video(cfg, plan, path, media))


def manifest(cfg: LongSynthConfig, plans: list[LongVideoPlan], media: SynthConfig) -> dict:
    """The config, every class's name, look and sound, every video's plan (synth_long.json)."""
    specs = class_specs(cfg.classes)
    return {
        "config": dataclasses.asdict(cfg),
        "media": {k: getattr(media, k) for k in ("fps", "width", "height", "sample_rate_hz", "crf", "audio_bit_rate")},
        "classes": [
            {"label": name, "colour": s.colour, "rgb": s.rgb, "shape": s.shape, "frequency_hz": s.frequency_hz}
            for name, s in zip(class_names(cfg), specs)
        ],
        "videos": [dataclasses.asdict(p) for p in plans],
    }


def write_long_media(
    out_dir: str | os.PathLike,
    cfg: LongSynthConfig,
    *,
    media: SynthConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Every video of `cfg` as OUT/videos/<video_id>.mp4, the ActivityNet ground truth
    OUT/ground_truth.json and OUT/synth_long.json (the manifest); returns the files written.
    The output depends on the config alone, not on `workers`."""
    media = media or SynthConfig()
    out = Path(out_dir)
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    plans = long_plans(cfg)
    jobs = [(cfg, p, str(out / VIDEO_DIR / f"{p.video_id}.mp4"), media) for p in plans]
    files = []
    with tqdm(total=len(jobs), desc="synth --long", unit="video", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for f in pool.map(_render_job, jobs):
                    files.append(Path(f))
                    bar.update(1)
        else:
            for job in jobs:
                files.append(Path(_render_job(job)))
                bar.update(1)
    write_ground_truth(out / GROUND_TRUTH, cfg, plans)
    write_text_atomic(out / MANIFEST, jsonio.dumps(manifest(cfg, plans, media), nonfinite="refuse", indent=1) + "\n")
    return files + [out / GROUND_TRUTH, out / MANIFEST]
