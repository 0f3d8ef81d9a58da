"""The field's temporal-detection metrics (pipeline/train/detection.py) pinned against cases
worked out by hand from the published rules: ActivityNet's detection mAP
(Evaluation/eval_detection.py: greedy matching by score, VOC 2011 interpolated AP) and
AVVP/LFAV's segment-level and event-level F1; and the ActivityNet JSON reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avel.core.errors import AnnotationError
from avel.pipeline.data.activitynet import Detection, Segment, parse_ground_truth, read_ground_truth, read_results
from avel.pipeline.train.detection import (
    TIOU_THRESHOLDS,
    class_average_precision,
    detection_map,
    event_f1,
    interpolated_ap,
    segment_f1,
    segment_iou,
)

K = len(TIOU_THRESHOLDS)


def seg(s, e, label="a", video="v"):
    return Segment(video, s, e, label)


def det(s, e, score, label="a", video="v"):
    return Detection(video, s, e, label, score)


def test_thresholds_are_the_fields_linspace():
    assert TIOU_THRESHOLDS == tuple(np.linspace(0.1, 0.9, 9))
    assert TIOU_THRESHOLDS[2] == 0.30000000000000004  # what the field's scripts compare against


def test_segment_iou():
    np.testing.assert_allclose(
        segment_iou((0, 10), np.array([[0, 10], [5, 15], [10, 20], [2, 4]])), [1.0, 5 / 15, 0.0, 0.2]
    )


def test_perfect_prediction_is_one():
    truth = [seg(0, 10), seg(20, 35), seg(3, 9, "b", "w")]
    dets = [det(g.start_s, g.end_s, 0.5, g.label, g.video) for g in truth]
    s = detection_map(truth, dets)
    np.testing.assert_array_equal(s.map, np.ones(K))
    assert s.average_map == 1.0 and s.map_at(0.5) == 1.0


def test_empty_predictions_are_zero():
    s = detection_map([seg(0, 10), seg(1, 2, "b")], [])
    assert s.average_map == 0.0 and s.ap.shape == (K, 2)


def test_two_predictions_worked_by_hand():
    """Ground truth (one class, one video): g1 = [0, 10], g2 = [8, 20].
    d1 = [5, 15] score 0.9: tIoU with g1 = 5/15 = 0.333, with g2 = 7/15 = 0.467.
    d2 = [0, 10] score 0.8: tIoU with g1 = 1, with g2 = 2/20 = 0.1.
    At tIoU 0.3: d1 takes g2 (its best), d2 takes g1: precision [1, 1], recall [.5, 1] -> AP 1.
    At tIoU 0.5: d1 matches nothing (FP), d2 takes g1: precision [0, .5], recall [0, .5];
    the envelope is [.5, .5] -> AP = 0.5 (recall step) x 0.5 = 0.25.
    At 0.4: d1 takes g2 (0.467 >= 0.4): AP 1. At 0.1 and 0.2 also 1; 0.6..0.9: d2 alone, 0.25."""
    truth = [seg(0, 10), seg(8, 20)]
    ap = class_average_precision(truth, [det(5, 15, 0.9), det(0, 10, 0.8)])
    np.testing.assert_allclose(ap, [1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25, 0.25])


def test_duplicates_are_false_positives():
    """g1 = [0, 10], g2 = [20, 30]; detections by score: [0,10] .9 (TP), the same again .8
    (its ground truth is taken: FP), [20,30] .7 (TP). Precision [1, .5, 2/3], recall
    [.5, .5, 1]; envelope [1, 2/3, 2/3] -> AP = .5 x 1 + .5 x 2/3 = 5/6."""
    truth = [seg(0, 10), seg(20, 30)]
    ap = class_average_precision(truth, [det(0, 10, 0.9), det(0, 10, 0.8), det(20, 30, 0.7)])
    np.testing.assert_allclose(ap, np.full(K, 5 / 6))
    assert class_average_precision(truth, [det(0, 10, 0.9), det(20, 30, 0.7)]).tolist() == [1.0] * K


def test_score_order_matters():
    """One truth [0, 10]; a false detection [40, 50] ranked first gives precision [0, .5],
    recall [0, 1] -> AP 0.5; ranked last it costs nothing: AP 1."""
    truth = [seg(0, 10)]
    assert class_average_precision(truth, [det(40, 50, 0.9), det(0, 10, 0.5)]).tolist() == [0.5] * K
    assert class_average_precision(truth, [det(40, 50, 0.1), det(0, 10, 0.5)]).tolist() == [1.0] * K


def test_thresholds_cut_by_tiou():
    """[0, 6] against [0, 10]: tIoU 0.6 counts up to threshold 0.6; [0, 3] (tIoU exactly
    0.3) fails at the field's 0.30000000000000004."""
    assert class_average_precision([seg(0, 10)], [det(0, 6, 1)]).tolist() == [1] * 6 + [0] * 3
    assert class_average_precision([seg(0, 10)], [det(0, 3, 1)]).tolist() == [1, 1] + [0] * 7


def test_other_video_or_class_never_matches():
    truth = [seg(0, 10, "a", "v")]
    assert class_average_precision(truth, [det(0, 10, 0.9, video="w"), det(0, 10, 0.5)]).tolist() == [0.5] * K
    s = detection_map(truth + [seg(0, 5, "b")], [det(0, 10, 0.9, "b"), det(0, 10, 0.5, "a"), det(0, 1, 1, "zzz")])
    assert s.classes == ("a", "b") and s.unknown_labels == ("zzz",)
    np.testing.assert_allclose(s.ap[:, 0], 1.0)  # a: the only detection of a is right
    np.testing.assert_allclose(s.ap[:, 1], [1, 1, 1, 1, 1, 0, 0, 0, 0])  # b: [0,10] vs [0,5]: tIoU 0.5


def test_class_without_detections_counts_zero():
    s = detection_map([seg(0, 10, "a"), seg(0, 10, "b")], [det(0, 10, 1.0, "a")])
    np.testing.assert_allclose(s.map, 0.5)


def test_interpolated_ap_against_a_brute_force_envelope():
    """VOC 2011 AP = sum over the true positives of max(precision at this rank or later) / npos."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, npos = int(rng.integers(1, 12)), int(rng.integers(1, 8))
        tp = rng.random(n) < 0.5
        tp[np.cumsum(tp) > npos] = False
        precision = np.cumsum(tp) / np.arange(1, n + 1)
        recall = np.cumsum(tp) / npos
        brute = sum(precision[i:].max() for i in range(n) if tp[i]) / npos
        assert interpolated_ap(precision, recall) == pytest.approx(brute)


def test_segment_and_event_f1_worked_by_hand():
    """Video v (10 s): truth a [0,4], b [4,6]; prediction a [0,3], b [4,6], c [8,10].
    Seconds: a TP 3 FN 1 -> F 6/7; b TP 2 -> 1; c FP 2 -> 0; v's F = (6/7 + 1 + 0) / 3.
    Events: a [0,3] vs [0,4] tIoU .75 -> TP; b TP; c FP -> (1 + 1 + 0) / 3.
    Video w (5 s): nothing anywhere -> 1.0. The result is the mean over v and w; micro F1
    pools the counts: seconds TP 5 FP 2 FN 1 -> 10/13, events TP 2 FP 1 FN 0 -> 4/5."""
    truth = [seg(0, 4, "a"), seg(4, 6, "b")]
    pred = [det(0, 3, 1, "a"), det(4, 6, 1, "b"), det(8, 10, 1, "c")]
    durations = {"v": 10.0, "w": 5.0}
    s = segment_f1(truth, pred, durations)
    assert s.f1 == pytest.approx(((6 / 7 + 1 + 0) / 3 + 1) / 2)
    assert (s.tp, s.fp, s.fn) == (5, 2, 1) and s.micro_f1 == pytest.approx(10 / 13)
    e = event_f1(truth, pred, durations)
    assert e.f1 == pytest.approx((2 / 3 + 1) / 2)
    assert (e.tp, e.fp, e.fn) == (2, 1, 0) and e.micro_f1 == pytest.approx(4 / 5)


def test_event_f1_needs_half_overlap_and_splits_runs():
    """Truth a [0,10]; predicted a [0,4] and [6,10] (two events, tIoU .4 each): both FP and
    the truth missed -> F 0. A prediction [0,5] (tIoU exactly .5) counts, as AVVP's >=."""
    truth = [seg(0, 10)]
    assert event_f1(truth, [det(0, 4, 1), det(6, 10, 1)], {"v": 10}).f1 == 0.0
    assert event_f1(truth, [det(0, 5, 1)], {"v": 10}).f1 == 1.0
    assert segment_f1(truth, [det(0, 5, 1)], {"v": 10}).f1 == pytest.approx(2 * 5 / (2 * 5 + 5))
    assert segment_f1(truth, [], {"v": 10}).f1 == 0.0 and segment_f1(truth, truth_as_det(truth), {"v": 10}).f1 == 1


def truth_as_det(truth):
    return [det(g.start_s, g.end_s, 1.0, g.label, g.video) for g in truth]


def test_reader_round_trip_and_errors(tmp_path):
    doc = {
        "version": "1.3",
        "taxonomy": [],
        "database": {
            "v": {"subset": "testing", "duration": 12.5, "annotations": [{"segment": [1, 3.5], "label": "dog"}]},
            "w": {"subset": "validation", "duration": 4, "annotations": []},
        },
    }
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(doc))
    truth, durations = read_ground_truth(p, subset="testing")
    assert truth == [Segment("v", 1.0, 3.5, "dog")] and durations == {"v": 12.5}
    assert read_ground_truth(p)[1] == {"v": 12.5, "w": 4.0}
    r = tmp_path / "res.json"
    r.write_text(
        json.dumps(
            {"version": "x", "results": {"v": [{"label": "dog", "score": 0.5, "segment": [1, 3]}]}, "external_data": {}}
        )
    )
    assert read_results(r) == [Detection("v", 1.0, 3.0, "dog", 0.5)]
    bad = dict(
        doc, database={"v": {"subset": "testing", "duration": 3, "annotations": [{"segment": [3, 3], "label": "dog"}]}}
    )
    with pytest.raises(AnnotationError, match="start < end"):
        parse_ground_truth(bad, "gt.json")
    r.write_text(json.dumps({"results": {"v": [{"label": "dog", "score": None, "segment": [1, 3]}]}}))
    with pytest.raises(AnnotationError, match="res.json.*score"):
        read_results(r)
    with pytest.raises(AnnotationError, match="no such file"):
        read_results(tmp_path / "missing.json")
