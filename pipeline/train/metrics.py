"""Evaluation metrics of the two AVE tasks. Pure functions of tensors.

SEL: per-segment accuracy over every segment of every video, background included (a
402 x 10 test set counts 4020 segments).

CML (Tian et al.'s protocol, followed by DAM): for each video whose event mask has at least
one event segment and does not cover all T segments, the query is the event region of one
modality, from its first to its last event segment (l = end - start segments; AVE events are
contiguous). A model predicts the l-long window of the other modality; the prediction is
correct only when its start equals the true start. A2V (audio query -> visual window) and
V2A (visual query -> audio window) are reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


# --- SEL ----------------------------------------------------------------------------------
def sel_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of segments whose predicted class equals the label; pred, labels [V, T]
    class indices, background counted like any class."""
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    if pred.numel() == 0:
        return float("nan")
    return (pred.cpu() == labels.cpu()).double().mean().item()


# --- CML ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CMLQueries:
    keep: torch.Tensor  # [V] bool: the video is evaluated
    start: torch.Tensor  # [V] int64: first event segment (0 where not kept)
    length: torch.Tensor  # [V] int64: l = last - first + 1 (0 where not kept)

    def mask(self, T: int) -> torch.Tensor:
        """[V, T] bool: the query region start <= t < start + length of each video."""
        t = torch.arange(T).unsqueeze(0)  # (1, T)
        return (t >= self.start.unsqueeze(1)) & (t < (self.start + self.length).unsqueeze(1))


def cml_queries(event_mask: torch.Tensor) -> CMLQueries:
    """event_mask [V, T] (bool or 0/1) -> which videos are evaluated and their query region.
    Skipped: videos with no event segment and videos whose region covers all T segments."""
    m = event_mask.cpu().bool()
    V, T = m.shape
    t = torch.arange(T).expand(V, T)
    has_event = m.any(1)
    first = torch.where(m, t, T).min(1).values  # (V,)
    last = torch.where(m, t, -1).max(1).values  # (V,)
    length = torch.where(has_event, last - first + 1, 0)
    keep = has_event & (length < T)
    return CMLQueries(keep, torch.where(keep, first, 0), torch.where(keep, length, 0))


def cml_accuracy(pred_a2v: torch.Tensor, pred_v2a: torch.Tensor, event_mask: torch.Tensor) -> dict:
    """pred_a2v, pred_v2a [V]: predicted window starts (entries of skipped videos are ignored);
    event_mask [V, T]. -> {"a2v": float, "v2a": float, "n_videos": int} (accuracies are nan
    when no video qualifies)."""
    q = cml_queries(event_mask)
    n = int(q.keep.sum())
    if n == 0:
        return {"a2v": float("nan"), "v2a": float("nan"), "n_videos": 0}
    a2v = (pred_a2v.cpu()[q.keep] == q.start[q.keep]).double().mean().item()
    v2a = (pred_v2a.cpu()[q.keep] == q.start[q.keep]).double().mean().item()
    return {"a2v": a2v, "v2a": v2a, "n_videos": n}
