"""What `avel localize` gives back and writes: the results (`VideoLocalization`, a
`SecondResult` a second, the `ModelInfo` of the run), the JSON (`write_json`; the schema is
the README's, checked by tests/test_localize.py), the CSV (`write_csv`) and the text table
(`format_table`). Files are written atomically (core/atomic.py).

CSV (`write_csv`): one row per second of every decoded video, columns
video,start_s,end_s,label,probability,relevance,audio_relevance,visual_relevance
(null -> empty cell; failed videos have no rows)."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...core import jsonio
from ...core.atomic import atomic_open, write_text_atomic
from ...core.errors import shown
from .windows import RELEVANCE_THRESHOLD, Event, event_summary, rounded


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
            "start_s": self.start_s,
            "end_s": self.end_s,
            "label": self.label,
            "probability": rounded(self.probability),
            "relevance": rounded(self.relevance),
            "audio_relevance": rounded(self.audio_relevance),
            "visual_relevance": rounded(self.visual_relevance),
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
            "video": shown(self.video),  # a name that is not printable UTF-8 written escaped
            "duration_s": rounded(self.duration_s),
            "error": self.error,
            "error_kind": self.error_kind,
            "segments": [s.to_dict() for s in self.segments],
            "events": [e.to_dict() for e in self.events],
            "summary": event_summary(self.events) if self.ok else None,
            "model": self.model.to_dict() if self.model is not None else None,
            "features": self.features,
        }


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
            body = f",\n{pad}  ".join(jsonio.dumps(v, nonfinite="refuse") for v in value)
            items.append(f'{pad} "{key}": [\n{pad}  {body}\n{pad} ]')
        else:
            items.append(f"{pad} {jsonio.dumps(key)}: {jsonio.dumps(value, nonfinite='refuse')}")
    return f"{pad}{{\n" + ",\n".join(items) + f"\n{pad}}}"


CSV_COLUMNS = ("video", "start_s", "end_s", "label", "probability", "relevance", "audio_relevance", "visual_relevance")


def write_csv(results: VideoLocalization | Sequence[VideoLocalization], path: str | os.PathLike) -> None:
    """One row per second of every successful video (columns CSV_COLUMNS; null -> empty)."""
    rows = [results] if isinstance(results, VideoLocalization) else list(results)
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            for s in r.segments:
                d = s.to_dict()
                w.writerow([shown(r.video)] + ["" if d[c] is None else d[c] for c in CSV_COLUMNS[1:]])


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
        f"{shown(result.video)}  ({result.duration_s:.2f} s, {len(result.segments)} whole seconds; "
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
            lines.append(
                f"  {clock(s.start_s):>8}  {s.label:<{width}}  {f(s.probability)}  {f(s.relevance)}  "
                f"{f(s.audio_relevance)}  {f(s.visual_relevance):>6}"
            )
    return "\n".join(lines)
