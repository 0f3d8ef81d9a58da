"""Long generated feature sets with known events (features only): videos of 1-60 minutes
holding many events of several classes, with their ground truth in ActivityNet JSON.

    cfg = LongSynthConfig(videos=6, classes=5, seed=0)
    plans = long_plans(cfg)                              # cheap: events, distractors, subsets
    for start_s, audio, visual in feature_blocks(cfg, plans[0]):   # [B, 128], [B, 7, 7, visual_dim]
        ...                                              # one block of BLOCK_S seconds at a time
    doc = ground_truth(cfg, plans)                       # the ActivityNet ground-truth document

A video's plan (rng (seed, 20, v)): a length in [min_duration_s, max_duration_s]; then events
one after another: a gap of min_gap_s..max_gap_s seconds (none with chance `back_to_back`:
the next event starts where the last ended, with another class), a class, and a length drawn
log-uniformly in [min_event_s, max_event_s] (1 s and 2 minutes equally likely in log scale),
cut at the video's end. In a gap of at least 2 s, with chance `distractor`, a run of 1-10
seconds carries ONE modality of a class (its sound off screen, or its object silent): not an
event, as in AVE, where an event is audible and visible. Features follow pipeline/data/synth.py
(the same class prototypes for the seed, or for `prototype_seed` where it is set: sets of
other seeds then hold the same classes, ReLU(0.5 + scene + noise x N(0, 1) + prototype)); the
object of each event or distractor sits at cells drawn for it. Memory: features are made in
blocks of BLOCK_S seconds, each from its own generator (seed, 22, v, block), so a 60-minute
video never needs more than one block in RAM and any block can be made alone.
Subsets: a seeded share `test_fraction` of the videos is "testing", the rest "validation"."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np

from ...core import jsonio
from ...core.atomic import atomic_path, write_text_atomic
from ...core.config import MAX_SEED, MAX_SEGMENTS, check_range, check_types, option
from ...core.errors import DataError, shown
from ..media.synth import MAX_CLASSES
from .activitynet import taxonomy
from .synth import BASELINE, MAX_NOISE, SCENE_STD, FeatureSynthConfig, object_place, prototypes

BLOCK_S = 60
MODALITIES = ("audio", "visual")
MAX_LONG_VIDEOS = 100_000  # a generated long set: beyond it the plans alone fill the memory
FEATURE_DIR = "features"  # `avel synth --long --features-only`: features/<video_id>.h5
GROUND_TRUTH = "ground_truth.json"
MANIFEST = "synth_long.json"


@dataclass(frozen=True)
class LongSynthConfig:
    """Everything that decides a long generated set (the CLI's `avel synth --long` options are
    its fields; `videos`, `classes` and `seed` are `avel synth`'s own)."""

    cli_label: ClassVar[str] = "--long"  # the CLI flag these options apply with

    videos: int = option("videos", cli=False, default=6)
    classes: int = option("event categories", cli=False, default=10)
    seed: int = option("seed", cli=False, default=0)
    min_duration_s: int = option("--long: shortest video (seconds)", default=60)
    max_duration_s: int = option("--long: longest video (seconds)", default=3600)
    min_event_s: int = option("--long: shortest event (seconds)", default=1)
    max_event_s: int = option("--long: longest event (seconds)", default=120)
    min_gap_s: int = option("--long: shortest gap between events (seconds)", default=1)
    max_gap_s: int = option("--long: longest gap between events (seconds)", default=60)
    back_to_back: float = option(
        "--long: chance that an event starts where the last ended (another class)", default=0.25
    )
    distractor: float = option(
        "--long: chance that a gap holds a run (1-10 s) where one modality carries a class", default=0.5
    )
    noise: float = option("--long --features-only: noise standard deviation (the prototypes are 1.0)", default=1.0)
    object_cells: int = option(
        "--long: cells of the 7x7 grid the object covers (in videos: where it is drawn)", default=3
    )
    test_fraction: float = option(
        "--long: share of videos in the 'testing' subset (the rest: 'validation')", default=0.5
    )
    visual_dim: int = option(
        "visual feature width (VGG-19 pool5: 512; narrower ones train faster)", cli=False, default=512
    )
    prototype_seed: int | None = option(
        "seed of the class prototypes (None: `seed`); sets of different seeds that share it share their classes "
        "(train on one, localize in another)",
        cli=False,
        default=None,
    )

    def __post_init__(self) -> None:
        check_types(self)
        check_range("videos", self.videos, 1, MAX_LONG_VIDEOS)
        check_range("classes", self.classes, 2, MAX_CLASSES)
        check_range("seed", self.seed, 0, MAX_SEED)
        # times: at most a day (core/config.py MAX_SEGMENTS), as everywhere a video's seconds are counted
        check_range("min_duration_s", self.min_duration_s, 1, MAX_SEGMENTS)
        check_range("max_duration_s", self.max_duration_s, self.min_duration_s, MAX_SEGMENTS)
        check_range("min_event_s", self.min_event_s, 1, MAX_SEGMENTS)
        check_range("max_event_s", self.max_event_s, self.min_event_s, MAX_SEGMENTS)
        check_range("min_gap_s", self.min_gap_s, 1, MAX_SEGMENTS)
        check_range("max_gap_s", self.max_gap_s, self.min_gap_s, MAX_SEGMENTS)
        for name in ("back_to_back", "distractor", "test_fraction"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("noise", self.noise, 0.0, MAX_NOISE)
        check_range("object_cells", self.object_cells, 1, 49)
        check_range("visual_dim", self.visual_dim, 1, 512)
        if self.prototype_seed is not None:
            check_range("prototype_seed", self.prototype_seed, 0, MAX_SEED)

    def feature_config(self) -> FeatureSynthConfig:
        """The short-clip config whose prototypes (and shapes) these videos share."""
        return FeatureSynthConfig(
            videos=max(self.videos, self.classes),
            classes=self.classes,
            seed=self.seed if self.prototype_seed is None else self.prototype_seed,
            noise=self.noise,
            object_cells=self.object_cells,
            visual_dim=self.visual_dim,
            visual_active=min(32, self.visual_dim),
        )


@dataclass(frozen=True)
class LongVideoPlan:
    index: int
    video_id: str
    subset: str  # "validation" | "testing"
    duration_s: int
    events: tuple  # ((start_s, end_s, class_index, cells), ...) in time order, end exclusive
    distractors: tuple  # ((start_s, end_s, class_index, modality, cells), ...)


def class_names(cfg: LongSynthConfig) -> list[str]:
    return [f"synthetic class {k:02d}" for k in range(cfg.classes)]


def _plan(cfg: LongSynthConfig, v: int, subset: str) -> LongVideoPlan:
    rng = np.random.default_rng([cfg.seed, 20, v])
    T = int(rng.integers(cfg.min_duration_s, cfg.max_duration_s + 1))
    events, distractors = [], []
    t, last = 0, -1
    while True:
        glued = last >= 0 and rng.random() < cfg.back_to_back
        gap = 0 if glued else int(rng.integers(cfg.min_gap_s, cfg.max_gap_s + 1))
        if gap >= 2 and rng.random() < cfg.distractor:
            run = int(rng.integers(1, min(10, gap - 1) + 1))
            s = t + int(rng.integers(0, gap - run + 1))
            if s + run <= T:
                distractors.append(
                    (
                        s,
                        s + run,
                        int(rng.integers(cfg.classes)),
                        MODALITIES[int(rng.integers(2))],
                        tuple(object_place(7, cfg.object_cells, rng).tolist()),
                    )
                )
        start = t + gap
        length = int(round(math.exp(rng.uniform(math.log(cfg.min_event_s), math.log(cfg.max_event_s + 0.5)))))
        length = min(max(length, cfg.min_event_s), cfg.max_event_s)
        c = int(rng.integers(cfg.classes - 1)) if last >= 0 else int(rng.integers(cfg.classes))
        if last >= 0 and c >= last:  # any class but the last one: a run of one class is one event
            c += 1
        if start >= T:
            break
        end = min(start + length, T)
        events.append((start, end, c, tuple(object_place(7, cfg.object_cells, rng).tolist())))
        t, last = end, c
    return LongVideoPlan(v, f"synth-long-{cfg.seed}-{v:04d}", subset, T, tuple(events), tuple(distractors))


def long_plans(cfg: LongSynthConfig) -> list[LongVideoPlan]:
    """Every video's plan (no features)."""
    order = np.random.default_rng([cfg.seed, 23]).permutation(cfg.videos)
    testing = set(order[: int(round(cfg.test_fraction * cfg.videos))].tolist())
    return [_plan(cfg, v, "testing" if v in testing else "validation") for v in range(cfg.videos)]


def feature_blocks(cfg: LongSynthConfig, plan: LongVideoPlan):
    """Yield (start_s, audio [B, 128], visual [B, 7, 7, visual_dim]) float32 blocks of BLOCK_S
    seconds (the last one shorter) covering the video."""
    a_proto, v_proto = prototypes(cfg.feature_config())
    scene_rng = np.random.default_rng([cfg.seed, 21, plan.index])
    a_scene = BASELINE + SCENE_STD * scene_rng.standard_normal((1, 128), dtype=np.float32)
    D = cfg.visual_dim
    v_scene = BASELINE + SCENE_STD * scene_rng.standard_normal((1, 49, D), dtype=np.float32)
    spans = [(s, e, c, "both", cells) for s, e, c, cells in plan.events] + list(plan.distractors)
    for b, start in enumerate(range(0, plan.duration_s, BLOCK_S)):
        B = min(BLOCK_S, plan.duration_s - start)
        rng = np.random.default_rng([cfg.seed, 22, plan.index, b])
        a = a_scene + cfg.noise * rng.standard_normal((B, 128), dtype=np.float32)
        x = v_scene + cfg.noise * rng.standard_normal((B, 49, D), dtype=np.float32)
        for s, e, c, modality, cells in spans:
            lo, hi = max(s, start) - start, min(e, start + B) - start
            if lo >= hi:
                continue
            if modality in ("both", "audio"):
                a[lo:hi] += a_proto[c]
            if modality in ("both", "visual"):
                x[lo:hi, list(cells)] += v_proto[c]
        yield start, np.maximum(a, 0), np.maximum(x, 0).reshape(B, 7, 7, D)


def video_features(cfg: LongSynthConfig, plan: LongVideoPlan) -> tuple[np.ndarray, np.ndarray]:
    """The whole video's features (for short videos; long ones: `feature_blocks`)."""
    blocks = list(feature_blocks(cfg, plan))
    return np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])


def ground_truth(cfg: LongSynthConfig, plans: list[LongVideoPlan]) -> dict:
    """The ActivityNet ground-truth document of the videos (events only: distractors are
    background)."""
    names = class_names(cfg)
    database = {
        p.video_id: {
            "subset": p.subset,
            "duration": float(p.duration_s),
            "annotations": [{"segment": [float(s), float(e)], "label": names[c]} for s, e, c, _ in p.events],
        }
        for p in plans
    }
    return {"version": f"avel synth-long seed {cfg.seed}", "taxonomy": taxonomy(names), "database": database}


def write_ground_truth(path, cfg: LongSynthConfig, plans: list[LongVideoPlan] | None = None) -> None:
    """The ActivityNet ground truth of `cfg`, written atomically."""
    write_text_atomic(
        path, jsonio.dumps(ground_truth(cfg, plans or long_plans(cfg)), nonfinite="refuse", indent=1) + "\n"
    )


def write_long_features(out_dir: str | os.PathLike, cfg: LongSynthConfig, *, progress: bool = True) -> list[Path]:
    """`avel synth --long --features-only`: every video's features as OUT/features/<video_id>.h5
    (datasets `audio` [T, 128] and `visual` [T, 7, 7, 512], float32, chunked by BLOCK_S seconds
    and written block by block, so a 60-minute video never needs more than a block in RAM), the
    ActivityNet ground truth OUT/ground_truth.json and OUT/synth_long.json (the config and the
    plans); returns the files written. `read_feature_blocks` reads a video back block by block
    (what pipeline/apps/localize.py's `localize_features` takes)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / FEATURE_DIR).mkdir(parents=True, exist_ok=True)
    plans = long_plans(cfg)
    files = []
    for plan in tqdm(plans, desc="synth --long --features-only", unit="video", disable=not progress):
        path = out / FEATURE_DIR / f"{plan.video_id}.h5"
        T, B = plan.duration_s, min(BLOCK_S, plan.duration_s)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                a = f.create_dataset("audio", (T, 128), dtype="float32", chunks=(B, 128))
                v = f.create_dataset("visual", (T, 7, 7, 512), dtype="float32", chunks=(B, 7, 7, 512))
                for start, audio, visual in feature_blocks(cfg, plan):
                    a[start : start + len(audio)] = audio
                    v[start : start + len(visual)] = visual
                f.attrs["video_id"] = plan.video_id
                f.attrs["duration_s"] = T
        files.append(path)
    write_ground_truth(out / GROUND_TRUTH, cfg, plans)
    doc = {"config": dataclasses.asdict(cfg), "videos": [dataclasses.asdict(p) for p in plans]}
    write_text_atomic(out / MANIFEST, jsonio.dumps(doc, nonfinite="refuse", indent=1) + "\n")
    return files + [out / GROUND_TRUTH, out / MANIFEST]


def read_feature_blocks(path: str | os.PathLike, block_s: int = BLOCK_S):
    """Yield (audio [B, 128], visual [B, 7, 7, 512]) float32 blocks of `block_s` seconds of a
    video written by `write_long_features` (the last block shorter). DataError naming the file
    when it is not such a file."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise DataError(f"{shown(path)}: not a long feature file ({e})") from None
    with f:
        if "audio" not in f or "visual" not in f or len(f["audio"]) != len(f["visual"]):
            raise DataError(f"{shown(path)}: not a long feature file (needs datasets audio and visual of one length)")
        a, v = f["audio"], f["visual"]
        for start in range(0, len(a), block_s):
            yield a[start : start + block_s], v[start : start + block_s]
