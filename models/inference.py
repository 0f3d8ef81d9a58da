"""What the models' inference methods return, and the window searches they use.

Every SEL model has `score_segments(audio [B, W, Da], visual [B, W, N, Dv]) -> SegmentScores`
(what `avel localize` averages over sliding windows); every CML model has
`score_query(query [l, Dq], target [T, Dt], query_modality) -> QueryScores` (what `avel cml`
reports) and the batched `localize(...)` of the evaluation protocol. Callers never reach
into a model's layers: each model owns its inference rule. Pure functions of tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIRECTIONS = ("a2v", "v2a")  # A2V: an audio query finds a visual window; V2A the reverse
MODALITIES = ("audio", "visual")


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)}")


def check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown query modality {modality!r}; choose one of: {', '.join(MODALITIES)}")


# --- window search ------------------------------------------------------------------------
def window_sums(scores: torch.Tensor, length: int) -> torch.Tensor:
    """Sums of every `length`-long contiguous window of scores [T] -> [T - length + 1]
    (entry s is sum(scores[s:s+length])), computed in float64."""
    T = scores.shape[-1]
    if not 1 <= length <= T:
        raise ValueError(f"window length {length} does not fit {T} segments")
    return scores.double().unfold(-1, length, 1).sum(-1)


def max_contiguous_window(scores: torch.Tensor, length: int) -> int:
    """Start of the `length`-long window of scores [T] with the largest sum; ties -> the
    earliest start. DAM's CML inference (Sec. 3.3)."""
    return int(torch.argmax(window_sums(scores, length)))  # argmax returns the first maximum


def aligned_window_distances(distances: torch.Tensor) -> torch.Tensor:
    """distances [l, T] between query segment i and candidate segment j -> the position-wise
    summed distance of every l-long candidate window [T - l + 1]: entry s is
    sum_i distances[i, s + i] (float64)."""
    l, T = distances.shape
    if not 1 <= l <= T:
        raise ValueError(f"a query of {l} segments does not fit {T} segments")
    d = distances.double()
    starts = torch.arange(T - l + 1, device=d.device)  # (S,)
    cols = starts.unsqueeze(1) + torch.arange(l, device=d.device).unsqueeze(0)  # (S, l)
    rows = torch.arange(l, device=d.device).unsqueeze(0).expand_as(cols)  # (S, l)
    return d[rows, cols].sum(1)  # (S,)


def min_distance_window(distances: torch.Tensor) -> int:
    """distances [l, T] -> the start of the l-long candidate window with the smallest
    position-wise summed distance; ties -> the earliest start. AVDLN's CML inference."""
    return int(torch.argmin(aligned_window_distances(distances)))  # argmin returns the first minimum


# --- outputs ------------------------------------------------------------------------------
@dataclass
class SegmentScores:
    """An SEL model's view of a batch of windows (numpy float64).

    probs: [B, W, C] class probabilities per segment: C = E event categories (DAM: the
    video-level category distribution, the same for every segment of a window) or E + 1
    with background last (AV_att). The relevances are DAM's p_t, p_t^A, p_t^V [B, W], or
    None for a model without relevance."""

    probs: np.ndarray
    relevance: np.ndarray | None = None
    audio_relevance: np.ndarray | None = None
    visual_relevance: np.ndarray | None = None


@dataclass
class QueryScores:
    """A CML model's scores of one query against one target (numpy float64).

    per_second [T]: the score of each target second; windows [T - l + 1]: the mean score
    of window [s, s + l); best: the start the model's rule picks; kind: relevance |
    distance | cosine-distance."""

    per_second: np.ndarray
    windows: np.ndarray
    best: int
    kind: str
    higher_is_better: bool
