"""Temporal detection measured as the field measures it: mAP at temporal IoU thresholds
(the ActivityNet detection protocol, used by UnAV-100 and LFAV) and segment-level and
event-level F1 (AVVP's and LFAV's rules). Pure functions on the records of
pipeline/data/activitynet.py; no I/O.

    scores = detection_map(truth, detections)          # truth: [Segment], detections: [Detection]
    scores.map_at(0.5), scores.average_map              # mAP@0.5, mean over tIoU 0.1:0.1:0.9
    segment_f1(truth, detections, durations).f1, event_f1(truth, detections, durations).f1

mAP (ActivityNet's Evaluation/eval_detection.py, rewritten here):
  * the classes are the labels of the ground truth (first appearance order); a detection of
    a label no ground truth has is left out (ActivityNet's reader fails on it) and listed in
    `DetectionScores.unknown_labels`; a class with no detection has AP 0;
  * per class, detections in decreasing score (ties: the later one first, as ActivityNet's
    reversed argsort orders them); each is matched, per threshold, to the unmatched ground
    truth of its class and video with the highest tIoU, taking candidates in decreasing tIoU
    and stopping at the first below the threshold; a detection that finds none (no ground
    truth in its video, every candidate taken: a duplicate) is a false positive;
  * precision and recall after each detection (recall over the class's ground-truth count);
    AP = the VOC 2011 interpolation: precision made monotone from the right, summed over
    the recall change points (`interpolated_ap`);
  * mAP(t) = the mean of the classes' AP at threshold t; the average mAP is the mean of
    mAP over the thresholds. The thresholds are numpy's linspace(0.1, 0.9, 9), the values
    the field's scripts compare against (0.3 is 0.30000000000000004 there too).

Segment-level and event-level F1 (AVVP, Tian et al. 2020; LFAV keeps the rule for long
videos): every video of the ground truth is cut into whole seconds ([t, t+1), t <
ceil(duration)); a second belongs to a class when a segment of that class covers its middle
t + 0.5. Per video and class, TP/FP/FN are counted (seconds; or events: runs of consecutive
seconds of one class, a predicted event correct when some true event of its class has
tIoU >= 0.5, a true event missed when no predicted one has); F1 = 2TP / (2TP + FP + FN) per
class, averaged over the classes that occur (in the truth or the prediction) in that
video, 1.0 for a video where none does; the result is the mean over videos. That is the
macro rule the published AVVP/LFAV tables use, so it is the number to compare with them;
the micro F1 of the pooled counts is reported beside it (`micro_f1`) because on long
videos with many events of a few classes it weighs every second (event) alike. Detections
in videos the ground truth does not hold are outside the F1s (they are false positives for
the mAP)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data.activitynet import Detection, Segment

TIOU_THRESHOLDS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.1, 0.9, 9))
EVENT_TIOU = 0.5  # AVVP's event-level rule


def segment_iou(target: tuple[float, float], candidates: np.ndarray) -> np.ndarray:
    """Temporal IoU of one [start, end] with each row of candidates [N, 2] -> [N]."""
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
    inter = (np.minimum(target[1], candidates[:, 1]) - np.maximum(target[0], candidates[:, 0])).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter / union


def interpolated_ap(precision: Sequence[float], recall: Sequence[float]) -> float:
    """Area under the precision envelope (VOC 2011): precision after each detection made
    non-increasing from the right, summed over the steps where recall changes."""
    p = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    r = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def class_average_precision(
    truth: Sequence[Segment], detections: Sequence[Detection], thresholds: Sequence[float] = TIOU_THRESHOLDS
) -> np.ndarray:
    """AP of one class (all of `truth` and `detections` are of that class) at each threshold
    -> [K]. See the module doc for the matching rule."""
    K = len(thresholds)
    if not detections or not truth:
        return np.zeros(K)
    spans = np.array([(g.start_s, g.end_s) for g in truth], dtype=np.float64)  # (G, 2)
    by_video: dict[str, list[int]] = defaultdict(list)
    for j, g in enumerate(truth):
        by_video[g.video].append(j)
    scores = np.array([d.score for d in detections], dtype=np.float64)
    order = np.argsort(scores, kind="stable")[::-1]
    taken = np.zeros((K, len(truth)), dtype=bool)
    tp = np.zeros((K, len(detections)))
    for rank, i in enumerate(order):
        d = detections[i]
        idx = np.array(by_video.get(d.video, []), dtype=np.int64)
        if not len(idx):
            continue
        iou = segment_iou((d.start_s, d.end_s), spans[idx])
        candidates = idx[np.argsort(iou, kind="stable")[::-1]]
        ious = np.sort(iou, kind="stable")[::-1]
        for k, thr in enumerate(thresholds):
            for j, v in zip(candidates, ious):
                if v < thr:
                    break
                if not taken[k, j]:
                    taken[k, j] = True
                    tp[k, rank] = 1
                    break
    tp_sum = np.cumsum(tp, axis=1)
    fp_sum = np.cumsum(1 - tp, axis=1)
    recall = tp_sum / len(truth)
    precision = tp_sum / (tp_sum + fp_sum)
    return np.array([interpolated_ap(precision[k], recall[k]) for k in range(K)])


@dataclass(frozen=True)
class DetectionScores:
    thresholds: tuple[float, ...]
    classes: tuple[str, ...]
    ap: np.ndarray  # (K thresholds, C classes)
    unknown_labels: tuple[str, ...] = ()  # detected labels the ground truth does not have (left out)

    @property
    def map(self) -> np.ndarray:
        """mAP at each threshold [K]."""
        return self.ap.mean(axis=1) if self.ap.shape[1] else np.zeros(len(self.thresholds))

    @property
    def average_map(self) -> float:
        return float(self.map.mean())

    def map_at(self, threshold: float) -> float:
        k = int(np.argmin(np.abs(np.asarray(self.thresholds) - threshold)))
        if not math.isclose(self.thresholds[k], threshold, abs_tol=1e-9):
            raise ValueError(f"no threshold {threshold} among {self.thresholds}")
        return float(self.map[k])

    def to_dict(self) -> dict:
        return {
            "thresholds": [round(t, 6) for t in self.thresholds],
            "map": [float(x) for x in self.map],
            "average_map": self.average_map,
            "per_class_ap": {c: [float(x) for x in self.ap[:, i]] for i, c in enumerate(self.classes)},
            "unknown_labels": list(self.unknown_labels),
        }


def detection_map(
    truth: Sequence[Segment], detections: Sequence[Detection], thresholds: Sequence[float] = TIOU_THRESHOLDS
) -> DetectionScores:
    """Per-class AP at every threshold and the mAPs (the ActivityNet protocol)."""
    classes = list(dict.fromkeys(g.label for g in truth))
    gt_by: dict[str, list[Segment]] = defaultdict(list)
    det_by: dict[str, list[Detection]] = defaultdict(list)
    for g in truth:
        gt_by[g.label].append(g)
    for d in detections:
        det_by[d.label].append(d)
    ap = np.zeros((len(thresholds), len(classes)))
    for c, name in enumerate(classes):
        ap[:, c] = class_average_precision(gt_by[name], det_by[name], thresholds)
    unknown = tuple(sorted(set(det_by) - set(classes)))
    return DetectionScores(tuple(float(t) for t in thresholds), tuple(classes), ap, unknown)


# -----------------------------------------------------------------------------------------
# segment-level and event-level F1 (AVVP / LFAV)
@dataclass(frozen=True)
class F1Scores:
    f1: float  # the AVVP/LFAV rule: per video, mean over the classes that occur; mean over videos
    micro_f1: float  # 2TP / (2TP + FP + FN) of the counts pooled over videos and classes
    tp: int
    fp: int
    fn: int

    def to_dict(self) -> dict:
        return {"f1": self.f1, "micro_f1": self.micro_f1, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def num_seconds(duration_s: float) -> int:
    return max(1, math.ceil(duration_s - 1e-9))


def second_mask(segments: Sequence[Segment | Detection], T: int) -> np.ndarray:
    """[T] bool: second t is covered when some segment holds its middle t + 0.5."""
    mid = np.arange(T) + 0.5
    out = np.zeros(T, dtype=bool)
    for s in segments:
        out |= (mid >= s.start_s) & (mid < s.end_s)
    return out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive True seconds -> [(start, end)] (end exclusive)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def _event_counts(pred: list[tuple[int, int]], true: list[tuple[int, int]]) -> tuple[int, int, int]:
    """AVVP's event-wise counts: a predicted event is a TP when any true event has tIoU >=
    0.5 (else FP); a true event is a FN when no predicted event has."""

    def hit(a, others):
        return bool(others) and bool((segment_iou(a, np.array(others, dtype=np.float64)) >= EVENT_TIOU).any())

    tp = sum(hit(p, true) for p in pred)
    fn = sum(not hit(t, pred) for t in true)
    return tp, len(pred) - tp, fn


def _f1_over_videos(truth, detections, durations, count) -> F1Scores:
    gt_by: dict[tuple[str, str], list] = defaultdict(list)
    det_by: dict[tuple[str, str], list] = defaultdict(list)
    for g in truth:
        gt_by[g.video, g.label].append(g)
    for d in detections:
        det_by[d.video, d.label].append(d)
    labels: dict[str, set] = defaultdict(set)
    for vid, label in list(gt_by) + list(det_by):
        labels[vid].add(label)
    per_video, totals = [], np.zeros(3, dtype=np.int64)
    for vid, duration in durations.items():
        T = num_seconds(duration)
        fs = []
        for label in sorted(labels.get(vid, ())):
            tp, fp, fn = count(
                second_mask(det_by.get((vid, label), []), T), second_mask(gt_by.get((vid, label), []), T)
            )
            totals += (tp, fp, fn)
            if tp + fp + fn:
                fs.append(2 * tp / (2 * tp + fp + fn))
        per_video.append(float(np.mean(fs)) if fs else 1.0)
    tp, fp, fn = (int(x) for x in totals)
    micro = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return F1Scores(float(np.mean(per_video)) if per_video else 1.0, micro, tp, fp, fn)


def segment_f1(truth: Sequence[Segment], detections: Sequence[Detection], durations: Mapping[str, float]) -> F1Scores:
    """Segment-level (per second) F1 over the videos of `durations` (see the module doc)."""

    def count(pred, true):
        return int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())

    return _f1_over_videos(truth, detections, durations, count)


def event_f1(truth: Sequence[Segment], detections: Sequence[Detection], durations: Mapping[str, float]) -> F1Scores:
    """Event-level F1 (tIoU >= 0.5) over the videos of `durations` (see the module doc)."""
    return _f1_over_videos(truth, detections, durations, lambda pred, true: _event_counts(runs(pred), runs(true)))
