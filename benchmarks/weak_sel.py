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
table, with weak / supervised DAM ratios.
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


def run(args: argparse.Namespace) -> None:
    import torch
    from avel.models.registry import model_config
    from avel.pipeline.data.dataset import video_labels_from_classes
    from avel.pipeline.apps.demo import majority_accuracy
    from avel.pipeline.data.synth import (
        FeatureSynthConfig,
        synth_features,
        video_contents,
    )
    from avel.pipeline.train.loop import TrainConfig, train_seeds
    from avel.pipeline.train.weak import whole_video_accuracy

    torch.set_num_threads(args.threads)
    cfg = FeatureSynthConfig(videos=args.videos, classes=args.classes, noise=args.noise, distractor=args.distractor,
                             visual_dim=args.visual_dim, seed=args.data_seed)
    data = synth_features(cfg)
    data.video_labels = video_labels_from_classes([c.plan.class_index for c in video_contents(cfg)], cfg.classes)
    out = {"data": dataclasses.asdict(cfg), "epochs": args.epochs, "seeds": args.seeds,
           "majority": majority_accuracy(data, "test"), "whole_video": whole_video_accuracy(data, "test"),
           "load_before": os.getloadavg(), "runs": {}}
    for spec in args.runs:
        key, _, relevance = spec.partition(":")
        task, name = key.split("/")
        model = model_config(task=task, name=name, **({"weak_relevance": relevance} if relevance else {}))
        t0 = time.perf_counter()
        res = train_seeds(data, TrainConfig(model, epochs=args.epochs, progress=False), list(range(args.seeds)))
        where = [localization(r.model, data, "test") for r in res.results]
        out["runs"][spec] = {"mean": res.mean["accuracy"], "std": res.std["accuracy"],
                             "per_seed": [r.test["accuracy"] for r in res.results],
                             "best_epochs": [r.best_epoch for r in res.results],
                             "localization": where,
                             "model_config": model.to_dict(),  # the defaults in force, spelled out
                             "seconds": round(time.perf_counter() - t0, 1)}
        bg = background_share(where)
        print(f"noise {cfg.noise} distractor {cfg.distractor} {spec}: {res.mean['accuracy']:.4f} +- "
              f"{res.std['accuracy']:.4f}, background seconds predicted background {bg:.3f} "
              f"({out['runs'][spec]['seconds']} s)", flush=True)
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
    share = lambda mask: mask.double().mean().item() if mask.numel() else float("nan")
    return {"background_seconds": int(bg.sum()), "event_seconds": int((~bg).sum()),
            "background_as_background": share(said_bg[bg]), "event_as_event": share(~said_bg[~bg]),
            "event_exact": share(pred[~bg] == labels[~bg])}


def background_share(localizations: list[dict]) -> float:
    """The mean over seeds of the share of test background seconds predicted background."""
    return sum(w["background_as_background"] for w in localizations) / len(localizations)


def cell(run: dict) -> str:
    """mean +- std, and (when recorded) the share of test background seconds predicted background."""
    text = f"{run['mean']:.3f} +- {run['std']:.3f}"
    if run.get("localization"):
        text += f" (bg {background_share(run['localization']):.2f})"
    return text


def table(args: argparse.Namespace) -> None:
    sets: dict[tuple, dict] = {}
    for f in args.files:
        r = json.loads(Path(f).read_text())
        key = (r["data"]["noise"], r["data"]["distractor"], r["data"]["videos"], r["epochs"])
        merged = sets.setdefault(key, {"majority": r["majority"], "whole_video": r["whole_video"], "runs": {}})
        merged["runs"].update(r["runs"])
    specs = sorted({s for m in sets.values() for s in m["runs"]})
    print("| set | " + " | ".join(specs) + " | weak/sup DAM | majority | whole video = label |")
    print("|---" * (len(specs) + 4) + "|")
    for (noise, distractor, videos, epochs), m in sorted(sets.items()):
        cells = [cell(m["runs"][s]) if s in m["runs"] else "" for s in specs]
        sup, weak = m["runs"].get("sel/dam"), m["runs"].get("wsel/dam")
        ratio = f"{weak['mean'] / sup['mean']:.3f}" if sup and weak and sup['mean'] else ""
        name = f"noise {noise}" + (f", distractor {distractor}" if distractor else "") + f" ({videos} videos, {epochs} epochs)"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {m['majority']:.3f} | {m['whole_video']:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--noise", type=float, default=1.0)
    r.add_argument("--distractor", type=float, default=0.0)
    r.add_argument("--videos", type=int, default=800)
    r.add_argument("--classes", type=int, default=28)
    r.add_argument("--visual-dim", type=int, default=128)
    r.add_argument("--data-seed", type=int, default=0)
    r.add_argument("--epochs", type=int, default=60)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--runs", nargs="+", default=["sel/dam", "wsel/dam", "wsel/av_att"])
    r.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    args = p.parse_args()
    (run if args.command == "run" else table)(args)


if __name__ == "__main__":
    main()
