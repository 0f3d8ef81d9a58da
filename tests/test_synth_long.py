"""Long generated feature sets (pipeline/data/synth_long.py): deterministic for a seed, the
event statistics the plan promises, distractors carrying exactly one modality, the
ActivityNet ground truth readable by avel's reader."""

from __future__ import annotations

import numpy as np
import pytest

from avel.core.errors import ConfigError
from avel.pipeline.data.activitynet import parse_ground_truth, read_ground_truth
from avel.pipeline.data.synth import prototypes
from avel.pipeline.data.synth_long import (
    BLOCK_S,
    LongSynthConfig,
    class_names,
    feature_blocks,
    ground_truth,
    long_plans,
    video_features,
    write_ground_truth,
)

SMALL = dict(videos=4, classes=4, min_duration_s=130, max_duration_s=200, max_gap_s=20)


def test_deterministic_and_seed_dependent():
    cfg = LongSynthConfig(**SMALL)
    p1, p2 = long_plans(cfg), long_plans(cfg)
    assert p1 == p2
    a1, v1 = video_features(cfg, p1[0])
    a2, v2 = video_features(cfg, p2[0])
    assert np.array_equal(a1, a2) and np.array_equal(v1, v2)
    assert a1.shape == (p1[0].duration_s, 128) and v1.shape == (p1[0].duration_s, 7, 7, 512)
    assert long_plans(LongSynthConfig(**dict(SMALL, seed=1))) != p1


def test_event_statistics():
    """Over many 1-60 minute plans: lengths within [1, 120] reaching both ends' decades,
    gaps, back-to-back pairs of different classes, distractor runs, both subsets."""
    cfg = LongSynthConfig(videos=40, classes=5, min_duration_s=60, max_duration_s=3600)
    plans = long_plans(cfg)
    lengths = [e - s for p in plans for s, e, *_ in p.events]
    assert min(lengths) >= 1 and max(lengths) <= 120
    assert sum(x <= 2 for x in lengths) >= 10 and sum(x >= 60 for x in lengths) >= 10
    pairs = [(a, b) for p in plans for a, b in zip(p.events, p.events[1:])]
    glued = [(a, b) for a, b in pairs if a[1] == b[0]]
    assert glued and all(a[2] != b[2] for a, b in glued)
    assert any(b[0] > a[1] for a, b in pairs)
    assert all(a[2] != b[2] for a, b in pairs)  # consecutive events never share a class
    assert {p.subset for p in plans} == {"validation", "testing"}
    assert all(60 <= p.duration_s <= 3600 for p in plans) and max(len(p.events) for p in plans) >= 20
    assert all(all(e <= p.duration_s for _, e, *_ in p.events) for p in plans)
    kinds = {d[3] for p in plans for d in p.distractors}
    assert kinds == {"audio", "visual"}
    for p in plans:  # distractors lie in gaps: no event second
        for s, e, *_ in p.distractors:
            assert not any(s < ee and ss < e for ss, ee, *_ in p.events)


def test_distractors_carry_one_modality():
    """With no noise, a second's features are the video's scene plus the prototypes present:
    a distractor second differs from a plain background second by exactly its class's audio
    prototype (sound off screen) or its visual prototype on its cells (silent object)."""
    cfg = LongSynthConfig(**dict(SMALL, videos=12, noise=0.0, distractor=1.0))
    a_proto, v_proto = prototypes(cfg.feature_config())
    checked = set()
    for p in long_plans(cfg):
        if not p.distractors:
            continue
        a, x = video_features(cfg, p)
        busy = np.zeros(p.duration_s, dtype=bool)
        for s, e, *_ in list(p.events) + list(p.distractors):
            busy[s:e] = True
        bg = int(np.nonzero(~busy)[0][0])
        for s, _e, c, modality, cells in p.distractors:
            da, dx = a[s] - a[bg], x[s].reshape(49, 512) - x[bg].reshape(49, 512)
            # (a dim whose scene is below -1.5 stays 0 after the ReLU: changed dims are a subset)
            if modality == "audio":
                assert not (da != 0)[a_proto[c] == 0].any() and (da > 0).sum() >= (a_proto[c] > 0).sum() - 2
                assert not dx.any()
            else:
                assert not da.any()
                expect = np.zeros((49, 512), dtype=bool)
                expect[list(cells)] = v_proto[c] > 0
                assert not (dx != 0)[~expect].any() and (dx > 0).sum() >= expect.sum() - 4
            checked.add(modality)
        s, e, c, _ = p.events[0]  # an event carries both
        assert (a[s] - a[bg] > 0).sum() >= (a_proto[c] > 0).sum() - 2 and (x[s] - x[bg]).any()
    assert checked == {"audio", "visual"}


def test_blocks_are_bounded_and_add_up():
    cfg = LongSynthConfig(**dict(SMALL, videos=1, min_duration_s=150, max_duration_s=150))
    (p,) = long_plans(cfg)
    blocks = list(feature_blocks(cfg, p))
    assert [b[0] for b in blocks] == [0, 60, 120] and [len(b[1]) for b in blocks] == [BLOCK_S, BLOCK_S, 30]
    assert all(b[1].dtype == np.float32 and b[2].dtype == np.float32 for b in blocks)


def test_ground_truth_json_shape(tmp_path):
    cfg = LongSynthConfig(**SMALL)
    plans = long_plans(cfg)
    doc = ground_truth(cfg, plans)
    write_ground_truth(tmp_path / "gt.json", cfg)
    assert read_ground_truth(tmp_path / "gt.json") == parse_ground_truth(doc)
    assert set(doc) == {"version", "taxonomy", "database"}
    v = doc["database"][plans[0].video_id]
    assert set(v) == {"subset", "duration", "annotations"} and v["subset"] in ("validation", "testing")
    assert set(v["annotations"][0]) == {"segment", "label"} and v["annotations"][0]["label"] in class_names(cfg)
    segments, durations = parse_ground_truth(doc, "gt", subset="testing")
    assert set(durations) == {p.video_id for p in plans if p.subset == "testing"}
    assert len(segments) == sum(len(p.events) for p in plans if p.subset == "testing")


def test_visual_dim_default_unchanged_and_narrow_width():
    """visual_dim: the default (512) makes the very features the generator made before the
    field existed (sha256 recorded from that code), and a narrower width gives maps of that
    width whose event seconds carry the width's own prototype (32 active dims) on the event's
    cells, nothing elsewhere (noise 0: an event second minus a plain background second)."""
    import hashlib

    cfg = LongSynthConfig(videos=2, classes=4, min_duration_s=70, max_duration_s=70, max_gap_s=20)
    a, v = video_features(cfg, long_plans(cfg)[1])
    digest = hashlib.sha256(a.tobytes() + v.tobytes()).hexdigest()
    assert digest == "d49cad2dc2c8a1d1ac5bbc8235ceaf0c0a9a860723a46252e66d68cf202c9487"

    narrow = LongSynthConfig(**dict(SMALL, videos=3, noise=0.0, distractor=0.0, visual_dim=128))
    fc = narrow.feature_config()
    assert (fc.visual_dim, fc.visual_active) == (128, 32)
    _, v_proto = prototypes(fc)
    assert v_proto.shape == (4, 128) and (v_proto.sum(1) == 32).all()
    for p in long_plans(narrow):
        a, x = video_features(narrow, p)
        assert a.shape == (p.duration_s, 128) and x.shape == (p.duration_s, 7, 7, 128)
        busy = np.zeros(p.duration_s, dtype=bool)
        for s, e, *_ in p.events:
            busy[s:e] = True
        bg = int(np.nonzero(~busy)[0][0])
        s, _e, c, cells = p.events[0]
        dx = x[s].reshape(49, 128) - x[bg].reshape(49, 128)
        expect = np.zeros((49, 128), dtype=bool)
        expect[list(cells)] = v_proto[c] > 0
        # (a dim whose scene is below -1.5 stays 0 after the ReLU: changed dims are a subset)
        assert not (dx != 0)[~expect].any() and (dx > 0).sum() >= expect.sum() - 4
    with pytest.raises(ConfigError, match="visual_dim"):
        LongSynthConfig(visual_dim=0)


def test_prototype_seed_shares_the_classes_across_seeds():
    """Two sets of different seeds with one prototype_seed: other plans and noise, the same
    classes (noise 0: an event second minus a plain background second is its class's audio
    prototype, here drawn for seed 9 whatever the set's seed); None: the set's own seed."""
    a9, _ = prototypes(LongSynthConfig(**dict(SMALL, seed=9)).feature_config())
    assert (
        LongSynthConfig(**dict(SMALL, seed=9)).feature_config()
        == LongSynthConfig(**dict(SMALL, seed=9, prototype_seed=9)).feature_config()
    )
    seen = set()
    for seed in (1, 2):
        cfg = LongSynthConfig(**dict(SMALL, seed=seed, prototype_seed=9, noise=0.0, distractor=0.0))
        for p in long_plans(cfg):
            a, _ = video_features(cfg, p)
            busy = np.zeros(p.duration_s, dtype=bool)
            for s, e, *_ in p.events:
                busy[s:e] = True
            bg = int(np.nonzero(~busy)[0][0])
            s, _e, c, _ = p.events[0]
            da = a[s] - a[bg]
            # (a dim whose scene is below -1.5 stays 0 after the ReLU: changed dims are a subset)
            assert not (da != 0)[a9[c] == 0].any() and (da > 0).sum() >= (a9[c] > 0).sum() - 2
            seen.add(seed)
    assert seen == {1, 2}
    assert long_plans(LongSynthConfig(**dict(SMALL, seed=1, prototype_seed=9))) != long_plans(
        LongSynthConfig(**dict(SMALL, seed=2, prototype_seed=9))
    )
    a1, _ = prototypes(LongSynthConfig(**dict(SMALL, seed=1)).feature_config())
    assert not np.array_equal(a1, a9)
    with pytest.raises(ConfigError, match="prototype_seed"):
        LongSynthConfig(prototype_seed=-1)
