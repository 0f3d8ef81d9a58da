"""The baselines of Tian et al. (ECCV 2018) that DAM is compared with, and their low-level
structure, which the DAM SEL framework reuses ("we use the same low-level structure").

  * AudioGuidedAttention: audio-guided visual attention over the pool5 cells.
  * LowLevelEncoder: that attention, then one Bi-LSTM per modality (128 per direction).
  * FusionHead: ReLU -> Linear -> ReLU -> Linear, AV_att's prediction head (DAM's category
    head is the same module on the fused global features).
  * AVAtt (SEL): LowLevelEncoder -> concat (512) -> FusionHead (512 -> 64 -> num_classes)
    per segment.
  * AVDLN (CML): two MLPs into a 64-d space, Euclidean distance, contrastive loss.

Checked against Tian et al.'s public code (github.com/YapengTian/AVE-ECCV18, `models.py`,
class `att_Net`): the three attention projections to and from the 49-wide hidden space
(`affine_v`, `affine_g`, `affine_h`) have no bias, the two embeddings (`affine_video`,
`affine_audio`) and the head (`L1`, `L2`) have one; every weight matrix is xavier-uniform
initialised; a ReLU is applied to the concatenated Bi-LSTM outputs before `L1`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inference import (
    QueryScores,
    SegmentScores,
    aligned_window_distances,
    check_direction,
    check_modality,
    min_distance_window,
)
from .protocols import EpochHook


def xavier_linear(in_dim: int, out_dim: int, *, bias: bool = True) -> nn.Linear:
    """nn.Linear with a xavier-uniform weight (Tian et al.'s `init.xavier_uniform`, Keras'
    default glorot_uniform); the bias keeps torch's default initialisation."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class AudioGuidedAttention(nn.Module):
    """Weights the N = 7x7 pool5 cells of each segment by its audio:

    v_h = ReLU(W_v v_n + b_v)  (Dv -> Dv),   a_h = ReLU(W_a a + b_a)  (Da -> Dv)
    z_n = tanh(U_v v_h,n + U_a a_h)    (Dv -> att_hidden each, no bias; Tian's width 49)
    alpha = softmax_n(w . z_n)          (att_hidden -> 1, no bias)
    out = sum_n alpha_n v_n             (the raw cells, Dv wide)"""

    def __init__(self, *, audio_dim: int = 128, visual_dim: int = 512, att_hidden: int = 49) -> None:
        super().__init__()
        self.visual_embed = xavier_linear(visual_dim, visual_dim)
        self.audio_embed = xavier_linear(audio_dim, visual_dim)
        self.visual_att = xavier_linear(visual_dim, att_hidden, bias=False)
        self.audio_att = xavier_linear(visual_dim, att_hidden, bias=False)
        self.score = xavier_linear(att_hidden, 1, bias=False)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B, T, Da], visual [B, T, N, Dv] -> attended visual [B, T, Dv], weights [B, T, N]."""
        v_h = F.relu(self.visual_embed(visual))  # (B, T, N, Dv)
        a_h = F.relu(self.audio_embed(audio))  # (B, T, Dv)
        z = torch.tanh(self.visual_att(v_h) + self.audio_att(a_h).unsqueeze(2))  # (B, T, N, H)
        alpha = F.softmax(self.score(z).squeeze(-1), dim=-1)  # (B, T, N)
        out = (alpha.unsqueeze(-1) * visual).sum(2)  # (B, T, Dv)
        return out, alpha


class LowLevelEncoder(nn.Module):
    """Audio-guided attention, then a Bi-LSTM per modality over all T segments.
    audio [B, T, Da], visual [B, T, N, Dv] -> f^A [B, T, 2h], f^V [B, T, 2h].
    `input_dropout`: dropout on the input features (training only; 0 = none, the reference)."""

    def __init__(
        self,
        *,
        audio_dim: int = 128,
        visual_dim: int = 512,
        att_hidden: int = 49,
        lstm_hidden: int = 128,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout)
        self.attention = AudioGuidedAttention(audio_dim=audio_dim, visual_dim=visual_dim, att_hidden=att_hidden)
        self.audio_lstm = nn.LSTM(audio_dim, lstm_hidden, batch_first=True, bidirectional=True)
        self.visual_lstm = nn.LSTM(visual_dim, lstm_hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * lstm_hidden

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        audio, visual = self.input_dropout(audio), self.input_dropout(visual)
        v_att, _ = self.attention(audio, visual)  # (B, T, Dv)
        f_a, _ = self.audio_lstm(audio)  # (B, T, 2h)
        f_v, _ = self.visual_lstm(v_att)  # (B, T, 2h)
        return f_a, f_v


def low_level_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """AVDLN's branch, in -> hidden -> LeakyReLU(0.3) -> out, initialised as the reference's
    Keras Dense layers (glorot-uniform kernels, zero biases). CML DAM's projections reuse it."""
    layers = nn.Sequential(xavier_linear(in_dim, hidden), nn.LeakyReLU(0.3), xavier_linear(hidden, out_dim))
    for layer in (layers[0], layers[2]):
        nn.init.zeros_(layer.bias)
    return layers


class FusionHead(nn.Sequential):
    """AV_att's prediction head: ReLU -> Linear(in, hidden) -> ReLU -> Linear(hidden, out),
    xavier-initialised. x [..., in] -> logits [..., out]."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(nn.ReLU(), xavier_linear(in_dim, hidden), nn.ReLU(), xavier_linear(hidden, out_dim))


class AVAtt(EpochHook, nn.Module):
    """Tian et al.'s "Audio-visual + Att" for SEL: a num_classes-way (background included)
    prediction per segment from the concatenated Bi-LSTM outputs; CE over every segment.
    (The reference feeds a softmax into MultiLabelSoftMarginLoss; CE on the logits is the
    usual form of the same single-label objective.)"""

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
    ) -> None:
        super().__init__()
        self.encoder = LowLevelEncoder(
            audio_dim=audio_dim,
            visual_dim=visual_dim,
            att_hidden=att_hidden,
            lstm_hidden=lstm_hidden,
            input_dropout=input_dropout,
        )
        self.head = FusionHead(2 * self.encoder.out_dim, head_hidden, num_classes)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """audio [B, T, Da], visual [B, T, N, Dv] -> segment logits [B, T, num_classes]."""
        f_a, f_v = self.encoder(audio, visual)  # (B, T, 2h) each
        return self.head(torch.cat([f_a, f_v], dim=-1))  # (B, T, C)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self(audio, visual)  # (B, T, C)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    @torch.no_grad()
    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self(audio, visual).argmax(-1)  # (B, T)

    @torch.inference_mode()
    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores:
        """audio [B, W, Da], visual [B, W, N, Dv] -> its softmax over the E + 1 classes
        (background last) per segment; no relevance."""
        probs = F.softmax(self(audio, visual).double(), dim=-1)  # (B, W, E+1)
        return SegmentScores(probs.cpu().numpy())


class AVDLN(EpochHook, nn.Module):
    """Tian et al.'s audio-visual distance learning network for CML.

    Training: every synchronized segment pair (f_t^A, f_t^V) is embedded by the two branches
    (visual Dv -> 128 -> LeakyReLU(0.3) -> 64, audio Da -> 128 -> LeakyReLU(0.3) -> 64) and
    compared by Euclidean distance d_t; contrastive loss with margin m = 2.0: event pairs are
    similar, background pairs dissimilar,  y d^2 + (1 - y) max(0, m - d)^2, mean over segments.
    Inference: query segments q_1..q_l of one modality, candidate segments c_1..c_T of the
    other; the l-long window with the smallest sum_i ||q_i - c_{s+i}|| wins."""

    task = "cml"

    def __init__(
        self, *, audio_dim: int = 128, visual_dim: int = 512, hidden: int = 128, dim: int = 64, margin: float = 2.0
    ) -> None:
        super().__init__()
        self.visual_branch = low_level_mlp(visual_dim, hidden, dim)
        self.audio_branch = low_level_mlp(audio_dim, hidden, dim)
        self.margin = margin

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B, T, Da], visual [B, T, Dv] -> embeddings [B, T, dim] each."""
        return self.audio_branch(audio), self.visual_branch(visual)

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
        e_a, e_v = self(audio, visual)  # (B, T, dim) each
        d = (e_a - e_v).pow(2).sum(-1).clamp(min=1e-12).sqrt()  # (B, T)
        y = event_mask.to(d.dtype)
        return (y * d.pow(2) + (1 - y) * F.relu(self.margin - d).pow(2)).mean()

    @torch.no_grad()
    def localize(
        self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str
    ) -> torch.Tensor:
        """audio [B, T, Da], visual [B, T, Dv], query_mask [B, T] bool (the l query segments,
        contiguous) -> start [B] of the predicted l-long window in the other modality.
        Only the query modality's masked segments are used."""
        check_direction(direction)
        e_a, e_v = self(audio, visual)  # (B, T, dim) each
        query, target = (e_a, e_v) if direction == "a2v" else (e_v, e_a)
        starts = []
        for b in range(query.shape[0]):
            q = query[b][query_mask[b]]  # (l, dim)
            distances = (q.unsqueeze(1) - target[b].unsqueeze(0)).norm(dim=-1)  # (l, T)
            starts.append(min_distance_window(distances))
        return torch.tensor(starts, dtype=torch.long)

    @torch.inference_mode()
    def score_query(self, query: torch.Tensor, target: torch.Tensor, query_modality: str) -> QueryScores:
        """query [l, Dq] segments of one modality, target [T, Dt] of the other -> each target
        second's mean Euclidean distance to the l query segments, each l-long window's mean
        position-wise distance; the smallest window wins (Tian et al.)."""
        check_modality(query_modality)
        audio_query = query_modality == "audio"
        q = (self.audio_branch if audio_query else self.visual_branch)(query)  # (l, dim)
        t = (self.visual_branch if audio_query else self.audio_branch)(target)  # (T, dim)
        distances = (q.unsqueeze(1) - t.unsqueeze(0)).norm(dim=-1).double()  # (l, T)
        windows = aligned_window_distances(distances) / distances.shape[0]  # (S,)
        return QueryScores(
            distances.mean(0).cpu().numpy(),
            windows.cpu().numpy(),
            min_distance_window(distances),
            "distance",
            higher_is_better=False,
        )
