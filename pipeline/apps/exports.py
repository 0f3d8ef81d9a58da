"""Exports of `avel localize` results (a list of `VideoLocalization`) in the formats the
receiving tools read:

    write_activitynet(results, "results.json")                # every ActivityNet-style evaluation script
    write_fiftyone(results, "fo_dir", frame_rate=25)          # fo.Dataset.from_dir(dataset_dir="fo_dir", data_path="data.json",
                                                              #   dataset_type=fo.types.FiftyOneTemporalDetectionDataset)
    write_labelstudio(results, "tasks.json", frame_rate=25)   # Label Studio: import tasks with predictions
    export_file("results.json", "fiftyone", "fo_dir", frame_rate=25)   # `avel export`: from `avel localize --json`
    evaluate_files("gt.json", "detections.json")              # `avel detect-eval`: mAP and F1s

* ActivityNet detection results: `{"version", "results": {video_id: [{"label", "score",
  "segment": [start_s, end_s]}]}, "external_data": {}}`; the video id is the file's stem
  (`video_ids` maps paths to other ids); two videos with one id are refused.
* FiftyOne's FiftyOneTemporalDetectionDataset: a folder with `labels.json` (`{"classes":
  null, "labels": {video_id: [{"label", "support": [first_frame, last_frame],
  "confidence"}]}}`) and `data.json`, the importer's data manifest (`{video_id: absolute
  video path}`), so the videos stay where they are; each video becomes a sample with a
  TemporalDetections field. The ids are the ActivityNet export's.
* Label Studio: a JSON list of tasks `{"data": {"video": path}, "predictions": [{"model_version",
  "score", "result": [{"id", "from_name", "to_name", "type": "timelinelabels", "value":
  {"ranges": [{"start", "end"}], "timelinelabels": [label]}, "score"}]}]}` for the labeling
  config of `labelstudio_config` (a Video tag with the frame rate and a TimelineLabels tag).

Frames: FiftyOne's support and Label Studio's ranges count frames from 1, both ends
included. An event [start_s, end_s) covers the frames that show part of it: frame n shows
[(n-1)/fps, n/fps), so the first is floor(start_s x fps) + 1 and the last ceil(end_s x fps)
(`frame_support`; at 25 fps, [2 s, 5 s) is frames 51..125). The frame rate is the video's,
given per video (a mapping) or for all.

Videos that failed (`.error`) have no events and are left out of every export. A score
that is not a finite number is refused (JSON has no NaN). Files go through the atomic
writer."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...core import jsonio
from ...core.atomic import write_text_atomic
from ...core.config import check_range
from ...core.errors import AnnotationError, ConfigError, shown
from ..data.activitynet import parse_results, read_ground_truth, read_results
from ..train.detection import detection_map, event_f1, segment_f1
from .outputs import ModelInfo, VideoLocalization
from .windows import Event

FIFTYONE_LABELS = "labels.json"
FIFTYONE_DATA = "data.json"
LS_FROM_NAME = "events"
LS_TO_NAME = "video"
EPS = 1e-6  # float slack on frame boundaries


def frame_support(start_s: float, end_s: float, frame_rate: float) -> tuple[int, int]:
    """[first, last] frames (1-based, inclusive) that show part of [start_s, end_s)."""
    first = math.floor(start_s * frame_rate + EPS) + 1
    last = math.ceil(end_s * frame_rate - EPS)
    return first, max(first, last)


def _rate(frame_rate: float | Mapping[str, float], video: str) -> float:
    rate = frame_rate.get(video) if isinstance(frame_rate, Mapping) else frame_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise ConfigError("frame_rate", rate, f"{shown(video)}: needs a positive frame rate (frames a second)")
    return float(rate)


def _score(r: VideoLocalization, score: float) -> float:
    if not math.isfinite(score):
        raise ConfigError("score", score, f"{shown(r.video)}: an event score must be a finite number")
    return round(float(score), 6)


def _done(results: Sequence[VideoLocalization]) -> list[VideoLocalization]:
    return [r for r in results if r.ok]


def _dump(doc) -> str:
    return jsonio.dumps(doc, nonfinite="refuse", indent=1) + "\n"


# -- ActivityNet -------------------------------------------------------------------------------
def _ids(
    results: Sequence[VideoLocalization], video_ids: Mapping[str, str] | None
) -> list[tuple[str, VideoLocalization]]:
    """(video id, result) of the decoded videos: `video_ids[path]`, else the file's stem."""
    out, owner = [], {}
    for r in _done(results):
        vid = (video_ids or {}).get(r.video) or Path(r.video).stem
        if vid in owner:
            raise ConfigError("video_ids", vid, f"{shown(owner[vid])} and {shown(r.video)} have the same video id")
        owner[vid] = r.video
        out.append((vid, r))
    return out


def activitynet_results(
    results: Sequence[VideoLocalization], *, video_ids: Mapping[str, str] | None = None, version: str = "avel"
) -> dict:
    out: dict[str, list] = {}
    for vid, r in _ids(results, video_ids):
        out[vid] = [
            {"label": e.label, "score": _score(r, e.score), "segment": [float(e.start_s), float(e.end_s)]}
            for e in r.events
        ]
    return {"version": version, "results": out, "external_data": {}}


def write_activitynet(results: Sequence[VideoLocalization], path: str | os.PathLike, **kw) -> Path:
    write_text_atomic(path, _dump(activitynet_results(results, **kw)))
    return Path(path)


# -- FiftyOne ----------------------------------------------------------------------------------
def fiftyone_dataset(
    results: Sequence[VideoLocalization],
    *,
    frame_rate: float | Mapping[str, float],
    video_ids: Mapping[str, str] | None = None,
) -> tuple[dict, dict]:
    """(labels.json, data.json) of a FiftyOneTemporalDetectionDataset."""
    labels, data = {}, {}
    for vid, r in _ids(results, video_ids):
        rate = _rate(frame_rate, r.video)
        data[vid] = os.path.abspath(r.video)
        labels[vid] = [
            {
                "label": e.label,
                "support": list(frame_support(e.start_s, e.end_s, rate)),
                "confidence": _score(r, e.score),
            }
            for e in r.events
        ]
    return {"classes": None, "labels": labels}, data


def write_fiftyone(
    results: Sequence[VideoLocalization],
    out_dir: str | os.PathLike,
    *,
    frame_rate: float | Mapping[str, float],
    video_ids: Mapping[str, str] | None = None,
) -> Path:
    """A FiftyOneTemporalDetectionDataset folder (labels.json, data.json); returns the folder."""
    labels, data = fiftyone_dataset(results, frame_rate=frame_rate, video_ids=video_ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / FIFTYONE_DATA, _dump(data))
    write_text_atomic(out / FIFTYONE_LABELS, _dump(labels))
    return out


# -- Label Studio ------------------------------------------------------------------------------
def labelstudio_config(classes: Sequence[str], frame_rate: float) -> str:
    """The labeling config the tasks of `labelstudio_tasks` are made for."""
    from xml.sax.saxutils import quoteattr

    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Video name="{LS_TO_NAME}" value="$video" frameRate="{frame_rate:g}"/>'
        f'<TimelineLabels name="{LS_FROM_NAME}" toName="{LS_TO_NAME}">{labels}</TimelineLabels></View>'
    )


def labelstudio_tasks(
    results: Sequence[VideoLocalization], *, frame_rate: float | Mapping[str, float], model_version: str | None = None
) -> list[dict]:
    tasks = []
    for r in _done(results):
        rate = _rate(frame_rate, r.video)
        version = model_version or (f"{r.model.model}:{Path(r.model.checkpoint).name}" if r.model else "avel")
        result = []
        for i, e in enumerate(r.events):
            first, last = frame_support(e.start_s, e.end_s, rate)
            result.append(
                {
                    "id": f"event{i}",
                    "from_name": LS_FROM_NAME,
                    "to_name": LS_TO_NAME,
                    "type": "timelinelabels",
                    "origin": "prediction",
                    "value": {"ranges": [{"start": first, "end": last}], "timelinelabels": [e.label]},
                    "score": _score(r, e.score),
                }
            )
        score = round(sum(x["score"] for x in result) / len(result), 6) if result else 0.0
        tasks.append(
            {"data": {"video": r.video}, "predictions": [{"model_version": version, "score": score, "result": result}]}
        )
    return tasks


def write_labelstudio(results: Sequence[VideoLocalization], path: str | os.PathLike, **kw) -> Path:
    write_text_atomic(path, _dump(labelstudio_tasks(results, **kw)))
    return Path(path)


# -- `avel export` and `avel detect-eval` --------------------------------------------------------
FORMATS = ("activitynet", "fiftyone", "labelstudio")


def _event(e, where: str) -> Event:
    if not isinstance(e, dict):
        raise AnnotationError(f"{where}: an event must be an object")
    start, end, label, score = e.get("start_s"), e.get("end_s"), e.get("label"), e.get("score")
    if not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (start, end, score)
    ):
        raise AnnotationError(
            f"{where}: start_s, end_s and score must be finite numbers, got {start!r}, {end!r}, {score!r}"
        )
    if not isinstance(label, str) or not start < end:
        raise AnnotationError(f"{where}: needs a 'label' string and start_s < end_s")
    return Event(start, end, label, float(score))


def read_localizations(path: str | os.PathLike) -> list[VideoLocalization]:
    """The results of `avel localize --json` (one object or a list of them), events and model
    only (what the exports need); AnnotationError naming the file for anything else."""
    where = shown(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AnnotationError(
            f"{where}: not a JSON file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    docs = [doc] if isinstance(doc, dict) and "video" in doc else doc
    if not isinstance(docs, list):
        raise AnnotationError(f"{where}: not `avel localize --json` output (a result object or a list of them)")
    out = []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not isinstance(d.get("video"), str) or not isinstance(d.get("events"), list):
            raise AnnotationError(f"{where}: result {i} is not a localization result (needs 'video' and 'events')")
        m = d.get("model")
        model = None
        if isinstance(m, dict):
            try:
                model = ModelInfo(**{**m, "classes": tuple(m.get("classes") or ())})
            except TypeError:
                model = None  # an older or foreign model record: the exports only name it
        events = [_event(e, f"{where}: result {i} ({d['video']}), event {k}") for k, e in enumerate(d["events"])]
        out.append(
            VideoLocalization(
                video=d["video"], duration_s=d.get("duration_s"), events=events, model=model, error=d.get("error")
            )
        )
    return out


def export_file(results_json: str | os.PathLike, fmt: str, out: str | os.PathLike, *, frame_rate: float = 25.0) -> Path:
    """`avel localize --json` output -> `fmt` (FORMATS) at `out` (a file; a folder for fiftyone)."""
    if fmt not in FORMATS:
        raise ConfigError("format", fmt, f"must be one of {', '.join(FORMATS)}")
    check_range("frame_rate", frame_rate, 0.0, 1000.0, lo_open=True)  # refused before the file is read
    results = read_localizations(results_json)
    if fmt == "activitynet":
        return write_activitynet(results, out)
    if fmt == "fiftyone":
        return write_fiftyone(results, out, frame_rate=frame_rate)
    return write_labelstudio(results, out, frame_rate=frame_rate)


def _detections(path) -> list:
    """The detections of an ActivityNet results file or of `avel localize --json` output."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return read_results(path)  # its own one-line errors
    if isinstance(doc, dict) and "results" in doc:
        return read_results(path)
    if not (isinstance(doc, list) or isinstance(doc, dict) and "video" in doc):
        raise AnnotationError(
            f"{shown(path)}: neither ActivityNet results (no 'results' object) nor `avel localize --json` output"
        )
    return parse_results(activitynet_results(read_localizations(path)), shown(path))


def evaluate_files(ground_truth: str | os.PathLike, results: str | os.PathLike, subset: str | None = None) -> dict:
    """ActivityNet ground truth and results (ActivityNet results, or `avel localize --json`
    output: video ids are the files' stems) -> {"map": {tIoU: mAP}, "average_map",
    "segment_f1", "event_f1" (each with micro F1 and counts), "videos", "unknown_labels"}.
    Only the videos of `subset` (all when None) count; detections of other videos are left out."""
    truth, durations = read_ground_truth(ground_truth, subset)
    if not durations:
        raise AnnotationError(f"{shown(ground_truth)}: no video" + (f" in subset {subset!r}" if subset else ""))
    detections = [d for d in _detections(results) if d.video in durations]
    scores = detection_map(truth, detections)
    return {
        "videos": len(durations),
        "events": len(truth),
        "detections": len(detections),
        "map": {f"{t:.1f}": float(m) for t, m in zip(scores.thresholds, scores.map)},
        "average_map": float(scores.average_map),
        "segment_f1": segment_f1(truth, detections, durations).to_dict(),
        "event_f1": event_f1(truth, detections, durations).to_dict(),
        "unknown_labels": list(scores.unknown_labels),
    }


def format_evaluation(report: dict) -> str:
    """The report of `evaluate_files` as a few lines of text."""
    maps = "  ".join(f"{t} {100 * m:.1f}" for t, m in report["map"].items())
    seg, ev = report["segment_f1"], report["event_f1"]
    return (
        f"{report['videos']} videos, {report['events']} events, {report['detections']} detections\n"
        f"mAP (%) at tIoU: {maps}\naverage mAP 0.1:0.9: {100 * report['average_map']:.1f}\n"
        f"segment F1: {100 * seg['f1']:.1f} (micro {100 * seg['micro_f1']:.1f})   "
        f"event F1: {100 * ev['f1']:.1f} (micro {100 * ev['micro_f1']:.1f})"
    )
