"""`avel demo`: the whole pipeline on a small generated dataset, offline, in a few minutes
on 2 CPU cores: synth -> preprocess (random-weight extractors) -> train SEL and CML ->
evaluate -> localize a held-out video -> one folder with everything."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core import jsonio
from ...core.atomic import write_text_atomic
from ...core.config import (
    DEVICE_HELP,
    DEVICE_PATTERN,
    MAX_FRAMES_PER_SEGMENT,
    MAX_SEED,
    MAX_WORKERS,
    FeatureSettings,
    check_range,
    check_types,
)
from ...core.errors import ConfigError
from ...models.registry import model_config
from ..data.load import load_data
from ..extract.features import FeatureExtractor
from ..extract.local import annotated_jobs, run_extraction
from ..extract.options import ExtractOptions
from ..media.synth import MAX_CLASSES, MAX_VIDEOS, synthesize
from ..train.checkpoint import save_checkpoint
from ..train.loop import MAX_EPOCHS, TrainConfig, train
from .localize import localize
from .outputs import format_table, write_json
from .report import write_localization_report
from .timeline import plot_timeline


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str = "avel-demo"
    videos: int = 48
    classes: int = 4
    seed: int = 0
    # random-weight VGG-19 at 224x224 costs ~0.15 s a frame on 2 CPU cores: one frame a
    # second keeps the demo within minutes (the AVE recipe is 16)
    frames_per_segment: int = 1
    # more test videos with partial events than AVE's 80/10/10 and half full-length events,
    # so the CML figure is measured on more than a handful of videos
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    full_event_fraction: float = 0.25
    sel_epochs: int = 40
    cml_epochs: int = 40
    device: str = "auto"
    workers: int = 1

    def __post_init__(self) -> None:
        """Every value in range before anything is generated (ConfigError naming the field)."""
        check_types(self)
        check_range("videos", self.videos, 12, MAX_VIDEOS)  # 12: every split gets videos of each class
        check_range("classes", self.classes, 2, MAX_CLASSES)
        check_range("seed", self.seed, 0, MAX_SEED)
        check_range("frames_per_segment", self.frames_per_segment, 1, MAX_FRAMES_PER_SEGMENT)
        check_range("sel_epochs", self.sel_epochs, 1, MAX_EPOCHS)
        check_range("cml_epochs", self.cml_epochs, 1, MAX_EPOCHS)
        check_range("workers", self.workers, 1, MAX_WORKERS)
        check_range("full_event_fraction", self.full_event_fraction, 0.0, 1.0)
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ConfigError("device", self.device, f"choose {DEVICE_HELP}")


def majority_accuracy(data, split: str) -> float:
    """SEL accuracy of always predicting the most frequent training label."""
    train_labels = data.labels[data.split("train")].flatten().tolist()
    majority = Counter(train_labels).most_common(1)[0][0]
    test_labels = data.labels[data.split(split)]
    return float((test_labels == majority).float().mean())


def run_demo(cfg: DemoConfig = DemoConfig(), log=print) -> dict[str, Path]:
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        log(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    step(f"generating {cfg.videos} videos of {cfg.classes} classes")
    dataset = out / "dataset"
    synthesize(
        dataset,
        videos=cfg.videos,
        classes=cfg.classes,
        seed=cfg.seed,
        progress=False,
        split_fractions=cfg.split_fractions,
        full_event_fraction=cfg.full_event_fraction,
    )

    step("extracting features (random-weight VGG-19 and VGGish)")
    settings = FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=cfg.frames_per_segment,
        segments=10,
        seed=cfg.seed,
    )
    extractor = FeatureExtractor(settings, device=cfg.device)
    jobs, text, splits = annotated_jobs(dataset / "videos", dataset / "Annotations.txt")
    summary = run_extraction(
        jobs,
        out / "cache",
        extractor,
        ExtractOptions(workers=cfg.workers, pooled=True),
        annotations=text,
        splits=splits,
    )
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} generated videos failed: {summary.failed[0].error}")

    data = load_data(out / "cache")
    metrics: dict = {
        "data": {
            "videos": len(data.video_ids),
            "classes": data.class_names,
            "splits": {k: len(v) for k, v in data.splits.items()},
        }
    }
    checkpoints = {}
    for task, epochs in (("sel", cfg.sel_epochs), ("cml", cfg.cml_epochs)):
        step(f"training {task.upper()} (DAM, {epochs} epochs)")
        result = train(
            data, TrainConfig(model_config(task=task), epochs=epochs, seed=cfg.seed, device=cfg.device, progress=False)
        )
        checkpoints[task] = save_checkpoint(
            out / f"{task}.safetensors",
            result.model,
            result.model_config,
            data.class_names,
            data.settings,
            {"val": result.val, "test": result.test},
            train_config=result.config,
        )
        metrics[task] = {"best_epoch": result.best_epoch, "val": result.val, "test": result.test}
    metrics["sel"]["majority_baseline_test"] = majority_accuracy(data, "test")
    metrics["sel"]["chance"] = 1.0 / data.num_classes
    write_text_atomic(
        out / "metrics.json", jsonio.dumps(metrics, indent=2) + "\n"
    )  # a NaN metric (nothing to score): null

    held_out = data.video_ids[int(data.split("test")[0])]
    video = dataset / "videos" / f"{held_out}.mp4"
    step(f"localizing held-out test video {video.name}")
    [loc] = localize([video], checkpoints["sel"], device=cfg.device, progress=False)
    if loc.error:
        raise RuntimeError(loc.error)
    write_json(loc, out / "localization.json")
    plot_timeline(loc, out / "timeline.png")
    write_localization_report([loc], out / "report.html")
    truth = next(line for line in (dataset / "Annotations.txt").read_text().splitlines() if f"&{held_out}&" in line)

    files = {
        "dataset/": "generated videos (h264/aac, 10 s), Annotations.txt and split files in AVE format",
        "cache/": "the feature cache (pool5 7x7x512 + VGGish 128 per second, random weights)",
        "sel.safetensors": "the SEL checkpoint (DAM)",
        "cml.safetensors": "the CML checkpoint (DAM)",
        "metrics.json": "SEL accuracy and CML A2V/V2A accuracy (test split), with the majority baseline",
        "localization.json": "per-second labels and merged events of the held-out video",
        "timeline.png": "its timeline: relevance curves, labels per second, merged events",
        "report.html": "the same, in a browser: the video beside its timeline (open it from this folder)",
        "demo.json": "this run's configuration",
    }
    write_text_atomic(out / "demo.json", jsonio.dumps(asdict(cfg), nonfinite="refuse", indent=2) + "\n")  # validated
    sel_acc = metrics["sel"]["test"]["accuracy"]
    cml = metrics["cml"]["test"]
    log("")
    log(format_table(loc))
    log(f"ground truth: {truth}")
    log("")
    log(
        f"SEL test accuracy {sel_acc:.3f} (majority baseline {metrics['sel']['majority_baseline_test']:.3f}, "
        f"chance {metrics['sel']['chance']:.3f})"
    )
    log(f"CML test accuracy A2V {cml['a2v']:.3f}, V2A {cml['v2a']:.3f} over {cml['n_videos']} videos")
    step(f"done: {out}")
    for name, what in files.items():
        log(f"  {name:<18} {what}")
    return {name: out / name.rstrip("/") for name in files}


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_demo()
