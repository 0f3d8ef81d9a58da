"""`avel synth --features-only`: a generated feature set in the AVE release layout, with the
structure of `avel synth`'s videos but written directly as features (no decoding, no
networks), hard enough to tell models apart, deterministic for a seed.

    data = synth_features(FeatureSynthConfig(videos=800, classes=28, noise=2.0, seed=0))
    write_features(out_dir, cfg)            # the AVE layout + features.json (the config)

Content (the plan of `pipeline.synth.plan_dataset`: balanced categories, one contiguous event
of at least `min_event_s` seconds, `full_event` of the videos event from 0 to T):
  * every class has an audio prototype (`audio_active` of the 128 dims at 1.0) and a visual
    prototype (`visual_active` of the 512 dims at 1.0), drawn once for the seed;
  * the object covers `object_cells` neighbouring cells of the 7x7 grid at a place drawn per
    video (fixed within the video); where it is on screen, its cells carry the visual
    prototype; where the class sounds, the audio carries the audio prototype;
  * a background second keeps exactly one modality of the class (the object on screen,
    silent; or its sound, off screen), half each, except a `distractor` fraction that has
    neither: neither modality alone tells event from background;
  * `late_visual` of the videos have their visual track one second late: the object appears
    one second after the event starts and stays one second after it ends;
  * every value: ReLU(0.5 + scene + noise * N(0, 1) + prototype), with a per-video scene
    (N(0, 0.5^2) per dimension, per cell for the visual maps, constant over time) and
    independent noise per second, per cell and per dimension. `noise` is the knob of
    difficulty: the prototypes are 1.0, the noise standard deviation is `noise`;
    `audio_noise` / `visual_noise` set one modality's apart (None: `noise`), with the same
    random draws (only their scale differs), so a set with both None is the `noise` set.
Shapes are AVE's ([V, T, 7, 7, 512] pool5-like maps, [V, T, 128] audio) unless a test asks
for tiny ones; only AVE's shapes can be written in the AVE layout.

Determinism: the output depends on the config alone (the prototypes on the seed, video v's
content on (seed, v) and its plan); the splits are a seeded permutation
(`pipeline.synth.split_plan`). Learning curves take nested subsets of one set's train split.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from ...core import jsonio
from ...core.annotations import AnnotationRow
from ...core.atomic import write_text_atomic
from ...core.config import MAX_SEED, check_range, check_types, option
from ...core.errors import ConfigError
from ..media.synth import MAX_CLASSES, MAX_VIDEOS, SynthConfig, VideoPlan, plan_dataset, split_plan
from .ave import write_ave_layout
from .dataset import AVData

MANIFEST = "features.json"
BASELINE = 0.5  # the mean activation before the ReLU
SCENE_STD = 0.5  # per-video nuisance
MAX_NOISE = 1e6  # a million times the prototypes: pure noise already; float32 features stay finite


@dataclass(frozen=True)
class FeatureSynthConfig:
    """Everything that decides a generated feature set (the CLI's `avel synth --features-only`
    options are its fields; `videos`, `classes` and `seed` are `avel synth`'s own)."""

    cli_label: ClassVar[str] = "--features-only"  # the CLI flag these options apply with

    videos: int = option("videos (all splits)", cli=False, default=800)
    classes: int = option("event categories", cli=False, default=28)
    seed: int = option("seed", cli=False, default=0)
    noise: float = option("--features-only: noise standard deviation (the class prototypes are 1.0)", default=1.0)
    audio_noise: float | None = option(
        "--features-only: noise standard deviation of the audio features (default: --noise)", default=None
    )
    visual_noise: float | None = option(
        "--features-only: noise standard deviation of the visual features (default: --noise)", default=None
    )
    object_cells: int = option("--features-only: cells of the 7x7 grid the object covers", default=3)
    late_visual: float = option(
        "--features-only: fraction of videos whose visual track is one second late", default=0.25
    )
    distractor: float = option(
        "--features-only: fraction of background seconds where neither modality carries "
        "the class (the others carry exactly one)",
        default=0.0,
    )
    full_event: float = option("--features-only: fraction of videos whose event lasts all T seconds", default=0.5)
    min_event_s: int = option("--features-only: shortest event (seconds)", default=2)
    segments: int = option("segments per video (AVE: 10)", cli=False, default=10)
    split_fractions: tuple = option("train, val, test shares", cli=False, default=(0.8, 0.1, 0.1))
    audio_dim: int = option("audio width (AVE: 128)", cli=False, default=128)
    visual_dim: int = option("visual width (AVE: 512)", cli=False, default=512)
    grid: int = option("visual grid side (AVE: 7)", cli=False, default=7)
    audio_active: int = option("dims of the audio prototype", cli=False, default=16)
    visual_active: int = option("dims of the visual prototype", cli=False, default=32)

    def __post_init__(self) -> None:
        check_types(self)
        check_range("videos", self.videos, 1, MAX_VIDEOS)
        check_range("classes", self.classes, 1, MAX_CLASSES)
        check_range("seed", self.seed, 0, MAX_SEED)
        for name in ("noise", "audio_noise", "visual_noise"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 0.0, MAX_NOISE)
        check_range("object_cells", self.object_cells, 1, self.grid * self.grid)
        for name in ("late_visual", "distractor", "full_event"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("segments", self.segments, 2)
        check_range("min_event_s", self.min_event_s, 1, self.segments)
        for name in ("audio_dim", "visual_dim", "grid"):
            check_range(name, getattr(self, name), 1)
        check_range("audio_active", self.audio_active, 1, self.audio_dim)
        check_range("visual_active", self.visual_active, 1, self.visual_dim)
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ConfigError("split_fractions", self.split_fractions, "three non-negative shares (train, val, test)")

    @property
    def noise_of_audio(self) -> float:
        """The audio features' noise standard deviation (`audio_noise`, else `noise`)."""
        return self.noise if self.audio_noise is None else self.audio_noise

    @property
    def noise_of_visual(self) -> float:
        """The visual features' noise standard deviation (`visual_noise`, else `noise`)."""
        return self.noise if self.visual_noise is None else self.visual_noise

    def plan_config(self) -> SynthConfig:
        """The event plan in `avel synth`'s terms: background kinds visual_only, audio_only,
        distractor."""
        one = (1.0 - self.distractor) / 2
        return SynthConfig(
            videos=self.videos,
            classes=self.classes,
            seed=self.seed,
            duration_s=self.segments,
            min_event_s=self.min_event_s,
            full_event_fraction=self.full_event,
            background_mix=(one, one, self.distractor),
            split_fractions=tuple(self.split_fractions),
        )


def prototypes(cfg: FeatureSynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """The class prototypes: audio [C, Da], visual [C, Dv], `*_active` dims at 1.0 each."""
    rng = np.random.default_rng([cfg.seed, 10])
    audio = np.zeros((cfg.classes, cfg.audio_dim), dtype=np.float32)
    visual = np.zeros((cfg.classes, cfg.visual_dim), dtype=np.float32)
    for c in range(cfg.classes):
        audio[c, rng.choice(cfg.audio_dim, cfg.audio_active, replace=False)] = 1.0
        visual[c, rng.choice(cfg.visual_dim, cfg.visual_active, replace=False)] = 1.0
    return audio, visual


def object_place(grid: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """`cells` neighbouring cells of a grid x grid map: the first `cells` of a random square
    block of side ceil(sqrt(cells)), in a random order -> flat cell indices [cells]."""
    side = min(grid, int(np.ceil(np.sqrt(cells))))
    r, c = (int(x) for x in rng.integers(0, grid - side + 1, size=2))
    block = np.array([(r + i) * grid + (c + j) for i in range(side) for j in range(side)])
    if len(block) < cells:  # more cells than a square block (grid too small): anywhere
        block = np.arange(grid * grid)
    return np.sort(rng.permutation(block)[:cells])


def presence(
    cfg: FeatureSynthConfig, seconds: tuple[str, ...], start: int, end: int, late: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per second: is the class audible, is the object on screen -> two bool [T]."""
    T = cfg.segments
    t = np.arange(T)
    event = (t >= start) & (t < end)
    kinds = np.array(seconds)
    sound = event | (kinds == "audio_only")
    shift = 1 if late else 0
    seen = ((t >= start + shift) & (t < end + shift)) | ((kinds == "visual_only") & ~event)
    return sound, seen


@dataclass(frozen=True)
class VideoContent:
    """What one generated video holds, second by second (no noise)."""

    plan: VideoPlan  # class, event span, background kind of every second
    late: bool  # the visual track is one second late
    cells: np.ndarray  # [object_cells] flat indices of the object's cells
    sound: np.ndarray  # [T] bool: the class is audible
    seen: np.ndarray  # [T] bool: the object is on screen


def video_contents(cfg: FeatureSynthConfig) -> list[VideoContent]:
    """The content of every video of `cfg` (cheap: no features)."""
    out = []
    for p in plan_dataset(cfg.plan_config()):
        rng = np.random.default_rng([cfg.seed, 11, p.index])
        late = bool(rng.random() < cfg.late_visual)
        cells = object_place(cfg.grid, cfg.object_cells, rng)
        out.append(VideoContent(p, late, cells, *presence(cfg, p.seconds, p.start_s, p.end_s, late)))
    return out


def synth_features(cfg: FeatureSynthConfig, *, dtype: torch.dtype = torch.float32, progress: bool = False) -> AVData:
    """The feature set of `cfg` in RAM (see the module doc)."""
    a_proto, v_proto = prototypes(cfg)
    V, T, G, N = cfg.videos, cfg.segments, cfg.grid, cfg.grid * cfg.grid
    audio = torch.empty(V, T, cfg.audio_dim, dtype=dtype)
    visual = torch.empty(V, T, G, G, cfg.visual_dim, dtype=dtype)
    labels = torch.full((V, T), cfg.classes, dtype=torch.int64)
    contents = video_contents(cfg)
    for v in tqdm(contents, desc="synth features", unit="video", disable=not progress):
        p = v.plan
        rng = np.random.default_rng([cfg.seed, 12, p.index])
        a = BASELINE + SCENE_STD * rng.standard_normal((1, cfg.audio_dim), dtype=np.float32)
        a = a + cfg.noise_of_audio * rng.standard_normal((T, cfg.audio_dim), dtype=np.float32)
        a += v.sound[:, None] * a_proto[p.class_index]  # (T, Da)
        x = BASELINE + SCENE_STD * rng.standard_normal((1, N, cfg.visual_dim), dtype=np.float32)
        x = x + cfg.noise_of_visual * rng.standard_normal((T, N, cfg.visual_dim), dtype=np.float32)
        x[np.ix_(v.seen, v.cells)] += v_proto[p.class_index]  # (T, N, Dv)
        audio[p.index] = torch.from_numpy(np.maximum(a, 0))
        visual[p.index] = torch.from_numpy(np.maximum(x, 0).reshape(T, G, G, cfg.visual_dim))
        labels[p.index, p.start_s : p.end_s] = p.class_index
    splits = {k: torch.tensor(v, dtype=torch.int64) for k, v in split_plan(cfg.plan_config()).items()}
    return AVData(visual, audio, labels, class_names(cfg), [c.plan.video_id for c in contents], splits)


def class_names(cfg: FeatureSynthConfig) -> list[str]:
    return [f"synthetic class {k:02d}" for k in range(cfg.classes)]


def annotation_rows(data: AVData) -> list[AnnotationRow]:
    """One AVE annotation row per video (its class and event span)."""
    rows = []
    for vid, lab in zip(data.video_ids, data.labels.tolist()):
        event = [t for t, x in enumerate(lab) if x != data.background]
        rows.append(AnnotationRow(data.class_names[lab[event[0]]], vid, "good", event[0], event[-1] + 1))
    return rows


def write_features(
    out_dir: str | os.PathLike, cfg: FeatureSynthConfig, *, dtype: str = "float32", progress: bool = True
) -> list[Path]:
    """Generate `cfg` and write it in the AVE release layout (pipeline/data/ave.py: features,
    labels, labels_closs, mil_labels, visual_feature_vec, {train,val,test}_order,
    Annotations.txt) plus features.json (the config); returns the files written."""
    if (cfg.audio_dim, cfg.visual_dim, cfg.grid) != (128, 512, 7):
        raise ConfigError(
            "visual_dim",
            (cfg.audio_dim, cfg.visual_dim, cfg.grid),
            "the AVE layout holds 128-d audio and 7x7x512 visual features only",
        )
    if cfg.videos < cfg.classes:
        raise ConfigError(
            "videos",
            cfg.videos,
            f"needs at least one video per class ({cfg.classes}): the AVE "
            "category index is the order of first appearance",
        )
    data = synth_features(cfg, progress=progress)
    files = write_ave_layout(out_dir, data, dtype=dtype, annotations=annotation_rows(data))
    manifest = Path(out_dir) / MANIFEST
    write_text_atomic(manifest, jsonio.dumps({"config": dataclasses.asdict(cfg)}, nonfinite="refuse", indent=1) + "\n")
    return files + [manifest]
