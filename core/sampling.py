"""Pure functions that decide which frames and samples make a segment."""

from __future__ import annotations

import numpy as np


def frame_sample_times(num_segments: int, frames_per_segment: int) -> np.ndarray:
    """Times (s, from the first frame) of the frames of each 1-s segment: t + i/K. -> [T, K]

    At a constant frame rate r this equals AVE's index rule `int(t*fi + (i/K)*fi)` with
    fi = r frames a second, since the frame shown at time x is frame floor(x * r)."""
    t = np.arange(num_segments, dtype=np.float64)[:, None]
    i = np.arange(frames_per_segment, dtype=np.float64)[None, :]
    return t + i / frames_per_segment


def latest_at_or_before(timestamps_s: np.ndarray, wanted_s: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Index of the latest frame whose time stamp is <= each wanted time (the frame on
    screen at that moment); the first frame for times before it. `timestamps_s` ascending.
    `eps` absorbs time-base rounding (a frame at 0.99999 s is the frame of 1.0 s)."""
    idx = np.searchsorted(np.asarray(timestamps_s), np.asarray(wanted_s) + eps, side="right") - 1
    return np.clip(idx, 0, None)


def segment_count(duration_s: float, forced: int | None, max_shortfall_s: float) -> tuple[int, int]:
    """(segments to produce, segments with real content). floor(D) by default; a forced
    count N truncates, or repeats the last real segment when D >= N - max_shortfall_s.
    Raises ValueError with the reason when the content is too short."""
    available = int(np.floor(duration_s + 1e-6))
    if available < 1:
        raise ValueError(f"{duration_s:.2f} s long, shorter than one 1-s segment")
    if forced is None:
        return available, available
    if forced <= available:
        return forced, forced
    if forced - duration_s > max_shortfall_s + 1e-6:
        raise ValueError(
            f"{duration_s:.2f} s long, {forced} segments need at least "
            f"{forced - max_shortfall_s:.2f} s (shortfall tolerance {max_shortfall_s:g} s)"
        )
    return forced, available
