"""avel: audio-visual event localization from the command line.

Each command parses its options into a typed config, prints nothing unless asked (a
progress bar on long jobs), calls one pipeline function, and reports errors in one line."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import FeatureSettings
from pipeline.errors import AvelError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Audio-visual event localization: extract VGG-19/VGGish features, cache them, train and run DAM.",
)

def _choices(registry) -> str:
    return "|".join(registry.names())


# -- options shared by the extracting commands (one Annotated alias each) -----------------------
VisualModel = Annotated[str, typer.Option("--visual-model", help="caffe (AVE-compatible) | torchvision | random")]
VisualWeights = Annotated[Optional[Path], typer.Option("--visual-weights-file", help="Keras HDF5 or PyTorch state dict of the VGG-19 weights")]
AudioModel = Annotated[str, typer.Option("--audio-model", help="vggish | random")]
AudioWeights = Annotated[Optional[Path], typer.Option("--audio-weights-file", help="vggish-10086976.pth (PyTorch state dict)")]
AudioPca = Annotated[Optional[Path], typer.Option("--audio-pca-file", help="apply VGGish PCA + 8-bit quantisation from this file (off by default, as in AVE)")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]
Precision = Annotated[str, typer.Option("--precision", help="fp32 (default, reproducible) | bf16 | fp16")]
FramesPerSegment = Annotated[int, typer.Option("--frames-per-segment", min=1, help="frames averaged per 1-s segment (AVE: 16)")]
Segments = Annotated[Optional[int], typer.Option("--segments", min=1, help="force N segments (AVE: 10): truncate, or repeat the last when up to 1 s short")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="frames per VGG-19 forward")]
MissingAudio = Annotated[str, typer.Option("--on-missing-audio", help="error | silence")]
Seed = Annotated[int, typer.Option("--seed", help="seed of random weights")]
Pooled = Annotated[bool, typer.Option("--pooled/--no-pooled", help="also store the 512-d pooled visual vector (AVE's visual_feature_vec)")]
StorageDtype = Annotated[str, typer.Option("--storage-dtype", help="float32 | float16")]
Workers = Annotated[int, typer.Option("--workers", min=0, help="decoder processes (0: one decoding thread)")]
CommitEvery = Annotated[int, typer.Option("--commit-every", min=1, help="videos per committed part file (a crash loses at most this many)")]


def _extractor(visual_model, visual_weights_file, audio_model, audio_weights_file, audio_pca_file,
               device, precision, frames_per_segment, segments, batch_size, on_missing_audio, seed):
    from pipeline.extract import FeatureExtractor

    settings = FeatureSettings(
        visual_model=visual_model, audio_model=audio_model, frames_per_segment=frames_per_segment,
        segments=segments, on_missing_audio=on_missing_audio, audio_pca=audio_pca_file is not None,
        precision=precision, seed=seed,
    )
    return FeatureExtractor(
        settings, visual_weights_file=_s(visual_weights_file), audio_weights_file=_s(audio_weights_file),
        audio_pca_file=_s(audio_pca_file), device=device, batch_size=batch_size,
    )


def _s(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


def _report(summary, where: str) -> None:
    msg = f"{summary.done} extracted, {summary.skipped} already done, {len(summary.failed)} failed -> {where}"
    typer.echo(msg, err=True)
    for f in summary.failed[:20]:
        typer.echo(f"  {f.kind}: {f.error}", err=True)
    if len(summary.failed) > 20:
        typer.echo(f"  ... and {len(summary.failed) - 20} more (see the cache's failures)", err=True)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def extract(
    videos: Annotated[list[Path], typer.Argument(help="video files")],
    out: Annotated[Path, typer.Option("--out", help="features.h5 (one file), or a directory cache")] = Path("features.h5"),
    visual_model: VisualModel = "caffe",
    visual_weights_file: VisualWeights = None,
    audio_model: AudioModel = "vggish",
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    frames_per_segment: FramesPerSegment = 16,
    segments: Segments = None,
    batch_size: BatchSize = 160,
    on_missing_audio: MissingAudio = "error",
    seed: Seed = 0,
    pooled: Pooled = False,
    storage_dtype: StorageDtype = "float32",
    workers: Workers = 0,
) -> None:
    """Extract VGG-19 pool5 and VGGish features of VIDEO... into an HDF5 file."""
    from pipeline.cache import CacheMeta, FeatureCache, merge_caches
    from pipeline.extract import jobs_from_paths, run_extraction

    fe = _extractor(visual_model, visual_weights_file, audio_model, audio_weights_file, audio_pca_file,
                    device, precision, frames_per_segment, segments, batch_size, on_missing_audio, seed)
    jobs = jobs_from_paths(videos)
    if out.suffix != ".h5":
        summary = run_extraction(jobs, out, fe, workers=workers, pooled=pooled, storage_dtype=storage_dtype)
        return _report(summary, str(out))
    # a single file: extract into a resumable side directory, then merge atomically
    partial = out.with_name(out.name + ".partial")
    done: set[str] = set()
    if out.exists():
        with FeatureCache(out) as existing:  # refuse other settings before any work
            existing.meta.check_compatible(CacheMeta(fe.settings, storage_dtype), str(out))
            done = set(existing.ids())
    summary = run_extraction([j for j in jobs if j.id not in done], partial, fe, workers=workers,
                             pooled=pooled, storage_dtype=storage_dtype)
    summary.skipped += len(jobs) - len([j for j in jobs if j.id not in done])
    merge_caches(([out] if out.exists() else []) + [partial], out)
    shutil.rmtree(partial)
    _report(summary, str(out))


def _shard(jobs, shard: Optional[str]):
    if shard is None:
        return jobs
    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise AvelError(f"--shard {shard}: expected i/n with 0 <= i < n, e.g. 0/4") from None
    return [j for k, j in enumerate(sorted(jobs, key=lambda j: j.id)) if k % n == i]


@app.command()
def preprocess(
    source: Annotated[Path, typer.Argument(help="a folder of videos (recursive), a text file of paths, or the AVE video folder")],
    out: Annotated[Path, typer.Option("--out", help="the cache directory (created or resumed)")],
    annotations: Annotated[Optional[Path], typer.Option("--annotations", help="AVE-format Annotations.txt: its rows are the unit")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="i/n: process the i-th of n disjoint parts (0-based)")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="try videos recorded as failed again")] = False,
    visual_model: VisualModel = "caffe",
    visual_weights_file: VisualWeights = None,
    audio_model: AudioModel = "vggish",
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    frames_per_segment: FramesPerSegment = 16,
    segments: Segments = None,
    batch_size: BatchSize = 160,
    on_missing_audio: MissingAudio = "error",
    seed: Seed = 0,
    pooled: Pooled = True,
    storage_dtype: StorageDtype = "float32",
    workers: Workers = 2,
    commit_every: CommitEvery = 64,
) -> None:
    """Batch-extract a whole dataset into a crash-safe, resumable cache.

    With --annotations, its rows are the unit (an id listed twice is extracted once) and
    trainSet.txt / valSet.txt / testSet.txt beside it are stored as the cache's splits."""
    from pipeline.extract import annotated_jobs, find_videos, jobs_from_paths, run_extraction

    text, splits = None, {}
    if annotations is not None:
        jobs, text, splits = annotated_jobs(source, annotations)
        if segments is None:
            segments = 10  # AVE rows label ten 1-s segments
    else:
        jobs = jobs_from_paths(find_videos(source))
    jobs = _shard(jobs, shard)
    fe = _extractor(visual_model, visual_weights_file, audio_model, audio_weights_file, audio_pca_file,
                    device, precision, frames_per_segment, segments, batch_size, on_missing_audio, seed)
    summary = run_extraction(jobs, out, fe, workers=workers, pooled=pooled, storage_dtype=storage_dtype,
                             annotations=text, splits=splits, retry_failed=retry_failed, commit_every=commit_every)
    _report(summary, str(out))


@app.command()
def merge(
    caches: Annotated[list[Path], typer.Argument(help="caches (directories or .h5 files) to join, e.g. the shards")],
    out: Annotated[Path, typer.Option("--out", help="the merged single-file cache (.h5)")],
) -> None:
    """Join feature caches (e.g. the shards of `preprocess --shard`), refusing mixed settings."""
    from pipeline.cache import merge_caches

    n, failed = merge_caches(caches, out)
    typer.echo(f"{n} videos, {failed} recorded failures -> {out}", err=True)


@app.command("export-ave")
def export_ave(
    cache: Annotated[Path, typer.Argument(help="a feature cache (directory or .h5)")],
    annotations: Annotated[Path, typer.Option("--annotations", help="Annotations.txt: its rows, in order, are the exported rows")],
    out: Annotated[Path, typer.Option("--out", help="output directory (the AVE release layout)")],
    splits: Annotated[Optional[str], typer.Option("--splits", help="comma-separated split files, e.g. trainSet.txt,valSet.txt,testSet.txt")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 | float64 (the release's)")] = "float32",
) -> None:
    """Write the AVE release layout (visual_feature.h5, audio_feature.h5, labels.h5, ...)."""
    from pipeline.annotations import read_annotations
    from pipeline.ave import write_ave_layout
    from pipeline.data import load_cache, split_name

    rows = read_annotations(annotations)
    split_texts = {}
    for f in (splits.split(",") if splits else []):
        p = Path(f.strip())
        if not p.is_file():
            raise AvelError(f"{p}: no such split file")
        split_texts[split_name(p.name)] = p.read_text(encoding="utf-8-sig")
    data = load_cache(cache, rows=rows, split_texts=split_texts)
    files = write_ave_layout(out, data, dtype=dtype, annotations=rows)
    typer.echo(f"{len(rows)} rows, {len(files)} files -> {out}", err=True)


@app.command()
def synth(
    outdir: Annotated[Path, typer.Argument(help="output folder: videos/, Annotations.txt, trainSet/valSet/testSet.txt")],
    videos: Annotated[int, typer.Option("--videos", min=1, help="number of videos")] = 100,
    classes: Annotated[int, typer.Option("--classes", min=1, max=28, help="event categories")] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
) -> None:
    """Generate a small audio-visual event dataset (10-s h264/aac mp4s) in AVE format."""
    from pipeline.synth import synthesize

    rows = synthesize(outdir, videos=videos, classes=classes, seed=seed, workers=workers)
    typer.echo(f"{len(rows)} videos, {classes} classes -> {outdir}", err=True)


Task = Annotated[str, typer.Argument(help="sel (supervised event localization) | cml (cross-modality localization)")]
DataPath = Annotated[Path, typer.Option("--data", help="a feature cache or a directory in the AVE release layout")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="also write the metrics as JSON")]


def _check_task(task: str) -> None:
    if task not in ("sel", "cml"):
        raise AvelError(f"task {task!r}: choose sel or cml")


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _write_json(path: Optional[Path], obj) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2) + "\n")


@app.command()
def train(
    task: Task,
    data: DataPath,
    out: Annotated[Path, typer.Option("--out", help="checkpoint to write (.safetensors)")],
    model: Annotated[str, typer.Option("--model", help="sel: dam | av_att;  cml: dam | avdln")] = "dam",
    embedding: Annotated[str, typer.Option("--embedding", help="DAM sequence embedding: avg | max | rnn | lstm | gru | bilstm | self-att")] = "self-att",
    matching: Annotated[str, typer.Option("--matching", help="cross (DAM) | self (ablation) | none (SEL without DAM)")] = "cross",
    lam: Annotated[float, typer.Option("--lambda", min=0.0, max=1.0, help="SEL loss weight of the category CE (eq. 8)")] = 0.5,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 60,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    heads: Annotated[int, typer.Option("--heads", min=1, help="self-attention heads")] = 4,
    dropout: Annotated[float, typer.Option("--dropout")] = 0.1,
    scaled_matching: Annotated[bool, typer.Option("--scaled-matching/--unscaled-matching", help="DAM score sigma(g.f/sqrt(d)) (default) or the literal sigma(g.f)")] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="train this many seeds (seed, seed+1, ...) and report mean and std")] = 1,
    device: Device = "auto",
    dtype_in_ram: Annotated[str, typer.Option("--dtype-in-ram", help="float32 | float16: features held in RAM")] = "float32",
    json_out: JsonOut = None,
) -> None:
    """Train DAM (or a baseline) with model selection on validation; report test."""
    import torch

    from pipeline.data import load_data
    from pipeline.train import TrainConfig, save_checkpoint, train_seeds

    _check_task(task)
    cfg = TrainConfig(task=task, model=model, embedding=embedding, matching=matching, lam=lam, epochs=epochs,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, device=device,
                      dtype_in_ram=dtype_in_ram, heads=heads, dropout=dropout, scaled_matching=scaled_matching)
    av = load_data(data, dtype=torch.float16 if dtype_in_ram == "float16" else torch.float32)
    result = train_seeds(av, cfg, list(range(seed, seed + seeds)))
    report = {"task": task, "config": cfg.__dict__, "split": result.split, "mean": result.mean, "std": result.std, "runs": []}
    for k, r in enumerate(result.results):
        path = out if k == 0 else out.with_name(f"{out.stem}-seed{r.config.seed}{out.suffix}")
        save_checkpoint(path, r.model, r.model_config, av.class_names, av.settings, {"val": r.val, "test": r.test})
        report["runs"].append({"seed": r.config.seed, "checkpoint": str(path), "best_epoch": r.best_epoch, "val": r.val,
                               "test": r.test, "seconds": round(r.seconds, 1)})
        typer.echo(f"seed {r.config.seed}: best epoch {r.best_epoch}; val: {_format_metrics(r.val)}"
                   + (f"; test: {_format_metrics(r.test)}" if r.test else "") + f" -> {path}")
    if seeds > 1:
        typer.echo(f"{result.split} over {seeds} seeds: " + ", ".join(
            f"{k} {result.mean[k]:.4f} +- {result.std[k]:.4f}" for k in result.mean))
    _write_json(json_out, report)


@app.command()
def evaluate(
    task: Task,
    data: DataPath,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a checkpoint written by `avel train`")],
    split: Annotated[str, typer.Option("--split", help="test | val | train (CML uses the *_match split when present)")] = "test",
    device: Device = "auto",
    json_out: JsonOut = None,
) -> None:
    """Evaluate a checkpoint: SEL accuracy over all segments; CML A2V and V2A exact-window accuracy."""
    import torch

    from pipeline.data import load_data
    from pipeline.train import evaluate as run_evaluate, load_checkpoint, resolve_device

    _check_task(task)
    av = load_data(data)
    ckpt = load_checkpoint(checkpoint, expected_task=task, feature_settings=av.settings)
    if ckpt.class_names and task == "sel" and ckpt.class_names != av.class_names:
        raise AvelError(f"{checkpoint}: trained on classes {ckpt.class_names[:3]}... which differ from the data's {av.class_names[:3]}...")
    metrics = run_evaluate(ckpt.model.to(resolve_device(device)), av, split)
    typer.echo(f"{task} {split}: {_format_metrics(metrics)}")
    _write_json(json_out, {"task": task, "split": split, "checkpoint": str(checkpoint), "data": str(data), "metrics": metrics})


@app.command()
def localize(
    videos: Annotated[list[Path], typer.Argument(help="videos of any length")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="an SEL checkpoint")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write all results as JSON")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="write one row per second as CSV")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="timeline PNG (with several videos: NAME-<video>.png)")] = None,
    stride: Annotated[int, typer.Option("--stride", min=1, help="seconds between sliding windows")] = 5,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
) -> None:
    """When does an audio-visual event happen in each video, and what is it?"""
    from pipeline.localize import format_table, localize as run_localize, write_csv, write_json
    from pipeline.timeline import plot_timeline

    results = run_localize(videos, checkpoint, stride_s=stride, device=device, visual_weights_file=visual_weights_file,
                           audio_weights_file=audio_weights_file, audio_pca_file=audio_pca_file)
    ok = [r for r in results if not r.error]
    for r in results:
        typer.echo(f"error: {r.error}" if r.error else format_table(r), err=bool(r.error))
    if json_out is not None:
        write_json(results, json_out)
    if csv_out is not None:
        write_csv(ok, csv_out)
    if plot is not None:
        for r in ok:
            target = plot if len(ok) == 1 else plot.with_name(f"{plot.stem}-{Path(r.video).stem}{plot.suffix}")
            plot_timeline(r, target)
    if len(ok) < len(results):
        raise typer.Exit(1)


@app.command()
def cml(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a CML checkpoint")],
    query: Annotated[Path, typer.Option("--query", help="an audio file (A2V) or a video (V2A; A2V with --query-modality audio)")],
    target: Annotated[Path, typer.Option("--target", help="the video to search")],
    query_start: Annotated[Optional[float], typer.Option("--query-start", help="start (s) of the query range in a query video")] = None,
    query_end: Annotated[Optional[float], typer.Option("--query-end", help="end (s) of the query range")] = None,
    query_modality: Annotated[Optional[str], typer.Option("--query-modality", help="audio | visual (default: audio for audio files, visual for videos)")] = None,
    json_out: JsonOut = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="score timeline PNG")] = None,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
) -> None:
    """Cross-modality localization: where in TARGET does the other modality match the query?"""
    from pipeline.query import cml_query, format_query, write_query_json
    from pipeline.timeline import plot_query

    result = cml_query(checkpoint, query, target, query_start_s=query_start, query_end_s=query_end,
                       query_modality=query_modality, device=device, visual_weights_file=visual_weights_file,
                       audio_weights_file=audio_weights_file, audio_pca_file=audio_pca_file)
    typer.echo(format_query(result))
    if json_out is not None:
        write_query_json(result, json_out)
    if plot is not None:
        plot_query(result, plot)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for everything the demo writes")] = Path("avel-demo"),
    videos: Annotated[int, typer.Option("--videos", min=12)] = 48,
    classes: Annotated[int, typer.Option("--classes", min=2, max=28)] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Device = "auto",
) -> None:
    """End to end, offline: generate a dataset, extract, train SEL and CML, evaluate, localize."""
    from pipeline.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out_dir=str(out), videos=videos, classes=classes, seed=seed, device=device),
             log=lambda m: typer.echo(m))


def main() -> None:
    try:
        app()
    except AvelError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
