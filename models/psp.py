"""PSP: positive sample propagation (Zhou, Zheng, Zhong, Guo, Wang, "Positive Sample Propagation
along the Audio-Visual Event Line", CVPR 2021), for SEL and weak SEL on the same features as
DAM and AV_att. Written from the paper and a reading of the authors' code
(github.com/jasongief/PSP_CVPR_2021, no license); the differences are listed in docs/models.md,
"PSP and CMBS".

    front end (AV_att's, models/baselines.py): audio-guided visual attention over the pool5
        cells, a Bi-LSTM per modality                  -> f^A, f^V [B, T, d]   (d = 256)
    AVFE + PSP (PositiveSamplePropagation): per modality two ReLU projections (a key and a
        value, d -> d, no bias, dropout); the audio-visual affinity
            beta^{va}_{ij} = ReLU(k^V_i . k^A_j / sqrt(d))        (visual i, audio j) [B, T, T]
        and beta^{av} = (beta^{va})^T; each row L1-normalised, every entry <= the threshold
        tau (0.099 supervised, 0.095 weak) set to 0 (the negative and weak pairs are pruned),
        L1-normalised again. The positive samples are propagated across the modalities:
            v_i' = f^V_i + sum_j beta^{va}_{ij} w^A_j,   a_j' = f^A_j + sum_i beta^{av}_{ji} w^V_i
        then ReLU(Linear) + dropout + a shared LayerNorm per modality, fused = (v' + a') / 2.
        `propagation=False` (the ablation "w/o PSP"): v' = f^V, a' = f^A.
    classifier: fused -> Linear(d, 64) -> ReLU -> Linear(64, C) per segment (C = E + 1,
        background last; no biases), the class of every second its argmax (as AV_att).
    loss (supervised): CE over every segment + avps_weight (100) x the audio-visual pair
        similarity loss (AVPS, the paper's "AVC" objective): the cosine similarity of v'_t and
        a'_t, ReLU, divided by its sum over the video, against the event mask divided by its
        sum (MSE): the pairs of an event should be the similar ones.
    weak (WeakPSP): the same network; each second's scores s_t are weighted by
        sigmoid(ReLU(w . s_t)) (the paper's code, "temporal weighting"), averaged over time,
        a softmax, BCE against the video labels divided by their sum (the video's class
        distribution); no AVPS loss (it needs per-second labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import check_range, option
from .baselines import LowLevelEncoder, xavier_linear
from .inference import SegmentScores
from .protocols import EpochHook
from .registry import MAX_LOSS_WEIGHT, SELConfig, register_model, sel_encoder_kwargs

EPS = 1e-8  # the reference's guard of the L1 normalisations


# -- configs ---------------------------------------------------------------------------------
_THRESHOLD = (
    "PSP: similarity threshold tau: after the L1 normalisation of each row of the audio-visual affinity, "
    "entries <= tau are pruned (0 keeps every positive pair); default: 0.099 for sel, 0.095 for wsel (the "
    "paper's code)"
)


@dataclass(frozen=True)
class PSPFields(SELConfig):
    """What supervised and weak PSP share: the threshold, the propagation switch, the dropout."""

    psp_threshold: float = option(_THRESHOLD, default=0.099)
    propagation: bool = option(
        "PSP: propagate the positive samples across the modalities (--no-propagation: the "
        "ablation without PSP: each modality keeps its own Bi-LSTM features)",
        flag="--propagation/--no-propagation",
        default=True,
    )
    psp_dropout: float = option("PSP: dropout in the PSP module (the paper's code: 0.1)", default=0.1)

    def validate(self) -> None:
        super().validate()
        check_range("psp_threshold", self.psp_threshold, 0.0, 1.0, hi_open=True)
        check_range("psp_dropout", self.psp_dropout, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class PSPConfig(PSPFields):
    """sel/psp: PSP with the AVPS loss (docs/models.md "PSP and CMBS")."""

    task: ClassVar[str] = "sel"
    name: ClassVar[str] = "psp"
    avps_weight: float = option(
        "sel PSP: weight of the audio-visual pair similarity loss (the paper's lambda: 100; 0 = CE alone)",
        default=100.0,
    )

    def validate(self) -> None:
        super().validate()
        check_range("avps_weight", self.avps_weight, 0.0, MAX_LOSS_WEIGHT)


@dataclass(frozen=True)
class WeakPSPConfig(PSPFields):
    """wsel/psp: PSP trained on video labels (its temporal weighting, average pooling)."""

    task: ClassVar[str] = "wsel"
    name: ClassVar[str] = "psp"
    psp_threshold: float = option(_THRESHOLD, default=0.095)
    temporal_weighting: bool = option(
        "wsel PSP: weight each second's class scores by sigmoid(ReLU(w . s_t)) before "
        "the average over time (the paper's code)",
        flag="--temporal-weighting/--no-temporal-weighting",
        default=True,
    )


# -- the modules -----------------------------------------------------------------------------
def prune_affinity(beta: torch.Tensor, threshold: float) -> torch.Tensor:
    """beta [B, T, T] >= 0 -> each row L1-normalised, entries <= threshold set to 0, each row
    L1-normalised again (an all-zero row stays zero)."""
    beta = beta / (beta.sum(-1, keepdim=True) + EPS)
    beta = beta * (beta > threshold).to(beta.dtype)
    return beta / (beta.sum(-1, keepdim=True) + EPS)


def pair_similarity_loss(v: torch.Tensor, a: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
    """The AVPS loss: v', a' [B, T, d], event_mask [B, T] -> MSE between the ReLU'd cosine
    similarity of each second's pair divided by its sum over the video and the event mask
    divided by its sum (all zero for a video without event)."""
    sim = F.relu(F.cosine_similarity(v, a, dim=-1, eps=EPS))  # (B, T)
    sim = sim / (sim.sum(-1, keepdim=True) + EPS)
    mask = event_mask.to(sim.dtype)
    target = mask / (mask.sum(-1, keepdim=True) + 1e-6)
    return F.mse_loss(sim, target)


class PositiveSamplePropagation(nn.Module):
    """The AVFE + PSP module (see the module docstring). f^A, f^V [B, T, d] -> fused, v', a'
    [B, T, d] each; `affinities` gives the pruned beta^{va}, beta^{av} [B, T, T]."""

    def __init__(self, dim: int, *, threshold: float = 0.099, dropout: float = 0.1, propagate: bool = True) -> None:
        super().__init__()
        self.threshold, self.propagate = threshold, propagate
        self.visual_key = xavier_linear(dim, dim, bias=False)
        self.visual_value = xavier_linear(dim, dim, bias=False)
        self.audio_key = xavier_linear(dim, dim, bias=False)
        self.audio_value = xavier_linear(dim, dim, bias=False)
        self.visual_out = xavier_linear(dim, dim, bias=False)
        self.audio_out = xavier_linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def project(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(layer(x)))

    def affinities(self, k_a: torch.Tensor, k_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys k^A, k^V [B, T, d] -> pruned beta^{va} (rows: visual seconds) and beta^{av}
        (rows: audio seconds) [B, T, T]."""
        beta_va = F.relu(k_v @ k_a.transpose(1, 2) / math.sqrt(k_v.shape[-1]))  # (B, Tv, Ta)
        return prune_affinity(beta_va, self.threshold), prune_affinity(beta_va.transpose(1, 2), self.threshold)

    def forward(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.propagate:
            beta_va, beta_av = self.affinities(self.project(self.audio_key, f_a), self.project(self.visual_key, f_v))
            v = f_v + beta_va @ self.project(
                self.audio_value, f_a
            )  # (B, T, d): audio positives into each visual second
            a = f_a + beta_av @ self.project(self.visual_value, f_v)  # (B, T, d)
        else:
            v, a = f_v, f_a
        v = self.norm(self.dropout(F.relu(self.visual_out(v))))
        a = self.norm(self.dropout(F.relu(self.audio_out(a))))
        return (v + a) / 2, v, a


class PSP(EpochHook, nn.Module):
    """sel/psp: per-segment C-way classification (background included) of PSP's fused features."""

    task = "sel"

    def __init__(
        self,
        *,
        num_classes: int,
        audio_dim: int = 128,
        visual_dim: int = 512,
        att_hidden: int = 49,
        lstm_hidden: int = 128,
        head_hidden: int = 64,
        input_dropout: float = 0.0,
        threshold: float = 0.099,
        dropout: float = 0.1,
        propagate: bool = True,
        avps_weight: float = 100.0,
    ) -> None:
        super().__init__()
        self.encoder = LowLevelEncoder(
            audio_dim=audio_dim,
            visual_dim=visual_dim,
            att_hidden=att_hidden,
            lstm_hidden=lstm_hidden,
            input_dropout=input_dropout,
        )
        d = self.encoder.out_dim
        self.psp = PositiveSamplePropagation(d, threshold=threshold, dropout=dropout, propagate=propagate)
        self.head = nn.Sequential(
            xavier_linear(d, head_hidden, bias=False), nn.ReLU(), xavier_linear(head_hidden, num_classes, bias=False)
        )
        self.background = num_classes - 1
        self.avps_weight = avps_weight

    def features(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """audio [B, T, Da], visual [B, T, N, Dv] -> fused, v', a' [B, T, d]."""
        return self.psp(*self.encoder(audio, visual))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> segment logits [B, T, C]."""
        return self.head(self.features(audio, visual)[0])

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """labels [B, T] (background = num_classes - 1): CE + avps_weight x AVPS."""
        fused, v, a = self.features(audio, visual)
        logits = self.head(fused)  # (B, T, C)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        if self.avps_weight:
            loss = loss + self.avps_weight * pair_similarity_loss(v, a, labels != self.background)
        return loss

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self(audio, visual).argmax(-1)  # (B, T)

    @torch.inference_mode()
    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores:
        """-> the softmax over the E + 1 classes (background last) per segment; no relevance."""
        return SegmentScores(F.softmax(self(audio, visual).double(), dim=-1).cpu().numpy())


class WeakPSP(PSP):
    """wsel/psp: trained on video labels [B, C]; tested per second like PSP."""

    def __init__(self, *, temporal_weighting: bool = True, **kwargs) -> None:
        super().__init__(avps_weight=0.0, **kwargs)
        num_classes = self.head[-1].out_features
        self.temporal = xavier_linear(num_classes, 1, bias=False) if temporal_weighting else None

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> the (temporally weighted) segment scores [B, T, C]."""
        scores = self.head(self.features(audio, visual)[0])  # (B, T, C)
        if self.temporal is None:
            return scores
        return scores * torch.sigmoid(F.relu(self.temporal(scores)))  # (B, T, C) x (B, T, 1)

    def video_scores(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> the video's class distribution [B, C]: the softmax of the mean over time."""
        return F.softmax(self(audio, visual).mean(1), dim=-1)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, video_labels: torch.Tensor) -> torch.Tensor:
        """video_labels [B, C] 0/1 (mil_labels): BCE against them divided by their sum."""
        target = video_labels / video_labels.sum(-1, keepdim=True).clamp(min=1)
        return F.binary_cross_entropy(self.video_scores(audio, visual).clamp(EPS, 1 - EPS), target)


# -- registration ----------------------------------------------------------------------------
def _psp_kwargs(cfg: PSPFields) -> dict:
    return {
        **sel_encoder_kwargs(cfg),
        "threshold": cfg.psp_threshold,
        "dropout": cfg.psp_dropout,
        "propagate": cfg.propagation,
    }


@register_model(PSPConfig)
def _sel_psp(cfg: PSPConfig) -> PSP:
    return PSP(avps_weight=cfg.avps_weight, **_psp_kwargs(cfg))


@register_model(WeakPSPConfig)
def _wsel_psp(cfg: WeakPSPConfig) -> WeakPSP:
    return WeakPSP(temporal_weighting=cfg.temporal_weighting, **_psp_kwargs(cfg))
