"""Where a SEL model errs on the generated hard features (issue #11): its test errors counted
per kind of second, from the generator's ground truth (is the class audible, is the object on
screen), next to the test accuracy. One model, one noise level, one seed a run; one JSON line
a run, printed and appended to `--out`.

    python benchmarks/errors_by_kind.py --noise 0.75 --seed 0 --model av_att
    python benchmarks/errors_by_kind.py --noise 0.75 --seed 0 --set relevance_fusion=mean --set input_dropout=0

Kinds: events (both modalities; the first second of a late-visual video's event has the sound
only), background with the sound only (off screen), background with the object only
(silent; `late tail`: the extra second of a late-visual video, counted in it too).
Data: `learning_curves.make_data` (640 / 80 / 200 videos, 28 classes, visual width 128 by
default), the recipe's 60 epochs unless `--epochs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from learning_curves import TEST_VIDEOS, VAL_VIDEOS, append, make_data, synth_config  # noqa: E402

from avel.models.registry import model_config  # noqa: E402
from avel.pipeline.data.synth import video_contents  # noqa: E402
from avel.pipeline.train.loop import TrainConfig, prepare_features, train  # noqa: E402


def kinds_of_seconds(sound: torch.Tensor, seen: torch.Tensor, event: torch.Tensor, late: torch.Tensor) -> dict:
    """[V, T] bool masks (late: [V]) -> the kinds of seconds, each a [V, T] mask."""
    late = late[:, None].expand_as(event)
    return {
        "events": event,
        "events, sound only": event & sound & ~seen,
        "background, sound only": ~event & sound & ~seen,
        "background, object only": ~event & ~sound & seen,
        "background, object only, late tail": ~event & ~sound & seen & late,
        "background, neither": ~event & ~sound & ~seen,
    }


def count_errors(pred: torch.Tensor, labels: torch.Tensor, kinds: dict) -> dict:
    """pred, labels [V, T] -> {kind: [seconds, wrong]} for the kinds that occur."""
    wrong = pred != labels
    return {k: [int(m.sum()), int((wrong & m).sum())] for k, m in kinds.items() if m.any()}


def parse_set(items: list[str]) -> dict:
    """["name=value", ...] -> ModelConfig fields (numbers parsed as JSON, else strings)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, default=0.75)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="dam", choices=["dam", "av_att"])
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a ModelConfig field")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--train-videos", type=int, default=640)
    ap.add_argument("--val-videos", type=int, default=VAL_VIDEOS)
    ap.add_argument("--test-videos", type=int, default=TEST_VIDEOS)
    ap.add_argument("--classes", type=int, default=28)
    ap.add_argument("--visual-dim", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="append the record to this JSONL file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = dict(val_videos=args.val_videos, test_videos=args.test_videos, classes=args.classes)
    data = make_data(args.noise, args.seed, args.train_videos, args.visual_dim, **sizes)
    contents = video_contents(synth_config(args.noise, args.seed, args.train_videos, args.visual_dim, **sizes))
    fields = parse_set(args.set)
    result = train(
        data,
        TrainConfig(
            model_config(task="sel", name=args.model, **fields), epochs=args.epochs, seed=args.seed, progress=False
        ),
    )
    idx = data.splits["test"]
    feats = prepare_features(data, "sel")
    model = result.model.eval()
    audio, visual = feats.batch(idx, next(model.parameters()).device)[:2]
    pred = model.predict(audio, visual).cpu()
    labels = data.labels[idx]
    by_index = {c.plan.index: c for c in contents}  # the generator's truth, by video index
    test = [by_index[i] for i in idx.tolist()]
    sound = torch.from_numpy(np.stack([c.sound for c in test]))
    seen = torch.from_numpy(np.stack([c.seen for c in test]))
    late = torch.tensor([c.late for c in test])
    record = {
        "noise": args.noise,
        "seed": args.seed,
        "model": args.model,
        "set": fields,
        "epochs": args.epochs,
        "test_accuracy": result.test["accuracy"],
        "best_epoch": result.best_epoch,
        "errors": count_errors(pred, labels, kinds_of_seconds(sound, seen, labels != data.background, late)),
    }
    print(json.dumps(record), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        append(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
