"""Weakly supervised event localization (issue #15) against supervised SEL on the generated
feature sets (pipeline/data/synth.py), 3 seeds each, and the two baselines.

    python benchmarks/weak_sel.py run --noise 1.0 --runs sel/dam wsel/dam --out results/n1.json
    python benchmarks/weak_sel.py table results/*.json

`run` generates one set in RAM (the video-level labels from its plan: one class per video),
trains each TASK/MODEL[:WEAK_RELEVANCE] for --seeds seeds with the same budget (the "avel"
recipe: 64 videos a batch, --epochs epochs, best validation epoch; wsel selects on video
labels only), and writes test SEL accuracy mean / std with the baselines: majority class
(the most frequent training second label everywhere) and "whole video = the label" (every
second of a test video as its true video class: the most video labels give without
localization), and for each model the share of test background seconds it predicts as
background (does it localize, or only classify videos?). `table` prints all files as one
table, with each model's weak / supervised ratio and the published AVE numbers beside them.

A run is TASK/MODEL, TASK/MODEL:WEAK_RELEVANCE (wsel DAM) or TASK/MODEL:FIELD=VALUE,... (any
config fields, e.g. sel/psp:propagation=false); `--runs side-by-side` is the eight of issue
#26: DAM, AV_att, PSP and CMBS, supervised and weak. `--audio-noise` / `--visual-noise` set
one modality's noise apart from `--noise` (the generator's audio_noise / visual_noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


SIDE_BY_SIDE = ["sel/dam", "sel/av_att", "sel/psp", "sel/cmbs", "wsel/dam", "wsel/av_att", "wsel/psp", "wsel/cmbs"]
# SEL accuracy (%) on AVE's test split as published, on the released VGG-19 + VGGish features
# (Tian et al. ECCV 2018; DAM: Wu et al. ICCV 2019, which reports no weak figure; PSP: Zhou et
# al. CVPR 2021; CMBS: Xia and Zhao CVPR 2022)
PUBLISHED = {
    "sel/av_att": 72.7,
    "wsel/av_att": 66.7,
    "sel/dam": 74.5,
    "sel/psp": 77.8,
    "wsel/psp": 73.5,
    "sel/cmbs": 79.3,
    "wsel/cmbs": 74.2,
}


def parse_value(text: str):
    """A config value from the command line: true/false, an int, a float, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_spec(spec: str) -> tuple[str, str, dict]:
    """TASK/MODEL[:WEAK_RELEVANCE | :FIELD=VALUE,...] -> (task, name, config fields)."""
    key, _, rest = spec.partition(":")
    task, _, name = key.partition("/")
    if not rest:
        return task, name, {}
    if "=" not in rest:
        return task, name, {"weak_relevance": rest}
    return task, name, {k: parse_value(v) for k, v in (item.split("=", 1) for item in rest.split(","))}


def run(args: argparse.Namespace) -> None:
    import torch

    from avel.models.registry import model_config
    from avel.pipeline.apps.demo import majority_accuracy
    from avel.pipeline.data.dataset import video_labels_from_classes
    from avel.pipeline.data.synth import (
        FeatureSynthConfig,
        synth_features,
        video_contents,
    )
    from avel.pipeline.train.loop import TrainConfig, train_seeds
    from avel.pipeline.train.weak import whole_video_accuracy

    torch.set_num_threads(args.threads)
    cfg = FeatureSynthConfig(
        videos=args.videos,
        classes=args.classes,
        noise=args.noise,
        audio_noise=args.audio_noise,
        visual_noise=args.visual_noise,
        distractor=args.distractor,
        visual_dim=args.visual_dim,
        seed=args.data_seed,
    )
    data = synth_features(cfg)
    data.video_labels = video_labels_from_classes([c.plan.class_index for c in video_contents(cfg)], cfg.classes)
    out = {
        "data": dataclasses.asdict(cfg),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "majority": majority_accuracy(data, "test"),
        "whole_video": whole_video_accuracy(data, "test"),
        "load_before": os.getloadavg(),
        "runs": {},
    }
    specs = SIDE_BY_SIDE if args.runs == ["side-by-side"] else args.runs
    for spec in specs:
        task, name, fields = run_spec(spec)
        model = model_config(task=task, name=name, **fields)
        t0 = time.perf_counter()
        res = train_seeds(data, TrainConfig(model, epochs=args.epochs, progress=False), list(range(args.seeds)))
        where = [localization(r.model, data, "test") for r in res.results]
        out["runs"][spec] = {
            "mean": res.mean["accuracy"],
            "std": res.std["accuracy"],
            "per_seed": [r.test["accuracy"] for r in res.results],
            "best_epochs": [r.best_epoch for r in res.results],
            "localization": where,
            "model_config": model.to_dict(),  # the defaults in force, spelled out
            "seconds": round(time.perf_counter() - t0, 1),
        }
        bg = background_share(where)
        print(
            f"{set_name(cfg.noise, cfg.audio_noise, cfg.visual_noise, cfg.distractor)} {spec}: "
            f"{res.mean['accuracy']:.4f} +- "
            f"{res.std['accuracy']:.4f}, background seconds predicted background {bg:.3f} "
            f"({out['runs'][spec]['seconds']} s)",
            flush=True,
        )
    out["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


def localization(model, data, split: str) -> dict:
    """Whether a model localizes, not only classifies: on the test seconds, the share of
    background seconds it predicts as background, of event seconds it predicts as an event
    (any class), and of event seconds it gets exactly right."""
    import torch

    from avel.pipeline.train.loop import prepare_features

    feats = prepare_features(data, "sel")
    idx = data.split(split)
    model.eval()
    with torch.no_grad():
        pred = model.predict(*feats.batch(idx, torch.device("cpu"))[:2])  # (V, T)
    labels = data.labels[idx]
    bg, said_bg = labels == data.background, pred == data.background

    def share(mask):
        return mask.double().mean().item() if mask.numel() else float("nan")

    return {
        "background_seconds": int(bg.sum()),
        "event_seconds": int((~bg).sum()),
        "background_as_background": share(said_bg[bg]),
        "event_as_event": share(~said_bg[~bg]),
        "event_exact": share(pred[~bg] == labels[~bg]),
    }


def background_share(localizations: list[dict]) -> float:
    """The mean over seeds of the share of test background seconds predicted background."""
    return sum(w["background_as_background"] for w in localizations) / len(localizations)


def cell(run: dict) -> str:
    """mean +- std, and (when recorded) the share of test background seconds predicted background."""
    text = f"{run['mean']:.3f} +- {run['std']:.3f}"
    if run.get("localization"):
        text += f" (bg {background_share(run['localization']):.2f})"
    return text


def order(spec: str) -> int:
    """DAM, AV_att, PSP, CMBS, then any other model."""
    name = spec.split(":")[0].split("/")[-1]
    return ("dam", "av_att", "psp", "cmbs").index(name) if name in ("dam", "av_att", "psp", "cmbs") else 4


def table(args: argparse.Namespace) -> None:
    sets: dict[tuple, dict] = {}
    for f in args.files:
        r = json.loads(Path(f).read_text())
        d = r["data"]
        key = (d["noise"], d.get("audio_noise"), d.get("visual_noise"), d["distractor"], d["videos"], r["epochs"])
        merged = sets.setdefault(key, {"majority": r["majority"], "whole_video": r["whole_video"], "runs": {}})
        merged["runs"].update(r["runs"])
    specs = sorted({s for m in sets.values() for s in m["runs"]}, key=lambda s: (s.startswith("wsel"), order(s), s))
    print("| set | " + " | ".join(specs) + " | weak/sup | majority | whole video = label |")
    print("|---" * (len(specs) + 4) + "|")
    published = [f"{PUBLISHED[s]:.1f}" if s in PUBLISHED else "" for s in specs]
    print("| AVE, published (%) | " + " | ".join(published) + " | | | |")
    for (noise, audio, visual, distractor, videos, epochs), m in sorted(
        sets.items(), key=lambda kv: [-1 if x is None else x for x in kv[0]]
    ):
        cells = [cell(m["runs"][s]) if s in m["runs"] else "" for s in specs]
        ratio = ", ".join(
            f"{name} {m['runs'][f'wsel/{name}']['mean'] / m['runs'][f'sel/{name}']['mean']:.3f}"
            for name in ("dam", "av_att", "psp", "cmbs")
            if f"sel/{name}" in m["runs"] and f"wsel/{name}" in m["runs"] and m["runs"][f"sel/{name}"]["mean"]
        )
        name = set_name(noise, audio, visual, distractor) + f" ({videos} videos, {epochs} epochs)"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {m['majority']:.3f} | {m['whole_video']:.3f} |")


def set_name(noise: float, audio: float | None, visual: float | None, distractor: float) -> str:
    """noise 1.0 / audio 1.25, visual 0.75 (where either is set apart), distractor."""
    if audio is None and visual is None:
        text = f"noise {noise}"
    else:
        text = f"audio {noise if audio is None else audio}, visual {noise if visual is None else visual}"
    return text + (f", distractor {distractor}" if distractor else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--noise", type=float, default=1.0)
    r.add_argument("--audio-noise", type=float, default=None, help="the audio features' noise (default: --noise)")
    r.add_argument("--visual-noise", type=float, default=None, help="the visual features' noise (default: --noise)")
    r.add_argument("--distractor", type=float, default=0.0)
    r.add_argument("--videos", type=int, default=800)
    r.add_argument("--classes", type=int, default=28)
    r.add_argument("--visual-dim", type=int, default=128)
    r.add_argument("--data-seed", type=int, default=0)
    r.add_argument("--epochs", type=int, default=60)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument(
        "--runs",
        nargs="+",
        default=["sel/dam", "wsel/dam", "wsel/av_att"],
        help="TASK/MODEL[:WEAK_RELEVANCE | :FIELD=VALUE,...] ..., or side-by-side (the eight of issue #26)",
    )
    r.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    args = p.parse_args()
    from avel.core.errors import ConfigError

    try:
        (run if args.command == "run" else table)(args)
    except ConfigError as e:  # a bad generator option: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
