"""DAM for cross-modality localization (DAM paper, Sec. 3.3).

Inputs: audio [B, T, 128] (VGGish) and the pooled visual feature [B, T, 512] (the mean of
pool5 over its 7x7 cells, AVE's `visual_feature_vec`).

Training: the DAM module with the event mask as the segments that build the global
features, BCE of p_t against the mask (the only annotation CML may use).

Inference (cross matching): A2V takes the global audio feature of the query segments alone,
g_A = phi^A(f^A over the query), scores every visual segment by sigma(g_A . f_t^V), and
returns the l-long window with the maximum contiguous sum; V2A is symmetric.
Self matching (ablation, Table 4) never trains g_A against f^V, so, as the paper says, it
localizes by the cosine distance between the query's global feature and the global feature
of each l-long candidate window of the other modality (built by that modality's embedding
over the window), smallest distance wins.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines import DIRECTIONS
from models.dam import DAM, DAMOutput, match, relevance_loss
from models.embeddings import DEFAULT_EMBEDDING
from pipeline.metrics import max_contiguous_window


class CMLDAM(nn.Module):
    task = "cml"

    def __init__(
        self,
        *,
        audio_dim: int = 128,
        visual_dim: int = 512,
        dim: int = 128,
        proj_hidden: int | None = 128,
        embedding: str = DEFAULT_EMBEDDING,
        matching: str = "cross",
        heads: int = 4,
        dropout: float = 0.1,
        ffn_mult: int = 4,
        scaled_matching: bool = True,
    ) -> None:
        super().__init__()
        self.dam = DAM(
            audio_dim=audio_dim, visual_dim=visual_dim, dim=dim, proj_hidden=proj_hidden,
            embedding=embedding, matching=matching, heads=heads, dropout=dropout, ffn_mult=ffn_mult,
            scaled=scaled_matching,
        )

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor) -> DAMOutput:
        """audio [B, T, Da], visual [B, T, Dv], mask [B, T] bool -> DAM relevance."""
        return self.dam(audio, visual, mask.bool())

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
        return relevance_loss(self(audio, visual, event_mask).relevance, event_mask)

    def query_scores(self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str) -> torch.Tensor:
        """Cross-modal relevance of every target segment to the query: A2V sigma(g_A . f_t^V)
        with g_A from the audio query segments only; V2A sigma(g_V . f_t^A). -> [B, T]."""
        f_a, f_v = self.dam.local_features(audio, visual)  # (B, T, d) each
        if direction == "a2v":
            return self.dam.score(self.dam.audio_embed(f_a, query_mask.bool()), f_v)
        if direction == "v2a":
            return self.dam.score(self.dam.visual_embed(f_v, query_mask.bool()), f_a)
        raise ValueError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)}")

    @torch.no_grad()
    def localize(self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str) -> torch.Tensor:
        """audio [B, T, Da], visual [B, T, Dv], query_mask [B, T] bool (the l query segments of
        the query modality) -> start [B] of the predicted l-long window of the other modality."""
        query_mask = query_mask.bool()
        lengths = query_mask.sum(1).tolist()
        if self.dam.matching == "self":
            return self._localize_by_cosine(audio, visual, query_mask, direction)
        scores = self.query_scores(audio, visual, query_mask, direction)  # (B, T)
        return torch.tensor([max_contiguous_window(scores[b], l) for b, l in enumerate(lengths)], dtype=torch.long)

    def _localize_by_cosine(self, audio, visual, query_mask, direction) -> torch.Tensor:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)}")
        f_a, f_v = self.dam.local_features(audio, visual)  # (B, T, d) each
        if direction == "a2v":
            g_query, target, target_embed = self.dam.audio_embed(f_a, query_mask), f_v, self.dam.visual_embed
        else:
            g_query, target, target_embed = self.dam.visual_embed(f_v, query_mask), f_a, self.dam.audio_embed
        T = target.shape[1]
        starts = []
        for b, l in enumerate(query_mask.sum(1).tolist()):
            S = T - l + 1
            t = torch.arange(T, device=target.device)
            s = torch.arange(S, device=target.device).unsqueeze(1)  # (S, 1)
            windows = (t >= s) & (t < s + l)  # (S, T)
            g_windows = target_embed(target[b].expand(S, -1, -1), windows)  # (S, d)
            distance = 1 - F.cosine_similarity(g_windows, g_query[b].unsqueeze(0), dim=-1)  # (S,)
            starts.append(int(torch.argmin(distance.double())))  # first minimum
        return torch.tensor(starts, dtype=torch.long)
