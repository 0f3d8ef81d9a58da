"""`avel localize`: supervised event localization in anyone's video, of any length, with a
trained SEL checkpoint.

    results = localize(["dog.mp4", "street.mkv"], "sel.safetensors")
    for r in results:
        print(format_table(r))             # or r.error, a one-line message naming the file
    write_json(results, "out.json"); write_csv(results, "out.csv")

How a video is scored
  * Features: the checkpoint's feature settings rebuild the extractors (same visual and
    audio model, frames per segment, frame size, PCA, seed of random weights), so the
    model sees features made the way its training features were. The SHA-256 of the weight
    files the caller passes must equal the checkpoint's (SettingsMismatch names the fields
    that differ). A checkpoint without feature settings (trained on AVE's released
    features) gets the AVE-compatible defaults (`FeatureSettings()`: Caffe VGG-19 + VGGish,
    16 frames) and no hash check. The checkpoint's forced segment count is dropped: a video
    gives floor(duration) 1-s segments (a last partial second is not scored).
  * Memory: the video is streamed (SegmentReader, decoding in a thread ahead of the
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

Output schema (JSON; one object per video, a list of them for `write_json(list)`):

    {
      "video": "clips/dog.mp4",            path as given
      "duration_s": 63.52,                 decoded content length (null on error)
      "error": null,                       one-line message naming the file, or null
      "error_kind": null,                  not-found | not-media | corrupt | no-video |
                                           no-audio | too-short | error; null when ok
      "segments": [                        one per whole second: floor(duration_s) of them
        {"start_s": 0, "end_s": 1,
         "label": "background",            a class name or "background"
         "probability": 0.91,              probability of the predicted category
         "relevance": 0.12,                DAM p_t (mean over covering windows), or null
         "audio_relevance": 0.20,          p_t^A = sigma(g_V . f_t^A), or null
         "visual_relevance": 0.04},        p_t^V = sigma(g_A . f_t^V), or null
        ...],
      "events": [                          merged runs of one non-background label
        {"start_s": 3, "end_s": 8, "label": "Bark",
         "score": 0.74},                   mean of relevance x probability over the run
        ...],
      "model": {"task": "sel", "model": "dam", "embedding": "self-att", "matching": "cross",
                "window": 10, "stride": 5, "checkpoint": "sel.safetensors",
                "classes": ["Church bell", ...],        event categories, background excluded
                "features_from_checkpoint": true},     false: AVE defaults were assumed
      "features": {...}                    the FeatureSettings used (pipeline.config),
                                           weight hashes included
    }

CSV (`write_csv`): one row per second of every decoded video, columns
video,start_s,end_s,label,probability,relevance,audio_relevance,visual_relevance
(null -> empty cell; failed videos have no rows).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.baselines import AVAtt
from models.sel import SELDAM
from pipeline.config import FeatureSettings
from pipeline.decode import DecodeOptions, SegmentReader
from pipeline.errors import AvelError, CheckpointError, SettingsMismatch
from pipeline.extract import FeatureExtractor
from pipeline.train import Checkpoint, load_checkpoint

AVE_WINDOW_S = 10  # AVE's T: the length of every training sequence
DEFAULT_STRIDE_S = 5
BACKGROUND = "background"
HASH_FIELDS = ("visual_weights_sha256", "audio_weights_sha256", "audio_pca_sha256")
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
        labels = [background if r < 0.5 else names[b] for r, b in zip(relevance, best)]
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
    embedding: str
    matching: str
    window: int
    stride: int
    checkpoint: str
    classes: tuple[str, ...]
    features_from_checkpoint: bool

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
            "model": self.model.to_dict() if self.model is not None else None,
            "features": self.features,
        }


# -----------------------------------------------------------------------------------------
# the model as a function of feature windows
@dataclass
class WindowOutput:
    """Model outputs for a batch of windows (numpy, float64)."""

    probs: np.ndarray  # [B, W, C] class probabilities per segment
    relevance: np.ndarray | None  # [B, W]
    audio_relevance: np.ndarray | None  # [B, W]
    visual_relevance: np.ndarray | None  # [B, W]


class SELWindowModel:
    """A loaded SEL model applied to windows of features.

    SELDAM: the video-level category distribution (softmax over the E event categories) is
    given to every segment of the window, with DAM's p_t, p_t^A, p_t^V (None when the model
    does not use relevance). AV_att: its per-segment softmax over E + 1 classes (background
    last), no relevance."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        if not isinstance(model, (SELDAM, AVAtt)):
            raise CheckpointError(f"no localization rule for the SEL model {type(model).__name__}")
        self.model = model.to(device).eval()
        self.device = device
        self.has_relevance = isinstance(model, SELDAM) and model.uses_relevance

    @torch.inference_mode()
    def __call__(self, audio: np.ndarray, visual: np.ndarray) -> WindowOutput:
        """audio [B, W, Da], visual [B, W, N, Dv] (N pool5 cells) float32."""
        a = torch.from_numpy(audio).to(self.device).float()
        v = torch.from_numpy(visual).to(self.device).float()
        B, W = a.shape[:2]
        if isinstance(self.model, AVAtt):
            probs = F.softmax(self.model(a, v).double(), dim=-1)  # (B, W, E+1)
            return WindowOutput(probs.cpu().numpy(), None, None, None)
        out = self.model(a, v)
        probs = F.softmax(out.category_logits.double(), dim=-1)  # (B, E)
        probs = probs.unsqueeze(1).expand(B, W, -1)  # (B, W, E)
        if not self.has_relevance:
            return WindowOutput(probs.cpu().numpy(), None, None, None)
        return WindowOutput(
            probs.cpu().numpy(), out.relevance.double().cpu().numpy(),
            out.dam.audio_relevance.double().cpu().numpy(), out.dam.visual_relevance.double().cpu().numpy(),
        )


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

    def __init__(self, model: SELWindowModel, window: int, stride: int, batch: int = WINDOW_BATCH) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window {window}, stride {stride}")
        self.model, self.window, self.stride, self.batch = model, window, stride, batch
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
        out = self.model(np.stack([a for _, a, _ in self._pending]), np.stack([v for _, _, v in self._pending]))
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
# checkpoint -> extractor
def checkpoint_window(checkpoint: Checkpoint) -> int:
    """The sequence length the model was trained on: the checkpoint's forced segment count
    (AVE exports and `--segments N` caches), else AVE's 10."""
    settings = checkpoint.feature_settings
    if settings is not None and settings.segments:
        return int(settings.segments)
    return AVE_WINDOW_S


def extraction_settings(checkpoint: Checkpoint, *, precision: str | None = None, on_missing_audio: str | None = None) -> FeatureSettings:
    """The checkpoint's feature settings (AVE defaults when it has none) for videos of any
    length: no forced segment count; precision and the missing-audio policy may be
    overridden (neither is part of what a feature is)."""
    base = checkpoint.feature_settings if checkpoint.feature_settings is not None else FeatureSettings()
    return dataclasses.replace(
        base, segments=None, precision=precision or base.precision,
        on_missing_audio=on_missing_audio or base.on_missing_audio,
    )


def check_weights(checkpoint_path: str, saved: FeatureSettings | None, used: FeatureSettings, files: dict[str, str | None]) -> None:
    """SettingsMismatch when the weights in use are not those of the checkpoint's features.
    `files`: hash field -> the file the caller gave (named in the message)."""
    if saved is None:
        return
    problems = []
    for name in HASH_FIELDS:
        want, got = getattr(saved, name), getattr(used, name)
        if want and want != got:
            given = files.get(name)
            where = f" ({given})" if given else " (the default weights)"
            problems.append(f"{name}: checkpoint {want[:16]!r} != given {got[:16]!r}{where}")
    if problems:
        raise SettingsMismatch(f"{checkpoint_path}: the weights given are not the ones its features were made with: {'; '.join(problems)}")


def build_extractor(
    checkpoint_path: str,
    checkpoint: Checkpoint,
    *,
    visual_weights_file: str | None = None,
    audio_weights_file: str | None = None,
    audio_pca_file: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    on_missing_audio: str | None = None,
    batch_size: int = 160,
) -> FeatureExtractor:
    """A FeatureExtractor that makes the features the checkpoint's model was trained on."""
    settings = extraction_settings(checkpoint, precision=precision, on_missing_audio=on_missing_audio)
    extractor = FeatureExtractor(
        settings, visual_weights_file=visual_weights_file, audio_weights_file=audio_weights_file,
        audio_pca_file=audio_pca_file, device=device, batch_size=batch_size,
    )
    files = {"visual_weights_sha256": visual_weights_file, "audio_weights_sha256": audio_weights_file,
             "audio_pca_sha256": audio_pca_file}
    check_weights(checkpoint_path, checkpoint.feature_settings, extractor.settings, files)
    return extractor


def decode_options_for(settings: FeatureSettings) -> DecodeOptions:
    return DecodeOptions(
        frames_per_segment=settings.frames_per_segment, segments=None,
        frame_size=settings.frame_size, on_missing_audio=settings.on_missing_audio,
    )


def prefetch(items: Iterable, maxsize: int) -> Iterator:
    """Iterate `items` in a background thread, up to `maxsize` ahead (decoding overlaps the
    model). Exceptions are re-raised in the consumer; closing the consumer stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((done, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a generator: run its cleanup (closes the container)
                close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class FeatureStream:
    """Iterate (audio [Da] | None, visual pool5 [h, w, Dv] | None) for each 1-s segment of
    one video, in order: decoding runs in a thread ahead of the extractors, which take
    `batch_size / K` segments at a time, so memory does not depend on the video's length.
    `visual` / `audio` False skips that extractor. After iteration `duration_s` and
    `num_segments` are set. MediaError subclasses name the file."""

    def __init__(self, path: str, extractor: FeatureExtractor, *, visual: bool = True, audio: bool = True,
                 options: DecodeOptions | None = None, progress: bool = False) -> None:
        self.path, self.extractor, self.visual, self.audio, self.progress = str(path), extractor, visual, audio, progress
        self.options = options if options is not None else decode_options_for(extractor.settings)
        self.duration_s: float | None = None
        self.num_segments: int | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        from tqdm import tqdm

        ex = self.extractor
        reader = SegmentReader(self.path, self.options)
        chunk = max(1, ex.batch_size // ex.settings.frames_per_segment)
        bar = tqdm(desc=os.path.basename(self.path), unit="s", disable=not self.progress, file=sys.stderr,
                   dynamic_ncols=True, leave=False)
        frames: list[np.ndarray] = []
        sound: list[np.ndarray] = []
        try:
            for seg in prefetch(reader, maxsize=chunk):
                if self.visual:
                    frames.append(seg.frames)
                if self.audio:
                    sound.append(seg.audio)
                if max(len(frames), len(sound)) == chunk:
                    yield from self._features(frames, sound, chunk)
                    bar.update(chunk)
                    frames, sound = [], []
            n = max(len(frames), len(sound))
            if n:
                yield from self._features(frames, sound, n)
                bar.update(n)
        finally:
            bar.close()
        self.duration_s, self.num_segments = reader.duration_s, reader.num_segments

    def _features(self, frames, sound, n):
        v = self.extractor.visual_features(np.stack(frames)) if frames else None  # (n, h, w, Dv)
        a = self.extractor.audio_features(np.stack(sound)) if sound else None  # (n, Da)
        for i in range(n):
            yield (None if a is None else a[i]), (None if v is None else v[i])


# -----------------------------------------------------------------------------------------
# localization
def _localize_one(path: str, extractor: FeatureExtractor, model: SELWindowModel, info: ModelInfo, progress: bool) -> VideoLocalization:
    scorer = WindowedScorer(model, info.window, info.stride)
    stream = FeatureStream(path, extractor, progress=progress)
    for audio, visual in stream:
        scorer.push(audio, visual.reshape(-1, visual.shape[-1]))  # (N = h*w cells, Dv)
    per = scorer.finish()
    labels, prob = label_seconds(per.probs, per.relevance, info.classes)
    T = len(labels)
    rel = per.relevance

    def at(x, t):
        return None if x is None else float(x[t])

    seconds = [
        SecondResult(t, t + 1, labels[t], float(prob[t]), at(rel, t), at(per.audio_relevance, t), at(per.visual_relevance, t))
        for t in range(T)
    ]
    confidence = prob * rel if rel is not None else prob
    return VideoLocalization(
        video=path, duration_s=float(stream.duration_s), segments=seconds,
        events=merge_intervals(labels, confidence.tolist()), model=info, features=extractor.settings.to_dict(),
    )


def localize(
    videos: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    *,
    stride_s: int = DEFAULT_STRIDE_S,
    window_s: int | None = None,
    device: str = "auto",
    visual_weights_file: str | os.PathLike | None = None,
    audio_weights_file: str | os.PathLike | None = None,
    audio_pca_file: str | os.PathLike | None = None,
    precision: str | None = None,
    on_missing_audio: str | None = None,
    batch_size: int = 160,
    progress: bool = True,
) -> list[VideoLocalization]:
    """Localize events in every video with the SEL checkpoint; one result per video, in
    order. A video that fails gives a result with `.error` set (one line naming it) and the
    others go on. Raises, before reading any video: CheckpointError (no such file, not a
    SEL checkpoint...), SettingsMismatch (weights that differ from the checkpoint's),
    AvelError (bad stride/window, device or precision)."""
    ckpt_path = os.fspath(checkpoint)
    ckpt = load_checkpoint(ckpt_path, expected_task="sel")
    window = int(window_s) if window_s is not None else checkpoint_window(ckpt)
    if window < 1:
        raise AvelError(f"--window {window}: must be >= 1 s")
    if not 1 <= stride_s <= window:
        raise AvelError(f"--stride {stride_s}: must lie in 1..{window} s (the window length), or seconds would be skipped")
    cfg = ckpt.model_config
    info = ModelInfo(
        task=cfg.task, model=cfg.model, embedding=cfg.embedding, matching=cfg.matching, window=window,
        stride=int(stride_s), checkpoint=ckpt_path, classes=tuple(ckpt.class_names),
        features_from_checkpoint=ckpt.feature_settings is not None,
    )
    if len(info.classes) != cfg.num_classes - 1:
        raise CheckpointError(f"{ckpt_path}: {len(info.classes)} class names for a {cfg.num_classes}-class model")
    extractor = build_extractor(
        ckpt_path, ckpt, visual_weights_file=_opt(visual_weights_file), audio_weights_file=_opt(audio_weights_file),
        audio_pca_file=_opt(audio_pca_file), device=device, precision=precision, on_missing_audio=on_missing_audio,
        batch_size=batch_size,
    )
    model = SELWindowModel(ckpt.model, extractor.device)
    results = []
    for video in videos:
        path = os.fspath(video)
        try:
            results.append(_localize_one(path, extractor, model, info, progress))
        except AvelError as e:
            message = str(e) if path in str(e) else f"{path}: {e}"
            results.append(VideoLocalization(video=path, model=info, error=message, error_kind=getattr(e, "kind", "error")))
        except Exception as e:  # anything else an odd file can raise: recorded, never fatal (as in extract)
            message = f"{path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            results.append(VideoLocalization(video=path, model=info, error=message, error_kind="error"))
    return results


def _opt(p: str | os.PathLike | None) -> str | None:
    return None if p is None else os.fspath(p)


# -----------------------------------------------------------------------------------------
# writers
def write_json(results: VideoLocalization | Sequence[VideoLocalization], path: str | os.PathLike) -> None:
    """One result -> one JSON object; a sequence -> a JSON array of them (schema above)."""
    if isinstance(results, VideoLocalization):
        text = _video_json(results.to_dict(), "")
    else:
        text = "[\n" + ",\n".join(_video_json(r.to_dict(), " ") for r in results) + "\n]" if results else "[]"
    _write_text(path, text + "\n")


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


def _write_text(path: str | os.PathLike, text: str) -> None:
    tmp = f"{os.fspath(path)}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _clock(seconds: float) -> str:
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
            lines.append(f"  {_clock(e.start_s):>8} {_clock(e.end_s):>8}  {e.label:<{width}}  {e.score:.3f}")
    else:
        lines.append("  no event found (every second is background)")
    if seconds and result.segments:
        width = max(len("label"), *(len(s.label) for s in result.segments))

        def f(x):
            return "    -" if x is None else f"{x:5.3f}"

        lines.append("")
        lines.append(f"  {'second':>8}  {'label':<{width}}  {'prob':>5}  {'rel':>5}  {'audio':>5}  {'visual':>6}")
        for s in result.segments:
            lines.append(f"  {_clock(s.start_s):>8}  {s.label:<{width}}  {f(s.probability)}  {f(s.relevance)}  "
                         f"{f(s.audio_relevance)}  {f(s.visual_relevance):>6}")
    return "\n".join(lines)
