"""The DAM framework for supervised event localization (DAM paper, Sec. 3.4, Fig. 3).

    low level (Tian et al.): audio-guided visual attention over the pool5 cells, then a
        Bi-LSTM per modality (128 per direction)      -> f^A, f^V [B, T, 256]
    global features: the sequence embedding (self-attention by default) over ALL segments
        of each modality (the event region is unknown at test time) -> g_A, g_V [B, 256]
    event category: concat(g_A, g_V) [B, 512] -> AV_att's head (ReLU -> Linear -> 64 -> ReLU
        -> Linear) -> E logits (E = num_classes - 1 event categories, 28 for AVE; background
        is not a category here). The same module as AV_att's head, with the reference's ReLU
        on the fused input, so the two SEL models differ only in what DAM adds.
    event relevance: DAM on (f^A, f^V, g_A, g_V): p_t = (sigma(g_V.f_t^A) + sigma(g_A.f_t^V))/2
        (cross matching) or the self-matching form (Table 5); `relevance_fusion="geometric"`
        (the default of ModelConfig for SEL DAM; this class defaults to eq. 7) takes sqrt of
        the product instead of the mean (models/dam.py).
    prediction of segment t: background if p_t < 0.5, else the video's predicted category.
    loss: lam * CE(category) + (1 - lam) * mean_t BCE(p_t, y_t), lam = 0.5 (eq. 8).

The category target of a video is its (only) event category; with several, the most
frequent one. An all-background video has no category: it contributes to the BCE term only.

"Without matching" (Table 5, and lam = 1 in Fig. 5, "without the DAM module"): with
matching="none" or lam=1 the relevance is not trained, so it is not used either: every
segment gets the predicted category and the model cannot output background, which is why
the paper's "w/o matching" row is lower (70.7). With lam=1 the loss is the CE alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import FusionHead, LowLevelEncoder
from .dam import DAM, DAMOutput, relevance_loss
from .embeddings import DEFAULT_EMBEDDING
from .inference import SegmentScores
from .protocols import EpochHook

SEL_MATCHINGS = ("cross", "self", "none")


def combine_predictions(
    category: torch.Tensor, relevance: torch.Tensor | None, background: int, T: int | None = None
) -> torch.Tensor:
    """category [B] (event class per video), relevance [B, T] or None -> class per segment
    [B, T]: background where relevance < 0.5, the category where relevance >= 0.5 (every
    segment when relevance is None; then T must be given)."""
    if relevance is None:
        if T is None:
            raise ValueError("without relevance the number of segments T must be given")
        return category.unsqueeze(1).expand(-1, T).clone()
    pred = category.unsqueeze(1).expand_as(relevance)  # (B, T)
    return torch.where(relevance < 0.5, torch.full_like(pred, background), pred)


def video_category(labels: torch.Tensor, background: int) -> torch.Tensor:
    """labels [B, T] (background = `background`) -> the most frequent event class of each video
    [B] (ties -> the smaller index), -1 for a video without event segments."""
    counts = F.one_hot(labels, num_classes=background + 1)[..., :background].sum(1)  # (B, E)
    return torch.where(counts.sum(1) > 0, counts.argmax(1), -1)


def selected_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CE of the selected rows, logits [N, E] against target [N]; an empty selection
    (an all-background batch) gives 0 with a gradient, not NaN (a mean over nothing)."""
    return F.cross_entropy(logits, target) if len(target) else logits.sum() * 0


def category_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CE of the category logits [B, E] against the video category [B] (-1: a video without
    event, left out; 0 when no video of the batch has one)."""
    has = target >= 0
    return selected_cross_entropy(logits[has], target[has])


@dataclass
class SELOutput:
    category_logits: torch.Tensor  # [B, E]
    relevance: torch.Tensor | None  # [B, T] p_t, None when matching is off
    dam: DAMOutput


class SELDAM(EpochHook, nn.Module):
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
        embedding: str = DEFAULT_EMBEDDING,
        matching: str = "cross",
        lam: float = 0.5,
        heads: int = 4,
        dropout: float = 0.1,
        ffn_mult: int = 4,
        scaled_matching: bool = True,
        feature_dropout: float = 0.0,
        relevance_smoothing: float = 0.0,
        input_dropout: float = 0.0,
        warmup: float = 0.0,
        segment_loss: float = 0.0,
        relevance_fusion: str = "mean",
    ) -> None:
        super().__init__()
        if matching not in SEL_MATCHINGS:
            raise ValueError(f"unknown matching {matching!r}; choose one of: {', '.join(SEL_MATCHINGS)}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        self.num_events = num_classes - 1
        self.background = self.num_events
        self.lam = lam
        self.uses_relevance = matching != "none" and lam < 1.0
        self.encoder = LowLevelEncoder(
            audio_dim=audio_dim,
            visual_dim=visual_dim,
            att_hidden=att_hidden,
            lstm_hidden=lstm_hidden,
            input_dropout=input_dropout,
        )
        d = self.encoder.out_dim
        self.dam = DAM(
            audio_dim=d,
            visual_dim=d,
            dim=d,
            proj_hidden=None,
            embedding=embedding,
            matching="cross" if matching == "none" else matching,
            heads=heads,
            dropout=dropout,
            ffn_mult=ffn_mult,
            scaled=scaled_matching,
            fusion=relevance_fusion,
        )
        self.classifier = FusionHead(2 * d, head_hidden, self.num_events)
        self.feature_dropout = nn.Dropout(feature_dropout)
        self.relevance_smoothing = relevance_smoothing
        # training recipe (issue #11): AV_att's per-segment head on the low-level features, trained
        # alone for the first `warmup` fraction of the epochs and / or added to the loss with
        # weight `segment_loss`; not used at inference (and absent when both are 0)
        self.warmup, self.segment_loss = warmup, segment_loss
        self.segment_head = FusionHead(2 * d, head_hidden, num_classes) if warmup or segment_loss else None
        self.warming_up = False  # set by start_epoch

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before every epoch (1-based, of `epochs`): the warm-up
        is epochs 1..floor(warmup x epochs), never all of them (warmup < 1)."""
        self.warming_up = epoch <= math.floor(self.warmup * epochs + 1e-9)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> SELOutput:
        """audio [B, T, Da], visual [B, T, N, Dv] (N = 7x7 cells) -> category logits and relevance."""
        f_a, f_v = self.encoder(audio, visual)  # (B, T, d) each
        f_a, f_v = self.feature_dropout(f_a), self.feature_dropout(f_v)
        every = torch.ones(f_a.shape[:2], dtype=torch.bool, device=f_a.device)  # (B, T)
        out = self.dam(f_a, f_v, every)
        fused = self.feature_dropout(torch.cat([out.audio_global, out.visual_global], dim=-1))  # (B, 2d)
        logits = self.classifier(fused)  # (B, E)
        return SELOutput(logits, out.relevance if self.uses_relevance else None, out)

    def segment_ce(self, f_a: torch.Tensor, f_v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """AV_att's loss on the low-level features f^A, f^V [B, T, d], labels [B, T]."""
        logits = self.segment_head(torch.cat([f_a, f_v], dim=-1))  # (B, T, C)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """labels [B, T] class per segment (background = num_classes - 1). During the warm-up
        epochs: AV_att's per-segment CE on the low-level features alone; then eq. 8 (+
        segment_loss x that CE when segment_loss > 0)."""
        if self.warming_up:
            return self.segment_ce(*self.encoder(audio, visual), labels)
        out = self(audio, visual)
        ce = category_loss(out.category_logits, video_category(labels, self.background))
        loss = ce
        if self.uses_relevance:
            target = (labels != self.background).to(out.relevance.dtype)  # (B, T)
            target = target * (1 - self.relevance_smoothing) + (1 - target) * self.relevance_smoothing
            loss = self.lam * ce + (1 - self.lam) * relevance_loss(out.relevance, target)
        if self.segment_loss:
            loss = loss + self.segment_loss * self.segment_ce(out.dam.audio_local, out.dam.visual_local, labels)
        return loss

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """-> class per segment [B, T]."""
        out = self(audio, visual)
        return combine_predictions(out.category_logits.argmax(-1), out.relevance, self.background, T=audio.shape[1])

    @torch.inference_mode()
    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores:
        """audio [B, W, Da], visual [B, W, N, Dv] -> the video-level category distribution
        (softmax over the E event categories) given to every segment of the window, with
        DAM's p_t, p_t^A, p_t^V (None when the model does not use relevance)."""
        out = self(audio, visual)
        B, W = audio.shape[:2]
        probs = F.softmax(out.category_logits.double(), dim=-1).unsqueeze(1).expand(B, W, -1)  # (B, W, E)
        if out.relevance is None:
            return SegmentScores(probs.cpu().numpy())
        return SegmentScores(
            probs.cpu().numpy(),
            out.relevance.double().cpu().numpy(),
            out.dam.audio_relevance.double().cpu().numpy(),
            out.dam.visual_relevance.double().cpu().numpy(),
        )
