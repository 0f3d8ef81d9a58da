"""The Dual Attention Matching module (DAM paper, Sec. 3.2, Fig. 2).

    f_t^A, f_t^V   local features of both modalities at a common width d
    g_A = phi^A(F^A over the mask),  g_V = phi^V(F^V over the mask)      eq. 3-4
    cross matching (default):  p_t^A = sigma(g_V . f_t^A),  p_t^V = sigma(g_A . f_t^V)   eq. 5-6
    self matching (ablation, Tables 4-5):  p_t^A = sigma(g_A . f_t^A),  p_t^V = sigma(g_V . f_t^V)
    p_t = (p_t^A + p_t^V) / 2                                           eq. 7
        (fusion="geometric", an option: p_t = sqrt(p_t^A p_t^V), see below)
    loss: BCE(p_t, y_t) averaged over segments

Common width. The paper matches the global feature of one modality with the local feature
of the other by a plain dot product, so both must have the same width d. Each modality is
mapped to d by its own projection:
  * `proj_hidden=h`: a two-layer MLP  in -> h -> LeakyReLU(0.3) -> d, the low-level embedding
    of AVDLN (Tian et al.; the same module and initialisation, `baselines.low_level_mlp`),
    which the paper says it keeps ("same low-level structure"). CML
    uses this with h=128, d=128 (128 = the audio width, so no audio dimension is lost).
  * no hidden width and in == d: identity. SEL uses this: its local features are the
    Bi-LSTM outputs of the audio-guided attention network, 2 x 128 = 256 wide for both.
  * otherwise: one Linear in -> d.
Scaling. The paper writes sigma(g . f_t). With `scaled=True` (the default) the dot product
is divided by sqrt(d), as the paper's own attention (eq. 1) does: at d = 256 (SEL) the
unscaled products of layer-normed global features and Bi-LSTM outputs are tens at
initialisation when the inputs have pool5's magnitudes, both sigmoids saturate (p^A -> 0,
p^V -> 1, p = 0.5 everywhere) and the relevance never trains (measured on `avel synth`
features: validation SEL accuracy 0.72 unscaled vs 0.83 scaled, relevance flat at 0.5 vs
tracking the event mask). On small-magnitude inputs the unscaled form learns faster (the
scaled one plateaus for ~15 epochs first), so `scaled=False`, the literal formula, stays
available (`--unscaled-matching`). No bias either way.
Fusion. Eq. 7 is the arithmetic mean (`fusion="mean"`, the default: the paper). Where a
background second carries the event in ONE modality (the sound goes on off screen, the
object stays on screen silently: AVE's background, and the generated hard sets'), p_t must
be an AND of the two scores; the mean of a high and a low score sits near 0.5 and BCE
settles them there. `fusion="geometric"` (sqrt(p^A p^V), the mean of the two in log space:
the same modules, outputs and loss, no parameter) is low when either score is low. Measured
in the README ("DAM on hard data"). This module defaults to eq. 7; the SEL DAM config
defaults to geometric (models/registry.py), wsel and CML keep eq. 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import low_level_mlp
from .embeddings import DEFAULT_EMBEDDING, build_embedding

MATCHINGS = ("cross", "self")
FUSIONS = ("mean", "geometric")


def projection(in_dim: int, dim: int, hidden: int | None) -> nn.Module:
    if hidden:
        return low_level_mlp(in_dim, hidden, dim)
    if in_dim == dim:
        return nn.Identity()
    return nn.Linear(in_dim, dim)


def match(global_feature: torch.Tensor, local: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """sigma(g . f_t) (or sigma(g . f_t / sqrt(d)) when scaled): global [B, d], local [B, T, d] -> [B, T] in (0, 1)."""
    logits = (local @ global_feature.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if scaled:
        logits = logits / global_feature.shape[-1] ** 0.5
    return torch.sigmoid(logits)


def fuse(p_a: torch.Tensor, p_v: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """p_t from p_t^A, p_t^V [B, T]: their mean (eq. 7) or their geometric mean."""
    if fusion == "mean":
        return (p_a + p_v) / 2
    return torch.exp((torch.log(p_a.clamp_min(1e-12)) + torch.log(p_v.clamp_min(1e-12))) / 2)


def relevance_loss(relevance: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE of p [B, T] against the 0/1 event mask [B, T]."""
    return F.binary_cross_entropy(relevance, event_mask.to(relevance.dtype))


@dataclass
class DAMOutput:
    relevance: torch.Tensor  # [B, T] p_t (eq. 7)
    audio_relevance: torch.Tensor  # [B, T] p_t^A (eq. 5, or its self-matching form)
    visual_relevance: torch.Tensor  # [B, T] p_t^V (eq. 6, or its self-matching form)
    audio_global: torch.Tensor  # [B, d] g_A
    visual_global: torch.Tensor  # [B, d] g_V
    audio_local: torch.Tensor  # [B, T, d] f^A
    visual_local: torch.Tensor  # [B, T, d] f^V


class DAM(nn.Module):
    def __init__(
        self,
        *,
        audio_dim: int,
        visual_dim: int,
        dim: int,
        proj_hidden: int | None = None,
        embedding: str = DEFAULT_EMBEDDING,
        matching: str = "cross",
        heads: int = 4,
        dropout: float = 0.1,
        ffn_mult: int = 4,
        scaled: bool = True,
        fusion: str = "mean",
    ) -> None:
        super().__init__()
        self.scaled = scaled
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")
        self.fusion = fusion
        if matching not in MATCHINGS:
            raise ValueError(f"unknown matching {matching!r}; choose one of: {', '.join(MATCHINGS)}")
        self.matching = matching
        self.audio_proj = projection(audio_dim, dim, proj_hidden)
        self.visual_proj = projection(visual_dim, dim, proj_hidden)
        # one embedding per modality (phi^A, phi^V), no shared weights
        self.audio_embed = build_embedding(embedding, dim=dim, heads=heads, dropout=dropout, ffn_mult=ffn_mult)
        self.visual_embed = build_embedding(embedding, dim=dim, heads=heads, dropout=dropout, ffn_mult=ffn_mult)

    def score(self, global_feature: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """The matching score of this module: global [B, d], local [B, T, d] -> [B, T]."""
        return match(global_feature, local, self.scaled)

    def local_features(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B, T, Da], visual [B, T, Dv] -> f^A [B, T, d], f^V [B, T, d]."""
        return self.audio_proj(audio), self.visual_proj(visual)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor) -> DAMOutput:
        """audio [B, T, Da], visual [B, T, Dv], mask [B, T] bool (segments that build the
        global features) -> relevance of every segment."""
        f_a, f_v = self.local_features(audio, visual)  # (B, T, d) each
        g_a = self.audio_embed(f_a, mask)  # (B, d)
        g_v = self.visual_embed(f_v, mask)  # (B, d)
        if self.matching == "cross":
            p_a, p_v = self.score(g_v, f_a), self.score(g_a, f_v)  # (B, T) each
        else:
            p_a, p_v = self.score(g_a, f_a), self.score(g_v, f_v)
        return DAMOutput(fuse(p_a, p_v, self.fusion), p_a, p_v, g_a, g_v, f_a, f_v)
