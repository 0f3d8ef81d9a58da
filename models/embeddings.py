"""Sequence embeddings: a sequence of segment features and a mask of the segments that take
part -> one global feature (DAM paper eq. 2-3 and the ablation of Table 3).

Every embedding maps
    x    [B, T, D]  segment features
    mask [B, T]     bool, True where a segment takes part (DAM training and CML queries: the
                    event segments; SEL: every segment)
to a global feature [B, D]: the temporal mean, over the masked positions only, of the
embedded sequence (eq. 3). Segments outside the mask never influence the result: poolings
ignore them, self-attention uses them neither as keys nor in the mean, and the recurrent
embeddings run over the masked segments alone (gathered in temporal order and packed), as
the paper's event-relevant sequence S_E = {s_t | t in T_E}. A row with an empty mask gives
a zero vector (e.g. an all-background video during DAM training: sigma(0 . f) = 0.5).

The registry's builders are called as `build(dim=D, heads=H, dropout=P, ffn_mult=M)`;
embeddings without those hyperparameters ignore them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..core.registry import Registry

SEQUENCE_EMBEDDINGS: Registry = Registry("sequence embedding")
DEFAULT_EMBEDDING = "self-att"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, T, D] over the positions where mask [B, T] is True -> [B, D] (zeros for
    an empty mask). Masked-out values are replaced, not multiplied, so inf/nan cannot leak."""
    m = mask.unsqueeze(-1)  # (B, T, 1)
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)  # (B, D)
    count = mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, 1)
    return total / count


class SequenceEmbedding(nn.Module):
    """Interface: forward(x [B, T, D], mask [B, T] bool) -> global feature [B, D]."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@SEQUENCE_EMBEDDINGS.register("avg")
class AveragePooling(SequenceEmbedding):
    """Parameter-free: the mean of the masked segment features."""

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask)


@SEQUENCE_EMBEDDINGS.register("max")
class MaxPooling(SequenceEmbedding):
    """Parameter-free: the element-wise maximum over the masked segment features (max pooling
    replaces the temporal mean here; the mean of an identity embedding would be "avg")."""

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)  # (B, T, 1)
        filled = torch.where(m, x, torch.full((), float("-inf"), dtype=x.dtype, device=x.device))
        out = filled.max(1).values  # (B, D)
        return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


class _Recurrent(SequenceEmbedding):
    """A recurrent network over the masked segments only, then the mean of its outputs.

    The masked segments of each row are gathered to the front in temporal order and the
    batch is packed, so neither direction of a bidirectional network ever sees a segment
    outside the mask. Hidden width: D (D/2 per direction when bidirectional), so the global
    feature has the width of the input."""

    def __init__(self, cell: type[nn.RNNBase], *, dim: int, bidirectional: bool = False) -> None:
        super().__init__()
        if bidirectional and dim % 2:
            raise ValueError(f"a bidirectional embedding needs an even width, got {dim}")
        hidden = dim // 2 if bidirectional else dim
        self.rnn = cell(dim, hidden, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        lengths = mask.sum(1)  # (B,)
        # stable sort puts the masked positions first, each group in temporal order
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (B, T)
        compact = torch.gather(x, 1, order.unsqueeze(-1).expand(B, T, D))  # (B, T, D)
        packed = pack_padded_sequence(compact, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D)
        valid = torch.arange(T, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        return masked_mean(out, valid)  # empty rows: zeros


@SEQUENCE_EMBEDDINGS.register("rnn")
class RNNEmbedding(_Recurrent):
    def __init__(self, *, dim: int, **_: object) -> None:
        super().__init__(nn.RNN, dim=dim)


@SEQUENCE_EMBEDDINGS.register("lstm")
class LSTMEmbedding(_Recurrent):
    def __init__(self, *, dim: int, **_: object) -> None:
        super().__init__(nn.LSTM, dim=dim)


@SEQUENCE_EMBEDDINGS.register("gru")
class GRUEmbedding(_Recurrent):
    def __init__(self, *, dim: int, **_: object) -> None:
        super().__init__(nn.GRU, dim=dim)


@SEQUENCE_EMBEDDINGS.register("bilstm")
class BiLSTMEmbedding(_Recurrent):
    def __init__(self, *, dim: int, **_: object) -> None:
        super().__init__(nn.LSTM, dim=dim, bidirectional=True)


@SEQUENCE_EMBEDDINGS.register("self-att")
class SelfAttentionEmbedding(SequenceEmbedding):
    """Self-attention embedding (eq. 1-3) in "the default structure of Vaswani et al.": one
    post-norm Transformer encoder layer,

        h = LayerNorm(x + Dropout(MultiHead(W_q x, W_k x, W_v x)))   scaled dot product, eq. 1-2
        y = LayerNorm(h + Dropout(FFN(h)))                           FFN: D -> ffn_mult*D -> D, ReLU
        global = mean_t y_t over the masked t                        eq. 3

    Masked-out segments are excluded as keys (key padding mask) and from the mean, so they
    cannot change the global feature. No positional encoding: eq. 1-3 have none, and the
    event region is found by the matching, not by absolute position.
    Defaults (not published; see ModelConfig): heads=4, ffn_mult=4 (Vaswani's ratio),
    dropout=0.1 (Vaswani's P_drop)."""

    def __init__(self, *, dim: int, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 4, **_: object) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"self-attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.ReLU(), nn.Linear(ffn_mult * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Multi-head scaled dot-product self-attention, keys restricted to the mask -> [B, T, D]."""
        B, T, D = x.shape
        H = self.heads
        q = self.w_q(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        k = self.w_k(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        v = self.w_v(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, T, T)
        # a row with an empty mask attends everywhere (its output is dropped by the mean)
        keys = mask | ~mask.any(1, keepdim=True)  # (B, T)
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
        weights = self.dropout(F.softmax(scores, dim=-1))  # (B, H, T, T)
        out = (weights @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.w_o(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x + self.dropout(self.attend(x, mask)))  # (B, T, D)
        y = self.norm2(h + self.dropout(self.ffn(h)))  # (B, T, D)
        return masked_mean(y, mask)  # (B, D)


def build_embedding(
    name: str, *, dim: int, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 4
) -> SequenceEmbedding:
    return SEQUENCE_EMBEDDINGS.get(name)(dim=dim, heads=heads, dropout=dropout, ffn_mult=ffn_mult)
