"""`avel synth`: a generated audio-visual event dataset in the AVE format, deterministic for a seed.

Output (OUT_DIR):
    videos/<video_id>.mp4       10-s clips, h264 video (128x96, 16 fps) + AAC audio (16 kHz mono)
    Annotations.txt             Category&VideoID&Quality&StartTime&EndTime, with the header
    trainSet.txt valSet.txt testSet.txt   the same format, 80/10/10 of the rows
    synth.json                  the config, every class's look and sound, every video's plan

Every class has a look (a saturated colour and a shape, e.g. "red circle") and a sound (a
harmonic tone at its own frequency, some with amplitude modulation). A video's event is one
contiguous span of at least `min_event_s` seconds (`full_event_fraction` of the videos: the
whole clip, like AVE's 0-10 rows) where the class is both visible and audible. Each background
second is one of:
    visual_only   the class's look, with an unrelated sound (sweep, band noise, clicks, quiet)
    audio_only    the class's sound, with an unrelated look (a grey object or an empty scene)
    distractor    unrelated look and unrelated sound
so that neither modality alone tells event from background. Content changes only at whole
seconds: 16 fps makes frame i (time i/16 s) belong to second i // 16, i.e. exactly AVE's 16
frames per segment, and the audio of second t is samples [t*sr, (t+1)*sr).
Per-video jitter: position, size, motion, brightness, background tint, tone frequency (+-1%),
loudness, noise floor; every frame carries mild pixel noise.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from ...core import jsonio
from ...core.annotations import AnnotationRow, write_annotations
from ...core.atomic import atomic_path, write_text_atomic
from ...core.config import MAX_SEED

VIDEO_DIR = "videos"
ANNOTATIONS = "Annotations.txt"
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
MANIFEST = "synth.json"
QUALITY = "good"
MAX_CLASSES = 28  # class tones go up a whole tone per class: 220 Hz .. 4978 Hz
MAX_VIDEOS = 1_000_000  # a generated set (avel synth, avel demo): beyond it the plan alone fills the memory

# (name, RGB): saturated, pairwise far apart in hue; 8 colours x 7 shapes -> 56 distinct looks
COLOURS = (
    ("red", (220, 40, 40)),
    ("green", (40, 190, 60)),
    ("blue", (40, 80, 230)),
    ("yellow", (235, 215, 40)),
    ("magenta", (215, 45, 205)),
    ("cyan", (40, 205, 215)),
    ("orange", (245, 135, 25)),
    ("purple", (125, 55, 205)),
)
SHAPES = ("circle", "square", "triangle", "ring", "cross", "stripes", "checker")
BACKGROUND_KINDS = ("visual_only", "audio_only", "distractor")
DISTRACTOR_SOUNDS = ("sweep", "band_noise", "clicks", "quiet")
DISTRACTOR_LOOKS = ("grey_object", "empty")
RAMP_S = 0.01  # 10-ms raised-cosine fades wherever a sound starts or stops


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the content (workers and progress bars do not)."""

    videos: int = 100
    classes: int = 10
    seed: int = 0
    duration_s: int = 10
    fps: int = 16
    width: int = 128
    height: int = 96
    sample_rate_hz: int = 16000
    min_event_s: int = 2
    full_event_fraction: float = 0.5  # AVE: 2,750 of 4,143 rows are 0-10
    background_mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # BACKGROUND_KINDS
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    crf: int = 23  # libx264 quality
    audio_bit_rate: int = 64000

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.videos <= MAX_VIDEOS:
            problems.append(f"videos must be in 1..{MAX_VIDEOS}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be in 0..{MAX_SEED}")
        if not 1 <= self.classes <= MAX_CLASSES:
            problems.append(f"classes must be in 1..{MAX_CLASSES}")
        if self.duration_s < self.min_event_s or self.min_event_s < 1:
            problems.append("need 1 <= min_event_s <= duration_s")
        if self.width % 2 or self.height % 2 or self.width < 32 or self.height < 32:
            problems.append("width and height must be even and >= 32 (h264 4:2:0)")
        if self.fps < 1 or self.sample_rate_hz < 16000:
            problems.append("need fps >= 1 and sample_rate_hz >= 16000 (the top class tone is ~5 kHz)")
        if not 0 <= self.full_event_fraction <= 1:
            problems.append("full_event_fraction must be in [0, 1]")
        if len(self.background_mix) != 3 or min(self.background_mix) < 0 or sum(self.background_mix) <= 0:
            problems.append("background_mix: three non-negative weights (visual_only, audio_only, distractor)")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            problems.append("split_fractions: three non-negative weights (train, val, test)")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class ClassSpec:
    index: int
    name: str
    colour: str
    rgb: tuple[int, int, int]
    shape: str
    frequency_hz: int  # the fundamental: the loudest component
    harmonics: int  # partials 1..harmonics with amplitude 1/k (those below 0.45 * sr)
    am_hz: float  # amplitude-modulation rate, 0 = steady


def class_specs(classes: int) -> list[ClassSpec]:
    """The first `classes` classes; class k is the same whatever the number of classes."""
    specs = []
    for k in range(classes):
        colour, rgb = COLOURS[k % len(COLOURS)]
        shape = SHAPES[k % len(SHAPES)]
        freq = int(round(220 * 2 ** (k / 6)))  # a whole tone apart: +12% per class
        specs.append(
            ClassSpec(
                index=k,
                name=f"{colour} {shape} / {freq} Hz",
                colour=colour,
                rgb=rgb,
                shape=shape,
                frequency_hz=freq,
                harmonics=1 + k % 4,
                am_hz=(0.0, 3.0, 6.0)[k % 3],
            )
        )
    return specs


@dataclass(frozen=True)
class VideoPlan:
    """One video, in primitives (stored in synth.json): what each second shows and plays."""

    index: int
    video_id: str
    class_index: int
    start_s: int
    end_s: int
    seconds: tuple[str, ...]  # per second: "event" or one of BACKGROUND_KINDS
    frequency_hz: float  # the class tone after jitter
    rgb: tuple[int, int, int]  # the class colour after brightness jitter
    render_seed: tuple[int, ...]  # seeds the pixel/sample level randomness


def _video_id(seed: int, index: int) -> str:
    return f"synth{seed}-{index:05d}"


def plan_dataset(cfg: SynthConfig) -> list[VideoPlan]:
    """Categories, event spans, background kinds and jitter of every video (cheap, no media)."""
    specs = class_specs(cfg.classes)
    rng = np.random.default_rng([cfg.seed, 0])
    # balanced categories; the first rows name classes 0, 1, ... so that the category index
    # (order of first appearance) equals the class number when videos >= classes
    categories = [i % cfg.classes for i in range(cfg.videos)]
    rest = categories[cfg.classes :]
    rng.shuffle(rest)
    categories[cfg.classes :] = rest
    mix = np.asarray(cfg.background_mix, dtype=np.float64)
    mix = mix / mix.sum()
    plans = []
    for i, c in enumerate(categories):
        vr = np.random.default_rng([cfg.seed, 1, i])
        D = cfg.duration_s
        if vr.random() < cfg.full_event_fraction:
            start, end = 0, D
        else:
            length = int(vr.integers(cfg.min_event_s, max(cfg.min_event_s, D - 1) + 1))
            start = int(vr.integers(0, D - length + 1))
            end = start + length
        seconds = tuple("event" if start <= t < end else BACKGROUND_KINDS[int(vr.choice(3, p=mix))] for t in range(D))
        spec = specs[c]
        brightness = vr.uniform(0.8, 1.0)
        plans.append(
            VideoPlan(
                index=i,
                video_id=_video_id(cfg.seed, i),
                class_index=c,
                start_s=start,
                end_s=end,
                seconds=seconds,
                frequency_hz=float(spec.frequency_hz * vr.uniform(0.99, 1.01)),
                rgb=tuple(int(round(v * brightness)) for v in spec.rgb),
                render_seed=(cfg.seed, 2, i),
            )
        )
    return plans


def split_plan(cfg: SynthConfig) -> dict[str, list[int]]:
    """Row indices per split (sorted: the split files list rows in annotation order).
    With 3 or more videos every split with a non-zero share gets at least one row."""
    rng = np.random.default_rng([cfg.seed, 3])
    order = rng.permutation(cfg.videos)
    w = np.asarray(cfg.split_fractions, dtype=np.float64)
    w = w / w.sum()
    n_val = int(round(cfg.videos * w[1]))
    n_test = int(round(cfg.videos * w[2]))
    if cfg.videos >= 3:
        n_val = max(n_val, 1 if w[1] > 0 else 0)
        n_test = max(n_test, 1 if w[2] > 0 else 0)
    n_val = min(n_val, cfg.videos)
    n_test = min(n_test, cfg.videos - n_val)
    n_train = cfg.videos - n_val - n_test
    return {
        "train": sorted(order[:n_train].tolist()),
        "val": sorted(order[n_train : n_train + n_val].tolist()),
        "test": sorted(order[n_train + n_val :].tolist()),
    }


# --- pictures ------------------------------------------------------------------------
def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of `shape` of size r centred at dx = dy = 0 (dx, dy: pixel offsets)."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r)
    if shape == "triangle":  # apex up, base at dy = +0.8r
        return (dy <= 0.8 * r) & (dy >= -r) & (ax <= (dy + r) * 0.6)
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "stripes":  # horizontal bands inside a square
        return (ax <= 0.9 * r) & (ay <= 0.9 * r) & (np.floor((dy + r) / (0.3 * r)) % 2 == 0)
    if shape == "checker":
        cells = np.floor((dx + r) / (0.45 * r)) + np.floor((dy + r) / (0.45 * r))
        return (ax <= 0.9 * r) & (ay <= 0.9 * r) & (cells % 2 == 0)
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Motion:
    """A class object's size and slow drift: centre (cx0, cy0) px, radius r px, elliptic drift of
    amplitude (amp_x, amp_y) px with period period_s s and phase `phase`."""

    r: float
    cx0: float
    cy0: float
    amp_x: float
    amp_y: float
    period_s: float
    phase: float


def draw_scene(rng: np.random.Generator, H: int, W: int, yy: np.ndarray) -> np.ndarray:
    """The scene [H, W, 3] float32: a dim, slightly tinted grey with a soft vertical gradient."""
    grey = rng.uniform(45, 85)
    tint = rng.uniform(-8, 8, size=3)
    scene = (grey + tint)[None, None, :] + (yy / H - 0.5)[..., None] * rng.uniform(-20, 20)
    return scene.astype(np.float32)


def draw_motion(rng: np.random.Generator, H: int, W: int) -> Motion:
    """The class object's per-video size, start position and slow drift."""
    r = 0.28 * H * rng.uniform(0.85, 1.15)
    cx0, cy0 = rng.uniform(0.35, 0.65) * W, rng.uniform(0.4, 0.6) * H
    amp_x, amp_y = rng.uniform(0, 0.12) * W, rng.uniform(0, 0.06) * H
    period_s, phase = rng.uniform(3, 8), rng.uniform(0, 2 * np.pi)
    return Motion(r, cx0, cy0, amp_x, amp_y, period_s, phase)


def draw_unrelated_look(rng: np.random.Generator, H: int, W: int) -> tuple:
    """An unrelated look for one second: (look, shape, grey level, x, y, radius, drift px/s)."""
    look = DISTRACTOR_LOOKS[int(rng.integers(len(DISTRACTOR_LOOKS)))]
    return (
        look,
        SHAPES[int(rng.integers(len(SHAPES)))],
        rng.uniform(120, 230),
        rng.uniform(0.25, 0.75) * W,
        rng.uniform(0.3, 0.7) * H,
        0.25 * H * rng.uniform(0.7, 1.2),
        rng.uniform(-15, 15),  # drift in px/s
    )


def class_image(
    shape: str, colour: np.ndarray, m: Motion, time_s: float, xx: np.ndarray, yy: np.ndarray, scene: np.ndarray
) -> np.ndarray:
    """The picture at time_s s with the class object (`shape`, `colour` float32 RGB) on the scene."""
    cx = m.cx0 + m.amp_x * np.sin(2 * np.pi * time_s / m.period_s + m.phase)
    cy = m.cy0 + m.amp_y * np.cos(2 * np.pi * time_s / m.period_s + m.phase)
    mask = _shape_mask(shape, xx - cx, yy - cy, m.r)
    shade = 1.0 + 0.06 * np.sin(2 * np.pi * ((xx - cx) + (yy - cy)) / 17.0)  # faint texture
    return np.where(mask[..., None], colour * shade[..., None], scene)


def unrelated_image(
    unrelated: tuple, t: int, time_s: float, xx: np.ndarray, yy: np.ndarray, scene: np.ndarray
) -> np.ndarray:
    """The picture at time_s s (inside second t) with an unrelated look (`draw_unrelated_look`)."""
    look, shape, level, dx0, dy0, rr, drift = unrelated
    if look == "grey_object":
        cx = dx0 + drift * (time_s - t)
        return np.where(_shape_mask(shape, xx - cx, yy - dy0, rr)[..., None], np.float32(level), scene)
    return scene


def finish_frame(img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """img + noise, clipped to [0, 255], written into `noise` (float32 [H, W, 3]); returned."""
    np.clip(img + noise, 0, 255, out=noise)
    return noise


def render_frames(cfg: SynthConfig, plan: VideoPlan, rng: np.random.Generator) -> np.ndarray:
    """[duration_s * fps, H, W, 3] uint8."""
    H, W, fps = cfg.height, cfg.width, cfg.fps
    spec = class_specs(cfg.classes)[plan.class_index]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    scene = draw_scene(rng, H, W, yy)
    motion = draw_motion(rng, H, W)
    colour = np.asarray(plan.rgb, dtype=np.float32)
    # unrelated looks, one per background second that needs one
    distractors = {}
    for t, kind in enumerate(plan.seconds):
        if kind in ("audio_only", "distractor"):
            distractors[t] = draw_unrelated_look(rng, H, W)
    n_frames = cfg.duration_s * fps
    noise = rng.standard_normal((n_frames, H, W, 3), dtype=np.float32)
    noise *= 5.0
    frames = np.empty((n_frames, H, W, 3), dtype=np.uint8)
    for i in range(n_frames):
        t = i // fps  # frame i is at i/fps s: inside second t
        time_s = i / fps
        kind = plan.seconds[t]
        if kind in ("event", "visual_only"):
            img = class_image(spec.shape, colour, motion, time_s, xx, yy, scene)
        else:
            img = unrelated_image(distractors[t], t, time_s, xx, yy, scene)
        frames[i] = finish_frame(img, noise[i])
    return frames


# --- sounds --------------------------------------------------------------------------
def _gate(on: np.ndarray, sr: int) -> np.ndarray:
    """Per-sample 0..1 envelope for per-second on/off flags, faded only where it switches."""
    n_ramp = int(RAMP_S * sr)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_ramp) / n_ramp)
    g = np.repeat(on.astype(np.float64), sr)
    for t in np.flatnonzero(on):
        if t == 0 or not on[t - 1]:
            g[t * sr : t * sr + n_ramp] = rise
        if t == len(on) - 1 or not on[t + 1]:
            g[(t + 1) * sr - n_ramp : (t + 1) * sr] = rise[::-1]
    return g


def _distractor_sound(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One second of an unrelated sound (faded in and out)."""
    n = sr
    t = np.arange(n) / sr
    if kind == "sweep":
        f0, f1 = np.exp(rng.uniform(np.log(150), np.log(6000), size=2))
        k = np.log(f1 / f0)
        phase = 2 * np.pi * f0 * (np.expm1(k * t) / k if abs(k) > 1e-6 else t)
        x = rng.uniform(0.15, 0.3) * np.sin(phase)
    elif kind == "band_noise":
        lo = np.exp(rng.uniform(np.log(150), np.log(3500)))
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sr)
        spectrum[(f < lo) | (f > 2 * lo)] = 0
        x = np.fft.irfft(spectrum, n)
        x *= rng.uniform(0.05, 0.12) / (np.sqrt(np.mean(x * x)) + 1e-12)
    elif kind == "clicks":
        x = np.zeros(n)
        burst = rng.standard_normal(int(0.005 * sr)) * np.exp(-np.arange(int(0.005 * sr)) / (0.001 * sr))
        for s in np.arange(rng.uniform(0, 0.1), 1.0, 1 / rng.uniform(3, 12)):
            i = int(s * sr)
            m = min(len(burst), n - i)
            x[i : i + m] += 0.4 * burst[:m]
    elif kind == "quiet":
        return np.zeros(n)
    else:
        raise ValueError(f"unknown distractor sound {kind!r}")
    return x * _gate(np.array([True]), sr)


def class_tone(spec: ClassSpec, frequency_hz: float, t: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The class's sound at times t (s), not yet scaled: partials 1..harmonics (those below
    0.45 * sr) at amplitude 1/k with phases drawn from rng, amplitude-modulated at am_hz
    (0.6 + 0.4 sin) when am_hz > 0; its peak is at most sum(1/k)."""
    tone = np.zeros_like(t)
    for k in range(1, spec.harmonics + 1):
        if k * frequency_hz < 0.45 * sr:
            tone += np.sin(2 * np.pi * k * frequency_hz * t + rng.uniform(0, 2 * np.pi)) / k
    if spec.am_hz > 0:
        tone *= 0.6 + 0.4 * np.sin(2 * np.pi * spec.am_hz * t + rng.uniform(0, 2 * np.pi))
    return tone


def render_audio(cfg: SynthConfig, plan: VideoPlan, rng: np.random.Generator) -> np.ndarray:
    """[duration_s * sample_rate_hz] float32 mono in [-1, 1]."""
    sr, D = cfg.sample_rate_hz, cfg.duration_s
    spec = class_specs(cfg.classes)[plan.class_index]
    t = np.arange(D * sr) / sr
    tone = class_tone(spec, plan.frequency_hz, t, sr, rng)
    tone *= rng.uniform(0.25, 0.4) / np.max(np.abs(tone))
    audible = np.array([kind in ("event", "audio_only") for kind in plan.seconds])
    x = tone * _gate(audible, sr)
    x += rng.standard_normal(len(t)) * rng.uniform(0.004, 0.015)  # noise floor
    for s, kind in enumerate(plan.seconds):
        if kind in ("visual_only", "distractor"):
            sound = DISTRACTOR_SOUNDS[int(rng.integers(len(DISTRACTOR_SOUNDS)))]
            x[s * sr : (s + 1) * sr] += _distractor_sound(sound, sr, rng)
    return np.clip(x, -1, 1).astype(np.float32)


# --- one video -----------------------------------------------------------------------
def write_mp4(
    path: Path,
    frames: np.ndarray,
    audio: np.ndarray,
    *,
    fps: int,
    sample_rate_hz: int,
    crf: int = 23,
    audio_bit_rate: int = 64000,
) -> None:
    """Encode frames [N, H, W, 3] uint8 (frame i at i/fps s) and mono float audio to an
    h264 + AAC mp4, atomically (core/atomic.py)."""
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            vs.codec_context.time_base = Fraction(1, fps)
            vs.options = {"preset": "veryfast", "crf": str(crf), "threads": "1"}
            aus = container.add_stream("aac", rate=sample_rate_hz, layout="mono")
            aus.bit_rate = audio_bit_rate
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                container.mux(vs.encode(frame))
            container.mux(vs.encode(None))
            step = aus.codec_context.frame_size or 1024
            for s in range(0, len(audio), step):
                frame = av.AudioFrame.from_ndarray(audio[None, s : s + step].copy(), format="fltp", layout="mono")
                frame.sample_rate = sample_rate_hz
                frame.pts = s
                container.mux(aus.encode(frame))
            container.mux(aus.encode(None))


def render_video(cfg: SynthConfig, plan: VideoPlan, path: Path) -> Path:
    rng = np.random.default_rng(list(plan.render_seed))
    frames = render_frames(cfg, plan, rng)
    audio = render_audio(cfg, plan, rng)
    write_mp4(
        path,
        frames,
        audio,
        fps=cfg.fps,
        sample_rate_hz=cfg.sample_rate_hz,
        crf=cfg.crf,
        audio_bit_rate=cfg.audio_bit_rate,
    )
    return path


def _render_job(args: tuple[SynthConfig, VideoPlan, str]) -> str:
    cfg, plan, path = args
    return str(render_video(cfg, plan, Path(path)))


# --- the dataset ---------------------------------------------------------------------
def synthesize(
    out_dir: str | os.PathLike,
    *,
    videos: int,
    classes: int,
    seed: int,
    duration_s: int = 10,
    workers: int = 1,
    progress: bool = True,
    **options,
) -> list[AnnotationRow]:
    """Generate the dataset in `out_dir` (see the module doc); returns the annotation rows.
    `options`: any other SynthConfig field (fps, width, height, full_event_fraction, ...).
    The output depends only on the config, not on `workers`."""
    cfg = SynthConfig(videos=videos, classes=classes, seed=seed, duration_s=duration_s, **options)
    return synthesize_config(out_dir, cfg, workers=workers, progress=progress)


def synthesize_config(
    out_dir: str | os.PathLike, cfg: SynthConfig, *, workers: int = 1, progress: bool = True
) -> list[AnnotationRow]:
    out = Path(out_dir)
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    specs = class_specs(cfg.classes)
    plans = plan_dataset(cfg)
    rows = [AnnotationRow(specs[p.class_index].name, p.video_id, QUALITY, p.start_s, p.end_s) for p in plans]
    jobs = [(cfg, p, str(out / VIDEO_DIR / f"{p.video_id}.mp4")) for p in plans]
    bar = tqdm(total=len(jobs), desc="synth", unit="video", disable=not progress)
    try:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_render_job, jobs, chunksize=4):
                    bar.update(1)
        else:
            for job in jobs:
                _render_job(job)
                bar.update(1)
    finally:
        bar.close()
    write_annotations(out / ANNOTATIONS, rows, header=True)
    for name, indices in split_plan(cfg).items():
        write_annotations(out / SPLIT_FILES[name], [rows[i] for i in indices], header=True)
    manifest = {
        "config": dataclasses.asdict(cfg),
        "video_dir": VIDEO_DIR,
        "classes": [dataclasses.asdict(s) for s in specs],
        "videos": [dataclasses.asdict(p) for p in plans],
    }
    write_text_atomic(out / MANIFEST, jsonio.dumps(manifest, nonfinite="refuse", indent=1) + "\n")
    return rows
