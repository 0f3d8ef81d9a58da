"""`FeatureStream`: one video's decoded segments through the extractors, a batch of
segments at a time, so memory does not depend on the video's length. The one path from
decoded frames to features: `avel localize` and `avel cml` stream a video decoded in a
thread; `avel extract` / `preprocess` (pipeline/extract/local.py) stream videos decoded by the
decoder processes of pipeline/media/pool.py, whose batches arrive in shared memory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np

from ...core.errors import shown
from ..media.decode import DecodeOptions
from ..media.pool import ThreadDecoders, VideoSource, prefetch  # noqa: F401  (prefetch: for callers)
from .features import FeatureExtractor


class FeatureStream:
    """Features of one video's 1-s segments, in order. `batches()` yields (audio [n, Da] |
    None, visual pool5 [n, h, w, Dv] | None) per batch of `extractor.segments_per_batch`
    segments; iterating yields them per segment. The segments come from `source` (a
    decoder's `VideoSource`) or, by default, from decoding `path` in a thread ahead of the
    extractors. `visual` / `audio` False skips that extractor. After iteration
    `duration_s` and `num_segments` are set. MediaError subclasses name the file."""

    def __init__(
        self,
        path: str | os.PathLike,
        extractor: FeatureExtractor,
        *,
        visual: bool = True,
        audio: bool = True,
        options: DecodeOptions | None = None,
        progress: bool = False,
        source: VideoSource | None = None,
    ) -> None:
        self.path, self.extractor, self.visual, self.audio, self.progress = (
            os.fspath(path),
            extractor,
            visual,
            audio,
            progress,
        )
        self.options = (
            options if options is not None else DecodeOptions.from_settings(extractor.settings, segments=None)
        )
        self.source = source
        self.duration_s: float | None = None
        self.num_segments: int | None = None

    def batches(self) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        from tqdm import tqdm

        videos = None
        source = self.source
        if source is None:
            videos = ThreadDecoders(self.options, self.extractor.segments_per_batch).videos([self.path])
            source = next(videos)
        bar = tqdm(
            desc=shown(os.path.basename(self.path)),
            unit="s",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        try:
            for batch in source:
                try:
                    planes = () if batch.planes is None else (batch.planes,)  # --convert device: the planes' format
                    v = self.extractor.visual_features(batch.frames, *planes) if self.visual else None  # (n, h, w, Dv)
                    a = self.extractor.audio_features(batch.audio) if self.audio else None  # (n, Da)
                finally:
                    if batch.release is not None:
                        batch.release()  # the decoder may reuse the memory
                bar.update(len(batch))
                yield a, v
        finally:
            bar.close()
            if videos is not None:
                videos.close()
        self.duration_s, self.num_segments = source.duration_s, source.num_segments

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        for a, v in self.batches():
            for i in range(len(a) if a is not None else len(v)):
                yield (None if a is None else a[i]), (None if v is None else v[i])
