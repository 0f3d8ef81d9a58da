"""The data side of weakly supervised event localization (`avel train wsel`): what the
training loop and model selection see is `WeakFeatures`, the features and ONE label vector
per video (AVE's mil_labels form, `AVData.video_labels`): no per-second label is ever put
in it. The test split is evaluated by the SEL protocol with the full per-second labels
(pipeline/train/loop.py), outside the loop.

Where the video labels come from (the data layer): an AVE-layout folder's mil_labels.h5
(pipeline/data/ave.py); a cache's annotation rows, one category per row (pipeline/data/load.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...core.errors import DataError
from ..data.dataset import AVData


@dataclass
class WeakFeatures:
    task = "wsel"
    audio: torch.Tensor  # [V, T, Da]
    visual: torch.Tensor  # [V, T, N, Dv] cells
    video_labels: torch.Tensor  # [V, C] float 0/1 (C = E + 1, background last)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> audio, visual (float32 on device), the video labels [B, C]."""
        return (
            self.audio[idx].to(device).float(),
            self.visual[idx].to(device).float(),
            self.video_labels[idx].to(device),
        )


def require_video_labels(data: AVData, where: str) -> torch.Tensor:
    """data.video_labels, or a one-line error naming `where` (the data's path)."""
    if data.video_labels is None:
        raise DataError(
            f"{where}: no video-level labels for weak supervision (an AVE-layout folder needs "
            "mil_labels.h5; a cache needs annotations)"
        )
    if tuple(data.video_labels.shape) != (len(data.video_ids), data.num_classes):
        raise DataError(
            f"{where}: video-level labels of shape {tuple(data.video_labels.shape)}, expected "
            f"[{len(data.video_ids)}, {data.num_classes}]"
        )
    return data.video_labels


def weak_features(data: AVData, audio: torch.Tensor, visual: torch.Tensor) -> WeakFeatures:
    """The features as held in RAM with the video labels of `data` (never its per-second ones)."""
    return WeakFeatures(audio, visual, require_video_labels(data, "the data").float())


@torch.no_grad()
def evaluate_video_labels(model: nn.Module, feats: WeakFeatures, idx: torch.Tensor, batch_size: int) -> dict:
    """Validation with video labels only: {"video_accuracy" (the predicted event class is one
    the video holds, over videos with an event), "video_loss" (the training loss), "n_videos"}."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, counted, loss = 0, 0, 0.0
    try:
        for i in range(0, len(idx), batch_size):
            audio, visual, labels = feats.batch(idx[i : i + batch_size], device)
            loss += model.loss(audio, visual, labels).item() * len(audio)
            scores = model.video_scores(audio, visual)[:, : labels.shape[1] - 1]  # (B, E) event classes
            has = labels[:, :-1].sum(1) > 0
            hit = labels.gather(1, scores.argmax(1, keepdim=True)).squeeze(1) > 0  # (B,)
            correct, counted = correct + int(hit[has].sum()), counted + int(has.sum())
    finally:
        model.train(was_training)
    return {
        "video_accuracy": correct / counted if counted else float("nan"),
        "video_loss": loss / max(len(idx), 1),
        "n_videos": len(idx),
    }


def weak_selection_score(metrics: dict) -> float:
    """The lower validation loss wins (the loss of video labels only; the video accuracy
    saturates within a few epochs, long before the relevance has learned anything)."""
    return -metrics["video_loss"]


def whole_video_accuracy(data: AVData, split: str) -> float:
    """SEL accuracy of the "whole video = the label" baseline: every second of a test video
    predicted as its TRUE video-level class (background for a video without event). An upper
    bound of what the video labels give without any localization."""
    from .metrics import sel_accuracy

    idx = data.split(split)
    labels = require_video_labels(data, "the data")[idx]  # (V, C)
    video_class = torch.where(labels[:, :-1].sum(1) > 0, labels[:, :-1].argmax(1), data.background)  # (V,)
    return sel_accuracy(video_class.unsqueeze(1).expand(-1, data.labels.shape[1]), data.labels[idx])
