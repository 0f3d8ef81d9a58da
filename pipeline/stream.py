"""Streams that keep memory flat: `prefetch` runs any iterator in a thread a bounded number
of items ahead of its consumer (decoding overlaps the models), and `FeatureStream` turns one
video into per-segment features, a batch of segments at a time, whatever its length."""
from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Iterable, Iterator

import numpy as np

from avel.pipeline.decode import DecodeOptions, SegmentReader
from avel.pipeline.features import FeatureExtractor


def prefetch(items: Iterable, maxsize: int) -> Iterator:
    """Iterate `items` in a background thread, up to `maxsize` ahead. Exceptions are
    re-raised in the consumer; closing the consumer stops the thread (and closes a
    generator, so a decoder's container is closed)."""
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
    `extractor.segments_per_batch` segments at a time, so memory does not depend on the
    video's length. `visual` / `audio` False skips that extractor. After iteration
    `duration_s` and `num_segments` are set. MediaError subclasses name the file."""

    def __init__(self, path: str | os.PathLike, extractor: FeatureExtractor, *, visual: bool = True, audio: bool = True,
                 options: DecodeOptions | None = None, progress: bool = False) -> None:
        self.path, self.extractor, self.visual, self.audio, self.progress = os.fspath(path), extractor, visual, audio, progress
        self.options = options if options is not None else DecodeOptions.from_settings(extractor.settings, segments=None)
        self.duration_s: float | None = None
        self.num_segments: int | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        from tqdm import tqdm

        reader = SegmentReader(self.path, self.options)
        chunk = self.extractor.segments_per_batch
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
