"""The long-video localization rule study (issue #24): SEL models trained on 10-s clips, run
on long generated videos with sliding windows; which rule (LocalizeRule: stride, how windows
combine, smoothing, gap filling, minimum event length, event score) turns their per-second
scores into the best events, chosen on validation long videos and reported on test ones,
against today's rule, by video length.

Data (pipeline/data/synth_long.py, features only): training clips are 10-s cuts (every 10 s,
labels per second from the plan: background or the event's class) of long videos of their
own seed; validation and test long videos are other seeds, one set per length (`--lengths`,
seconds). Every set of a study seed has its own generator seed (plans, scenes, noise) and
the study seed's class prototypes (`prototype_seed`): one set of classes, trained on in the
clips, localized in the long videos. The model is trained on the clips (pipeline/train/loop.py `train`: best
validation-clip epoch; its clip accuracy on test clips is reported beside the long-video
scores: what long videos lose against clips, with the long videos' per-second accuracy).
Localization: WindowedScorer over the model's 10-s window; each video's features are made
once and pushed into every (stride, combine)'s scorer, one model call per window and stride
(`video_scores`); every post-processing rule is applied to those per-second scores
(`result_from_scores`). Scores: pipeline/train/detection.py (mAP at tIoU 0.1:0.9 and their
mean, segment- and event-level F1); beside them the oracle (the ground truth as per-second
scores through the same rule: the rule's ceiling). The rule is chosen per model and seed by
the average mAP over all validation videos (every length pooled). Output: one JSON line per
(model, seed) in OUT/runs.jsonl, and OUT/table.md (the command, mean +- std over the seeds
per model, length and rule, the chosen rules, each knob alone; then per seed).

    python benchmarks/long_videos.py --out benchmarks/results/long_videos --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))  # the repository root is the package `avel`

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avel.core.annotations import BACKGROUND  # noqa: E402
from avel.models.registry import model_config  # noqa: E402
from avel.pipeline.apps.localize import result_from_scores, segment_scorer  # noqa: E402
from avel.pipeline.apps.outputs import ModelInfo  # noqa: E402
from avel.pipeline.apps.windows import LocalizeRule, PerSecond, WindowedScorer  # noqa: E402
from avel.pipeline.data.activitynet import Detection, Segment  # noqa: E402
from avel.pipeline.data.dataset import AVData  # noqa: E402
from avel.pipeline.data.synth_long import (  # noqa: E402
    LongSynthConfig,
    class_names,
    feature_blocks,
    long_plans,
    video_features,
)
from avel.pipeline.train.detection import detection_map, event_f1, segment_f1, segment_iou  # noqa: E402
from avel.pipeline.train.loop import TrainConfig, train  # noqa: E402

CLIP_S = 10
TODAY = LocalizeRule()
# the grid: windows (recomputed per stride and combine) x post-processing (cheap)
WINDOWS = ((5, "mean"), (5, "max"), (5, "centre"), (2, "mean"))  # (stride, combine)
STRIDES = tuple(dict.fromkeys(s for s, _ in WINDOWS))
COMBINES = tuple(dict.fromkeys(c for _, c in WINDOWS))
LENGTH_BINS = ((1, 2), (3, 9), (10, 29), (30, 120))  # event lengths (s) for the recall by length
POST = dict(smooth_k=(0, 5), gap_s=(0, 3), min_event_s=(1, 3), event_score=("mean", "prob_x_relevance", "max"))


NOISE = [1.0]  # --noise
DEVICE = ["cpu"]  # --device
VISUAL_DIM = [512]  # --visual-dim


def long_config(
    seed: int, videos: int, length_s: int, classes: int, prototype_seed: int | None = None
) -> LongSynthConfig:
    """A set of `videos` long videos of `length_s` seconds; the sets of one study seed share
    `prototype_seed` (their classes), each has its own `seed` (plans, scenes and noise)."""
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
        visual_dim=VISUAL_DIM[0],
        prototype_seed=prototype_seed,
    )


def second_labels(plan, classes: int) -> np.ndarray:
    y = np.full(plan.duration_s, classes, dtype=np.int64)
    for s, e, c, _ in plan.events:
        y[s:e] = c
    return y


def clips(cfg: LongSynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10-s cuts of every video of cfg: audio [N, 10, 128], visual [N, 10, 7, 7, visual_dim] float16,
    labels [N, 10]."""
    A, V, Y = [], [], []
    for plan in long_plans(cfg):
        a, v = video_features(cfg, plan)
        v = v.astype(np.float16)
        y = second_labels(plan, cfg.classes)
        for s in range(0, plan.duration_s - CLIP_S + 1, CLIP_S):
            A.append(a[s : s + CLIP_S]), V.append(v[s : s + CLIP_S]), Y.append(y[s : s + CLIP_S])
    return np.stack(A), np.stack(V), np.stack(Y)


def clip_data(args, seed: int) -> AVData:
    parts = [
        clips(long_config(1000 * seed + k, n, args.train_length, args.classes, prototype_seed=1000 * seed))
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


def shared_windows(score, n: int) -> list:
    """n scorers of one stride's windows sharing one model call per batch: the first (the
    leader) runs the model and hands each output to the others, which replay them in order
    (WindowedScorers of one stride fed the same segments ask for the same batches)."""
    queues = [deque() for _ in range(n - 1)]

    def leader(audio, visual):
        out = score(audio, visual)
        for q in queues:
            q.append((audio.shape, out))
        return out

    def follower(q):
        def replay(audio, visual):
            shape, out = q.popleft()
            assert shape == audio.shape, (shape, audio.shape)
            return out

        return replay

    return [leader] + [follower(q) for q in queues]


def video_scores(model, cfg: LongSynthConfig, plan) -> dict:
    """Per-second scores of one long video for every (stride, combine) of WINDOWS: its features
    made once, block by block, and pushed into every setting's WindowedScorer (one model call
    per window and stride, whatever the combinations)."""
    score = segment_scorer(model, torch.device(DEVICE[0]))
    scorers = {}
    for stride in STRIDES:
        combines = [c for s, c in WINDOWS if s == stride]
        for combine, fn in zip(combines, shared_windows(score, len(combines))):
            scorers[stride, combine] = WindowedScorer(fn, CLIP_S, stride, combine=combine)
    with torch.no_grad():
        for _, audio, visual in feature_blocks(cfg, plan):
            visual = visual.reshape(len(visual), 49, -1)
            for t in range(len(audio)):
                for scorer in scorers.values():  # each stride's leader first (WINDOWS' order)
                    scorer.push(audio[t], visual[t])
        return {w: scorer.finish() for w, scorer in scorers.items()}


def oracle_scores(plan, classes: int, relevance: bool) -> PerSecond:
    """The ground truth as per-second scores (the rule's ceiling): probability 1 for the
    second's class; with relevance (DAM) relevance 1 on event seconds, 0 elsewhere (the
    background seconds' probabilities spread evenly); without (AV_att) a background column."""
    y = second_labels(plan, classes)
    T, event = len(y), y < classes
    if relevance:
        probs = np.full((T, classes), 1.0 / classes)
        probs[event] = 0.0
        probs[np.nonzero(event)[0], y[event]] = 1.0
        return PerSecond(probs, event.astype(np.float64), None, None, [])
    probs = np.zeros((T, classes + 1))
    probs[np.arange(T), y] = 1.0
    return PerSecond(probs, None, None, None, [])


def second_accuracy(videos: list, rule: LocalizeRule, info: ModelInfo) -> float:
    """The share of the videos' seconds whose label (by `rule`'s windows and smoothing) is the
    ground truth's: what the clip accuracy becomes on long videos."""
    right = total = 0
    for plan, per in videos:
        r = result_from_scores(plan.video_id, plan.duration_s, per, info, rule, None)
        names = list(info.classes) + [BACKGROUND]
        truth = [names[c] for c in second_labels(plan, len(info.classes))]
        right += sum(s.label == t for s, t in zip(r.segments, truth))
        total += len(truth)
    return right / total


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
    found = recall_by_length(truth, dets)
    return {
        "recall50_by_length": found,
        "map50": m.map_at(0.5),
        "average_map": m.average_map,
        "segment_f1": segment_f1(truth, dets, durations).f1,
        "event_f1": event_f1(truth, dets, durations).f1,
        "events": len(truth),
        "detections": len(dets),
    }


def recall_by_length(truth: list, dets: list, tiou: float = 0.5) -> dict:
    """Per bin of LENGTH_BINS ("lo-hi" s): the events, and the share of them that a detection
    of their label covers at tIoU >= `tiou` (any score): which events a rule loses."""
    out = {}
    for lo, hi in LENGTH_BINS:
        events = [g for g in truth if lo <= g.end_s - g.start_s <= hi]
        hit = 0
        for g in events:
            same = [(d.start_s, d.end_s) for d in dets if d.video == g.video and d.label == g.label]
            hit += bool(same) and segment_iou((g.start_s, g.end_s), np.array(same)).max() >= tiou
        out[f"{lo}-{hi}"] = {"events": len(events), "recall": hit / len(events) if events else None}
    return out


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
        lcfg = long_config(1000 * seed + 10 + length, 2 * args.long_videos, length, args.classes, 1000 * seed)
        for plan in long_plans(lcfg):
            sets.setdefault(plan.subset, []).append((length, lcfg, plan))
    # per-second scores of every (stride, combine): each video's features made once
    per = {w: {"validation": [], "testing": []} for w in WINDOWS}
    for subset, items in sets.items():
        for length, lcfg, plan in items:
            for w, scores_ in video_scores(model, lcfg, plan).items():
                per[w][subset].append((length, plan, scores_))
    t_scores = time.perf_counter()

    def evaluate(rule: LocalizeRule, subset: str, length: int | None = None, oracle: bool = False) -> dict:
        items = [(p, s) for L, p, s in per[rule.stride_s, rule.combine][subset] if length is None or L == length]
        if oracle:  # the ground truth through the rule: its ceiling
            return scores([(p, oracle_scores(p, args.classes, s.relevance is not None)) for p, s in items], rule, info)
        return dict(scores(items, rule, info), second_accuracy=second_accuracy(items, rule, info))

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
    for length in [*args.lengths, None]:
        report["test"]["all" if length is None else str(length)] = {
            "today": evaluate(TODAY, "testing", length),
            "chosen": evaluate(chosen, "testing", length),
            "oracle_today": evaluate(TODAY, "testing", length, oracle=True),
            "oracle_chosen": evaluate(chosen, "testing", length, oracle=True),
        }
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
    """One row per (model, seed, length, rule): the test figures (percent)."""
    lines = [
        "| model | seed | clip acc (test) | length | rule | second acc | mAP@0.5 | avg mAP 0.1:0.9 | segment F1 "
        "| event F1 | oracle avg mAP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for length in [str(x) for x in lengths] + ["all"]:
            for which in ("today", "chosen"):
                s = r["test"][length][which]
                lines.append(
                    f"| {r['model']} | {r['seed']} | {100 * r['clip_test_accuracy']:.1f} | {length_label(length)} | "
                    f"{which} | {100 * s['second_accuracy']:.1f} | {100 * s['map50']:.1f} | "
                    f"{100 * s['average_map']:.1f} | {100 * s['segment_f1']:.1f} | {100 * s['event_f1']:.1f} | "
                    f"{100 * r['test'][length]['oracle_' + which]['average_map']:.1f} |"
                )
    return "\n".join(lines)


def length_label(length: str) -> str:
    return "all" if length == "all" else f"{int(length) // 60} min"


def mean_std(xs: list[float]) -> str:
    """Percent, mean +- sample standard deviation (0 for one value; "-" for none)."""
    if not xs:
        return "-"
    xs = [100 * x for x in xs]
    return f"{statistics.mean(xs):.1f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.1f}"


def summary(runs: list[dict], lengths) -> str:
    """Mean +- std over the seeds per (model, length, rule): clip accuracy beside the long
    videos' per-second accuracy (what long videos lose against clips) and detection scores;
    the validation average mAP of today's and the chosen rule; then each knob alone."""
    models = list(dict.fromkeys(r["model"] for r in runs))
    lines = [
        "| model | seeds | clip acc (test) | length | rule | second acc | mAP@0.5 | avg mAP 0.1:0.9 | segment F1 "
        "| event F1 | oracle avg mAP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        rs = [r for r in runs if r["model"] == m]
        clip = mean_std([r["clip_test_accuracy"] for r in rs])
        for length in [str(x) for x in lengths] + ["all"]:
            for which in ("today", "chosen"):
                cell = [r["test"][length][which] for r in rs]
                figures = " | ".join(
                    mean_std([c[k] for c in cell])
                    for k in ("second_accuracy", "map50", "average_map", "segment_f1", "event_f1")
                )
                oracle = mean_std([r["test"][length]["oracle_" + which]["average_map"] for r in rs])
                lines.append(f"| {m} | {len(rs)} | {clip} | {length_label(length)} | {which} | {figures} | {oracle} |")
    lines += ["", "| model | validation avg mAP: today | chosen | chosen rules (seed: rule) |", "|---|---|---|---|"]
    for m in models:
        rs = [r for r in runs if r["model"] == m]
        today = mean_std([r["validation_average_map"]["today"] for r in rs])
        chosen = mean_std([r["validation_average_map"]["chosen"] for r in rs])
        rules = "; ".join(f"{r['seed']}: {rule_text(r['chosen_rule'])}" for r in rs)
        lines.append(f"| {m} | {today} | {chosen} | {rules} |")
    lines += [
        "",
        "Test gain of the chosen rule over today's, paired per seed (chosen - today, points):",
        "",
        "| model | length | avg mAP | mAP@0.5 | event F1 |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        rs = [r for r in runs if r["model"] == m]
        for length in [str(x) for x in lengths] + ["all"]:
            gains = " | ".join(
                mean_std([r["test"][length]["chosen"][k] - r["test"][length]["today"][k] for r in rs])
                for k in ("average_map", "map50", "event_f1")
            )
            lines.append(f"| {m} | {length_label(length)} | {gains} |")
    bins = [f"{lo}-{hi}" for lo, hi in LENGTH_BINS]
    lines += [
        "",
        "Test events found at tIoU >= 0.5 (any score), by event length, all video lengths pooled:",
        "",
        "| model | rule | " + " | ".join(f"{b} s" for b in bins) + " |",
        "|---|---|" + "---|" * len(bins),
    ]
    for m in models:
        rs = [r for r in runs if r["model"] == m]
        for which in ("today", "chosen"):
            cells = []
            for b in bins:
                x = [r["test"]["all"][which]["recall50_by_length"][b] for r in rs]
                n = sum(c["events"] for c in x)
                cells.append(mean_std([c["recall"] for c in x if c["recall"] is not None]) + f" (n {n})")
            lines.append(f"| {m} | {which} | " + " | ".join(cells) + " |")
    knobs = list(runs[0]["one_knob_validation"])
    lines += ["", "One knob changed from today's rule, validation avg mAP (mean +- std over seeds):", ""]
    lines += ["| knob | value | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for knob in knobs:
        for value in runs[0]["one_knob_validation"][knob]:
            cells = [mean_std([r["one_knob_validation"][knob][value] for r in runs if r["model"] == m]) for m in models]
            lines.append(f"| {knob} | {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rule_text(rule: dict) -> str:
    """The knobs of a rule that differ from today's."""
    today = TODAY.to_dict()
    diff = [f"{k}={v}" for k, v in rule.items() if v != today[k]]
    return ", ".join(diff) or "today's"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("long-videos"))
    p.add_argument("--models", nargs="+", default=["dam", "av_att"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--noise", type=float, default=1.0, help="the generator's noise (prototypes are 1.0)")
    p.add_argument("--visual-dim", type=int, default=128, help="visual feature width (VGG-19: 512; 128 trains faster)")
    p.add_argument("--train-videos", type=int, default=20, help="long videos cut into training clips")
    p.add_argument("--train-length", type=int, default=300, help="their length (s)")
    p.add_argument("--clip-eval-videos", type=int, default=2, help="long videos cut into validation (and test) clips")
    p.add_argument("--long-videos", type=int, default=2, help="validation and test long videos per length (each)")
    p.add_argument("--lengths", nargs="+", type=int, default=[60, 300, 1200, 3600])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda (training and the windows)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    NOISE[0], DEVICE[0], VISUAL_DIM[0] = args.noise, args.device, args.visual_dim
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
    text = summary(runs, args.lengths) + "\n\nPer seed:\n\n" + table(runs, args.lengths)
    command = "python benchmarks/long_videos.py " + " ".join(sys.argv[1:] if argv is None else argv)
    config = json.dumps({k: str(v) for k, v in vars(args).items()})
    (args.out / "table.md").write_text(f"command: {command}\n\nconfig: {config}\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
