"""DAM for cross-modality localization (DAM paper, Sec. 3.3).

Inputs: audio [B, T, 128] (VGGish) and the pooled visual feature [B, T, 512] (the mean of
pool5 over its 7x7 cells, AVE's `visual_feature_vec`).

Training: the DAM module with the event mask as the segments that build the global
features, BCE of p_t against the mask (the only annotation CML may use).

Inference (cross matching): A2V takes the global audio feature of the query segments alone,
g_A = phi^A(f^A over the query), scores every visual segment by the model's matching score
sigma(g_A . f_t^V) (divided by sqrt(d) inside the sigmoid when `scaled_matching`), and
returns the l-long window with the maximum contiguous sum; V2A is symmetric.
Self matching (ablation, Table 4) never trains g_A against f^V, so, as the paper says, it
localizes by the cosine distance between the query's global feature and the global feature
of each l-long candidate window of the other modality (built by that modality's embedding
over the window), smallest distance wins.

The same rule serves the evaluation protocol (`localize`: query and target are two
modalities of one video, batched) and `avel cml` (`score_query`: a query from one file,
a target of any length from another).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dam import DAM, DAMOutput, relevance_loss
from .embeddings import DEFAULT_EMBEDDING
from .inference import QueryScores, check_direction, check_modality, max_contiguous_window, window_sums
from .protocols import EpochHook

WINDOW_CHUNK = 256  # candidate windows per embedding forward (self matching)


class CMLDAM(EpochHook, nn.Module):
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
            audio_dim=audio_dim,
            visual_dim=visual_dim,
            dim=dim,
            proj_hidden=proj_hidden,
            embedding=embedding,
            matching=matching,
            heads=heads,
            dropout=dropout,
            ffn_mult=ffn_mult,
            scaled=scaled_matching,
        )

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor) -> DAMOutput:
        """audio [B, T, Da], visual [B, T, Dv], mask [B, T] bool -> DAM relevance."""
        return self.dam(audio, visual, mask.bool())

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
        return relevance_loss(self(audio, visual, event_mask).relevance, event_mask)

    # -- inference --------------------------------------------------------------------------
    def _query_global(self, query: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        """The query's global feature: query [B, L, Dq] of `modality`, mask [B, L] -> [B, d]."""
        dam = self.dam
        proj, embed = (dam.audio_proj, dam.audio_embed) if modality == "audio" else (dam.visual_proj, dam.visual_embed)
        return embed(proj(query), mask.bool())

    def _target_local(self, target: torch.Tensor, modality: str) -> torch.Tensor:
        """target [B, T, Dt] of `modality` -> its local features [B, T, d]."""
        return (self.dam.audio_proj if modality == "audio" else self.dam.visual_proj)(target)

    def _window_distances(self, g: torch.Tensor, f_t: torch.Tensor, length: int, modality: str) -> torch.Tensor:
        """Self matching: cosine distance between g [d] and the global feature of every
        `length`-long window of f_t [T, d] (built by `modality`'s embedding) -> [T - length + 1]."""
        embed = self.dam.audio_embed if modality == "audio" else self.dam.visual_embed
        views = f_t.unfold(0, length, 1).permute(0, 2, 1)  # (S, l, d)
        parts = []
        for i in range(0, views.shape[0], WINDOW_CHUNK):
            chunk = views[i : i + WINDOW_CHUNK]
            g_w = embed(chunk, torch.ones(chunk.shape[:2], dtype=torch.bool, device=chunk.device))  # (s, d)
            parts.append(1 - F.cosine_similarity(g_w, g.unsqueeze(0), dim=-1))
        return torch.cat(parts).double()  # (S,)

    @torch.inference_mode()
    def score_query(self, query: torch.Tensor, target: torch.Tensor, query_modality: str) -> QueryScores:
        """query [l, Dq] segments of one modality, target [T, Dt] of the other -> scores.
        Cross matching: sigma(g . f_t) per target second, window score = mean over the
        window, best = maximum contiguous sum. Self matching: cosine distance of each
        window's global feature to the query's, smallest wins; a second's score is the mean
        distance of the windows that cover it."""
        check_modality(query_modality)
        target_modality = "visual" if query_modality == "audio" else "audio"
        l = query.shape[0]
        g = self._query_global(
            query.unsqueeze(0), torch.ones(1, l, dtype=torch.bool, device=query.device), query_modality
        )
        f_t = self._target_local(target.unsqueeze(0), target_modality)  # (1, T, d)
        if self.dam.matching == "cross":
            scores = self.dam.score(g, f_t)[0].double()  # (T,)
            windows = window_sums(scores, l) / l  # (S,)
            return QueryScores(
                scores.cpu().numpy(), windows.cpu().numpy(), max_contiguous_window(scores, l), "relevance", True
            )
        distance = self._window_distances(g[0], f_t[0], l, target_modality)  # (S,)
        ones = torch.ones(1, 1, l, dtype=torch.float64, device=distance.device)
        covering = F.conv1d(distance.view(1, 1, -1), ones, padding=l - 1)[0, 0]  # (T,) sums of covering windows
        count = F.conv1d(torch.ones_like(distance).view(1, 1, -1), ones, padding=l - 1)[0, 0]  # (T,)
        return QueryScores(
            (covering / count).cpu().numpy(),
            distance.cpu().numpy(),
            int(torch.argmin(distance)),
            "cosine-distance",
            False,
        )

    def _query_and_target(self, audio, visual, direction):
        check_direction(direction)
        if direction == "a2v":
            return audio, "audio", visual, "visual"
        return visual, "visual", audio, "audio"

    def query_scores(
        self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str
    ) -> torch.Tensor:
        """Cross matching, batched: the relevance of every target segment to the query, A2V
        sigma(g_A . f_t^V) with g_A from the audio query segments only, V2A sigma(g_V . f_t^A). -> [B, T]."""
        query, q_mod, target, t_mod = self._query_and_target(audio, visual, direction)
        return self.dam.score(self._query_global(query, query_mask, q_mod), self._target_local(target, t_mod))

    @torch.no_grad()
    def localize(
        self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str
    ) -> torch.Tensor:
        """The evaluation protocol, batched: audio [B, T, Da], visual [B, T, Dv], query_mask
        [B, T] bool (the l query segments of the query modality) -> start [B] of the predicted
        l-long window of the other modality (the rule of `score_query`)."""
        query_mask = query_mask.bool()
        lengths = query_mask.sum(1).tolist()
        if self.dam.matching == "cross":
            scores = self.query_scores(audio, visual, query_mask, direction)  # (B, T)
            starts = [max_contiguous_window(scores[b], l) for b, l in enumerate(lengths)]
        else:
            query, q_mod, target, t_mod = self._query_and_target(audio, visual, direction)
            g = self._query_global(query, query_mask, q_mod)  # (B, d)
            f_t = self._target_local(target, t_mod)  # (B, T, d)
            starts = [int(torch.argmin(self._window_distances(g[b], f_t[b], l, t_mod))) for b, l in enumerate(lengths)]
        return torch.tensor(starts, dtype=torch.long)
