"""`avel localize`: supervised event localization in anyone's video, of any length, with a
trained SEL checkpoint.

    results = localize(["dog.mp4", "street.mkv"], "sel.safetensors")
    for r in results:
        print(format_table(r))             # or r.error, a one-line message naming the file
    write_json(results, "out.json"); write_csv(results, "out.csv")

How a video is scored
  * Features: made with the checkpoint's feature settings and weights (pipeline/apps/predictor.py).
  * Memory: the video is streamed (pipeline/extract/stream.py: decoding in a thread ahead of the
    extractors); the frames of at most 2 x `batch_size / K` segments are held at a time,
    only the features of the last W segments are kept (a ring buffer; no float16 copy of
    the whole video is needed), and windows go through the model 16 at a time, so memory
    does not grow with the video's length. Per-second results (a few floats a second) are
    all that accumulates. Measured on CPU: peak RSS 1299 MiB for 60 s, 1332 MiB for 600 s
    (same settings), flat during the run.
  * Windows: the model was trained on W-segment sequences (W = the checkpoint's forced
    segment count, else AVE's 10; `window_s` overrides). A longer video is scored in
    W-long windows every `stride_s` seconds (default 5 = W/2: every second of an AVE-length
    stretch is seen by two windows, one where it sits early and one where it sits late),
    and a last window ends at the video's end, so the tail is always covered
    (`window_starts`). Each second's class probabilities and relevances (DAM's p_t and its
    audio and visual parts) are averaged over the windows that cover it.
  * Short videos (fewer than W whole seconds): every SEL model here accepts any T (the
    self-attention embedding, the Bi-LSTMs and the cell attention have no fixed length),
    so the model runs once on the T segments there are; nothing is padded (padding with
    repeated or silent segments would add content the global features then average in).
  * Scores: the model's own `score_segments` (models/inference.py) on each window.
  * Labels, DAM's rule: a second is background when its (averaged) relevance is < 0.5,
    else the category with the highest averaged probability. `probability` is that
    category's probability (for a background second too: the category the event would
    have). Models without relevance (AV_att; DAM with matching "none" or lam = 1) label a
    second by the argmax over their classes (AV_att's include background) and report
    relevance as null.
  * Events: consecutive seconds with the same non-background label are merged into one
    interval (`merge_intervals`); its score is the mean over its seconds of
    relevance x probability, the chance that the second is an event AND of that category
    (probability alone when the model has no relevance). In [0, 1]; higher is surer.

Failures: `localize` never stops at a bad video. A video that cannot be decoded (missing,
not media, corrupt, no audio stream, shorter than 1 s...) gives a result whose `.error` is
the one-line message naming the file and `.error_kind` the MediaError kind; the other
videos go on. Errors that concern every video (wrong-task checkpoint: CheckpointError;
weights that differ from the checkpoint's: SettingsMismatch; a bad option: AvelError) are
raised before any video is read.

Output: the JSON schema is the README's ("Localizing events in your videos"); `to_dict`
writes it and tests/test_localize.py checks it against the README's example.

CSV (`write_csv`): one row per second of every decoded video, columns
video,start_s,end_s,label,probability,relevance,audio_relevance,visual_relevance
(null -> empty cell; failed videos have no rows).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ...models.inference import SegmentScores
from ...models.protocols import SELModel
from ...models.registry import SEL_TASKS
from ..train.checkpoint import Checkpoint, load_checkpoint
from ...core.errors import AvelError, CheckpointError, ConfigError, NonFiniteScores, shown
from .predictor import Predictor
from ..extract.stream import FeatureStream

AVE_WINDOW_S = 10  # AVE's T: the length of every training sequence
DEFAULT_STRIDE_S = 5
BACKGROUND = "background"
RELEVANCE_THRESHOLD = 0.5  # DAM's rule: a second is an event when its relevance is at least this
WINDOW_BATCH = 16  # windows per model forward


# -----------------------------------------------------------------------------------------
# pure helpers
def window_starts(num_segments: int, window: int, stride: int) -> list[int]:
    """First segments of the windows that score a video of `num_segments` segments.

    Regular starts 0, stride, 2*stride, ... while the window fits, then one window that ends
    at the last segment if the regular ones stop short of it. A video no longer than the
    window gets the single start 0 (the window is then the whole video); no segments, no
    windows."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window {window}, stride {stride}")
    if num_segments <= 0:
        return []
    if num_segments <= window:
        return [0]
    starts = list(range(0, num_segments - window + 1, stride))
    if starts[-1] + window < num_segments:
        starts.append(num_segments - window)
    return starts


@dataclass(frozen=True)
class Event:
    start_s: int
    end_s: int  # exclusive
    label: str
    score: float

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label, "score": _num(self.score)}


def merge_intervals(labels: Sequence[str], scores: Sequence[float], background: str = BACKGROUND) -> list[Event]:
    """Per-second labels (second t = [t, t+1)) and scores -> one Event per run of consecutive
    seconds with the same non-background label; its score is the mean of the run's scores."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    events: list[Event] = []
    t, n = 0, len(labels)
    while t < n:
        end = t + 1
        while end < n and labels[end] == labels[t]:
            end += 1
        if labels[t] != background:
            events.append(Event(t, end, labels[t], float(np.mean(np.asarray(scores[t:end], dtype=np.float64)))))
        t = end
    return events


def event_summary(events: Sequence[Event]) -> dict:
    """What a video's events add up to: their number, the seconds they cover, and the top
    label (the label covering the most event seconds; a tie goes to the label whose first
    event comes first); None when there is no event."""
    seconds: dict[str, int] = {}
    for e in events:
        seconds[e.label] = seconds.get(e.label, 0) + e.end_s - e.start_s
    top = max(seconds, key=lambda label: seconds[label]) if seconds else None  # max keeps the first of equals
    return {"num_events": len(events), "event_seconds": sum(seconds.values()), "top_label": top}


def label_seconds(
    probs: np.ndarray, relevance: np.ndarray | None, class_names: Sequence[str], background: str = BACKGROUND,
) -> tuple[list[str], np.ndarray]:
    """probs [T, C] (C = len(class_names): event categories; C = len + 1: the last column is
    background, AV_att), relevance [T] or None -> labels and the probability of the chosen
    category [T]. With relevance: DAM's rule (background iff relevance < 0.5, else the most
    probable event category); without: the most probable column."""
    E = len(class_names)
    names = list(class_names) + [background]
    if relevance is not None:
        best = probs[:, :E].argmax(1)  # (T,)
        prob = probs[np.arange(len(best)), best]
        labels = [background if r < RELEVANCE_THRESHOLD else names[b] for r, b in zip(relevance, best)]
        return labels, prob
    best = probs.argmax(1)
    return [names[b] for b in best], probs[np.arange(len(best)), best]


def _num(x) -> float | None:
    return None if x is None else round(float(x), 6)


# -----------------------------------------------------------------------------------------
# results
@dataclass(frozen=True)
class SecondResult:
    start_s: int
    end_s: int
    label: str
    probability: float
    relevance: float | None
    audio_relevance: float | None
    visual_relevance: float | None

    def to_dict(self) -> dict:
        return {
            "start_s": self.start_s, "end_s": self.end_s, "label": self.label,
            "probability": _num(self.probability), "relevance": _num(self.relevance),
            "audio_relevance": _num(self.audio_relevance), "visual_relevance": _num(self.visual_relevance),
        }


@dataclass(frozen=True)
class ModelInfo:
    task: str
    model: str
    embedding: str | None  # None: a model without DAM (AV_att)
    matching: str | None
    window: int
    stride: int
    checkpoint: str
    classes: tuple[str, ...]
    features_from_checkpoint: bool
    threshold: float = RELEVANCE_THRESHOLD  # applies where relevance is not null

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d


@dataclass
class VideoLocalization:
    video: str
    duration_s: float | None = None
    segments: list[SecondResult] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    model: ModelInfo | None = None
    features: dict | None = None
    error: str | None = None  # one line naming the file
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "video": self.video,
            "duration_s": _num(self.duration_s),
            "error": self.error,
            "error_kind": self.error_kind,
            "segments": [s.to_dict() for s in self.segments],
            "events": [e.to_dict() for e in self.events],
            "summary": event_summary(self.events) if self.ok else None,
            "model": self.model.to_dict() if self.model is not None else None,
            "features": self.features,
        }


# -----------------------------------------------------------------------------------------
# the model as a function of feature windows
Scorer = Callable[[np.ndarray, np.ndarray], SegmentScores]  # audio [B, W, Da], visual [B, W, N, Dv]


def segment_scorer(model: SELModel, device: torch.device) -> Scorer:
    """The model's `score_segments` on numpy windows (float32 on `device`)."""
    if not isinstance(model, SELModel):
        raise CheckpointError(f"no localization rule for the SEL model {type(model).__name__}")

    def score(audio: np.ndarray, visual: np.ndarray) -> SegmentScores:
        return model.score_segments(torch.from_numpy(audio).to(device).float(), torch.from_numpy(visual).to(device).float())

    return score


@dataclass
class PerSecond:
    """Window outputs averaged per second: probs [T, C], relevances [T] or None."""

    probs: np.ndarray
    relevance: np.ndarray | None
    audio_relevance: np.ndarray | None
    visual_relevance: np.ndarray | None
    starts: list[int]  # the windows that were run


class WindowedScorer:
    """Streams per-segment features in, runs the model on sliding windows as soon as each
    window is complete, and averages the outputs per second. Holds the features of the last
    `window` segments only (plus up to WINDOW_BATCH pending windows)."""

    def __init__(self, score: Scorer, window: int, stride: int, batch: int = WINDOW_BATCH) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window {window}, stride {stride}")
        self.score, self.window, self.stride, self.batch = score, window, stride, batch
        self._buffer: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=window)
        self._pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (start, audio [W, Da], visual [W, N, Dv])
        self._count = 0
        self._starts: list[int] = []
        self._sums: list[np.ndarray | None] | None = None  # per output: [capacity, C] or [capacity] sums
        self._n = np.zeros(0, dtype=np.int64)  # windows covering each second (capacity long)
        self._len = 0  # seconds covered so far

    @property
    def num_segments(self) -> int:
        return self._count

    def push(self, audio: np.ndarray, visual: np.ndarray) -> None:
        """Features of the next segment: audio [Da], visual [N, Dv]."""
        self._buffer.append((audio, visual))
        self._count += 1
        start = self._count - self.window
        if start >= 0 and start % self.stride == 0:
            self._enqueue(start)

    def _enqueue(self, start: int) -> None:
        audio = np.stack([a for a, _ in self._buffer])  # (w, Da)
        visual = np.stack([v for _, v in self._buffer])  # (w, N, Dv)
        self._pending.append((start, audio, visual))
        if len(self._pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        starts = [s for s, _, _ in self._pending]
        out = self.score(np.stack([a for _, a, _ in self._pending]), np.stack([v for _, _, v in self._pending]))
        self._pending = []
        parts = [out.probs, out.relevance, out.audio_relevance, out.visual_relevance]
        w = out.probs.shape[1]
        self._len = max(self._len, max(starts) + w)
        if self._sums is None:
            self._sums = [None if p is None else np.zeros((0,) + p.shape[2:]) for p in parts]
        if self._len > self._n.shape[0]:  # grow geometrically: amortised O(1) per second
            grow = max(self._len, 2 * self._n.shape[0]) - self._n.shape[0]
            self._n = np.concatenate([self._n, np.zeros(grow, dtype=np.int64)])
            self._sums = [None if s is None else np.concatenate([s, np.zeros((grow,) + s.shape[1:])]) for s in self._sums]
        for b, s in enumerate(starts):
            self._n[s : s + w] += 1
            for total, p in zip(self._sums, parts):
                if total is not None:
                    total[s : s + w] += p[b]
        self._starts.extend(starts)

    def finish(self) -> PerSecond:
        n = self._count
        if n == 0:
            raise ValueError("no segments were pushed")
        if n < self.window:
            self._enqueue(0)  # the whole (short) video is one window
        elif (n - self.window) % self.stride:
            self._enqueue(n - self.window)  # the tail window, ending at the last segment
        self._flush()
        assert sorted(self._starts) == window_starts(n, self.window, self.stride), (self._starts, n)
        assert self._len == n and (self._n[:n] > 0).all()
        count = self._n[:n]
        mean = [None if s is None else s[:n] / count.reshape((-1,) + (1,) * (s.ndim - 1)) for s in self._sums]
        return PerSecond(mean[0], mean[1], mean[2], mean[3], sorted(self._starts))


# -----------------------------------------------------------------------------------------
# the window of a checkpoint
def checkpoint_window(checkpoint: Checkpoint) -> int:
    """The sequence length the model was trained on: the checkpoint's forced segment count
    (AVE exports and `--segments N` caches), else AVE's 10."""
    settings = checkpoint.feature_settings
    if settings is not None and settings.segments:
        return int(settings.segments)
    return AVE_WINDOW_S


# -----------------------------------------------------------------------------------------
# localization
def _localize_one(path: str, predictor: Predictor, info: ModelInfo, progress: bool) -> VideoLocalization:
    scorer = WindowedScorer(segment_scorer(predictor.model, predictor.extractor.device), info.window, info.stride)
    stream = FeatureStream(path, predictor.extractor, progress=progress)
    for audio, visual in stream:
        scorer.push(audio, visual.reshape(-1, visual.shape[-1]))  # (N = h*w cells, Dv)
    per = scorer.finish()
    for name, x in (("class", per.probs), ("relevance", per.relevance), ("audio relevance", per.audio_relevance),
                    ("visual relevance", per.visual_relevance)):  # NaN would label every second an event
        if x is not None and not np.isfinite(x).all():
            t = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(1))[0])
            raise NonFiniteScores(f"{shown(path)}: the model's {name} scores are NaN or infinite (first at second "
                                  f"{t}); no events given (broken weights, or an fp16 overflow?)")
    labels, prob = label_seconds(per.probs, per.relevance, info.classes)
    rel = per.relevance

    def at(x, t):
        return None if x is None else float(x[t])

    seconds = [
        SecondResult(t, t + 1, labels[t], float(prob[t]), at(rel, t), at(per.audio_relevance, t), at(per.visual_relevance, t))
        for t in range(len(labels))
    ]
    confidence = prob * rel if rel is not None else prob
    return VideoLocalization(
        video=path, duration_s=float(stream.duration_s), segments=seconds,
        events=merge_intervals(labels, confidence.tolist()), model=info, features=predictor.settings.to_dict(),
    )


def error_line(path: str, e: BaseException) -> str:
    """One line naming the file, for any exception a video can raise."""
    if isinstance(e, AvelError):
        text = str(e)
        return text if path in text else f"{path}: {text}"
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{path}: {type(e).__name__}: {first}".rstrip(": ")


def localize(
    videos: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    *,
    stride_s: int = DEFAULT_STRIDE_S,
    window_s: int | None = None,
    progress: bool = True,
    **options,
) -> list[VideoLocalization]:
    """Localize events in every video with the SEL checkpoint; one result per video, in
    order. `options`: how to run it (`Predictor.build`: device, visual_weights_file,
    audio_weights_file, audio_pca_file, precision, on_missing_audio, batch_size). A video
    that fails gives a result with `.error` set (one line naming it) and the others go on.
    Raises, before reading any video: CheckpointError (no such file, not a SEL
    checkpoint...), SettingsMismatch (weights that differ from the checkpoint's),
    ConfigError (stride/window, device or precision)."""
    if window_s is not None and window_s < 1:
        raise ConfigError("window", window_s, "must be >= 1 s")
    path = os.fspath(checkpoint)
    ckpt = load_checkpoint(path, expected_task=SEL_TASKS)  # a weakly trained (wsel) model is a SEL model at test time
    window = int(window_s) if window_s is not None else checkpoint_window(ckpt)
    if not 1 <= stride_s <= window:
        raise ConfigError("stride", stride_s, f"must lie in 1..{window} s (the window length), or seconds would be skipped")
    cfg = ckpt.model_config
    info = ModelInfo(
        task=cfg.task, model=cfg.name, embedding=getattr(cfg, "embedding", None), matching=getattr(cfg, "matching", None),
        window=window, stride=int(stride_s), checkpoint=path, classes=tuple(ckpt.class_names),
        features_from_checkpoint=ckpt.feature_settings is not None,
    )
    if len(info.classes) != cfg.num_classes - 1:
        raise CheckpointError(f"{path}: {len(info.classes)} class names for a {cfg.num_classes}-class model")
    predictor = Predictor.build(path, ckpt, **options)
    results = []
    for video in videos:
        path = os.fspath(video)
        try:
            results.append(_localize_one(path, predictor, info, progress))
        except Exception as e:  # anything an odd file can raise: recorded, never fatal (as in extract)
            results.append(VideoLocalization(video=path, model=info, error=error_line(path, e),
                                             error_kind=getattr(e, "kind", "error")))
    return results


# -----------------------------------------------------------------------------------------
# writers
def write_json(results: VideoLocalization | Sequence[VideoLocalization], path: str | os.PathLike) -> None:
    """One result -> one JSON object; a sequence -> a JSON array of them (schema above)."""
    if isinstance(results, VideoLocalization):
        text = _video_json(results.to_dict(), "")
    else:
        text = "[\n" + ",\n".join(_video_json(r.to_dict(), " ") for r in results) + "\n]" if results else "[]"
    write_text_atomic(path, text + "\n")


def _video_json(d: dict, pad: str) -> str:
    """One video's object, a key a line and a segment or event a line (readable, diffable)."""
    items = []
    for key, value in d.items():
        if key in ("segments", "events") and value:
            body = f",\n{pad}  ".join(json.dumps(v) for v in value)
            items.append(f'{pad} "{key}": [\n{pad}  {body}\n{pad} ]')
        else:
            items.append(f"{pad} {json.dumps(key)}: {json.dumps(value)}")
    return f"{pad}{{\n" + ",\n".join(items) + f"\n{pad}}}"


CSV_COLUMNS = ("video", "start_s", "end_s", "label", "probability", "relevance", "audio_relevance", "visual_relevance")


def write_csv(results: VideoLocalization | Sequence[VideoLocalization], path: str | os.PathLike) -> None:
    """One row per second of every successful video (columns CSV_COLUMNS; null -> empty)."""
    rows = [results] if isinstance(results, VideoLocalization) else list(results)
    tmp = f"{os.fspath(path)}.part"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            for s in r.segments:
                d = s.to_dict()
                w.writerow([r.video] + ["" if d[c] is None else d[c] for c in CSV_COLUMNS[1:]])
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    tmp = f"{os.fspath(path)}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


SECONDS_TABLE_MAX_S = 60  # format_table's default: a line a second up to this length


def format_table(result: VideoLocalization, *, seconds: bool | None = None) -> str:
    """A readable text report of one video: its events, then (with `seconds`; default: for
    videos up to a minute) one line a second. A failed video is its error line."""
    if seconds is None:
        seconds = len(result.segments) <= SECONDS_TABLE_MAX_S
    if not result.ok:
        return f"FAILED ({result.error_kind}): {result.error}"
    m = result.model
    lines = [
        f"{result.video}  ({result.duration_s:.2f} s, {len(result.segments)} whole seconds; "
        f"{m.task}/{m.model}, window {m.window} s, stride {m.stride} s)",
    ]
    if result.events:
        width = max(len("label"), *(len(e.label) for e in result.events))
        lines.append(f"  {'from':>8} {'to':>8}  {'label':<{width}}  score")
        for e in result.events:
            lines.append(f"  {clock(e.start_s):>8} {clock(e.end_s):>8}  {e.label:<{width}}  {e.score:.3f}")
    else:
        lines.append("  no event found (every second is background)")
    if seconds and result.segments:
        width = max(len("label"), *(len(s.label) for s in result.segments))

        def f(x):
            return "    -" if x is None else f"{x:5.3f}"

        lines.append("")
        lines.append(f"  {'second':>8}  {'label':<{width}}  {'prob':>5}  {'rel':>5}  {'audio':>5}  {'visual':>6}")
        for s in result.segments:
            lines.append(f"  {clock(s.start_s):>8}  {s.label:<{width}}  {f(s.probability)}  {f(s.relevance)}  "
                         f"{f(s.audio_relevance)}  {f(s.visual_relevance):>6}")
    return "\n".join(lines)
