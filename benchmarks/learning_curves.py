"""Learning curves on generated hard features (issue #11): DAM against AV_att (SEL) and
AVDLN (CML), and DAM's ablations, across noise levels and training-set sizes, mean +- std
over seeds; a table, the bar check and a PNG.

    python benchmarks/learning_curves.py --quick                    # noise 1, sizes 160 / 640, DAM vs the baselines
    python benchmarks/learning_curves.py                            # the full grid (hours on 2 CPU cores)
    python benchmarks/learning_curves.py --noise 1 --sizes 640 --variants dam av_att --seeds 0 --visual-dim 128
    python benchmarks/learning_curves.py --calibrate-only --noise 1 2 3 4

Data: `pipeline.synth_features` (what `avel synth --features-only` writes), AVE's shapes
(7x7x512 visual maps, 128-d audio, 28 classes, T = 10), one set per (noise, seed): the
largest training size plus fixed validation and test splits; a smaller training size is the
first N videos of the train split, so sizes are nested and every size is tested on the same
videos. The data seed is the training seed: the spread over seeds covers both.

Every run is one line of a JSONL file (`--out`/runs.jsonl): a rerun skips the runs already
there, so an interrupted grid resumes. Calibration: a per-second linear and MLP classifier
(features of one second: audio, visual mean and max over the 49 cells; classes + background)
on the 640-video train split, test accuracy per noise level: how hard each level is.

The bar of issue #11 is checked for `--bar-dam` (a DAM variant) against AV_att and for CML
DAM against AVDLN. Epochs: `--epochs` at 640 training videos (or the largest size if
smaller); a smaller size gets proportionally more epochs, i.e. the same number of batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from avel.models.registry import PUBLISHED_DEFAULTS, model_config  # noqa: E402
from avel.models.sel import video_category  # noqa: E402
from avel.pipeline.data.dataset import AVData  # noqa: E402
from avel.pipeline.data.synth import FeatureSynthConfig, synth_features  # noqa: E402
from avel.pipeline.train.loop import TrainConfig, prepare_features, train  # noqa: E402

VAL_VIDEOS, TEST_VIDEOS = 80, 200
PROBE_VIDEOS = 640
BAR_RANGE = (0.6, 0.97)  # AV_att accuracies where the bar applies
BAR_MARGIN = 0.01  # DAM >= AV_att - 1 point


@dataclass(frozen=True)
class Variant:
    """One model and recipe: ModelConfig and TrainConfig fields on top of the defaults."""

    label: str
    task: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


# SEL DAM before 2026-11-28 (the published eq. 7 and no input dropout, warm-up 0.4): the recipe the
# diagnosis variants below were measured with, kept explicit so that their records keep their meaning
EQ7 = {**PUBLISHED_DEFAULTS, "warmup": 0.4}
VARIANTS = {
    "av_att": Variant("AV_att", "sel", {"name": "av_att"}),
    "av_att-id": Variant("AV_att, input dropout 0.2", "sel", {"name": "av_att", "input_dropout": 0.2}),
    "dam": Variant("DAM (defaults)", "sel"),
    "dam-mean": Variant("DAM, eq. 7 (--relevance-fusion mean)", "sel", {"relevance_fusion": "mean"}),
    "dam-eq7": Variant("DAM, eq. 7, earlier recipe", "sel", EQ7),
    "dam-geo": Variant("DAM, geometric fusion, earlier recipe", "sel", {**EQ7, "relevance_fusion": "geometric"}),
    "dam-paper": Variant(
        "DAM, the paper's loss alone", "sel", {**EQ7, "warmup": 0.0, "segment_loss": 0.0, "relevance_smoothing": 0.0}
    ),
    "dam-avg": Variant("DAM avg-pool embedding", "sel", {**EQ7, "embedding": "avg"}),
    "dam-bilstm": Variant("DAM Bi-LSTM embedding", "sel", {**EQ7, "embedding": "bilstm"}),
    "dam-self": Variant("DAM self-matching", "sel", {**EQ7, "matching": "self"}),
    "dam-none": Variant("DAM w/o matching", "sel", {**EQ7, "matching": "none"}),
    "dam-lam0.7": Variant("DAM lambda 0.7", "sel", {**EQ7, "lam": 0.7}),
    "dam-lam0.3": Variant("DAM lambda 0.3", "sel", {**EQ7, "lam": 0.3}),
    "dam-lam1": Variant("DAM lambda 1 (category loss alone)", "sel", {**EQ7, "lam": 1.0}),
    "dam-warmup": Variant(
        "DAM, warm-up 0.4", "sel", {**EQ7, "warmup": 0.4, "segment_loss": 0.0, "relevance_smoothing": 0.0}
    ),
    "dam-segloss": Variant(
        "DAM + segment loss 1", "sel", {**EQ7, "warmup": 0.0, "segment_loss": 1.0, "relevance_smoothing": 0.0}
    ),
    "dam-warmup-segloss": Variant(
        "DAM, warm-up 0.4 + segment loss 1",
        "sel",
        {**EQ7, "warmup": 0.4, "segment_loss": 1.0, "relevance_smoothing": 0.0},
    ),
    "dam-avg-smooth": Variant(
        "DAM avg-pool + relevance smoothing 0.2",
        "sel",
        {**EQ7, "warmup": 0.0, "segment_loss": 0.0, "embedding": "avg", "relevance_smoothing": 0.2},
    ),
    "dam-ws-smooth": Variant(
        "DAM, warm-up 0.4 + segment loss 1 + relevance smoothing 0.2",
        "sel",
        {**EQ7, "warmup": 0.4, "segment_loss": 1.0, "relevance_smoothing": 0.2},
    ),
    "dam-ws-avg-smooth": Variant(
        "DAM, warm-up 0.4 + segment loss 1 + avg-pool + relevance smoothing 0.2",
        "sel",
        {**EQ7, "warmup": 0.4, "segment_loss": 1.0, "embedding": "avg", "relevance_smoothing": 0.2},
    ),
    "dam-ws-avg-smooth3": Variant(
        "DAM, warm-up 0.4 + segment loss 1 + avg-pool + relevance smoothing 0.3",
        "sel",
        {**EQ7, "warmup": 0.4, "segment_loss": 1.0, "embedding": "avg", "relevance_smoothing": 0.3},
    ),
    "cml-dam": Variant("DAM (CML)", "cml"),
    "cml-avdln": Variant("AVDLN", "cml", {"name": "avdln"}),
    "cml-dam-avg": Variant("DAM avg-pool (CML)", "cml", {"embedding": "avg"}),
    "cml-dam-self": Variant("DAM self-matching (CML)", "cml", {"matching": "self"}),
}
FULL = {"noise": [0.5, 0.75, 1.0, 1.25, 1.5], "sizes": [160, 640, 2560], "seeds": [0, 1, 2], "variants": list(VARIANTS)}
QUICK = {
    "noise": [1.0],
    "sizes": [160, 640],
    "seeds": [0, 1, 2],
    "variants": ["dam", "dam-paper", "av_att", "cml-dam", "cml-avdln"],
}


# --- data -------------------------------------------------------------------------------------
def synth_config(
    noise: float,
    seed: int,
    train_videos: int,
    visual_dim: int = 512,
    *,
    val_videos: int = VAL_VIDEOS,
    test_videos: int = TEST_VIDEOS,
    classes: int = 28,
) -> FeatureSynthConfig:
    """The generator's config of one set: train_videos + val_videos + test_videos videos, AVE
    shapes (unless a narrower visual width is asked for)."""
    videos = train_videos + val_videos + test_videos
    return FeatureSynthConfig(
        videos=videos,
        classes=classes,
        noise=noise,
        seed=seed,
        visual_dim=visual_dim,
        visual_active=min(32, visual_dim),
        split_fractions=(train_videos / videos, val_videos / videos, test_videos / videos),
    )


def make_data(
    noise: float,
    seed: int,
    train_videos: int,
    visual_dim: int = 512,
    *,
    val_videos: int = VAL_VIDEOS,
    test_videos: int = TEST_VIDEOS,
    classes: int = 28,
) -> AVData:
    """The set of `synth_config`, float16 in RAM."""
    data = synth_features(
        synth_config(
            noise, seed, train_videos, visual_dim, val_videos=val_videos, test_videos=test_videos, classes=classes
        ),
        dtype=torch.float16,
    )
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [train_videos, val_videos, test_videos]
    return data


def subset(data: AVData, train_videos: int) -> AVData:
    """The same data with only the first `train_videos` videos of the train split for training."""
    return dataclasses.replace(data, splits={**data.splits, "train": data.splits["train"][:train_videos]})


def epochs_for(size: int, epochs: int, reference: int = 640) -> int:
    """Small training sets get more epochs: at least as many batches as `reference` videos x
    `epochs` (reference: 640, or the largest size of a grid that stays below it)."""
    return max(epochs, math.ceil(epochs * reference / size))


# --- diagnostics ------------------------------------------------------------------------------
@torch.no_grad()
def dam_diagnostics(model, data: AVData) -> dict:
    """What a DAM SEL model's two branches do: video category accuracy on train and test,
    mean relevance on test background and event seconds (background should be < 0.5)."""
    feats = prepare_features(data, "sel")
    device = next(model.parameters()).device
    model.eval()
    out = {}
    for split in ("train", "test"):
        idx = data.splits[split]
        cats, rels = [], []
        for i in range(0, len(idx), 128):
            audio, visual, _ = feats.batch(idx[i : i + 128], device)
            o = model(audio, visual)
            cats.append(o.category_logits.argmax(-1).cpu())
            if o.relevance is not None:
                rels.append(o.relevance.cpu())
        labels = data.labels[idx]
        truth = video_category(labels, data.background)
        has = truth >= 0
        out[f"category_{split}"] = (torch.cat(cats)[has] == truth[has]).double().mean().item()
        if rels and split == "test":
            relevance = torch.cat(rels)
            background = labels == data.background
            out["relevance_background_test"] = relevance[background].double().mean().item()
            out["relevance_event_test"] = relevance[~background].double().mean().item()
    return out


def probe(data: AVData, kind: str, *, epochs: int = 60, seed: int = 0) -> float:
    """Per-second classifier (linear | mlp) on one second's audio and visual mean / max over the
    cells, trained on the train split, early-stopped on validation -> test accuracy (every class
    and background)."""
    torch.manual_seed(seed)

    def xy(split: str):
        idx = data.splits[split]
        v = data.visual[idx].float()  # (V, T, 7, 7, D)
        x = torch.cat([data.audio[idx].float(), v.mean((2, 3)), v.amax((2, 3))], -1).flatten(0, 1)
        return x, data.labels[idx].flatten()

    (xtr, ytr), (xva, yva), (xte, yte) = xy("train"), xy("val"), xy("test")
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva, xte = (xtr - mu) / sd, (xva - mu) / sd, (xte - mu) / sd
    width, C = xtr.shape[1], data.num_classes
    if kind == "linear":
        net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(width, C))
    else:
        net = torch.nn.Sequential(
            torch.nn.Dropout(0.2),
            torch.nn.Linear(width, 256),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(256, C),
        )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    best, best_test = -1.0, 0.0
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(xtr)).split(256):
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = (net(xva).argmax(-1) == yva).double().mean().item()
            if val > best:
                best, best_test = val, (net(xte).argmax(-1) == yte).double().mean().item()
    return best_test


# --- runs -------------------------------------------------------------------------------------
def run_one(data: AVData, variant: Variant, size: int, seed: int, epochs: int, reference: int = 640) -> dict:
    cfg = TrainConfig(
        model_config(task=variant.task, **variant.model),
        seed=seed,
        progress=False,
        **{"epochs": epochs_for(size, epochs, reference), **variant.train},
    )
    if variant.model.get("name") == "avdln" and "epochs" not in variant.train:
        cfg = dataclasses.replace(cfg, epochs=None)  # AVDLN: its own (reference) recipe
    result = train(subset(data, size), cfg)
    row = {
        "test": result.test,
        "val": result.val,
        "best_epoch": result.best_epoch,
        "epochs": cfg.resolved.epochs,
        "seconds": round(result.seconds, 1),
    }
    if variant.task == "sel" and cfg.model.name == "dam":
        row["diagnostics"] = dam_diagnostics(result.model, subset(data, size))
    return row


def load_runs(path: Path) -> dict:
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs[(r["noise"], r["size"], r["seed"], r["variant"])] = r
    return runs


def run_grid(args, runs: dict, path: Path) -> None:
    for noise in args.noise:
        for seed in args.seeds:
            todo = [(size, v) for size in args.sizes for v in args.variants if (noise, size, seed, v) not in runs]
            calib = ("calibration", noise, seed)
            need_probe = args.calibrate and (noise, 0, seed, "probe") not in runs
            if not todo and not need_probe:
                continue
            t0 = time.perf_counter()
            data = make_data(
                noise,
                seed,
                max(args.sizes + ([args.probe_videos] if need_probe else [])),
                args.visual_dim,
                val_videos=args.val_videos,
                test_videos=args.test_videos,
                classes=args.classes,
            )
            print(f"noise {noise} seed {seed}: data in {time.perf_counter() - t0:.0f} s", flush=True)
            records = []
            if need_probe:
                probe_data = subset(data, args.probe_videos)
                records.append(
                    {
                        "noise": noise,
                        "size": 0,
                        "seed": seed,
                        "variant": "probe",
                        "kind": calib[0],
                        "linear": probe(probe_data, "linear", seed=seed),
                        "mlp": probe(probe_data, "mlp", seed=seed),
                    }
                )
            for size, name in todo:
                row = run_one(data, VARIANTS[name], size, seed, args.epochs, reference=min(640, max(args.sizes)))
                records.append({"noise": noise, "size": size, "seed": seed, "variant": name, **row})
                print(
                    f"  {name:14s} size {size:5d} seed {seed}: {fmt_metrics(records[-1]['test'])} "
                    f"({row['seconds']:.0f} s, best epoch {row['best_epoch']}/{row['epochs']})",
                    flush=True,
                )
                append(path, records[-1])
            if need_probe:
                append(path, records[0])
            for r in records:
                runs[(r["noise"], r["size"], r["seed"], r["variant"])] = r
            del data


def append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# --- tables -----------------------------------------------------------------------------------
def fmt_metrics(m: dict) -> str:
    """SEL: accuracy; CML: each figure under its direction's name (never a positional pair)."""
    if "accuracy" in m:
        return f"accuracy {m['accuracy']:.3f}"
    return f"A2V {m['a2v']:.3f}, V2A {m['v2a']:.3f}"


def mean_std(values: list[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):  # a split without a CML query has no figure
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: dict, noise: list, sizes: list, variants: list) -> dict:
    """(noise, size, variant, metric) -> (mean, std, n) over the seeds present."""
    out = {}
    for n in noise:
        for s in sizes:
            for v in variants:
                rows = [r for (rn, rs, _, rv), r in runs.items() if (rn, rs, rv) == (n, s, v)]
                if not rows:
                    continue
                for metric in rows[0]["test"]:
                    if metric in ("accuracy", "a2v", "v2a"):
                        m, sd = mean_std([r["test"][metric] for r in rows])
                        out[(n, s, v, metric)] = (m, sd, len(rows))
                for metric in rows[0].get("diagnostics", {}):
                    m, sd = mean_std([r["diagnostics"][metric] for r in rows])
                    out[(n, s, v, metric)] = (m, sd, len(rows))
    return out


def format_tables(summary: dict, noise: list, sizes: list, variants: list, calibration: dict) -> str:
    lines = []
    if calibration:
        lines += [
            "## Calibration: per-second classifiers (test accuracy, classes + background)",
            "",
            "| noise | linear | MLP |",
            "|---|---|---|",
        ]
        for n in noise:
            if n in calibration:
                lin, mlp = calibration[n]
                lines.append(f"| {n} | {lin[0]:.3f} +- {lin[1]:.3f} | {mlp[0]:.3f} +- {mlp[1]:.3f} |")
        lines.append("")
    sel = [v for v in variants if VARIANTS[v].task == "sel"]
    cml = [v for v in variants if VARIANTS[v].task == "cml"]
    for title, names, metrics in (("SEL test accuracy", sel, ["accuracy"]), ("CML test accuracy", cml, ["a2v", "v2a"])):
        if not names:
            continue
        head = [f"{VARIANTS[v].label} {m.upper() if m != 'accuracy' else ''}".strip() for v in names for m in metrics]
        lines += [
            f"## {title} (mean +- std over seeds)",
            "",
            "| noise | train videos | " + " | ".join(head) + " |",
            "|---|---|" + "---|" * len(head),
        ]
        for n in noise:
            for s in sizes:
                cells = []
                for v in names:
                    for m in metrics:
                        x = summary.get((n, s, v, m))
                        cells.append(f"{x[0]:.3f} +- {x[1]:.3f} (n={x[2]})" if x else "not run")
                if any(c != "not run" for c in cells):
                    lines.append(f"| {n} | {s} | " + " | ".join(cells) + " |")
        lines.append("")
    diag = [(n, s, v) for n in noise for s in sizes for v in sel if (n, s, v, "category_test") in summary]
    if diag:
        lines += [
            "## DAM diagnostics (means): category head train / test, relevance on test background / event seconds",
            "",
            "| noise | train videos | variant | category train | category test | relevance background | relevance event |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, s, v in diag:
            cells = [
                f"{summary[(n, s, v, k)][0]:.3f}" if (n, s, v, k) in summary else "-"
                for k in ("category_train", "category_test", "relevance_background_test", "relevance_event_test")
            ]
            lines.append(f"| {n} | {s} | {VARIANTS[v].label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def bar_check(summary: dict, noise: list, sizes: list, dam_variant: str = "dam") -> list[str]:
    """The issue's bar, per (noise, size) where the four models ran: where AV_att's mean lies in
    BAR_RANGE, DAM >= AV_att - 1 point; DAM's CML A2V and V2A above AVDLN's."""
    lines = []
    for n in noise:
        for s in sizes:
            att, dam = summary.get((n, s, "av_att", "accuracy")), summary.get((n, s, dam_variant, "accuracy"))
            if att and dam:
                applies = BAR_RANGE[0] <= att[0] <= BAR_RANGE[1]
                ok = dam[0] >= att[0] - BAR_MARGIN
                lines.append(
                    f"noise {n}, {s} videos: SEL {VARIANTS[dam_variant].label} {dam[0]:.3f} vs AV_att {att[0]:.3f}: "
                    + (("PASS" if ok else "FAIL") if applies else "AV_att outside [0.6, 0.97]: bar does not apply")
                )
            for m in ("a2v", "v2a"):
                d, a = summary.get((n, s, "cml-dam", m)), summary.get((n, s, "cml-avdln", m))
                if d and a:
                    lines.append(
                        f"noise {n}, {s} videos: CML {m.upper()} DAM {d[0]:.3f} vs AVDLN {a[0]:.3f}: "
                        + ("PASS" if d[0] > a[0] else "FAIL")
                    )
    return lines


def plot(summary: dict, noise: list, sizes: list, variants: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("SEL accuracy", [v for v in variants if VARIANTS[v].task == "sel"], "accuracy"),
        ("CML A2V", [v for v in variants if VARIANTS[v].task == "cml"], "a2v"),
        ("CML V2A", [v for v in variants if VARIANTS[v].task == "cml"], "v2a"),
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), len(noise), figsize=(4 * len(noise), 3.2 * len(panels)), squeeze=False)
    for r, (title, names, metric) in enumerate(panels):
        for c, n in enumerate(noise):
            ax = axes[r][c]
            for v in names:
                pts = [(s, summary[(n, s, v, metric)]) for s in sizes if (n, s, v, metric) in summary]
                if pts:
                    ax.errorbar(
                        [p[0] for p in pts],
                        [p[1][0] for p in pts],
                        yerr=[p[1][1] for p in pts],
                        marker="o",
                        capsize=3,
                        label=VARIANTS[v].label,
                    )
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(s) for s in sizes])
            ax.set_xticks([], minor=True)  # no log-scale minor labels over the sizes
            ax.set_title(f"{title}, noise {n}", fontsize=9)
            ax.set_xlabel("training videos", fontsize=8)
            ax.grid(alpha=0.3)
    legend = {}  # label -> handle, over every panel
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=min(len(legend), 4), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"the quick grid: {QUICK}")
    ap.add_argument("--noise", type=float, nargs="+")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=20, help="epochs at 640 training videos (more for fewer videos)")
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false", help="skip the per-second classifiers")
    ap.add_argument("--calibrate-only", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="print and plot what runs.jsonl holds; run nothing")
    ap.add_argument("--out", type=Path, default=None, help="default: learning-curves/visual<WIDTH>")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--bar-dam",
        default="dam",
        choices=[k for k, v in VARIANTS.items() if v.task == "sel"],
        help="the DAM variant the bar compares with AV_att",
    )
    ap.add_argument("--classes", type=int, default=28, help="event categories (AVE: 28)")
    ap.add_argument("--val-videos", type=int, default=VAL_VIDEOS)
    ap.add_argument("--test-videos", type=int, default=TEST_VIDEOS)
    ap.add_argument(
        "--probe-videos", type=int, default=PROBE_VIDEOS, help="training videos of the calibration classifiers"
    )
    ap.add_argument(
        "--visual-dim",
        type=int,
        default=512,
        help="visual feature width (AVE: 512; 128 makes the audio-guided attention 16x cheaper)",
    )
    args = ap.parse_args(argv)
    grid = QUICK if args.quick else FULL
    for k in ("noise", "sizes", "seeds", "variants"):
        if getattr(args, k) is None:
            setattr(args, k, grid[k])
    if args.calibrate_only:
        args.variants, args.calibrate = [], True
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or Path("learning-curves") / f"visual{args.visual_dim}"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.jsonl"
    runs = load_runs(path)
    if not args.report_only:
        run_grid(args, runs, path)
    summary = summarize(runs, args.noise, args.sizes, args.variants)
    calibration = {}
    for n in args.noise:
        rows = [r for (rn, _, _, rv), r in runs.items() if rn == n and rv == "probe"]
        if rows:
            calibration[n] = (mean_std([r["linear"] for r in rows]), mean_std([r["mlp"] for r in rows]))
    text = format_tables(summary, args.noise, args.sizes, args.variants, calibration)
    checks = bar_check(summary, args.noise, args.sizes, args.bar_dam)
    text += "\n## Bar (issue #11)\n\n" + "\n".join(f"- {c}" for c in checks) + "\n" if checks else ""
    print(text)
    (args.out / "tables.md").write_text(text)
    if args.variants and summary:
        plot(summary, args.noise, args.sizes, args.variants, args.out / "learning_curves.png")
        print(f"-> {args.out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
