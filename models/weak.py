"""Weakly supervised event localization (WSEL): SEL models trained from video-level labels
only (AVE's `mil_labels.h5`: the classes a video holds, background only for a video without
event), tested per second like SEL. `loss(audio, visual, video_labels [B, C])` takes the
video-level labels (C = E + 1, background last); `predict` and `score_segments` are the SEL
models' own, so a weak checkpoint localizes like any SEL checkpoint.

  * WeakAVAtt: Tian et al.'s "AV_att weak" (ECCV 2018, Sec. 5; their public code,
    github.com/YapengTian/AVE-ECCV18 `models_weakly.py` + `weak_supervised_main.py`): AV_att's
    per-segment C-way scores, max-pooled over time per class (multiple-instance learning),
    a softmax over the classes, and the multi-label soft-margin loss against the video
    labels. At test time each second gets its argmax class, background included.
  * WeakDAM: SEL DAM whose category branch trains on the video's class (the CE of eq. 8);
    its relevance branch has no per-second target, so it is derived (`relevance`):
      "agreement" (default): two per-second classifiers trained from the video label alone,
          one on the audio of each second, one on the pool5 cells of each second (a per-cell
          classifier, per class the best cell: the object covers a few cells); every second
          of a video is given the video's class (the bag label on every instance: a second
          that does not carry the class looks like those of every other class and learns
          the prior, one that carries it learns the class). The pseudo target of second t
          is min(P^A_t(c), P^V_t(c)) for the video's class c, divided by its maximum over
          the video's seconds (the video holds its class, so its best second is an event),
          detached: relevant where BOTH modalities carry the class, which is what an
          audio-visual event is. p_t learns it with the BCE of eq. 8.
      "fused" (the ablation): max(P^A_t(c), P^V_t(c)) instead: a second that only shows
          or only plays the class counts as an event.
      "none": no relevance at all; every second gets the predicted category (what a video
          label alone gives without localization).
    The loss: lam * CE + (1 - lam) * BCE(p_t, pseudo target) + the two classifiers' CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .baselines import AVAtt, FusionHead
from .dam import relevance_loss
from .sel import SELDAM, category_loss, selected_cross_entropy

WEAK_RELEVANCE = ("agreement", "fused", "none")


def mil_pool(scores: torch.Tensor) -> torch.Tensor:
    """Per-segment scores [B, T, C] -> the video's [B, C]: the max over time per class
    (Tian et al.'s MaxPool1d over the segments)."""
    return scores.amax(dim=1)


def event_target(video_labels: torch.Tensor, num_events: int) -> torch.Tensor:
    """video labels [B, E+1] 0/1 -> the video's event class [B] (the first it holds; -1: none)."""
    events = video_labels[:, :num_events]  # (B, E)
    return torch.where(events.sum(1) > 0, events.argmax(1), -1)


def pseudo_relevance(p_a: torch.Tensor, p_v: torch.Tensor, target: torch.Tensor, relevance: str) -> torch.Tensor:
    """DAM weak's relevance targets [B, T]: per-second class probabilities P^A_t, P^V_t
    [B, T, E] at the video's class `target` [B] (-1: no event, all targets 0), their minimum
    ("agreement") or maximum ("fused"), divided by the maximum over the video's seconds (the
    video holds its class, so its best second is an event)."""
    agree = torch.minimum(p_a, p_v) if relevance == "agreement" else torch.maximum(p_a, p_v)
    index = target.clamp(min=0)[:, None, None].expand(-1, agree.shape[1], 1)  # (B, T, 1)
    pseudo = agree.gather(2, index).squeeze(2) * (target >= 0)[:, None]  # (B, T)
    return pseudo / pseudo.amax(dim=1, keepdim=True).clamp(min=1e-6)


class WeakAVAtt(AVAtt):
    task = "sel"  # a SEL model at test time (evaluated and used like one)

    def video_scores(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """audio [B, T, Da], visual [B, T, N, Dv] -> the video's class distribution [B, C]."""
        return F.softmax(mil_pool(self(audio, visual)), dim=-1)  # (B, C)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, video_labels: torch.Tensor) -> torch.Tensor:
        """video_labels [B, C] 0/1 (mil_labels)."""
        return F.multilabel_soft_margin_loss(self.video_scores(audio, visual), video_labels)


class WeakDAM(SELDAM):
    def __init__(self, *, relevance: str = "agreement", **kwargs) -> None:
        super().__init__(**kwargs)
        if relevance not in WEAK_RELEVANCE:
            raise ValueError(f"unknown weak relevance {relevance!r}; choose one of: {', '.join(WEAK_RELEVANCE)}")
        self.relevance = relevance
        if relevance == "none":
            self.uses_relevance = False
        att = self.encoder.attention
        audio_dim, visual_dim = att.audio_embed.in_features, att.visual_embed.in_features
        hidden = self.classifier[1].out_features
        if relevance == "none":
            self.audio_segment = self.visual_cell = None
        else:
            self.audio_segment = FusionHead(audio_dim, hidden, self.num_events)
            self.visual_cell = FusionHead(visual_dim, hidden, self.num_events)

    def segment_scores(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-second classifiers: audio [B, T, Da], visual [B, T, N, Dv] -> logits of
        the audio of every second [B, T, E] and of its visual, per class the best cell's
        [B, T, E] (MIL over the cells: the object covers a few)."""
        return self.audio_segment(audio), self.visual_cell(visual).amax(dim=2)  # (B, T, N, E) -> (B, T, E)

    def video_scores(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> the video's event class distribution [B, E] (the category branch)."""
        return F.softmax(self(audio, visual).category_logits, dim=-1)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, video_labels: torch.Tensor) -> torch.Tensor:
        """video_labels [B, E+1] 0/1 (mil_labels)."""
        out = self(audio, visual)
        target = event_target(video_labels, self.num_events)  # (B,)
        ce = category_loss(out.category_logits, target)
        if not self.uses_relevance:
            return ce
        has = target >= 0
        seconds = target[has].repeat_interleave(audio.shape[1])  # (B' T,) every second gets the video's class
        scores = self.segment_scores(audio, visual)  # (B, T, E) each: audio, visual
        instances = sum(selected_cross_entropy(s[has].flatten(0, 1), seconds) for s in scores)  # 0: no event
        p_a, p_v = (F.softmax(s.detach(), dim=-1) for s in scores)  # P^A_t, P^V_t: targets, no gradient
        pseudo = pseudo_relevance(p_a, p_v, target, self.relevance)
        return self.lam * ce + (1 - self.lam) * relevance_loss(out.relevance, pseudo) + instances
