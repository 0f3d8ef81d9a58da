"""benchmarks/learning_curves.py (issue #11): its tiniest grid end to end, the aggregation and
the bar check against hand-made numbers."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_curves"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("learning_curves", None)


def test_tiniest_grid_runs_resumes_and_reports(lc, tmp_path, capsys):
    argv = [
        "--noise",
        "1.0",
        "--sizes",
        "4",
        "8",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--visual-dim",
        "8",
        "--classes",
        "3",
        "--val-videos",
        "8",
        "--test-videos",
        "8",
        "--probe-videos",
        "8",
        "--threads",
        "1",
        "--variants",
        "av_att",
        "dam-warmup",
        "cml-dam",
        "cml-avdln",
        "--bar-dam",
        "dam-warmup",
        "--out",
        str(tmp_path),
    ]
    assert lc.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    runs = {(r["size"], r["seed"], r["variant"]) for r in rows}
    assert runs == {
        (s, seed, v) for s in (4, 8) for seed in (0, 1) for v in ("av_att", "dam-warmup", "cml-dam", "cml-avdln")
    } | {(0, 0, "probe"), (0, 1, "probe")}
    by = {(r["size"], r["seed"], r["variant"]): r for r in rows}
    assert by[(4, 0, "av_att")]["epochs"] == 2 and by[(8, 0, "av_att")]["epochs"] == 1  # same batches at every size
    assert by[(8, 0, "cml-avdln")]["epochs"] == 20  # AVDLN keeps its reference recipe
    assert set(by[(8, 1, "dam-warmup")]["diagnostics"]) == {
        "category_train",
        "category_test",
        "relevance_background_test",
        "relevance_event_test",
    }
    out = capsys.readouterr().out
    # the table's cell is the mean +- sample std of the two seeds' test accuracies
    acc = [by[(8, seed, "av_att")]["test"]["accuracy"] for seed in (0, 1)]
    assert f"| 1.0 | 8 | {statistics.fmean(acc):.3f} +- {statistics.stdev(acc):.3f} (n=2) |" in out
    lin = [by[(0, seed, "probe")]["linear"] for seed in (0, 1)]
    assert f"| 1.0 | {statistics.fmean(lin):.3f} +- {statistics.stdev(lin):.3f} |" in out
    assert "CML A2V" in out and "DAM, warm-up 0.4" in out
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert (tmp_path / "tables.md").read_text() in out
    # a rerun finds every run in runs.jsonl and trains nothing
    before = (tmp_path / "runs.jsonl").read_text()
    assert lc.main(argv) == 0
    assert (tmp_path / "runs.jsonl").read_text() == before
    assert "size" not in capsys.readouterr().out.split("## Calibration")[0]


def test_bar_check_by_hand(lc):
    summary = {
        (1.0, 640, "av_att", "accuracy"): (0.80, 0.01, 3),
        (1.0, 640, "dam-warmup", "accuracy"): (0.791, 0.02, 3),
        (2.0, 640, "av_att", "accuracy"): (0.70, 0.01, 3),
        (2.0, 640, "dam-warmup", "accuracy"): (0.68, 0.02, 3),
        (3.0, 640, "av_att", "accuracy"): (0.40, 0.01, 3),
        (3.0, 640, "dam-warmup", "accuracy"): (0.20, 0.02, 3),
        (1.0, 640, "cml-dam", "a2v"): (0.5, 0, 3),
        (1.0, 640, "cml-avdln", "a2v"): (0.4, 0, 3),
        (1.0, 640, "cml-dam", "v2a"): (0.3, 0, 3),
        (1.0, 640, "cml-avdln", "v2a"): (0.3, 0, 3),
    }
    lines = lc.bar_check(summary, [1.0, 2.0, 3.0], [640], "dam-warmup")
    # noise 1: SEL 0.791 >= 0.80 - 0.01, A2V above, V2A equal (not above); noise 2: 0.68 < 0.69;
    # noise 3: AV_att below 0.6
    assert [line.split(": ")[-1] for line in lines] == ["PASS", "PASS", "FAIL", "FAIL", "bar does not apply"]
