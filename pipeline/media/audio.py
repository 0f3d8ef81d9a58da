"""The first audio stream of a file as 16-kHz mono float32 for VGGish, decoded only as far
as asked (`AudioTrack`), and put on the video's time line when the decoder gives it one."""

from __future__ import annotations

from collections import deque

import av
import numpy as np
import soxr

from ...core.config import SAMPLE_RATE_HZ
from .container import decoded_frames, open_media


class AudioTrack:
    """The first audio stream of a file as 16-kHz mono float32, decoded by its own demuxer
    only as far as asked: mean of the channels (as VGGish does; libswresample's downmix is
    not a plain mean), soxr VHQ resampling. With `origin_s` set (before the first samples are
    asked for), sample 0 is at that time (the video's first frame): audio that starts later
    is preceded by silence, audio before it is cut; else sample 0 is the first decoded one."""

    BLOCK = 16384  # source samples resampled at a time

    def __init__(self, path: str, stream=None) -> None:
        self.path = path
        # `stream` given (a live input, pipeline/media/live.py): its frames are handed in by
        # `feed`, not pulled from a demuxer of our own
        self.container = open_media(path) if stream is None else None
        self.stream = self.container.streams.audio[0] if stream is None else stream
        self._frames = decoded_frames(self.container, self.stream) if stream is None else iter(())
        self.origin_s: float | None = None
        self.start_s: float | None = None  # the first decoded sample's time stamp
        self._cut = 0  # samples still to drop (audio that starts before `origin_s`)
        self._resampler = None
        self._soxr = None
        self._chunks: deque[np.ndarray] = deque()
        self.base = 0  # index (16-kHz samples) of the first sample held
        self.held = 0  # samples held
        self.done = False
        self.frames = 0  # audio frames decoded
        self.total = 0  # 16-kHz samples decoded
        self._block: list[np.ndarray] = []  # decoded, not yet resampled
        self._block_n = 0

    def close(self) -> None:
        if self.container is not None:
            self.container.close()

    def _convert(self, frame: av.AudioFrame | None) -> None:
        """Frames -> channel mean -> 16 kHz, a block of BLOCK samples at a time (per frame,
        numpy's and soxr's call overheads cost a third of the audio's time; the output is
        the same bit for bit whatever the blocks)."""
        for f in self._resampler.resample(frame):
            self._block.append(f.to_ndarray())  # [C, n]
            self._block_n += f.samples
        if self._block and (self._block_n >= self.BLOCK or frame is None):
            x = np.concatenate(self._block, axis=1).astype(np.float32, copy=False)
            self._push(self._soxr.resample_chunk(x.mean(axis=0)))  # VGGish: the mean of the channels
            self._block, self._block_n = [], 0

    def _push(self, x: np.ndarray) -> None:
        self.total += x.shape[0]
        if self._cut:
            cut = min(self._cut, x.shape[0])
            x, self._cut = x[cut:], self._cut - cut
        self._hold(x)

    def _hold(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self._chunks.append(x)
            self.held += x.shape[0]

    def _pull(self) -> None:
        """Decode one more frame (or finish the stream)."""
        self.feed(next(self._frames, None))

    def release(self) -> None:
        """Free the resamplers now (the track takes no more frames): a native object still held
        when the interpreter exits is reported there as a leak (soxr's nanobind), after the
        command's last line."""
        self._resampler = self._soxr = None
        self.done = True

    def feed(self, frame: av.AudioFrame | None) -> None:
        """Take one decoded frame (None: the stream ended)."""
        if frame is None:
            if self._resampler is not None:
                self._convert(None)
                self._push(self._soxr.resample_chunk(np.zeros(0, np.float32), last=True))
            self.done = True
            return
        if self._resampler is None:
            self._align(frame)
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
            self._soxr = soxr.ResampleStream(frame.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="VHQ")
        self.frames += 1
        self._convert(frame)

    def _align(self, first: av.AudioFrame) -> None:
        """Note the first decoded sample's time, and put it at that time on the `origin_s` time line."""
        start_s = first.time
        if start_s is None and self.stream.start_time is not None and self.stream.time_base is not None:
            start_s = float(self.stream.start_time * self.stream.time_base)
        self.start_s = start_s
        if start_s is None or self.origin_s is None:
            return  # no time stamp at all, or no time line to align to
        offset = round((start_s - self.origin_s) * SAMPLE_RATE_HZ)
        if offset > 0:
            self._hold(np.zeros(offset, np.float32))  # silence until the audio starts
        else:
            self._cut = -offset

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) (16 kHz, zeros past the end of the stream) -> [hi - lo] float32.
        Calls go forward: everything before `hi` is forgotten."""
        while not self.done and self.base + self.held < hi:
            self._pull()
        out = np.zeros(hi - lo, np.float32)
        while self._chunks and self.base < hi:
            chunk = self._chunks[0]
            end = self.base + chunk.shape[0]
            a, b = max(lo, self.base), min(hi, end)
            if b > a:
                out[a - lo : b - lo] = chunk[a - self.base : b - self.base]
            if end <= hi:
                self._chunks.popleft()
                self.held -= chunk.shape[0]
                self.base = end
            else:
                self._chunks[0] = chunk[hi - self.base :]
                self.held -= hi - self.base
                self.base = hi
        return out

    def rest(self) -> np.ndarray:
        """Every sample not yet taken, to the end of the stream -> [S] float32."""
        while not self.done:
            self._pull()
        out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self.base, self.held = self.base + self.held, 0
        self._chunks.clear()
        return out

    def end_s(self, keep_until: int) -> float:
        """The stream's decoded length in seconds: decodes the rest, keeping only the
        samples before index `keep_until` for later `samples` calls."""
        while not self.done:
            self._pull()
            while self._chunks and self.base + self.held > keep_until:  # drop what no segment needs
                cut = min(self._chunks[-1].shape[0], self.base + self.held - keep_until)
                self._chunks[-1] = self._chunks[-1][: self._chunks[-1].shape[0] - cut]
                self.held -= cut
                if not self._chunks[-1].shape[0]:
                    self._chunks.pop()
        return self.total / SAMPLE_RATE_HZ


# -- segments ---------------------------------------------------------------------------------
