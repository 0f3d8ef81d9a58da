"""benchmarks/errors_by_kind.py (issue #11): the kinds of seconds on a hand-made example, and a
tiny run whose per-kind errors add up to the error rate `train()` reports for the test split."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def load():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("errors_by_kind", ROOT / "benchmarks" / "errors_by_kind.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_kinds_and_counts_on_a_hand_made_video():
    ebk = load()
    # one late-visual video, T = 6: event at 1..3 (sound), object seen 2..4; second 0 has the sound
    # off screen, second 5 neither
    sound = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    seen = torch.tensor([[0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    event = torch.tensor([[0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    kinds = ebk.kinds_of_seconds(sound, seen, event, torch.tensor([True]))
    as_list = {k: m[0].nonzero().flatten().tolist() for k, m in kinds.items()}
    assert as_list == {
        "events": [1, 2, 3],
        "events, sound only": [1],
        "background, sound only": [0],
        "background, object only": [4],
        "background, object only, late tail": [4],
        "background, neither": [5],
    }
    labels = torch.tensor([[9, 2, 2, 2, 9, 9]])  # 9 = background
    pred = torch.tensor([[2, 9, 2, 2, 9, 2]])
    assert ebk.count_errors(pred, labels, kinds) == {
        "events": [3, 1],
        "events, sound only": [1, 1],
        "background, sound only": [1, 1],
        "background, object only": [1, 0],
        "background, object only, late tail": [1, 0],
        "background, neither": [1, 1],
    }


def test_tiny_run_errors_add_up_to_the_reported_accuracy(tmp_path, capsys):
    ebk = load()
    out = tmp_path / "errors.jsonl"
    argv = [
        "--noise",
        "1.0",
        "--seed",
        "0",
        "--model",
        "av_att",
        "--epochs",
        "1",
        "--train-videos",
        "8",
        "--val-videos",
        "8",
        "--test-videos",
        "8",
        "--classes",
        "3",
        "--visual-dim",
        "8",
        "--threads",
        "1",
        "--set",
        "input_dropout=0.1",
        "--out",
        str(out),
    ]
    assert ebk.main(argv) == 0
    record = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == record
    assert record["set"] == {"input_dropout": 0.1} and record["model"] == "av_att"
    errors = record["errors"]
    partition = ["events", "background, sound only", "background, object only", "background, neither"]
    seconds = sum(errors.get(k, [0, 0])[0] for k in partition)
    wrong = sum(errors.get(k, [0, 0])[1] for k in partition)
    assert seconds == 8 * 10  # every test second in exactly one kind
    assert abs(wrong / seconds - (1 - record["test_accuracy"])) < 1e-9
