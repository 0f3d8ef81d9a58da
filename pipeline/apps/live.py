"""`avel live`: localize events in a stream while it plays, a causal decision per second.

    run = live("udp://127.0.0.1:5000", "sel.safetensors", lookahead_s=2)
    for record in run:              # dicts, as the CLI's JSON lines
        print(record)
    print(run.summary())

The rule (`CausalDecider`): second t is decided as soon as it is complete (pipeline/media/live.py),
from the features of the seconds t-W+1 .. t that were decoded (W = `context_s`, default the
checkpoint's window: pipeline/apps/localize.py's `checkpoint_window`); the model's
`score_segments` runs on that window and the window's last position is second t. Labels are
localize's (DAM's rule: background when the relevance is < 0.5, else the most probable
category). With `lookahead_s` L (< W), second t is scored once more when t + L is complete,
from the window ending at t + L, and a `revision` record gives the revised values (`changed`
says whether the label changed). Events follow each second's final label (the causal one
without lookahead, the revised one with it): `event_start` when a run of one non-background
label begins, `event_end` when it ends (its score: the mean relevance x probability, as in
localize). A dropped second ends a running event.

Records (one JSON object a line; `type` says which):
  second     t, start_s, end_s, label, probability, relevance, audio_relevance,
             visual_relevance, context (seconds in the window), delay_s, wall_time
  revision   the same fields for second t, lookahead_s, changed, was (the causal label)
  event_start / event_end   start_s (, end_s, score), label, delay_s, wall_time
  dropped    t, message: the model was behind and the second was never scored
  stream     kind (stall | resumed | audio_lost | ended), at_s, message
delay_s: time.monotonic() at the decision minus the moment the stream's clock passed the
second's end (pipeline/media/live.py `_Clock`), so it includes the stream's own
interleaving, decoding, features and the model. wall_time: time.time() at the decision.

`summary()`: seconds decided, dropped, revised (and changed), events, the delay's median,
95th percentile and maximum, stalls, how the stream ended. Memory is bounded: the features of
the last W + L seconds, the reader's bounded queue, and a float per second for the delays.

The offline twin, `live_offline(path, checkpoint)`: the same rule over a saved file decoded by
SegmentReader, for the equality test (events of the live run = events of the file).
"""

from __future__ import annotations

import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from ...core import jsonio
from ...core.annotations import BACKGROUND
from ...core.config import MAX_SEGMENTS, SAMPLE_RATE_HZ, check_range
from ...core.errors import ConfigError, Interrupted
from ...models.registry import SEL_TASKS
from ..media.decode import DecodeOptions, SegmentReader
from ..media.live import LiveOptions, LiveReader, LiveSegment
from ..train.checkpoint import load_checkpoint
from .localize import checkpoint_window, segment_scorer
from .predictor import Predictor
from .windows import Scorer, label_seconds


def _num(x) -> float | None:
    return None if x is None else round(float(x), 6)


@dataclass(frozen=True)
class LiveConfig:
    context_s: int | None = None  # W; default: the checkpoint's window
    lookahead_s: int = 0
    on_stall: str = "wait"
    stall_s: float = 5.0
    frames_per_segment: int | None = None  # default: the checkpoint's
    max_pending: int = 2
    on_missing_audio: str | None = None  # default: the checkpoint's

    def __post_init__(self) -> None:
        if self.context_s is not None:
            check_range("context", self.context_s, 1, MAX_SEGMENTS)
        check_range("lookahead", self.lookahead_s, 0, MAX_SEGMENTS)
        if self.context_s is not None and self.lookahead_s >= self.context_s:
            raise ConfigError("lookahead", self.lookahead_s, f"must be shorter than the context ({self.context_s} s)")
        LiveOptions(
            frames_per_segment=self.frames_per_segment or 1,
            on_stall=self.on_stall,
            stall_s=self.stall_s,
            max_pending=self.max_pending,
        )  # the reader's checks


# -- the causal rule -------------------------------------------------------------------------------
class CausalDecider:
    """Features of second t in, records out. Holds the features of the last W + L seconds."""

    def __init__(self, score: Scorer, classes: tuple[str, ...], window: int, lookahead: int = 0) -> None:
        if lookahead >= window:
            raise ConfigError("lookahead", lookahead, f"must be shorter than the context ({window} s)")
        self.score, self.classes, self.window, self.lookahead = score, classes, window, lookahead
        self._features: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (t, audio [Da], visual [N, Dv])
        self._undecided: deque[dict] = deque()  # causal records waiting for their revision
        self._event: dict | None = None  # the running event: start_s, label, scores
        self.decided = self.revised = self.changed = self.dropped = 0
        self.events: list[dict] = []

    def _window(self, last: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        rows = [(t, a, v) for t, a, v in self._features if last - self.window < t <= last]
        return [t for t, _, _ in rows], np.stack([a for _, a, _ in rows])[None], np.stack([v for _, _, v in rows])[None]

    def _scored(self, last: int, t: int) -> dict:
        """Second t's values from the window ending at second `last`."""
        times, audio, visual = self._window(last)
        out = self.score(audio, visual)  # audio [1, w, Da], visual [1, w, N, Dv]
        i = times.index(t)

        def part(x):
            return None if x is None else np.asarray(x)[0, i : i + 1]

        rel = part(out.relevance)
        labels, prob = label_seconds(np.asarray(out.probs)[0, i : i + 1], rel, self.classes)
        return {
            "t": t,
            "start_s": t,
            "end_s": t + 1,
            "label": labels[0],
            "probability": _num(prob[0]),
            "relevance": _num(None if rel is None else rel[0]),
            "audio_relevance": _num(None if part(out.audio_relevance) is None else part(out.audio_relevance)[0]),
            "visual_relevance": _num(None if part(out.visual_relevance) is None else part(out.visual_relevance)[0]),
            "context": len(times),
        }

    def push(self, t: int, audio: np.ndarray, visual: np.ndarray) -> list[dict]:
        """Second t's features (audio [Da], visual [N, Dv]) -> its records (and those of
        the second it revises, and of the events they end or start)."""
        self._features.append((t, audio, visual))
        while self._features and self._features[0][0] <= t - self.window - self.lookahead:
            self._features.popleft()
        rec = dict(type="second", **self._scored(t, t))
        self.decided += 1
        out = [rec]
        if self.lookahead == 0:
            out += self._final(rec)
            return out
        self._undecided.append(rec)
        while self._undecided and self._undecided[0]["t"] <= t - self.lookahead:
            old = self._undecided.popleft()
            if old["t"] < t - self.lookahead:
                out += self._final(old)  # its lookahead second was dropped: the causal values stand
                continue
            new = dict(
                type="revision", **self._scored(t, old["t"]), lookahead_s=self.lookahead, changed=None, was=old["label"]
            )
            new["changed"] = new["label"] != old["label"]
            self.revised += 1
            self.changed += new["changed"]
            out.append(new)
            out += self._final(new)
        return out

    def drop(self, t: int) -> list[dict]:
        """Second t was never scored: it ends a running event."""
        self.dropped += 1
        out = []
        while self._undecided and self._undecided[0]["t"] < t:
            out += self._final(self._undecided.popleft())
        return out + self._close(t)

    def finish(self) -> list[dict]:
        """The stream ended: seconds still waiting for their lookahead keep their causal values."""
        out = []
        while self._undecided:
            out += self._final(self._undecided.popleft())
        end = self._event["end_s"] if self._event else 0
        return out + self._close(end)

    def _final(self, rec: dict) -> list[dict]:
        """A second's final label: events start and end here."""
        out = []
        t, label = rec["t"], rec["label"]
        if self._event is not None and (self._event["label"] != label or self._event["end_s"] != t):
            out += self._close(self._event["end_s"])
        if label != BACKGROUND:
            confidence = rec["probability"] * (rec["relevance"] if rec["relevance"] is not None else 1.0)
            if self._event is None:
                self._event = {"start_s": t, "end_s": t + 1, "label": label, "scores": [confidence]}
                out.append({"type": "event_start", "start_s": t, "label": label})
            else:
                self._event["end_s"] = t + 1
                self._event["scores"].append(confidence)
        return out

    def _close(self, end_s: int) -> list[dict]:
        e, self._event = self._event, None
        if e is None:
            return []
        event = {"start_s": e["start_s"], "end_s": e["end_s"], "label": e["label"], "score": _num(np.mean(e["scores"]))}
        self.events.append(event)
        return [{"type": "event_end", **event}]


# -- a run ------------------------------------------------------------------------------------------
def _predictor(checkpoint, config: LiveConfig, options: dict) -> tuple[Predictor, int]:
    path = os.fspath(checkpoint)
    ckpt = load_checkpoint(path, expected_task=SEL_TASKS)
    window = config.context_s if config.context_s is not None else checkpoint_window(ckpt)
    if config.lookahead_s >= window:
        raise ConfigError("lookahead", config.lookahead_s, f"must be shorter than the context ({window} s)")
    if config.on_missing_audio is not None:
        options = dict(options, on_missing_audio=config.on_missing_audio)
    return Predictor.build(path, ckpt, **options), window


def _features(predictor: Predictor, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One segment's frames [K, S, S, 3] and audio [16000] -> audio [Da], visual [N, Dv]."""
    v = predictor.extractor.visual_features(frames[None])  # (1, h, w, Dv)
    a = predictor.extractor.audio_features(audio[None])  # (1, Da)
    return a[0], v[0].reshape(-1, v.shape[-1])


class LiveRun:
    """An iterable of records (dicts) over a live source; `summary()` at any time, final at
    the end. Built by `live`."""

    def __init__(
        self,
        source,
        checkpoint,
        config: LiveConfig,
        *,
        video_device: str | None = None,
        audio_device: str | None = None,
        **options,
    ) -> None:
        self.config = config
        self.predictor, self.window = _predictor(checkpoint, config, options)
        settings = self.predictor.settings
        self.reader_options = LiveOptions(
            frames_per_segment=config.frames_per_segment or settings.frames_per_segment,
            frame_size=settings.frame_size,
            on_missing_audio=settings.on_missing_audio,
            stall_s=config.stall_s,
            on_stall=config.on_stall,
            max_pending=config.max_pending,
        )
        self.reader = LiveReader(source, self.reader_options, video_device=video_device, audio_device=audio_device)
        self.decider = CausalDecider(
            segment_scorer(self.predictor.model, self.predictor.extractor.device),
            tuple(self.predictor.checkpoint.class_names),
            self.window,
            config.lookahead_s,
        )
        self._warm_up()
        self.delays = array("d")  # a float a second: 29 KB an hour
        self.compute = array("d")  # the features and the model, per second
        self.stalls = 0
        self.audio_lost = False
        self.ended: str | None = None
        self.last_second: int | None = None

    def _warm_up(self) -> None:
        """One silent black second through the extractors and the model before the stream
        starts: the first forward's allocations are not charged to the first second."""
        o = self.reader_options
        a, v = _features(
            self.predictor,
            np.zeros((o.frames_per_segment, o.frame_size, o.frame_size, 3), np.uint8),
            np.zeros(SAMPLE_RATE_HZ, np.float32),
        )
        self.decider.score(a[None, None], v[None, None])

    def __iter__(self) -> Iterator[dict]:
        def stamp(recs: list[dict], end_clock: float | None) -> Iterator[dict]:
            now, wall = time.monotonic(), time.time()
            for r in recs:
                if end_clock is not None and r["type"] != "dropped":
                    r["delay_s"] = round(now - end_clock, 4)
                r["wall_time"] = round(wall, 4)
                yield r

        for item in self.reader:
            if isinstance(item, LiveSegment):
                seg = item.segment
                began = time.monotonic()
                audio, visual = _features(self.predictor, seg.frames, seg.audio)
                recs = self.decider.push(seg.index, audio, visual)
                self.compute.append(time.monotonic() - began)
                self.last_second = seg.index
                self.delays.append(time.monotonic() - item.end_clock_s)
                yield from stamp(recs, item.end_clock_s)
            elif item.kind == "dropped":
                recs = [{"type": "dropped", "t": item.segment, "message": item.message}]
                yield from stamp(recs + self.decider.drop(item.segment), None)
            else:
                self.stalls += item.kind == "stall"
                self.audio_lost |= item.kind == "audio_lost"
                if item.kind == "ended":
                    self.ended = item.message
                    yield from stamp(self.decider.finish(), None)
                yield from stamp(
                    [{"type": "stream", "kind": item.kind, "at_s": item.at_s, "message": item.message}], None
                )

    def close(self) -> None:
        self.reader.close()

    def summary(self) -> dict:
        def q(x, p):
            return round(float(np.percentile(np.asarray(x), p)), 4) if len(x) else None

        return {
            "type": "summary",
            "source": self.reader.name,
            "seconds": self.decider.decided,
            "dropped": self.decider.dropped,
            "revised": self.decider.revised,
            "changed": self.decider.changed,
            "events": list(self.decider.events),
            "delay_s": {"median": q(self.delays, 50), "p95": q(self.delays, 95), "max": q(self.delays, 100)},
            "compute_s": {"median": q(self.compute, 50), "p95": q(self.compute, 95)},
            "stalls": self.stalls,
            "audio_lost": self.audio_lost,
            "ended": self.ended or "interrupted",
            "context_s": self.window,
            "lookahead_s": self.config.lookahead_s,
            "frames_per_segment": self.reader_options.frames_per_segment,
        }


def live(
    source,
    checkpoint,
    *,
    context_s: int | None = None,
    lookahead_s: int = 0,
    on_stall: str = "wait",
    stall_s: float = 5.0,
    frames_per_segment: int | None = None,
    max_pending: int = 2,
    on_missing_audio: str | None = None,
    video_device: str | None = None,
    audio_device: str | None = None,
    **options,
) -> LiveRun:
    """Localize events in a live source (`-`, a file object or fd, a URL, a FIFO, or
    `video_device` + `audio_device`) with a SEL checkpoint: iterate over the result for the
    records, then call its `summary()`. `options`: Predictor.build's (device, weight files,
    precision, batch_size). Raises before reading: CheckpointError, SettingsMismatch,
    ConfigError."""
    config = LiveConfig(context_s, lookahead_s, on_stall, stall_s, frames_per_segment, max_pending, on_missing_audio)
    return LiveRun(source, checkpoint, config, video_device=video_device, audio_device=audio_device, **options)


def live_offline(
    path: str | os.PathLike,
    checkpoint,
    *,
    context_s: int | None = None,
    lookahead_s: int = 0,
    frames_per_segment: int | None = None,
    on_missing_audio: str | None = None,
    **options,
) -> list[dict]:
    """The causal rule over a saved file (decoded by SegmentReader): the records `live`
    gives for the same stream, less the delays and stream records."""
    config = LiveConfig(
        context_s, lookahead_s, frames_per_segment=frames_per_segment, on_missing_audio=on_missing_audio
    )
    predictor, window = _predictor(checkpoint, config, options)
    settings = predictor.settings
    decoding = DecodeOptions(
        frames_per_segment=frames_per_segment or settings.frames_per_segment,
        frame_size=settings.frame_size,
        on_missing_audio=settings.on_missing_audio,
    )
    decider = CausalDecider(
        segment_scorer(predictor.model, predictor.extractor.device),
        tuple(predictor.checkpoint.class_names),
        window,
        lookahead_s,
    )
    records = []
    for seg in SegmentReader(path, decoding):
        records += decider.push(seg.index, *_features(predictor, seg.frames, seg.audio))
    return records + decider.finish()


def events_of(records) -> list[dict]:
    """The events (start_s, end_s, label, score) that a run's records closed."""
    return [{k: r[k] for k in ("start_s", "end_s", "label", "score")} for r in records if r["type"] == "event_end"]


# -- the command ------------------------------------------------------------------------------------
def run_live_command(
    source,
    checkpoint,
    config: LiveConfig,
    *,
    html_port: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    video_device: str | None = None,
    audio_device: str | None = None,
    **options,
) -> dict:
    """`avel live`: JSON lines on `out`, the summary on `err` at the end. Ctrl-C: the summary,
    then Interrupted (exit 130). `html_port`: the live page (0: any free port; its URL on
    `err`), kept up after the end until an open page has fetched every record (LINGER_S)."""
    run = LiveRun(source, checkpoint, config, video_device=video_device, audio_device=audio_device, **options)
    page = None
    if html_port is not None:
        from .live_page import LINGER_S, LivePage

        page = LivePage(html_port, run.reader.name)
        err.write(f"live page: {page.url}\n")
        err.flush()
    try:
        for rec in run:
            out.write(jsonio.dumps(rec) + "\n")
            out.flush()
            if page is not None:
                page.add(rec)
    except KeyboardInterrupt:
        run.close()
        if page is not None:
            page.close()
        summary = run.summary()
        err.write(jsonio.dumps(summary) + "\n")
        err.flush()
        raise Interrupted(f"{run.reader.name}: stopped after {summary['seconds']} seconds") from None
    except BaseException:
        if page is not None:
            page.close()
        raise
    finally:
        run.close()
    summary = run.summary()
    err.write(jsonio.dumps(summary) + "\n")
    err.flush()
    if page is not None:
        page.close(linger_s=LINGER_S)  # the stream ended: the page fetches its last records first
    return summary
