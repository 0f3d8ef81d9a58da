"""Sliding windows over a video's segments and what their scores add up to, pure numpy:
where the windows start (`window_starts`), the model's window outputs averaged per second as
the segments stream in (`WindowedScorer`, given any `Scorer`), a label per second by DAM's
rule (`label_seconds`) and the events those labels make (`merge_intervals`, `event_summary`).
pipeline/apps/localize.py runs them on a video; the rules are stated in its docstring."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...core.annotations import BACKGROUND  # the reserved word: no category is called so
from ...core.config import MAX_SEGMENTS
from ...core.errors import ConfigError
from ...models.inference import SegmentScores

RELEVANCE_THRESHOLD = 0.5  # DAM's rule: a second is an event when its relevance is at least this
WINDOW_BATCH = 16  # windows per model forward

Scorer = Callable[[np.ndarray, np.ndarray], SegmentScores]  # audio [B, W, Da], visual [B, W, N, Dv]


def rounded(x) -> float | None:
    """A number as the outputs write it (6 decimals), None as None."""
    return None if x is None else round(float(x), 6)


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
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label, "score": rounded(self.score)}


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
    probs: np.ndarray,
    relevance: np.ndarray | None,
    class_names: Sequence[str],
    background: str = BACKGROUND,
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

    def __init__(
        self, score: Scorer, window: int, stride: int, batch: int = WINDOW_BATCH, combine: str = "mean"
    ) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window {window}, stride {stride}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.score, self.window, self.stride, self.batch, self.combine = score, window, stride, batch, combine
        self._weights = np.zeros(0)  # centre: the summed weights of each second (capacity long)
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
            fill = -np.inf if self.combine == "max" else 0.0
            self._sums = [
                None if s is None else np.concatenate([s, np.full((grow,) + s.shape[1:], fill)]) for s in self._sums
            ]
            self._weights = np.concatenate([self._weights, np.zeros(grow)])
        if self.combine == "mean":
            for b, s in enumerate(starts):
                self._n[s : s + w] += 1
                for total, p in zip(self._sums, parts):
                    if total is not None:
                        total[s : s + w] += p[b]
        else:
            weight = centre_weights(w)
            for b, s in enumerate(starts):
                self._n[s : s + w] += 1
                self._weights[s : s + w] += weight
                for total, p in zip(self._sums, parts):
                    if total is None:
                        continue
                    if self.combine == "max":
                        np.maximum(total[s : s + w], p[b], out=total[s : s + w])
                    else:
                        total[s : s + w] += p[b] * weight.reshape((-1,) + (1,) * (p[b].ndim - 1))
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
        count = self._n[:n] if self.combine == "mean" else self._weights[:n] if self.combine == "centre" else np.ones(n)
        mean = [None if s is None else s[:n] / count.reshape((-1,) + (1,) * (s.ndim - 1)) for s in self._sums]
        return PerSecond(mean[0], mean[1], mean[2], mean[3], sorted(self._starts))


def centre_weights(w: int) -> np.ndarray:
    """The centre-weighted combination's weight of each position of a w-long window: a
    triangle, min(i + 1, w - i) (1 at the edges, highest in the middle), so a second counts
    most in the windows where it has context on both sides."""
    i = np.arange(w)
    return np.minimum(i + 1, w - i).astype(np.float64)


# -----------------------------------------------------------------------------------------
# the localization rule: per-second scores -> events
COMBINES = ("mean", "max", "centre")
SMOOTHINGS = ("median", "mean")
EVENT_SCORES = ("mean", "mean_prob", "prob_x_relevance", "max")


@dataclass(frozen=True)
class LocalizeRule:
    """How windows' per-second scores become events. The defaults are the rule `avel
    localize` has always used (its outputs are unchanged by them).

    * stride_s: seconds between window starts (5 = half of AVE's 10-s window).
    * combine: how the windows covering a second combine: "mean" (of their scores), "max",
      "centre" (a mean weighted by `centre_weights`: a second counts most where it sits in
      the middle of the window).
    * smooth / smooth_k: per-second class probabilities and relevances are replaced by their
      running median or mean over k seconds centred on the second (edges repeated); k = 0
      or 1: no smoothing.
    * gap_s: two events of one label separated by at most gap_s background seconds become one
      event (the gap's seconds take the label); 0: none.
    * min_event_s: events shorter than this are dropped (their seconds become background).
    * event_score: an event's confidence, from its seconds' chosen-category probability p_t
      and relevance r_t (r_t = 1 without relevance): "mean" = mean of p_t x r_t (today's),
      "mean_prob" = mean of p_t, "prob_x_relevance" = mean p_t x mean r_t, "max" = max of
      p_t x r_t.
    * min_score: events whose confidence is below this are dropped (`--min-score`)."""

    stride_s: int = 5
    combine: str = "mean"
    smooth: str = "median"
    smooth_k: int = 0
    gap_s: int = 0
    min_event_s: int = 1
    event_score: str = "mean"
    min_score: float = 0.0

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("combine", self.combine, COMBINES),
            ("smooth", self.smooth, SMOOTHINGS),
            ("event_score", self.event_score, EVENT_SCORES),
        ):
            if value not in choices:
                raise ConfigError(name, value, f"must be one of {', '.join(choices)}")
        for name, low in (("stride_s", 1), ("smooth_k", 0), ("gap_s", 0), ("min_event_s", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SEGMENTS:
                raise ConfigError(name, value, f"must be an integer in {low}..{MAX_SEGMENTS} (seconds: a day at most)")
        if (
            isinstance(self.min_score, bool)
            or not isinstance(self.min_score, (int, float))
            or not 0 <= self.min_score <= 1
        ):
            raise ConfigError("min_score", self.min_score, "must be a number in [0, 1]")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def smooth_seconds(x: np.ndarray | None, k: int, how: str = "median") -> np.ndarray | None:
    """Running median or mean of x [T, ...] over k seconds centred on each second (k even:
    one more second before than after), the edges repeated; k <= 1: x itself."""
    if x is None or k <= 1:
        return x
    pad = [(k // 2, k - 1 - k // 2)] + [(0, 0)] * (x.ndim - 1)
    view = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad, mode="edge"), k, axis=0)  # (T, ..., k)
    return np.median(view, axis=-1) if how == "median" else view.mean(axis=-1)


def fill_gaps(labels: Sequence[str], gap_s: int, background: str = BACKGROUND) -> list[str]:
    """Background runs of at most gap_s seconds between two seconds of one label take that label."""
    out = list(labels)
    if gap_s <= 0:
        return out
    t, n = 0, len(out)
    while t < n:
        end = t
        while end < n and out[end] == background:
            end += 1
        if end > t and t > 0 and end < n and end - t <= gap_s and out[t - 1] == out[end]:
            out[t:end] = [out[end]] * (end - t)
        t = end + 1 if end == t else end
    return out


def event_score(kind: str, prob: np.ndarray, relevance: np.ndarray, confidence: np.ndarray) -> float:
    """One event's score from its seconds' probabilities, relevances and confidences (their
    product): "mean" confidence (today's), "mean_prob", "prob_x_relevance" (mean prob x mean
    relevance) or "max" confidence."""
    if kind == "mean":
        return confidence.mean()
    if kind == "mean_prob":
        return prob.mean()
    if kind == "prob_x_relevance":
        return prob.mean() * relevance.mean()
    return confidence.max()


def apply_rule(
    labels: Sequence[str],
    prob: np.ndarray,
    relevance: np.ndarray | None,
    rule: LocalizeRule,
    background: str = BACKGROUND,
) -> list[Event]:
    """Per-second labels, chosen-category probabilities and relevances -> the rule's events.
    The default rule gives exactly `merge_intervals(labels, prob x relevance)`."""
    confidence = prob * relevance if relevance is not None else prob
    if rule.gap_s == 0 and rule.event_score == "mean":
        events = merge_intervals(labels, confidence.tolist(), background)  # today's rule, bit for bit
    else:
        rel = relevance if relevance is not None else np.ones_like(prob)
        events = []
        for e in merge_intervals(fill_gaps(labels, rule.gap_s, background), confidence.tolist(), background):
            p, r, c = (np.asarray(x[e.start_s : e.end_s], dtype=np.float64) for x in (prob, rel, confidence))
            score = event_score(rule.event_score, p, r, c)
            events.append(Event(e.start_s, e.end_s, e.label, float(score)))
    return [e for e in events if e.end_s - e.start_s >= rule.min_event_s and e.score >= rule.min_score]
