"""`avel cml`: cross-modality localization with a trained CML checkpoint.

    r = cml_query("cml.safetensors", "bark.wav", "park.mp4")                 # A2V
    r = cml_query("cml.safetensors", "clip.mp4", "park.mp4",
                  query_start_s=2, query_end_s=5)                             # V2A
    print(format_query(r)); write_query_json(r, "q.json")   # plot_query(r, "q.png"): timeline.py

The query
  * an audio file (its suffix is an audio one: .wav .mp3 .flac .m4a ..., or it has no
    video stream): A2V, its sound finds where the target's pictures match;
  * a video: by default V2A, its pictures find where the target's sound matches;
    `query_modality="audio"` takes the video's sound instead (A2V).
  * `query_start_s` / `query_end_s` pick a range of the query file (default: all of it);
    the query is the 1-s segments overlapping [start, end), l = their number. A range
    outside the file, start >= end or a negative start is an error naming the file.
Features are made with the checkpoint's feature settings (pipeline/apps/predictor.py: same
extractors, weight hashes checked); the visual feature of a segment is the pool5
mean over its cells (AVE's visual_feature_vec, what CML models take).

Scores: the model's own `score_query` (models/inference.py) of every target second and
every l-long window: DAM cross matching, the relevance sigma(g . f_t) and the maximum
contiguous sum (higher is better); DAM self matching, the cosine distance of each window's
global feature; AVDLN, the position-wise summed Euclidean distance (lower is better).
Ties go to the earliest window.

The target is streamed like `localize` (only the needed extractor runs; one vector per
second is kept), so it may be of any length >= l.

JSON schema (`write_query_json`):

    {
      "query": "bark.wav", "target": "park.mp4",
      "direction": "a2v",                  a2v | v2a
      "query_modality": "audio",           audio | visual
      "target_modality": "visual",
      "query_start_s": 0, "query_end_s": 3,   the query segments used: [start, end)
      "query_length_s": 3,                 l
      "query_duration_s": 4.2,             the whole query file
      "target_duration_s": 62.4,
      "score_kind": "relevance",           relevance | distance | cosine-distance
      "higher_is_better": true,
      "score_range": [0, 1],               relevance: [0, 1]; distances: [lowest, highest] score
      "seconds": [{"start_s": 0, "end_s": 1, "score": 0.12}, ...],    one per target second
      "window_scores": [0.31, ...],        entry s: the window [s, s + l), mean score
      "best": {"start_s": 41, "end_s": 44, "score": 0.93},
      "model": {"task": "cml", "model": "dam", "embedding": "self-att", "matching": "cross",
                "checkpoint": "cml.safetensors"},
      "features": {...}                    the FeatureSettings used
    }
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ...core import jsonio
from ...core.atomic import write_text_atomic
from ...core.config import MAX_SEGMENTS, SAMPLE_RATE_HZ
from ...core.errors import AvelError, CheckpointError, NoAudioStream, NoVideoStream, TooShort, shown
from ...models.inference import MODALITIES, QueryScores
from ...models.protocols import CMLModel
from ..extract.features import FeatureExtractor
from ..extract.stream import FeatureStream, prefetch
from ..media.decode import DecodeOptions, SegmentReader, decode_audio_file
from .outputs import clock
from .predictor import Predictor

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aif", ".aiff", ".mka"}
TIME_EPS_S = 1e-6


class QueryError(AvelError):
    """A query that cannot be run (range outside the file, longer than the target...)."""


# -----------------------------------------------------------------------------------------
# pure helpers
def query_segments(
    start_s: float | None, end_s: float | None, available: int, duration_s: float, path: str
) -> tuple[int, int]:
    """The query's segments [first, last) for a range in seconds (None: the file's start /
    its last whole second): the 1-s segments overlapping [start, end). QueryError when the
    range is empty, negative or outside the file's `available` whole seconds."""
    _check_range(start_s, end_s, path)
    first = 0 if start_s is None else int(math.floor(start_s + TIME_EPS_S))
    last = available if end_s is None else int(math.ceil(end_s - TIME_EPS_S))
    if last > available or first >= available:
        s = 0 if start_s is None else start_s
        e = available if end_s is None else end_s
        raise QueryError(
            f"{path}: query range {s:g}-{e:g} s lies outside the file ({duration_s:.2f} s long, "
            f"{available} whole 1-s segments)"
        )
    return first, last


def _check_range(start_s: float | None, end_s: float | None, path: str) -> None:
    for flag, value in (("--query-start", start_s), ("--query-end", end_s)):
        if value is not None and not math.isfinite(value):
            raise QueryError(f"{path}: {flag} {value}: must be a finite number of seconds")
        if value is not None and value > MAX_SEGMENTS:
            raise QueryError(f"{path}: {flag} {value:g}: must be <= {MAX_SEGMENTS} s (a day)")
    if start_s is not None and start_s < 0:
        raise QueryError(f"{path}: --query-start {start_s:g} is negative")
    if start_s is not None and end_s is not None and start_s >= end_s:
        raise QueryError(f"{path}: --query-start {start_s:g} must be before --query-end {end_s:g}")
    if end_s is not None and end_s <= 0:
        raise QueryError(f"{path}: --query-end {end_s:g} must be positive")


def score_query(model: CMLModel, query: torch.Tensor, target: torch.Tensor, query_modality: str) -> QueryScores:
    """query [l, Dq] features of the query modality, target [T, Dt] of the other one
    (audio: VGGish [., 128]; visual: pooled pool5 [., 512]) -> the model's own scores of
    every target second and of every l-long window (its `score_query`)."""
    if query_modality not in MODALITIES:
        raise ValueError(f"query modality {query_modality!r}; choose audio or visual")
    l, T = query.shape[0], target.shape[0]
    if not 1 <= l <= T:
        raise ValueError(f"a query of {l} segments does not fit a target of {T}")
    if not isinstance(model, CMLModel):
        raise CheckpointError(f"no query rule for the CML model {type(model).__name__}")
    device = next(model.parameters()).device
    return model.score_query(query.to(device).float(), target.to(device).float(), query_modality)


# -----------------------------------------------------------------------------------------
# result
@dataclass(frozen=True)
class Window:
    start_s: int
    end_s: int
    score: float

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "score": round(float(self.score), 6)}


SCORE_LABELS = {
    "relevance": "relevance to the query",
    "distance": "distance to the query",
    "cosine-distance": "cosine distance of windows",
}


@dataclass
class QueryResult:
    query: str
    target: str
    direction: str  # a2v | v2a
    query_modality: str
    target_modality: str
    query_start_s: int
    query_end_s: int
    target_duration_s: float
    seconds: list[Window]  # one per target second, score of that second
    window_scores: list[float]  # entry s: window [s, s + l)
    best: Window
    score_kind: str
    higher_is_better: bool
    model: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    query_range_given: bool = False
    query_duration_s: float | None = None  # the whole query file

    @property
    def score_range(self) -> tuple[float, float]:
        """The scale of the scores: [0, 1] for relevance; the lowest and highest score of the
        seconds and windows for distances (they have no fixed scale)."""
        if self.score_kind == "relevance":
            return 0.0, 1.0
        values = [s.score for s in self.seconds] + list(self.window_scores)
        return float(min(values)), float(max(values))

    @property
    def query_length_s(self) -> int:
        return self.query_end_s - self.query_start_s

    @property
    def score_label(self) -> str:
        return SCORE_LABELS[self.score_kind]

    def to_dict(self) -> dict:
        return {
            "query": shown(self.query),
            "target": shown(self.target),
            "direction": self.direction,
            "query_modality": self.query_modality,
            "target_modality": self.target_modality,
            "query_start_s": self.query_start_s,
            "query_end_s": self.query_end_s,
            "query_length_s": self.query_length_s,
            "query_duration_s": None if self.query_duration_s is None else round(self.query_duration_s, 6),
            "target_duration_s": round(self.target_duration_s, 6),
            "score_kind": self.score_kind,
            "higher_is_better": self.higher_is_better,
            "score_range": [round(x, 6) for x in self.score_range],
            "seconds": [s.to_dict() for s in self.seconds],
            "window_scores": [round(float(x), 6) for x in self.window_scores],
            "best": self.best.to_dict(),
            "model": self.model,
            "features": self.features,
        }


def write_query_json(result: QueryResult, path: str | os.PathLike) -> None:
    d = result.to_dict()
    items = []
    for key, value in d.items():
        if key == "seconds":
            body = ",\n  ".join(jsonio.dumps(v) for v in value)
            items.append(f' "seconds": [\n  {body}\n ]')
        else:
            items.append(f" {jsonio.dumps(key)}: {jsonio.dumps(value)}")
    write_text_atomic(path, "{\n" + ",\n".join(items) + "\n}\n")


def format_query(result: QueryResult) -> str:
    b = result.best
    better = "higher" if result.higher_is_better else "lower"
    return (
        f"{result.direction.upper()}: the {result.query_modality} of {shown(result.query)} "
        f"({result.query_start_s}-{result.query_end_s} s, {result.query_length_s} s) best matches the "
        f"{result.target_modality} of {shown(result.target)} at {clock(b.start_s)}-{clock(b.end_s)} "
        f"({b.start_s}-{b.end_s} s; {result.score_kind} {b.score:.3f}, {better} is better; "
        f"{len(result.window_scores)} candidate windows)"
    )


# -----------------------------------------------------------------------------------------
# reading the query and the target
def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _audio_file_query(path: str, extractor: FeatureExtractor, start_s, end_s) -> tuple[np.ndarray, int, int, float]:
    samples = decode_audio_file(path)  # (S,) 16 kHz mono
    duration = samples.shape[0] / SAMPLE_RATE_HZ
    available = int(math.floor(duration + TIME_EPS_S))
    if available < 1:
        raise TooShort(path, f"{duration:.2f} s of audio, shorter than one 1-s segment")
    first, last = query_segments(start_s, end_s, available, duration, path)
    slices = samples[first * SAMPLE_RATE_HZ : last * SAMPLE_RATE_HZ].reshape(last - first, SAMPLE_RATE_HZ)
    feats = [extractor.audio_features(slices[c]) for c in _chunks(len(slices), extractor.batch_size)]
    return np.concatenate(feats), first, last, duration


def _video_query(
    path: str, extractor: FeatureExtractor, modality: str, start_s, end_s
) -> tuple[np.ndarray, int, int, float]:
    """Features of the query segments of a video; only those are extracted, a chunk at a time."""
    opts = DecodeOptions.from_settings(
        extractor.settings, segments=None, on_missing_audio="error" if modality == "audio" else "silence"
    )
    reader = SegmentReader(path, opts)
    first = 0 if start_s is None else int(math.floor(start_s + TIME_EPS_S))
    last = None if end_s is None else int(math.ceil(end_s - TIME_EPS_S))
    chunk = extractor.segments_per_batch
    pending: list[np.ndarray] = []
    feats: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        if modality == "audio":
            feats.append(extractor.audio_features(np.stack(pending)))  # (n, Da)
        else:
            planes = () if reader.planes is None else (reader.planes,)  # --convert device: the planes' format
            feats.append(extractor.visual_features(np.stack(pending), *planes).mean(axis=(1, 2)))  # (n, Dv)
        pending.clear()

    try:
        for seg in prefetch(reader, maxsize=chunk):
            if seg.index >= first and (last is None or seg.index < last):
                pending.append(seg.audio if modality == "audio" else seg.frames)
                if len(pending) == chunk:
                    flush()
    except NoAudioStream:
        raise NoAudioStream(path, "no audio stream: an audio query needs sound") from None
    flush()
    first, last = query_segments(start_s, end_s, int(reader.num_segments), float(reader.duration_s), path)
    return np.concatenate(feats), first, last, float(reader.duration_s)


def _target_features(path: str, extractor: FeatureExtractor, modality: str, progress: bool) -> tuple[np.ndarray, float]:
    """[T, D] features of the target's `modality` (visual: pool5 mean over cells), streamed."""
    opts = DecodeOptions.from_settings(
        extractor.settings, segments=None, on_missing_audio="error" if modality == "audio" else "silence"
    )
    stream = FeatureStream(
        path, extractor, visual=modality == "visual", audio=modality == "audio", options=opts, progress=progress
    )
    rows = []
    try:
        for audio, visual in stream:
            rows.append(audio if modality == "audio" else visual.mean(axis=(0, 1)))  # (Da,) or (Dv,)
    except NoAudioStream:
        raise NoAudioStream(path, "no audio stream: a V2A query scores the target's sound") from None
    return np.stack(rows).astype(np.float32), float(stream.duration_s)


def _resolve_modality(query: str, query_modality: str | None) -> tuple[str, bool]:
    """-> (modality, read as an audio file)."""
    if query_modality is not None and query_modality not in MODALITIES:
        raise QueryError(f"--query-modality {query_modality}: choose audio or visual")
    audio_file = os.path.splitext(query)[1].lower() in AUDIO_SUFFIXES
    if audio_file and query_modality == "visual":
        raise QueryError(f"{query}: an audio file cannot be a visual query")
    return query_modality or ("audio" if audio_file else "visual"), audio_file


def cml_query(
    checkpoint: str | os.PathLike,
    query: str | os.PathLike,
    target: str | os.PathLike,
    *,
    query_start_s: float | None = None,
    query_end_s: float | None = None,
    query_modality: str | None = None,
    progress: bool = False,
    **options,
) -> QueryResult:
    """Find where in `target` the other modality matches the query (see the module
    docstring). `options`: how to run it (`Predictor.build`: device, weight files,
    precision, batch_size). Errors are one line, naming the file: CheckpointError (not a CML checkpoint),
    SettingsMismatch (weights), MediaError subclasses (undecodable query or target, no audio
    where sound is needed), QueryError (range, length)."""
    ckpt_path, query, target = os.fspath(checkpoint), os.fspath(query), os.fspath(target)
    modality, audio_file = _resolve_modality(query, query_modality)
    _check_range(query_start_s, query_end_s, query)
    predictor = Predictor.load(ckpt_path, "cml", **options)
    extractor = predictor.extractor

    if audio_file:
        q, first, last, query_duration = _audio_file_query(query, extractor, query_start_s, query_end_s)
    else:
        try:
            q, first, last, query_duration = _video_query(query, extractor, modality, query_start_s, query_end_s)
        except NoVideoStream:
            if query_modality == "visual":
                raise NoVideoStream(query, "no video stream: a visual query needs pictures") from None
            modality = "audio"  # a sound-only file with a video-like name
            q, first, last, query_duration = _audio_file_query(query, extractor, query_start_s, query_end_s)

    target_modality = "visual" if modality == "audio" else "audio"
    t, duration = _target_features(target, extractor, target_modality, progress)
    l, T = q.shape[0], t.shape[0]
    if l > T:
        raise QueryError(
            f"{query}: the query ({l} s, {first}-{last} s) is longer than the target {target} ({T} whole seconds)"
        )
    scores = score_query(predictor.model, torch.from_numpy(q), torch.from_numpy(t), modality)
    cfg = predictor.checkpoint.model_config
    return QueryResult(
        query=query,
        target=target,
        direction="a2v" if modality == "audio" else "v2a",
        query_modality=modality,
        target_modality=target_modality,
        query_start_s=first,
        query_end_s=last,
        target_duration_s=duration,
        seconds=[Window(i, i + 1, float(x)) for i, x in enumerate(scores.per_second)],
        window_scores=[float(x) for x in scores.windows],
        best=Window(scores.best, scores.best + l, float(scores.windows[scores.best])),
        score_kind=scores.kind,
        higher_is_better=scores.higher_is_better,
        model={
            "task": cfg.task,
            "model": cfg.name,
            "embedding": getattr(cfg, "embedding", None),
            "matching": getattr(cfg, "matching", None),
            "checkpoint": ckpt_path,
        },
        features=extractor.settings.to_dict(),
        query_range_given=query_start_s is not None or query_end_s is not None,
        query_duration_s=query_duration,
    )
