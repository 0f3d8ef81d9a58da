"""ActivityNet's JSON files, the format every temporal-detection evaluation reads: ground
truth (`{"version", "taxonomy", "database": {video_id: {"subset", "duration",
"annotations": [{"segment": [start_s, end_s], "label"}]}}}`) and detection results
(`{"version", "results": {video_id: [{"label", "score", "segment": [start_s, end_s]}]},
"external_data": {}}`).

    truth, durations = read_ground_truth("gt.json", subset="testing")
    detections = read_results("results.json")

The records (`Segment`, `Detection`) are what pipeline/train/detection.py scores. A
malformed file is an AnnotationError naming the file and the entry; a segment must have
finite times with start < end (a zero-length segment has no temporal IoU)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from ...core.errors import AnnotationError, shown

SUBSETS = ("training", "validation", "testing")


@dataclass(frozen=True)
class Segment:
    """A ground-truth event: [start_s, end_s) of `video`, of class `label`."""

    video: str
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class Detection:
    """A predicted event with its confidence (higher: surer)."""

    video: str
    start_s: float
    end_s: float
    label: str
    score: float


def _load(path) -> dict:
    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise AnnotationError(f"{shown(path)}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{shown(path)}: not a JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise AnnotationError(f"{shown(path)}: must be a JSON object")
    return doc


def _segment(value, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    ):
        raise AnnotationError(f"{where}: segment must be [start, end] in seconds, got {value!r}")
    start, end = float(value[0]), float(value[1])
    if not (math.isfinite(start) and math.isfinite(end)) or not start < end:
        raise AnnotationError(f"{where}: segment must have finite start < end, got {value!r}")
    return start, end


def parse_ground_truth(
    doc: dict, where: str = "ground truth", subset: str | None = None
) -> tuple[list[Segment], dict[str, float]]:
    """The segments and the durations (seconds) of the videos of `subset` (all when None) of
    an ActivityNet ground-truth document. A video without annotations still counts (its
    duration is kept: its seconds are all background)."""
    for key in ("version", "taxonomy", "database"):
        if key not in doc:
            raise AnnotationError(f"{where}: not an ActivityNet ground truth (no {key!r} key)")
    if not isinstance(doc["database"], dict):
        raise AnnotationError(f"{where}: 'database' must be an object of videos")
    segments, durations = [], {}
    for vid, v in doc["database"].items():
        at = f"{where}: video {vid!r}"
        if not isinstance(v, dict) or not isinstance(v.get("annotations"), list):
            raise AnnotationError(f"{at}: needs an 'annotations' list")
        if subset is not None and v.get("subset") != subset:
            continue
        duration = v.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < math.inf:
            raise AnnotationError(f"{at}: 'duration' must be a positive number of seconds, got {duration!r}")
        durations[vid] = float(duration)
        for i, a in enumerate(v["annotations"]):
            if not isinstance(a, dict) or not isinstance(a.get("label"), str):
                raise AnnotationError(f"{at}, annotation {i}: needs a 'label' string")
            start, end = _segment(a.get("segment"), f"{at}, annotation {i}")
            segments.append(Segment(vid, start, end, a["label"]))
    return segments, durations


def read_ground_truth(path: str | os.PathLike, subset: str | None = None) -> tuple[list[Segment], dict[str, float]]:
    return parse_ground_truth(_load(path), shown(path), subset)


def parse_results(doc: dict, where: str = "results") -> list[Detection]:
    """The detections of an ActivityNet results document."""
    results = doc.get("results")
    if not isinstance(results, dict):
        raise AnnotationError(f"{where}: not an ActivityNet results file (no 'results' object)")
    out = []
    for vid, items in results.items():
        if not isinstance(items, list):
            raise AnnotationError(f"{where}: video {vid!r}: results must be a list")
        for i, r in enumerate(items):
            at = f"{where}: video {vid!r}, result {i}"
            if not isinstance(r, dict) or not isinstance(r.get("label"), str):
                raise AnnotationError(f"{at}: needs a 'label' string")
            score = r.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise AnnotationError(f"{at}: 'score' must be a finite number, got {score!r}")
            start, end = _segment(r.get("segment"), at)
            out.append(Detection(vid, start, end, r["label"], float(score)))
    return out


def read_results(path: str | os.PathLike) -> list[Detection]:
    return parse_results(_load(path), shown(path))


def taxonomy(class_names) -> list[dict]:
    """A flat ActivityNet taxonomy: every class a child of one root node."""
    nodes = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    return nodes + [
        {"nodeId": k + 1, "nodeName": name, "parentId": 0, "parentName": "Root"} for k, name in enumerate(class_names)
    ]
