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
import torch

from avel.models.registry import build_model, model_config
from avel.pipeline.apps.localize import segment_scorer
from avel.pipeline.apps.outputs import ModelInfo
from avel.pipeline.apps.windows import LocalizeRule, WindowedScorer
from avel.pipeline.data.synth_long import long_plans, video_features

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
    lv.VISUAL_DIM[0] = 512
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
    text = (tmp_path / "table.md").read_text()
    assert "| dam | 0 |" in text and "| dam | 1 |" in text  # per seed, and the mean over 1 seed
    assert text.startswith("command: python benchmarks/long_videos.py --out ")
    for which in ("today", "chosen"):
        s = run["test"]["all"][which]
        assert 0 <= s["second_accuracy"] <= 1
        assert run["test"]["60"]["oracle_" + which]["events"] == run["test"]["60"][which]["events"]


@pytest.mark.parametrize("name", ["dam", "av_att"])
def test_shared_windows_score_like_each_setting_alone(lv, name):
    """video_scores makes the features once and runs the model once per stride: every
    (stride, combine) gets exactly what a WindowedScorer of its own over the whole video gives."""
    lv.VISUAL_DIM[0] = 16
    try:
        cfg = lv.long_config(3, 1, 47, 4)
        (plan,) = long_plans(cfg)
        torch.manual_seed(0)
        model = build_model(model_config("sel", name, num_classes=5, visual_dim=16)).eval()
        got = lv.video_scores(model, cfg, plan)
        audio, visual = video_features(cfg, plan)
        assert visual.shape == (47, 7, 7, 16) and set(got) == set(lv.WINDOWS)
        for stride, combine in lv.WINDOWS:
            alone = WindowedScorer(segment_scorer(model, torch.device("cpu")), 10, stride, combine=combine)
            with torch.no_grad():
                for t in range(47):
                    alone.push(audio[t], visual[t].reshape(49, 16))
                want = alone.finish()
            assert got[stride, combine].starts == want.starts
            assert np.array_equal(got[stride, combine].probs, want.probs)
            assert (want.relevance is None) == (name == "av_att")
            if want.relevance is not None:
                assert np.array_equal(got[stride, combine].relevance, want.relevance)
    finally:
        lv.VISUAL_DIM[0] = 512


@pytest.mark.parametrize("relevance", [True, False])
def test_oracle_is_the_ground_truth(lv, relevance):
    """The ground truth as scores gives back every event (today's rule: mAP 1 at every tIoU,
    segment and event F1 1) and the second labels all right; a 3-s minimum length loses
    exactly the events shorter than 3 s."""
    cfg = lv.long_config(7, 2, 300, 4)
    plans = long_plans(cfg)
    info = ModelInfo("sel", "x", None, None, 10, 5, "-", tuple(f"synthetic class {k:02d}" for k in range(4)), False)
    videos = [(p, lv.oracle_scores(p, 4, relevance)) for p in plans]
    s = lv.scores(videos, LocalizeRule(), info)
    n = sum(len(p.events) for p in plans)
    assert s["events"] == s["detections"] == n and n > 5
    assert s["average_map"] == s["map50"] == s["segment_f1"] == s["event_f1"] == 1.0
    assert lv.second_accuracy(videos, LocalizeRule(), info) == 1.0
    short = sum(e - b < 3 for p in plans for b, e, *_ in p.events)
    assert short > 0 and lv.scores(videos, LocalizeRule(min_event_s=3), info)["detections"] == n - short


def test_summary_mean_and_std(lv):
    """The seeds' mean +- sample standard deviation, in percent: hand-computed."""
    assert lv.mean_std([0.1, 0.2, 0.3]) == "20.0 +- 10.0" and lv.mean_std([0.5]) == "50.0 +- 0.0"
    assert lv.mean_std([]) == "-"
    assert lv.rule_text(LocalizeRule().to_dict()) == "today's"
    assert lv.rule_text(LocalizeRule(gap_s=3, smooth_k=5).to_dict()) == "smooth_k=5, gap_s=3"


def test_recall_by_length_hand_computed(lv):
    """Events binned by length; found = a detection of the same label and video at tIoU >= 0.5."""
    from avel.pipeline.data.activitynet import Detection, Segment

    truth = [
        Segment("a", 0, 2, "x"),  # 2 s: found by [0, 3) (tIoU 2/3)
        Segment("a", 10, 11, "x"),  # 1 s: [10, 13) has tIoU 1/3: not found
        Segment("a", 20, 25, "y"),  # 5 s: only an "x" detection covers it: not found
        Segment("b", 0, 40, "x"),  # 40 s: found by [5, 40) (tIoU 35/40)
        Segment("b", 50, 90, "y"),  # 40 s: the detection is in video "a": not found
    ]
    dets = [
        Detection("a", 0, 3, "x", 0.1),
        Detection("a", 10, 13, "x", 0.9),
        Detection("a", 20, 25, "x", 0.9),
        Detection("b", 5, 40, "x", 0.5),
        Detection("a", 50, 90, "y", 0.5),
    ]
    got = lv.recall_by_length(truth, dets)
    assert got == {
        "1-2": {"events": 2, "recall": 0.5},
        "3-9": {"events": 1, "recall": 0.0},
        "10-29": {"events": 0, "recall": None},
        "30-120": {"events": 2, "recall": 0.5},
    }
