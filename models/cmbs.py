"""CMBS: cross-modal background suppression (Xia, Zhao, "Cross-Modal Background Suppression for
Audio-Visual Event Localization", CVPR 2022), for SEL and weak SEL on the same features as DAM
and AV_att. Written from the paper and a reading of the authors' code
(github.com/marmot-xy/CMBS, no license); the differences are listed in docs/models.md,
"PSP and CMBS".

    front end (AV_att's, models/baselines.py): audio-guided visual attention over the pool5
        cells, a Bi-LSTM per modality                  -> f^A, f^V [B, T, d]   (d = 256)
    cross-modal relation attention (CMRAN's, which CMBS builds on): per modality a
        self-attention encoder (k^A, k^V), then each modality queries the other's encoding
        (q^A = cross(f^A, k^V), q^V = cross(f^V, k^A)); Transformer layers, post-norm.
    temporal-level background suppression: per second a gate of each modality,
        g^A_t = sigma(w_a . k^A_t + b_a), g^V_t = sigma(w_v . k^V_t + b_v); each modality's
        features are scaled by the OTHER's gate,
            q^V_t <- q^V_t (1 + alpha g^A_t),   q^A_t <- q^A_t (1 + alpha g^V_t)   (alpha = 0.1)
        so a second that one modality marks as background is suppressed in the other; the
        audio-visual gate g^A_t g^V_t is trained to the event mask (BCE).
    event-level background suppression: per second class activations of each modality
        (Linear(d, E)), each the mean of its top k = 4 seconds per class, averaged over the
        two modalities -> s^{av} [B, E]; trained to the video's category (CE) and added to
        the category logits with weight gamma = 0.3: a category only one modality supports
        is suppressed.
    fusion: audio-visual interaction (CMRAN's AVInter): the query v * a attends over the
        concatenated [a; v] seconds (multi-head, residual, LayerNorm), both ways; fused =
        their mean [B, T, d].
    prediction: is-event logit per second (Linear(d, 1)) and the video's category
        (Linear(d, E) of the maximum over time of the fused features, + gamma s^{av});
        a second is background when sigma(is-event) < 0.5, else the category (DAM's rule).
    loss (supervised): BCE(is-event) + CE(category) + BCE(gate) + CE(s^{av}).
    weak (WeakCMBS): per-second (E + 1)-way scores of the fused features (background last),
        scaled by the audio-visual gate (temporal level), pooled by the mean of the top k
        seconds, + gamma s^{av} over the E + 1 classes (event level), a softmax, the
        multi-label soft margin loss against the video labels (as AV_att weak); s^{av} is
        trained the same way. Each second's class is the argmax of its gated scores.
`temporal_suppression=False` / `event_suppression=False` remove the two levels (the paper's
ablations): no gate scaling and no gate loss / no s^{av} and no CAS loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import MAX_SEGMENTS, check_range, option
from ..core.errors import ConfigError
from .baselines import LowLevelEncoder
from .inference import SegmentScores
from .protocols import EpochHook
from .registry import (
    MAX_FFN_WIDTH,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_LOSS_WEIGHT,
    SELConfig,
    register_model,
    sel_encoder_kwargs,
)
from .sel import category_loss, combine_predictions, video_category


# -- configs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CMBSConfig(SELConfig):
    """sel/cmbs (and, through WeakCMBSConfig, wsel/cmbs): the paper's defaults (configs/main.json
    of the authors' code: alpha 0.1, gamma 0.3; 4 heads, 2 encoder layers, top 4 seconds)."""

    task: ClassVar[str] = "sel"
    name: ClassVar[str] = "cmbs"
    temporal_suppression: bool = option(
        "CMBS: temporal-level background suppression (each modality's per-second "
        "gate scales the other's features; the gate is trained to the event mask)",
        flag="--temporal-suppression/--no-temporal-suppression",
        default=True,
    )
    event_suppression: bool = option(
        "CMBS: event-level background suppression (per-modality class activations, "
        "top-k pooled, added to the category logits)",
        flag="--event-suppression/--no-event-suppression",
        default=True,
    )
    suppression_alpha: float = option("CMBS: alpha, the weight of the cross-modal gate on the features", default=0.1)
    suppression_gamma: float = option(
        "CMBS: gamma, the weight of the event-level class activations in the category logits", default=0.3
    )
    topk: int = option(
        "CMBS: seconds averaged per class by the event-level pooling (capped at the window's length)", default=4
    )
    relation_heads: int = option(
        "CMBS: attention heads of the relation and interaction layers (must divide 2 x lstm_hidden)", default=4
    )
    relation_layers: int = option("CMBS: self-attention encoder layers per modality", default=2)
    relation_ffn: int = option("CMBS: feed-forward width of the relation layers", default=1024)
    relation_dropout: float = option("CMBS: dropout of the relation and interaction layers", default=0.1)

    def validate(self) -> None:
        super().validate()
        check_range("suppression_alpha", self.suppression_alpha, 0.0, MAX_LOSS_WEIGHT)
        check_range("suppression_gamma", self.suppression_gamma, 0.0, MAX_LOSS_WEIGHT)
        check_range("topk", self.topk, 1, MAX_SEGMENTS)
        check_range("relation_heads", self.relation_heads, 1, MAX_HEADS)
        check_range("relation_layers", self.relation_layers, 1, MAX_LAYERS)
        check_range("relation_ffn", self.relation_ffn, 1, MAX_FFN_WIDTH)
        check_range("relation_dropout", self.relation_dropout, 0.0, 1.0, hi_open=True)
        if self.head_hidden != SELConfig.head_hidden:
            raise ConfigError("head_hidden", self.head_hidden, f"does not apply to {self.key} (its heads are linear)")
        if self.matching_width % self.relation_heads:
            raise ConfigError(
                "relation_heads",
                self.relation_heads,
                f"must divide the feature width 2 x lstm_hidden = {self.matching_width}",
            )


@dataclass(frozen=True)
class WeakCMBSConfig(CMBSConfig):
    """wsel/cmbs: CMBS trained on video labels."""

    task: ClassVar[str] = "wsel"
    name: ClassVar[str] = "cmbs"


# -- the maths -------------------------------------------------------------------------------
def topk_mean(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [B, T, K] -> the mean of each column's k largest entries over time [B, K]
    (k capped at T)."""
    return scores.topk(min(k, scores.shape[1]), dim=1).values.mean(1)


def cross_gate(
    q_a: torch.Tensor, q_v: torch.Tensor, g_a: torch.Tensor, g_v: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal-level suppression: q^A, q^V [B, T, d], gates g^A, g^V [B, T] ->
    q^A (1 + alpha g^V), q^V (1 + alpha g^A)."""
    return q_a * (1 + alpha * g_v.unsqueeze(-1)), q_v * (1 + alpha * g_a.unsqueeze(-1))


class Interaction(nn.Module):
    """CMRAN's audio-visual interaction: the query x * y [B, T, d] attends over [y; x] [B, 2T, d]
    (multi-head), residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        query = x * y
        memory = torch.cat([y, x], dim=1)  # (B, 2T, d)
        return self.norm(query + self.dropout(self.attention(query, memory, memory, need_weights=False)[0]))


@dataclass
class CMBSOutput:
    fused: torch.Tensor  # [B, T, d]
    audio_gate: torch.Tensor  # g^A [B, T]
    visual_gate: torch.Tensor  # g^V [B, T]
    audio_cas: torch.Tensor  # [B, T, K] per-second class activations (K = E sel, E + 1 wsel)
    visual_cas: torch.Tensor  # [B, T, K]

    @property
    def gate(self) -> torch.Tensor:
        """The audio-visual gate g^A g^V [B, T]."""
        return self.audio_gate * self.visual_gate


class CMBS(EpochHook, nn.Module):
    """sel/cmbs (see the module docstring)."""

    task = "sel"

    def __init__(
        self,
        *,
        num_classes: int,
        audio_dim: int = 128,
        visual_dim: int = 512,
        att_hidden: int = 49,
        lstm_hidden: int = 128,
        input_dropout: float = 0.0,
        temporal_suppression: bool = True,
        event_suppression: bool = True,
        alpha: float = 0.1,
        gamma: float = 0.3,
        topk: int = 4,
        heads: int = 4,
        layers: int = 2,
        ffn: int = 1024,
        dropout: float = 0.1,
        cas_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.num_events = num_classes - 1
        self.background = self.num_events
        self.temporal_suppression, self.event_suppression = temporal_suppression, event_suppression
        self.alpha, self.gamma, self.topk = alpha, gamma, topk
        self.encoder = LowLevelEncoder(
            audio_dim=audio_dim,
            visual_dim=visual_dim,
            att_hidden=att_hidden,
            lstm_hidden=lstm_hidden,
            input_dropout=input_dropout,
        )
        d = self.encoder.out_dim

        def encoder() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout, batch_first=True)
            return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def decoder() -> nn.TransformerDecoderLayer:
            return nn.TransformerDecoderLayer(d, heads, ffn, dropout, batch_first=True)

        self.audio_self, self.visual_self = encoder(), encoder()
        self.audio_cross, self.visual_cross = decoder(), decoder()
        self.audio_gate, self.visual_gate = nn.Linear(d, 1), nn.Linear(d, 1)
        k = self.num_events if cas_classes is None else cas_classes
        self.audio_cas, self.visual_cas = nn.Linear(d, k), nn.Linear(d, k)
        self.av_inter, self.va_inter = Interaction(d, heads, dropout), Interaction(d, heads, dropout)
        self.is_event = nn.Linear(d, 1)
        self.category = nn.Linear(d, self.num_events)

    def backbone(self, audio: torch.Tensor, visual: torch.Tensor) -> CMBSOutput:
        """audio [B, T, Da], visual [B, T, N, Dv] -> the fused features, the gates and the CAS."""
        f_a, f_v = self.encoder(audio, visual)  # (B, T, d) each
        k_a, k_v = self.audio_self(f_a), self.visual_self(f_v)
        q_a, q_v = self.audio_cross(f_a, k_v), self.visual_cross(f_v, k_a)
        g_a = torch.sigmoid(self.audio_gate(k_a)).squeeze(-1)  # (B, T)
        g_v = torch.sigmoid(self.visual_gate(k_v)).squeeze(-1)
        if self.temporal_suppression:
            q_a, q_v = cross_gate(q_a, q_v, g_a, g_v, self.alpha)
        cas_a, cas_v = self.audio_cas(q_a), self.visual_cas(q_v)  # (B, T, K)
        v = self.av_inter(q_v, q_a)
        a = self.va_inter(q_a, v)
        return CMBSOutput((v + a) / 2, g_a, g_v, cas_a, cas_v)

    def event_scores(self, out: CMBSOutput) -> torch.Tensor:
        """s^{av} [B, K]: the top-k means of the two modalities' class activations, averaged."""
        return (topk_mean(out.audio_cas, self.topk) + topk_mean(out.visual_cas, self.topk)) / 2

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, CMBSOutput]:
        """-> is-event logits [B, T], category logits [B, E], the backbone's output."""
        out = self.backbone(audio, visual)
        logits = self.category(out.fused.amax(1))  # (B, E)
        if self.event_suppression:
            logits = logits + self.gamma * self.event_scores(out)
        return self.is_event(out.fused).squeeze(-1), logits, out

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """labels [B, T] (background = num_classes - 1)."""
        is_event, logits, out = self(audio, visual)
        mask = (labels != self.background).to(is_event.dtype)  # (B, T)
        category = video_category(labels, self.background)  # (B,) -1: no event
        loss = F.binary_cross_entropy_with_logits(is_event, mask) + category_loss(logits, category)
        if self.temporal_suppression:
            loss = loss + F.binary_cross_entropy(out.gate.clamp(1e-6, 1 - 1e-6), mask)
        if self.event_suppression:
            loss = loss + category_loss(self.event_scores(out), category)
        return loss

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> class per segment [B, T]: the category where sigma(is-event) >= 0.5, else background."""
        is_event, logits, _ = self(audio, visual)
        return combine_predictions(logits.argmax(-1), torch.sigmoid(is_event), self.background)

    @torch.inference_mode()
    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores:
        """-> the video-level category distribution (E) on every segment, the relevance
        sigma(is-event), and the audio and visual gates g^A, g^V as the per-modality relevances
        (None when the temporal level is off: the gates are then untrained)."""
        is_event, logits, out = self(audio, visual)
        B, W = audio.shape[:2]
        probs = F.softmax(logits.double(), dim=-1).unsqueeze(1).expand(B, W, -1)  # (B, W, E)
        relevance = torch.sigmoid(is_event).double().cpu().numpy()
        if not self.temporal_suppression:
            return SegmentScores(probs.cpu().numpy(), relevance)
        return SegmentScores(
            probs.cpu().numpy(),
            relevance,
            out.audio_gate.double().cpu().numpy(),
            out.visual_gate.double().cpu().numpy(),
        )


class WeakCMBS(CMBS):
    """wsel/cmbs: trained on video labels [B, C]; each second's class the argmax of its gated
    (E + 1)-way scores (background last), as AV_att weak."""

    def __init__(self, *, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, cas_classes=num_classes, **kwargs)
        d = self.category.in_features
        self.is_event = None  # the weak model has no per-second event target
        self.category = nn.Linear(d, num_classes)  # per-second scores, background included

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, CMBSOutput]:
        """-> the gated per-second scores [B, T, C], the backbone's output."""
        out = self.backbone(audio, visual)
        scores = self.category(out.fused)  # (B, T, C)
        if self.temporal_suppression:
            scores = scores * out.gate.unsqueeze(-1)
        return scores, out

    def video_logits(self, scores: torch.Tensor, out: CMBSOutput) -> torch.Tensor:
        """-> the video's class logits [B, C]: top-k mean over time (+ gamma s^{av})."""
        logits = topk_mean(scores, self.topk)
        return logits + self.gamma * self.event_scores(out) if self.event_suppression else logits

    def video_scores(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> the video's class distribution [B, C]."""
        return F.softmax(self.video_logits(*self(audio, visual)), dim=-1)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, video_labels: torch.Tensor) -> torch.Tensor:
        """video_labels [B, C] 0/1 (mil_labels)."""
        scores, out = self(audio, visual)
        loss = F.multilabel_soft_margin_loss(F.softmax(self.video_logits(scores, out), dim=-1), video_labels)
        if self.event_suppression:
            loss = loss + F.multilabel_soft_margin_loss(F.softmax(self.event_scores(out), dim=-1), video_labels)
        return loss

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self(audio, visual)[0].argmax(-1)  # (B, T)

    @torch.inference_mode()
    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores:
        """-> the softmax of the gated scores over the E + 1 classes per segment; no relevance."""
        return SegmentScores(F.softmax(self(audio, visual)[0].double(), dim=-1).cpu().numpy())


# -- registration ----------------------------------------------------------------------------
def _cmbs_kwargs(cfg: CMBSConfig) -> dict:
    encoder = {k: v for k, v in sel_encoder_kwargs(cfg).items() if k != "head_hidden"}  # CMBS's heads are linear
    return {
        **encoder,
        "temporal_suppression": cfg.temporal_suppression,
        "event_suppression": cfg.event_suppression,
        "alpha": cfg.suppression_alpha,
        "gamma": cfg.suppression_gamma,
        "topk": cfg.topk,
        "heads": cfg.relation_heads,
        "layers": cfg.relation_layers,
        "ffn": cfg.relation_ffn,
        "dropout": cfg.relation_dropout,
    }


@register_model(CMBSConfig)
def _sel_cmbs(cfg: CMBSConfig) -> CMBS:
    return CMBS(**_cmbs_kwargs(cfg))


@register_model(WeakCMBSConfig)
def _wsel_cmbs(cfg: WeakCMBSConfig) -> WeakCMBS:
    return WeakCMBS(**_cmbs_kwargs(cfg))
