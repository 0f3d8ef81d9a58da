"""The long-video localization rule study (issue #24): SEL models trained on 10-s clips, run
on long generated videos with sliding windows; which rule (LocalizeRule: stride, how windows
combine, smoothing, gap filling, minimum event length, event score) turns their per-second
scores into the best events, chosen on validation long videos and reported on test ones,
against today's rule, by video length.

Data (pipeline/data/synth_long.py, features only): training clips are 10-s cuts (every 10 s,
labels per second from the plan: background or the event's class) of long videos of their
own seed; validation and test long videos are other seeds, one set per length (`--lengths`,
seconds). The model is trained on the clips (pipeline/train/loop.py `train`: best
validation-clip epoch; its clip accuracy on test clips is reported beside the long-video
scores: what long videos lose against clips). Localization: `localize_features`' windows
(the model's 10-s window); per (stride, combine) the per-second scores are computed once per
video and every post-processing rule is applied to them (`result_from_scores`). Scores:
pipeline/train/detection.py (mAP at tIoU 0.1:0.9 and their mean, segment- and event-level F1).
The rule is chosen per model and seed by the average mAP over all validation videos (every
length pooled). Output: one JSON line per (model, seed) in OUT/runs.jsonl, and a table.

    python benchmarks/long_videos.py --out benchmarks/results/long_videos --seeds 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))  # the repository root is the package `avel`

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avel.models.registry import model_config  # noqa: E402
from avel.pipeline.apps.localize import result_from_scores, segment_scorer  # noqa: E402
from avel.pipeline.apps.outputs import ModelInfo  # noqa: E402
from avel.pipeline.apps.windows import LocalizeRule, WindowedScorer  # noqa: E402
from avel.pipeline.data.activitynet import Detection, Segment  # noqa: E402
from avel.pipeline.data.dataset import AVData  # noqa: E402
from avel.pipeline.data.synth_long import LongSynthConfig, class_names, feature_blocks, long_plans  # noqa: E402
from avel.pipeline.train.detection import detection_map, event_f1, segment_f1  # noqa: E402
from avel.pipeline.train.loop import TrainConfig, train  # noqa: E402

CLIP_S = 10
TODAY = LocalizeRule()
# the grid: windows (recomputed per stride and combine) x post-processing (cheap)
WINDOWS = ((5, "mean"), (5, "max"), (5, "centre"), (2, "mean"))  # (stride, combine)
STRIDES = tuple(dict.fromkeys(s for s, _ in WINDOWS))
COMBINES = tuple(dict.fromkeys(c for _, c in WINDOWS))
POST = dict(smooth_k=(0, 5), gap_s=(0, 3), min_event_s=(1, 3), event_score=("mean", "prob_x_relevance", "max"))


NOISE = [1.0]  # --noise
DEVICE = ["cpu"]  # --device


def long_config(seed: int, videos: int, length_s: int, classes: int) -> LongSynthConfig:
    return LongSynthConfig(
        videos=videos,
        classes=classes,
        seed=seed,
        min_duration_s=length_s,
        max_duration_s=length_s,
        max_event_s=60,
        max_gap_s=30,
        test_fraction=0.5,
        noise=NOISE[0],
    )


def second_labels(plan, classes: int) -> np.ndarray:
    y = np.full(plan.duration_s, classes, dtype=np.int64)
    for s, e, c, _ in plan.events:
        y[s:e] = c
    return y


def clips(cfg: LongSynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10-s cuts of every video of cfg: audio [N, 10, 128], visual [N, 10, 7, 7, 512] float16, labels [N, 10]."""
    A, V, Y = [], [], []
    for plan in long_plans(cfg):
        a = np.concatenate([b[1] for b in feature_blocks(cfg, plan)])
        v = np.concatenate([b[2] for b in feature_blocks(cfg, plan)]).astype(np.float16)
        y = second_labels(plan, cfg.classes)
        for s in range(0, plan.duration_s - CLIP_S + 1, CLIP_S):
            A.append(a[s : s + CLIP_S]), V.append(v[s : s + CLIP_S]), Y.append(y[s : s + CLIP_S])
    return np.stack(A), np.stack(V), np.stack(Y)


def clip_data(args, seed: int) -> AVData:
    parts = [
        clips(long_config(1000 * seed + k, n, args.train_length, args.classes))
        for k, n in ((1, args.train_videos), (2, args.clip_eval_videos), (3, args.clip_eval_videos))
    ]
    sizes = [len(p[0]) for p in parts]
    cut = np.cumsum([0] + sizes)
    return AVData(
        visual=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        audio=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        labels=torch.from_numpy(np.concatenate([p[2] for p in parts])),
        class_names=class_names(long_config(0, 1, 60, args.classes)),
        video_ids=[f"clip{i}" for i in range(cut[-1])],
        splits={name: torch.arange(cut[i], cut[i + 1]) for i, name in enumerate(("train", "val", "test"))},
        source="generated clips",
    )


def per_second_scores(model, cfg: LongSynthConfig, plan, stride: int, combine: str):
    scorer = WindowedScorer(segment_scorer(model, torch.device(DEVICE[0])), CLIP_S, stride, combine=combine)
    with torch.no_grad():
        for _, audio, visual in feature_blocks(cfg, plan):
            visual = visual.reshape(len(visual), 49, -1)
            for t in range(len(audio)):
                scorer.push(audio[t], visual[t])
        return scorer.finish()


def scores(videos: list, rule: LocalizeRule, info: ModelInfo) -> dict:
    """videos: [(plan, per-second scores)] -> mAP@0.5, average mAP, segment and event F1."""
    truth, dets, durations = [], [], {}
    names = info.classes
    for plan, per in videos:
        durations[plan.video_id] = float(plan.duration_s)
        truth += [Segment(plan.video_id, float(s), float(e), names[c]) for s, e, c, _ in plan.events]
        r = result_from_scores(plan.video_id, plan.duration_s, per, info, rule, None)
        dets += [Detection(plan.video_id, float(e.start_s), float(e.end_s), e.label, e.score) for e in r.events]
    m = detection_map(truth, dets)
    return {
        "map50": m.map_at(0.5),
        "average_map": m.average_map,
        "segment_f1": segment_f1(truth, dets, durations).f1,
        "event_f1": event_f1(truth, dets, durations).f1,
        "events": len(truth),
        "detections": len(dets),
    }


def post_rules(stride: int, combine: str):
    for values in itertools.product(*POST.values()):
        yield LocalizeRule(stride_s=stride, combine=combine, **dict(zip(POST, values)))


def run(args, name: str, seed: int) -> dict:
    t0 = time.perf_counter()
    data = clip_data(args, seed)
    cfg = TrainConfig(
        model_config(task="sel", name=name),
        seed=seed,
        progress=False,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    result = train(data, cfg)
    model = result.model.eval()
    info = ModelInfo(
        task="sel",
        model=name,
        embedding=None,
        matching=None,
        window=CLIP_S,
        stride=5,
        checkpoint="in-memory",
        classes=tuple(data.class_names),
        features_from_checkpoint=False,
    )
    sets = {}
    for length in args.lengths:
        lcfg = long_config(1000 * seed + 10 + length, 2 * args.long_videos, length, args.classes)
        for plan in long_plans(lcfg):
            sets.setdefault(plan.subset, []).append((length, lcfg, plan))
    # per-second scores of every (stride, combine), once per video
    per = {w: {"validation": [], "testing": []} for w in WINDOWS}
    for (stride, combine), out in per.items():
        for subset, items in sets.items():
            out[subset] = [
                (length, plan, per_second_scores(model, lcfg, plan, stride, combine)) for length, lcfg, plan in items
            ]
    t_scores = time.perf_counter()

    def evaluate(rule: LocalizeRule, subset: str, length: int | None = None) -> dict:
        items = per[rule.stride_s, rule.combine][subset]
        return scores([(p, s) for L, p, s in items if length is None or L == length], rule, info)

    val = [
        (evaluate(rule, "validation")["average_map"], i, rule)
        for i, rule in enumerate(r for s, c in WINDOWS for r in post_rules(s, c))
    ]
    best_val, _, chosen = max(val, key=lambda x: (x[0], -x[1]))  # ties: the first in grid order
    report = {
        "model": name,
        "seed": seed,
        "clip_test_accuracy": result.test.get("accuracy"),
        "clip_val_accuracy": result.val.get("accuracy"),
        "best_epoch": result.best_epoch,
        "rules_tried": len(val),
        "chosen_rule": chosen.to_dict(),
        "validation_average_map": {"today": evaluate(TODAY, "validation")["average_map"], "chosen": best_val},
        "test": {},
    }
    for length in args.lengths:
        report["test"][str(length)] = {
            "today": evaluate(TODAY, "testing", length),
            "chosen": evaluate(chosen, "testing", length),
        }
    report["test"]["all"] = {"today": evaluate(TODAY, "testing"), "chosen": evaluate(chosen, "testing")}
    # one knob at a time from today's rule, on validation: which knob matters
    report["one_knob_validation"] = {}
    for knob, values in (("stride_s", STRIDES), ("combine", COMBINES), *POST.items()):
        report["one_knob_validation"][knob] = {
            str(v): evaluate(LocalizeRule(**{knob: v}), "validation")["average_map"] for v in values
        }
    report["seconds"] = {
        "train": round(result.seconds, 1),
        "scores": round(t_scores - t0 - result.seconds, 1),
        "total": round(time.perf_counter() - t0, 1),
    }
    return report


def table(runs: list[dict], lengths) -> str:
    lines = [
        "| model | seed | clip acc (test) | length | rule | mAP@0.5 | avg mAP 0.1:0.9 | segment F1 | event F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for length in [str(x) for x in lengths] + ["all"]:
            for which in ("today", "chosen"):
                s = r["test"][length][which]
                label = "all" if length == "all" else f"{int(length) // 60} min"
                lines.append(
                    f"| {r['model']} | {r['seed']} | {100 * r['clip_test_accuracy']:.1f} | {label} | {which} | "
                    f"{100 * s['map50']:.1f} | {100 * s['average_map']:.1f} | {100 * s['segment_f1']:.1f} | "
                    f"{100 * s['event_f1']:.1f} |"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("long-videos"))
    p.add_argument("--models", nargs="+", default=["dam", "av_att"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--noise", type=float, default=1.0, help="the generator's noise (prototypes are 1.0)")
    p.add_argument("--train-videos", type=int, default=6, help="long videos cut into training clips")
    p.add_argument("--train-length", type=int, default=300, help="their length (s)")
    p.add_argument("--clip-eval-videos", type=int, default=2, help="long videos cut into validation (and test) clips")
    p.add_argument("--long-videos", type=int, default=2, help="validation and test long videos per length (each)")
    p.add_argument("--lengths", nargs="+", type=int, default=[60, 300, 1200])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu | cuda (training and the windows)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    NOISE[0], DEVICE[0] = args.noise, args.device
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for name in args.models:
            r = run(args, name, seed)
            runs.append(r)
            with open(args.out / "runs.jsonl", "a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                json.dumps({k: r[k] for k in ("model", "seed", "chosen_rule", "validation_average_map", "seconds")}),
                flush=True,
            )
    text = table(runs, args.lengths)
    (args.out / "table.md").write_text(f"config: {json.dumps({k: str(v) for k, v in vars(args).items()})}\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
