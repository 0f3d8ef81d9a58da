"""benchmarks/long_videos.py end to end at a toy size (one epoch, 1-min videos): it trains,
localizes, chooses a rule on validation and writes its records; the clips it trains on carry
the plans' labels; the chosen rule is never worse than today's on validation (today's rule is
one of the candidates, so choosing by validation cannot lose there)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from avel.pipeline.apps.windows import LocalizeRule
from avel.pipeline.data.synth_long import long_plans

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def lv():
    spec = importlib.util.spec_from_file_location("long_videos", ROOT / "benchmarks" / "long_videos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_todays_rule_is_a_candidate(lv):
    candidates = [r for s, c in lv.WINDOWS for r in lv.post_rules(s, c)]
    assert LocalizeRule() in candidates and len(set(candidates)) == len(candidates) == 96


def test_clips_carry_the_plans_labels(lv):
    cfg = lv.long_config(5, 1, 60, 4)
    audio, visual, labels = lv.clips(cfg)
    (plan,) = long_plans(cfg)
    assert audio.shape == (6, 10, 128) and visual.shape == (6, 10, 7, 7, 512) and labels.shape == (6, 10)
    expected = np.full(60, 4)
    for s, e, c, _ in plan.events:
        expected[s:e] = c
    assert labels.reshape(-1).tolist() == expected.tolist()


def test_runs_end_to_end(lv, tmp_path):
    assert (
        lv.main(
            [
                "--out",
                str(tmp_path),
                "--models",
                "dam",
                "--epochs",
                "1",
                "--train-videos",
                "1",
                "--train-length",
                "60",
                "--clip-eval-videos",
                "1",
                "--long-videos",
                "1",
                "--lengths",
                "60",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    (run,) = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert run["rules_tried"] == 96 and set(run["test"]) == {"60", "all"}
    assert run["validation_average_map"]["chosen"] >= run["validation_average_map"]["today"]
    for which in ("today", "chosen"):
        s = run["test"]["all"][which]
        assert 0 <= s["average_map"] <= 1 and 0 <= s["segment_f1"] <= 1 and s["events"] > 0
    assert "| dam | 0 |" in (tmp_path / "table.md").read_text()
