"""The localization rule's knobs (pipeline/apps/windows.py: LocalizeRule, how windows combine,
smoothing, gap filling, minimum length, event scores, --min-score) against hand-computed
cases, and localization from features (pipeline/apps/localize.py: localize_features) against
the model run directly on the window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avel.core.errors import ConfigError
from avel.models.inference import SegmentScores
from avel.models.registry import build_model, model_config
from avel.pipeline.apps.localize import localize_features
from avel.pipeline.apps.outputs import ModelInfo
from avel.pipeline.apps.windows import (
    Event,
    LocalizeRule,
    WindowedScorer,
    apply_rule,
    centre_weights,
    fill_gaps,
    merge_intervals,
    smooth_seconds,
    window_starts,
)

BG = "background"


class Stub:
    """probs = [a0, 1 - a0], relevance = a1, audio/visual relevance = a2, a3 of each segment."""

    def __call__(self, audio, visual):
        p0 = audio[..., 0]
        return SegmentScores(np.stack([p0, 1 - p0], axis=-1), audio[..., 1], audio[..., 2], audio[..., 3])


class PositionStub:
    """Scores that depend on where a second sits in its window: relevance = position / 10,
    so combining windows by mean, max or centre weights gives hand-computable numbers."""

    def __call__(self, audio, visual):
        B, W = audio.shape[:2]
        pos = np.broadcast_to(np.arange(W, dtype=np.float64) / 10, (B, W))
        return SegmentScores(np.stack([pos, 1 - pos], axis=-1), pos, None, None)


def run(scorer_model, n, window, stride, combine):
    scorer = WindowedScorer(scorer_model, window, stride, batch=3, combine=combine)
    for _ in range(n):
        scorer.push(np.zeros(4), np.zeros((2, 3)))
    return scorer.finish()


def test_combine_mean_max_centre_by_hand():
    # n = 6, window 4, stride 2: windows start at 0 and 2; second 2 is position 2 of the first
    # window and position 0 of the second; second 3: positions 3 and 1
    mean, mx, centre = (run(PositionStub(), 6, 4, 2, c).relevance for c in ("mean", "max", "centre"))
    assert np.allclose(mean, [0.0, 0.1, 0.1, 0.2, 0.2, 0.3])
    assert np.allclose(mx, [0.0, 0.1, 0.2, 0.3, 0.2, 0.3])
    assert centre_weights(4).tolist() == [1, 2, 2, 1] and centre_weights(5).tolist() == [1, 2, 3, 2, 1]
    # second 2: 0.2 at weight 2 and 0.0 at weight 1 -> 0.4 / 3; second 3: 0.3 x 1 + 0.1 x 2 -> 0.5 / 3
    assert np.allclose(centre, [0.0, 0.1, 0.4 / 3, 0.5 / 3, 0.2, 0.3])


def test_default_combine_is_todays_mean():
    rows = np.random.default_rng(3).uniform(size=(23, 4))
    a, b = WindowedScorer(Stub(), 10, 5, batch=2), WindowedScorer(Stub(), 10, 5, batch=2, combine="mean")
    for t in range(23):
        a.push(rows[t], np.zeros((2, 3)))
        b.push(rows[t], np.zeros((2, 3)))
    pa, pb = a.finish(), b.finish()
    assert np.array_equal(pa.probs, pb.probs) and np.array_equal(pa.relevance, pb.relevance)
    total, count = np.zeros(23), np.zeros(23)
    for s in window_starts(23, 10, 5):
        total[s : s + 10] += rows[s : s + 10, 1]
        count[s : s + 10] += 1
    assert np.allclose(pa.relevance, total / count)


def test_smoothing_by_hand():
    x = np.array([0.0, 1.0, 0.0, 0.0, 5.0, 0.0])
    assert smooth_seconds(x, 0) is x and smooth_seconds(x, 1) is x
    assert smooth_seconds(x, 3, "median").tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # lone spikes go
    assert np.allclose(smooth_seconds(x, 3, "mean"), [1 / 3, 1 / 3, 1 / 3, 5 / 3, 5 / 3, 5 / 3])  # edges repeated
    two = np.stack([x, 2 * x], axis=1)
    assert np.allclose(smooth_seconds(two, 3, "mean")[:, 1], 2 * smooth_seconds(x, 3, "mean"))


def test_fill_gaps_by_hand():
    labels = ["a", BG, "a", BG, BG, "a", BG, "b", BG, BG, BG, "b", BG]
    assert fill_gaps(labels, 0) == labels
    assert fill_gaps(labels, 1) == ["a", "a", "a", BG, BG, "a", BG, "b", BG, BG, BG, "b", BG]
    assert fill_gaps(labels, 2) == ["a"] * 6 + [BG, "b", BG, BG, BG, "b", BG]  # a-gap-b is never filled
    assert fill_gaps(labels, 3) == ["a"] * 6 + [BG] + ["b"] * 5 + [BG]  # the edges stay


def test_default_rule_is_merge_intervals_bit_for_bit():
    rng = np.random.default_rng(0)
    labels = [["a", "b", BG][i] for i in rng.integers(0, 3, 50)]
    prob, rel = rng.uniform(size=50), rng.uniform(size=50)
    assert apply_rule(labels, prob, rel, LocalizeRule()) == merge_intervals(labels, (prob * rel).tolist())
    assert apply_rule(labels, prob, None, LocalizeRule()) == merge_intervals(labels, prob.tolist())


def test_event_scores_min_length_and_min_score_by_hand():
    labels = ["a", "a", BG, "a", BG, BG, "b"]
    prob = np.array([0.8, 0.6, 0.9, 1.0, 0.5, 0.5, 0.4])
    rel = np.array([1.0, 0.5, 0.2, 1.0, 0.1, 0.1, 1.0])

    def events(**kw):
        return [
            (e.start_s, e.end_s, e.label, round(e.score, 6)) for e in apply_rule(labels, prob, rel, LocalizeRule(**kw))
        ]

    # gap filling: [0, 4) is one "a" event; its seconds' p x r: 0.8, 0.3, 0.18, 1.0
    assert events(gap_s=1) == [(0, 4, "a", round((0.8 + 0.3 + 0.18 + 1.0) / 4, 6)), (6, 7, "b", 0.4)]
    assert events(gap_s=1, event_score="mean_prob") == [(0, 4, "a", 0.825), (6, 7, "b", 0.4)]
    assert events(gap_s=1, event_score="prob_x_relevance") == [(0, 4, "a", round(0.825 * 0.675, 6)), (6, 7, "b", 0.4)]
    assert events(gap_s=1, event_score="max") == [(0, 4, "a", 1.0), (6, 7, "b", 0.4)]
    assert events(min_event_s=2) == [(0, 2, "a", 0.55)]
    assert events(min_score=0.5) == [(0, 2, "a", 0.55), (3, 4, "a", 1.0)]
    assert events(min_score=0.56) == [(3, 4, "a", 1.0)]


@pytest.mark.parametrize(
    "kw",
    [
        dict(combine="median"),
        dict(smooth="max"),
        dict(event_score="sum"),
        dict(stride_s=0),
        dict(smooth_k=-1),
        dict(gap_s=1.5),
        dict(min_event_s=0),
        dict(min_score=1.5),
        dict(min_score=float("nan")),
        dict(min_score=True),
        dict(gap_s=86_401),
        dict(smooth_k=10**20),
    ],
)
def test_rule_refuses_bad_knobs(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        LocalizeRule(**kw)


def test_cli_options_map_onto_the_rule_one_to_one(monkeypatch, tmp_path):
    """`avel localize` takes every LocalizeRule field, one option each, and passes the rule on."""
    from avel import cli
    from avel.pipeline.apps import localize as localize_module
    from avel.pipeline.apps import save as save_module

    seen = []
    monkeypatch.setattr(localize_module, "localize", lambda videos, ckpt, rule, **kw: seen.append(rule) or [])
    monkeypatch.setattr(save_module, "save_localizations", lambda *a, **kw: None)
    base = ["localize", str(tmp_path / "v.mp4"), "--checkpoint", str(tmp_path / "sel.safetensors"), "--device", "cpu"]
    assert cli.main(base) == 0 and seen[-1] == LocalizeRule()
    args = ["--stride", "2", "--combine", "centre", "--smooth", "mean", "--smooth-k", "5", "--gap", "3"]
    args += ["--min-event", "2", "--event-score", "max", "--min-score", "0.25"]
    assert cli.main(base + args) == 0
    assert seen[-1] == LocalizeRule(
        stride_s=2,
        combine="centre",
        smooth="mean",
        smooth_k=5,
        gap_s=3,
        min_event_s=2,
        event_score="max",
        min_score=0.25,
    )
    fields = {f.name for f in dataclasses.fields(LocalizeRule)}
    assert fields == {"stride_s", "combine", "smooth", "smooth_k", "gap_s", "min_event_s", "event_score", "min_score"}


# ---------------------------------------------------------------------------------------
# localization from features
CLASSES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def dam():
    torch.manual_seed(0)
    return build_model(model_config(task="sel", name="dam", num_classes=len(CLASSES) + 1)).eval()


def info(window=10, stride=5):
    return ModelInfo(
        task="sel",
        model="dam",
        embedding=None,
        matching=None,
        window=window,
        stride=stride,
        checkpoint="in-memory",
        classes=tuple(CLASSES),
        features_from_checkpoint=False,
    )


def features(T, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 2, (T, 128)).astype(np.float32), rng.uniform(0, 2, (T, 7, 7, 512)).astype(np.float32))


def test_features_of_one_window_give_the_models_own_scores(dam):
    audio, visual = features(10)
    r = localize_features("clip", [(audio, visual)], dam, info())
    with torch.no_grad():
        out = dam.score_segments(torch.from_numpy(audio)[None], torch.from_numpy(visual.reshape(1, 10, 49, 512)))
    rel = np.asarray(out.relevance)[0]
    assert r.ok and r.duration_s == 10 and len(r.segments) == 10
    assert np.allclose([s.relevance for s in r.segments], rel, atol=1e-6)
    best = np.asarray(out.probs)[0, :, :3].argmax(1)
    assert [s.label for s in r.segments] == [BG if x < 0.5 else CLASSES[b] for x, b in zip(rel, best)]


def test_blocks_or_whole_video_same_result(dam):
    audio, visual = features(37, seed=1)
    whole = localize_features("v", [(audio, visual)], dam, info())
    blocks = localize_features("v", [(audio[i : i + 8], visual[i : i + 8]) for i in range(0, 37, 8)], dam, info())
    assert whole.to_dict() == blocks.to_dict() and len(whole.segments) == 37
    other = localize_features("v", [(audio, visual)], dam, info(), LocalizeRule(combine="max", smooth_k=3, gap_s=2))
    assert len(other.segments) == 37 and all(e.end_s - e.start_s >= 1 for e in other.events)
    assert all(isinstance(e, Event) for e in other.events)
