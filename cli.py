"""avel: audio-visual event localization from the command line.

Each command parses its options into typed configs (their options are generated from the
config dataclasses, so they map one to one, and their choices come from the registries),
validates them before any data is read or any weight is built, calls one pipeline
function, prints nothing unless asked (a progress bar on long jobs), and reports every
error in one line (exit status 2; batch jobs exit 1 when a video failed)."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C while the modules below load (torch takes seconds): nothing runs yet, so one
    line and exit 130 at once, as `main` does for an interrupt later on."""
    os.write(2, b"interrupted: SIGINT while starting; nothing was done\n")
    os._exit(130)


# The program's own start (`avel ...`, `python -m avel.cli`), not an import by other code:
# Ctrl-C from here on is one line, not a traceback from the middle of an import; `main`
# puts the usual KeyboardInterrupt back once everything is loaded.
_STARTING = (
    __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") in ("avel", "avel.exe")
) and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _STARTING:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer.exceptions import TyperException

from .core import jsonio
from .core.atomic import write_text_atomic
from .core.config import DEVICE_HELP, MAX_SEGMENTS, MAX_WORKERS, FeatureSettings, resolve_device
from .core.errors import AvelError, ConfigError, Interrupted, shown
from .extractors import AUDIO_MODELS, VISUAL_MODELS
from .models.registry import MODELS, TASKS, config_classes, model_config
from .pipeline.apps.windows import COMBINES, EVENT_SCORES, SMOOTHINGS
from .pipeline.data.synth import FeatureSynthConfig
from .pipeline.data.synth_long import LongSynthConfig
from .pipeline.extract.options import ExtractOptions, NetworkOptions
from .pipeline.extract.ray_engine import ENGINES, RayConfig
from .pipeline.train.loop import TrainConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Audio-visual event localization: extract VGG-19/VGGish features, cache them, train and run DAM.",
)


# -- options generated from the config dataclasses ------------------------------------------------
FLAGS: dict[str, str] = {}  # config field -> its option, for error messages
_PYTHON_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _choices(names) -> Any:
    """A Literal of the names: typer lists them in --help and refuses anything else."""
    return Literal[tuple(names() if callable(names) else names)]


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _option_parameter(
    f: dataclasses.Field, choices, unset: dict | None = None, helps: list[str] | None = None
) -> inspect.Parameter:
    """The option of field `f`. `unset`: {config key: the field's default there} of the classes
    that have the field, for an option whose classes are picked by another option (the model
    configs; `avel synth`'s --features-only and --long configs): it defaults to None (so a
    command knows what was given) and its help says the defaults. `helps`: the field's helps
    in those classes, when they differ (joined with "; ")."""
    meta = f.metadata
    kinds = [k.strip() for k in str(f.type).split("|")]
    base = choices if choices is not None else _PYTHON_TYPES[kinds[0]]
    annotation = Optional[base] if "None" in kinds or unset is not None else base
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    FLAGS[f.name] = flag.split("/")[0]
    help = "; ".join(helps) if helps else meta.get("help")
    if unset is None:
        default = _default(f)
    else:
        default = None
        values = list(dict.fromkeys(map(_shown_default, unset.values())))
        if "default:" not in help:
            help += (
                f" (default: {values[0]})"
                if len(values) == 1
                else " (default: "
                + "; ".join(
                    f"{v} for {', '.join(k for k, d in unset.items() if _shown_default(d) == v)}" for v in values
                )
                + ")"
            )
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(flag, help=help)],
    )


def _shown_default(value) -> str:
    return ("scaled" if value else "unscaled") if isinstance(value, bool) else str(value)


def config_options(*classes, choices: dict | None = None, skip: tuple[str, ...] = (), unset: tuple = ()):
    """Give the decorated command one option per CLI field of each config class (fields with
    `option(cli=False)` and `skip` excepted). The command receives their values as
    `options: dict` and builds its configs with `build`. The fields of the `unset` classes
    (one of them is picked at run time, e.g. the model configs) make one option each over all
    of them, default None: the command passes on only the options given (`given`)."""
    choices = dict(choices or {})

    def decorate(func):
        params = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "options"]
        generated, names = [], set()
        for cls in (*unset, *classes):
            for f in dataclasses.fields(cls):
                if not f.metadata.get("cli", True) or f.name in skip or f.name in names:
                    continue
                names.add(f.name)
                names_of = choices.get(f.name, f.metadata.get("choices"))
                defaults, helps = None, None
                if cls in unset:
                    same = [(c, g) for c in unset for g in dataclasses.fields(c) if g.name == f.name]
                    defaults = {_config_label(c): _default(g) for c, g in same}
                    helps = list(dict.fromkeys(g.metadata["help"] for _, g in same))
                choices_of = None if names_of is None else _choices(names_of)
                generated.append(_option_parameter(f, choices_of, defaults, helps))

        @functools.wraps(func)
        def command(**kwargs):
            options = {name: kwargs.pop(name) for name in names}
            return func(**kwargs, options=options)

        command.__signature__ = inspect.Signature(params + generated)
        command.__annotations__ = {p.name: p.annotation for p in params + generated}
        del command.__wrapped__  # typer reads the signature above, not the function's
        return command

    return decorate


def _config_label(cls) -> str:
    """How an option's help names a config class: its `cli_label` (the flag it applies with)
    or, for the model configs, task/name."""
    return getattr(cls, "cli_label", None) or f"{cls.task}/{cls.name}"


def build(cls, options: dict, **values):
    """A config `cls` from the generated option values (and `values`), validated."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names}, **values)


def given(options: dict, *classes) -> dict:
    """The options of the fields of `classes` that the command line gave (not None)."""
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names and v is not None}


# -- options that are not config fields (shared Annotated aliases) ------------------------------
VisualWeights = Annotated[
    Optional[Path], typer.Option("--visual-weights-file", help="Keras HDF5 or PyTorch state dict of the VGG-19 weights")
]
AudioWeights = Annotated[
    Optional[Path], typer.Option("--audio-weights-file", help="vggish-10086976.pth (PyTorch state dict)")
]
AudioPca = Annotated[
    Optional[Path],
    typer.Option(
        "--audio-pca-file", help="apply VGGish PCA + 8-bit quantisation from this file (off by default, as in AVE)"
    ),
]
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
BatchSize = Annotated[
    Optional[int],
    typer.Option(
        "--batch-size", help="frames per VGG-19 forward (default: the device's fastest, measured: 16 on a CPU)"
    ),
]
Task = Annotated[
    _choices(TASKS),
    typer.Argument(
        help="sel (supervised event localization) | cml (cross-modality localization) | wsel (weakly supervised event localization: trained on video-level labels, tested as sel)"
    ),
]
DataPath = Annotated[Path, typer.Option("--data", help="a feature cache or a directory in the AVE release layout")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="also write the metrics as JSON")]

EXTRACTOR_CHOICES = {"visual_model": VISUAL_MODELS.names, "audio_model": AUDIO_MODELS.names}


def _help(cls, name: str) -> str:
    """The help of a config field (for an option declared by hand where a command's default differs)."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def _network(visual_weights_file, audio_weights_file, audio_pca_file, device, batch_size=None) -> NetworkOptions:
    """The NetworkOptions of the shared options (VisualWeights, AudioWeights, AudioPca, Device,
    BatchSize), validated: the device exists here, the batch size is positive."""
    return NetworkOptions(visual_weights_file, audio_weights_file, audio_pca_file, device, batch_size)


def _feature_settings(options: dict, network: NetworkOptions, **values) -> FeatureSettings:
    """The validated FeatureSettings of the generated options (VGGish's PCA with its file)."""
    return build(FeatureSettings, options, audio_pca=network.audio_pca_file is not None, **values)


def check_positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(name, value, f"must be >= {minimum}")


def _report(summary, where: str) -> None:
    """Print a batch job's report; exit 1 when a video failed (in this run or an earlier one)."""
    from .pipeline.extract.local import summary_lines

    for line in summary_lines(summary, where):
        typer.echo(line, err=True)
    if summary.all_failed:
        raise typer.Exit(1)


# -- stage one and two ------------------------------------------------------------------------------
@app.command()
@config_options(
    FeatureSettings, ExtractOptions, choices=EXTRACTOR_CHOICES, skip=("commit_every", "retry_failed", "shard", "verify")
)
def extract(
    videos: Annotated[list[Path], typer.Argument(help="video files")],
    options: dict,
    out: Annotated[Path, typer.Option("--out", help="features.h5 (one file), or a directory cache")] = Path(
        "features.h5"
    ),
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
    batch_size: BatchSize = None,
) -> None:
    """Extract VGG-19 pool5 and VGGish features of VIDEO... into an HDF5 file."""
    from .pipeline.extract.batch import extract_videos

    run = build(ExtractOptions, options)
    network = _network(visual_weights_file, audio_weights_file, audio_pca_file, device, batch_size)
    settings = _feature_settings(options, network)
    _report(extract_videos(videos, out, settings, network, run), str(out))


@app.command()
@config_options(FeatureSettings, RayConfig, ExtractOptions, choices=EXTRACTOR_CHOICES, skip=("pooled", "workers"))
def preprocess(
    source: Annotated[
        Path, typer.Argument(help="a folder of videos (recursive), a text file of paths, or the AVE video folder")
    ],
    out: Annotated[Path, typer.Option("--out", help="the cache directory (created or resumed)")],
    options: dict,
    engine: Annotated[
        _choices(ENGINES),
        typer.Option("--engine", help="local (this machine) | ray (a Ray cluster: --ray-address ...)"),
    ] = "local",
    annotations: Annotated[
        Optional[Path], typer.Option("--annotations", help="AVE-format Annotations.txt: its rows are the unit")
    ] = None,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
    batch_size: BatchSize = None,
    pooled: Annotated[bool, typer.Option("--pooled/--no-pooled", help=_help(ExtractOptions, "pooled"))] = True,
    workers: Annotated[int, typer.Option("--workers", help=_help(ExtractOptions, "workers"))] = 2,
) -> None:
    """Batch-extract a whole dataset into a crash-safe, resumable cache.

    With --annotations, its rows are the unit (an id listed twice is extracted once),
    --segments defaults to 10, and trainSet.txt / valSet.txt / testSet.txt beside it are
    stored as the cache's splits."""
    from .pipeline.extract.batch import preprocess as run_preprocess

    run = build(ExtractOptions, options, pooled=pooled, workers=workers)
    if annotations is not None and options["segments"] is None:
        options = {**options, "segments": 10}  # AVE rows label ten 1-s segments
    network = _network(visual_weights_file, audio_weights_file, audio_pca_file, device, batch_size)
    settings = _feature_settings(options, network)
    summary = run_preprocess(
        source,
        out,
        settings,
        network,
        run,
        engine=engine,
        ray_config=build(RayConfig, options),
        annotations=annotations,
    )
    _report(summary, str(out))


@app.command()
def merge(
    caches: Annotated[list[Path], typer.Argument(help="caches (directories or .h5 files) to join, e.g. the shards")],
    out: Annotated[Path, typer.Option("--out", help="the merged single-file cache (.h5)")],
    on_conflict: Annotated[
        _choices(("fail", "first", "last")),
        typer.Option(
            "--on-conflict", help="an id with different features in two caches: fail | keep the first | keep the last"
        ),
    ] = "fail",
) -> None:
    """Join feature caches (e.g. the shards of `preprocess --shard`), refusing mixed settings.
    An id held twice with identical features is kept once; annotations and splits are merged."""
    from .pipeline.cache.merge import merge_caches

    n, failed = merge_caches(caches, out, on_conflict=on_conflict)
    typer.echo(f"{n} videos, {failed} recorded failures -> {out}", err=True)


@app.command("export-ave")
def export_ave(
    cache: Annotated[Path, typer.Argument(help="a feature cache (directory or .h5)")],
    annotations: Annotated[
        Path, typer.Option("--annotations", help="Annotations.txt: its rows, in order, are the exported rows")
    ],
    out: Annotated[Path, typer.Option("--out", help="output directory (the AVE release layout)")],
    splits: Annotated[
        Optional[str],
        typer.Option("--splits", help="comma-separated split files, e.g. trainSet.txt,valSet.txt,testSet.txt"),
    ] = None,
    dtype: Annotated[
        _choices(("float32", "float64")), typer.Option("--dtype", help="float32 | float64 (the release's)")
    ] = "float32",
) -> None:
    """Write the AVE release layout (visual_feature.h5, audio_feature.h5, labels.h5, ...)."""
    from .pipeline.data.export import export_ave as run_export

    split_files = [f.strip() for f in splits.split(",")] if splits else []
    n, files = run_export(cache, annotations, out, split_files=split_files, dtype=dtype)
    typer.echo(f"{n} rows, {len(files)} files -> {out}", err=True)


@app.command()
@config_options(unset=(FeatureSynthConfig, LongSynthConfig))
def synth(
    outdir: Annotated[
        Path,
        typer.Argument(
            help="output folder: videos/, Annotations.txt, trainSet/valSet/testSet.txt "
            "(with --features-only: the AVE feature layout; with --long: videos/ or features/, ground_truth.json)"
        ),
    ],
    options: dict,
    videos: Annotated[
        Optional[int], typer.Option("--videos", min=1, help="number of videos (default: 100; with --long: 6)")
    ] = None,
    classes: Annotated[int, typer.Option("--classes", min=1, max=28, help="event categories")] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=MAX_WORKERS)] = 1,
    features_only: Annotated[
        bool,
        typer.Option(
            "--features-only",
            help="write generated features in the AVE release layout instead of videos (no decoding, no networks)",
        ),
    ] = False,
    long: Annotated[
        bool,
        typer.Option(
            "--long",
            help="long videos (1-60 min by default) with many events of several classes and ActivityNet ground "
            "truth: videos/*.mp4 (with --features-only: features/*.h5) and ground_truth.json",
        ),
    ] = False,
    dtype: Annotated[
        _choices(("float32", "float64")),
        typer.Option("--dtype", help="--features-only: feature dtype (the AVE release: float64)"),
    ] = "float32",
) -> None:
    """Generate a small audio-visual event dataset (10-s h264/aac mp4s) in AVE format, or
    (--features-only) a feature set in the AVE release layout, or (--long) long videos with
    many events and their ground truth in ActivityNet JSON."""
    chosen, other = (LongSynthConfig, FeatureSynthConfig) if long else (FeatureSynthConfig, LongSynthConfig)
    values = given(options, chosen)
    for name in given(options, other):
        if name not in values:
            raise ConfigError(name, options[name], "only applies with --long" if long else "does not apply with --long")
    if long:
        cfg = LongSynthConfig(
            videos=6 if videos is None else videos, classes=classes, seed=seed, **values
        )  # validated either way
        if not features_only and "noise" in values:
            raise ConfigError("noise", values["noise"], "only applies with --features-only")
        if features_only:
            from .pipeline.data.synth_long import write_long_features

            files = write_long_features(outdir, cfg)
        else:
            from .pipeline.data.synth_long_media import write_long_media

            files = write_long_media(outdir, cfg, workers=workers)
        typer.echo(f"{cfg.videos} long videos, {classes} classes -> {len(files)} files in {outdir}", err=True)
        return
    videos = 100 if videos is None else videos
    cfg = FeatureSynthConfig(videos=videos, classes=classes, seed=seed, **values)  # validated either way
    if features_only:
        from .pipeline.data.synth import write_features

        files = write_features(outdir, cfg, dtype=dtype)
        typer.echo(f"{videos} videos, {classes} classes, noise {cfg.noise} -> {len(files)} files in {outdir}", err=True)
        return
    if values:
        name = next(iter(values))
        raise ConfigError(name, values[name], "only applies with --features-only")
    from .pipeline.media.synth import synthesize

    rows = synthesize(outdir, videos=videos, classes=classes, seed=seed, workers=workers)
    typer.echo(f"{len(rows)} videos, {classes} classes -> {outdir}", err=True)


# -- stage three ------------------------------------------------------------------------------------
def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _write_json(path: Optional[Path], obj) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, jsonio.dumps(obj, indent=2) + "\n")  # a NaN metric (nothing to score) is null


FLAGS["name"] = "--model"
ModelName = Annotated[
    _choices(lambda: list(dict.fromkeys(k.split("/", 1)[1] for k in MODELS.names()))),
    typer.Option("--model", help="sel, wsel: dam | av_att;  cml: dam | avdln"),
]


@app.command()
@config_options(TrainConfig, unset=tuple(config_classes()))
def train(
    task: Task,
    data: DataPath,
    out: Annotated[Path, typer.Option("--out", help="checkpoint to write (.safetensors)")],
    options: dict,
    model: ModelName = "dam",
    seeds: Annotated[
        int, typer.Option("--seeds", help="train this many seeds (seed, seed+1, ...) and report mean and std")
    ] = 1,
    json_out: JsonOut = None,
) -> None:
    """Train DAM (or a baseline) with model selection on validation; report test."""
    from .pipeline.train.run import train_to_checkpoints

    check_positive("seeds", seeds)
    cfg = build(TrainConfig, options, model=model_config(task, model, **given(options, *config_classes())))
    report = train_to_checkpoints(data, out, cfg, seeds)
    for r in report["runs"]:
        typer.echo(
            f"seed {r['seed']}: best epoch {r['best_epoch']}; val: {_format_metrics(r['val'])}"
            + (f"; test: {_format_metrics(r['test'])}" if r["test"] else "")
            + f" -> {r['checkpoint']}"
        )
    if seeds > 1:
        typer.echo(
            f"{report['split']} over {seeds} seeds: "
            + ", ".join(f"{k} {report['mean'][k]:.4f} +- {report['std'][k]:.4f}" for k in report["mean"])
        )
    _write_json(json_out, report)


@app.command()
def evaluate(
    task: Task,
    data: DataPath,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a checkpoint written by `avel train`")],
    split: Annotated[
        str, typer.Option("--split", help="test | val | train (CML uses the *_match split when present)")
    ] = "test",
    device: Device = "auto",
    json_out: JsonOut = None,
) -> None:
    """Evaluate a checkpoint: SEL accuracy over all segments; CML A2V and V2A exact-window accuracy."""
    from .pipeline.train.run import evaluate_checkpoint

    metrics = evaluate_checkpoint(task, data, checkpoint, split, device)
    typer.echo(f"{task} {split}: {_format_metrics(metrics)}")
    _write_json(
        json_out, {"task": task, "split": split, "checkpoint": str(checkpoint), "data": str(data), "metrics": metrics}
    )


@app.command()
def localize(
    videos: Annotated[list[Path], typer.Argument(help="videos of any length")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="an SEL checkpoint")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write all results as JSON")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="write one row per second as CSV")] = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="timeline PNG (with several videos: NAME-<video>.png)")
    ] = None,
    html: Annotated[
        Optional[Path], typer.Option("--html", help="one HTML page: each video beside its event timeline")
    ] = None,
    stride: Annotated[
        int, typer.Option("--stride", min=1, max=MAX_SEGMENTS, help="seconds between sliding windows")
    ] = 5,
    combine: Annotated[
        _choices(COMBINES), typer.Option("--combine", help="how the windows covering a second combine their scores")
    ] = "mean",
    smooth: Annotated[
        _choices(SMOOTHINGS), typer.Option("--smooth", help="running median or mean of the per-second scores")
    ] = "median",
    smooth_k: Annotated[
        int,
        typer.Option("--smooth-k", min=0, max=MAX_SEGMENTS, help="seconds the smoothing spans (0 or 1: none)"),
    ] = 0,
    gap: Annotated[
        int,
        typer.Option(
            "--gap",
            min=0,
            max=MAX_SEGMENTS,
            help="join two events of one label separated by at most this many background seconds (0: none)",
        ),
    ] = 0,
    min_event: Annotated[
        int, typer.Option("--min-event", min=1, max=MAX_SEGMENTS, help="leave out events shorter than this (s)")
    ] = 1,
    event_score: Annotated[
        _choices(EVENT_SCORES),
        typer.Option("--event-score", help="an event's confidence from its seconds' probability x relevance"),
    ] = "mean",
    min_score: Annotated[
        float, typer.Option("--min-score", help="leave out events whose confidence is below this (0..1)")
    ] = 0.0,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
) -> None:
    """When does an audio-visual event happen in each video, and what is it?"""
    from .pipeline.apps.localize import localize as run_localize
    from .pipeline.apps.outputs import format_table
    from .pipeline.apps.save import save_localizations
    from .pipeline.apps.windows import LocalizeRule

    network = _network(visual_weights_file, audio_weights_file, audio_pca_file, device)  # before the checkpoint is read
    rule = LocalizeRule(
        stride_s=stride,
        combine=combine,
        smooth=smooth,
        smooth_k=smooth_k,
        gap_s=gap,
        min_event_s=min_event,
        event_score=event_score,
        min_score=min_score,
    )
    results = run_localize(videos, checkpoint, rule=rule, **network.as_kwargs())
    for r in results:
        typer.echo(f"error: {r.error}" if r.error else format_table(r), err=bool(r.error))
    save_localizations(results, json_path=json_out, csv_path=csv_out, plot=plot, html=html)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def cml(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a CML checkpoint")],
    query: Annotated[
        Path, typer.Option("--query", help="an audio file (A2V) or a video (V2A; A2V with --query-modality audio)")
    ],
    target: Annotated[Path, typer.Option("--target", help="the video to search")],
    query_start: Annotated[
        Optional[float], typer.Option("--query-start", help="start (s) of the query range in a query video")
    ] = None,
    query_end: Annotated[Optional[float], typer.Option("--query-end", help="end (s) of the query range")] = None,
    query_modality: Annotated[
        Optional[_choices(("audio", "visual"))],
        typer.Option("--query-modality", help="default: audio for audio files, visual for videos"),
    ] = None,
    json_out: JsonOut = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="score timeline PNG")] = None,
    html: Annotated[
        Optional[Path], typer.Option("--html", help="one HTML page: the query and the target, with the match")
    ] = None,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
) -> None:
    """Cross-modality localization: where in TARGET does the other modality match the query?"""
    from .pipeline.apps.query import cml_query, format_query
    from .pipeline.apps.save import save_query

    network = _network(visual_weights_file, audio_weights_file, audio_pca_file, device)  # before the checkpoint is read
    result = cml_query(
        checkpoint,
        query,
        target,
        query_start_s=query_start,
        query_end_s=query_end,
        query_modality=query_modality,
        **network.as_kwargs(),
    )
    typer.echo(format_query(result))
    save_query(result, json_path=json_out, plot=plot, html=html)


@app.command()
def export(
    results: Annotated[Path, typer.Argument(help="the JSON of `avel localize --json`")],
    fmt: Annotated[
        _choices(("activitynet", "fiftyone", "labelstudio")),
        typer.Option(
            "--format",
            help="activitynet (results JSON) | fiftyone (a FiftyOneTemporalDetectionDataset folder) | labelstudio (tasks with predictions)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="the file to write (fiftyone: a folder)")],
    frame_rate: Annotated[
        float,
        typer.Option(
            "--frame-rate",
            min=0.001,
            max=1000.0,
            help="the videos' frames a second (fiftyone, labelstudio count frames)",
        ),
    ] = 25.0,
) -> None:
    """Write `avel localize` results in the format another tool reads."""
    from .pipeline.apps.exports import export_file

    typer.echo(f"wrote {export_file(results, fmt, out, frame_rate=frame_rate)}")


@app.command("detect-eval")
def detect_eval(
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="ActivityNet ground-truth JSON")],
    results: Annotated[
        Path,
        typer.Option(
            "--results",
            help="ActivityNet results JSON (`avel export --format activitynet`), or `avel localize --json` output",
        ),
    ],
    subset: Annotated[
        Optional[_choices(("training", "validation", "testing"))],
        typer.Option("--subset", help="only the ground truth's videos of this subset"),
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Temporal detection scores: mAP at tIoU 0.1..0.9, their mean, segment- and event-level F1."""
    from .pipeline.apps.exports import evaluate_files, format_evaluation

    report = evaluate_files(ground_truth, results, subset)
    typer.echo(format_evaluation(report))
    _write_json(json_out, {"ground_truth": str(ground_truth), "results": str(results), "subset": subset, **report})


@app.command()
def live(
    source: Annotated[
        Optional[str],
        typer.Argument(
            help="`-` (MPEG-TS or Matroska on stdin), a URL (udp://, rtsp://, http://, srt://...) or a FIFO"
        ),
    ] = None,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="an SEL checkpoint")] = ...,
    context: Annotated[
        Optional[int], typer.Option("--context", help="seconds the model sees (default: the checkpoint's window)")
    ] = None,
    lookahead: Annotated[
        int, typer.Option("--lookahead", help="revise each second once, this many seconds later (0: never)")
    ] = 0,
    on_stall: Annotated[
        _choices(("wait", "end")), typer.Option("--on-stall", help="when no packet comes for --stall-s")
    ] = "wait",
    stall_s: Annotated[float, typer.Option("--stall-s", help="seconds without a packet that make a stall")] = 5.0,
    frames_per_segment: Annotated[
        Optional[int], typer.Option("--frames-per-segment", help="frames a second (default: the checkpoint's)")
    ] = None,
    max_pending: Annotated[
        int, typer.Option("--max-pending", help="whole seconds that may wait for the model; more are dropped")
    ] = 2,
    video_device: Annotated[
        Optional[str],
        typer.Option("--video-device", help="a v4l2 capture device, e.g. /dev/video0 (instead of SOURCE)"),
    ] = None,
    audio_device: Annotated[
        Optional[str],
        typer.Option("--audio-device", help="with --video-device: an ALSA device (default, hw:0) or pulse:NAME"),
    ] = None,
    html: Annotated[
        Optional[int],
        typer.Option(
            "--html",
            min=0,
            max=65535,
            help="serve a live page on http://127.0.0.1:PORT (0: any free port, its URL on stderr)",
        ),
    ] = None,
    visual_weights_file: VisualWeights = None,
    audio_weights_file: AudioWeights = None,
    audio_pca_file: AudioPca = None,
    device: Device = "auto",
) -> None:
    """Localize events in a stream while it plays: a JSON line a second, and one per event start and end."""
    from .pipeline.apps.live import LiveConfig, run_live_command

    resolve_device(device)  # before the checkpoint is read
    config = LiveConfig(
        context_s=context,
        lookahead_s=lookahead,
        on_stall=on_stall,
        stall_s=stall_s,
        frames_per_segment=frames_per_segment,
        max_pending=max_pending,
    )
    run_live_command(
        source,
        checkpoint,
        config,
        html_port=html,
        video_device=video_device,
        audio_device=audio_device,
        device=device,
        visual_weights_file=visual_weights_file,
        audio_weights_file=audio_weights_file,
        audio_pca_file=audio_pca_file,
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for everything the demo writes")] = Path("avel-demo"),
    videos: Annotated[int, typer.Option("--videos", min=12)] = 48,
    classes: Annotated[int, typer.Option("--classes", min=2, max=28)] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Device = "auto",
) -> None:
    """End to end, offline: generate a dataset, extract, train SEL and CML, evaluate, localize."""
    from .pipeline.apps.demo import DemoConfig, run_demo

    resolve_device(device)
    run_demo(
        DemoConfig(out_dir=str(out), videos=videos, classes=classes, seed=seed, device=device),
        log=lambda m: typer.echo(m),
    )


# -- one-line errors ----------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error is one line on stderr: exit 2 for bad input, 130 for Ctrl-C."""
    try:
        if _STARTING and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: Ctrl-C is KeyboardInterrupt again
        code = app(args=argv, standalone_mode=False)
    except ConfigError as e:
        flag = FLAGS.get(e.field) or "--" + e.field.replace("_", "-")  # every ConfigError that gets here is an option
        typer.echo(f"error: {_one_line(f'{flag} {e.value!r}: {e.problem}')}", err=True)
        return 2
    except Interrupted as e:  # Ctrl-C or SIGTERM in a batch job: what was finished is kept
        typer.echo(f"interrupted: {_one_line(e)}", err=True)
        return e.exit_status
    except AvelError as e:
        typer.echo(f"error: {_one_line(e)}", err=True)
        return 2
    except TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if type(e).__name__ == "NoArgsIsHelpError" and getattr(e, "ctx", None) is not None:
            typer.echo(e.ctx.get_help())
            return 0
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        command = getattr(getattr(e, "ctx", None), "command_path", "avel")
        typer.echo(f"error: {command}: {_one_line(message)}", err=True)
        return getattr(e, "exit_code", 2) or 2
    except KeyboardInterrupt as e:  # Ctrl-C outside a batch job's safe points (loading, building the models)
        typer.echo(f"interrupted: {_one_line(e) or 'SIGINT'}", err=True)
        return 130
    except Exception as e:  # a bug, not bad input: still one line (AVEL_DEBUG=1 shows the traceback)
        if isinstance(e, OSError) and e.filename is not None:  # a file the system refused: bad input
            typer.echo(f"error: {shown(e.filename)}: {_one_line(e.strerror or e)}", err=True)
            return 2
        if os.environ.get("AVEL_DEBUG") == "1":
            raise
        typer.echo(f"error: unexpected {type(e).__name__}: {_one_line(e)} (AVEL_DEBUG=1 shows the traceback)", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
