"""The model registry: (task, name) -> builder, and the typed config every model is built from
(stored in every checkpoint; a checkpoint is rebuilt from it before its weights load).

    sel/dam     SELDAM  (DAM framework, Sec. 3.4)        sel/av_att  AVAtt (Tian et al.)
    cml/dam     CMLDAM  (DAM, Sec. 3.3)                  cml/avdln   AVDLN (Tian et al.)

Every SEL model has `loss(audio, visual [B,T,N,Dv], labels [B,T])` and `predict(audio, visual)
-> [B,T]`; every CML model has `loss(audio, visual [B,T,Dv], event_mask [B,T])` and
`localize(audio, visual, query_mask, direction) -> start [B]`; both carry `task`.

Hyperparameters the papers do not publish (DAM has no public code) are ModelConfig fields.
Their defaults and the reasons:
  * dim=128, proj_hidden=128 (CML DAM): each modality goes through AVDLN's low-level MLP
    (in -> 128 -> LeakyReLU(0.3) -> d), the "same low-level structure" the paper keeps; d=128
    is the audio feature width, so the audio side is not compressed.
  * lstm_hidden=128, att_hidden=49, head_hidden=64: Tian et al.'s AV_att widths; SEL DAM
    matches at the Bi-LSTM width 2 x 128 = 256 (no extra projection) and its category head
    reuses AV_att's 512 -> 64 -> classes.
  * heads=4, ffn_mult=4, dropout=0.1 (self-attention): one Transformer encoder layer in
    Vaswani's default form (post-norm, FFN 4x, P_drop 0.1); 4 heads keep a head width of
    32 (CML) / 64 (SEL, Vaswani's own head width).
  * avdln_dim=64, margin=2.0: AVDLN as published.
  * lam=0.5: the paper's best (Fig. 5).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from models.baselines import AVAtt, AVDLN
from models.cml import CMLDAM
from models.dam import MATCHINGS
from models.embeddings import DEFAULT_EMBEDDING, SEQUENCE_EMBEDDINGS
from models.sel import SEL_MATCHINGS, SELDAM
from pipeline.registry import Registry

TASKS = ("sel", "cml")


@dataclass(frozen=True)
class ModelConfig:
    task: str = "sel"  # sel | cml
    model: str = "dam"  # sel: dam | av_att;  cml: dam | avdln
    num_classes: int = 29  # event categories + background (SEL; AVE: 28 + 1)
    audio_dim: int = 128  # feature widths, taken from the data
    visual_dim: int = 512
    embedding: str = DEFAULT_EMBEDDING  # sequence embedding of DAM (Table 3)
    matching: str = "cross"  # cross | self (Tables 4-5) | none (SEL only: "w/o matching")
    lam: float = 0.5  # SEL loss weight of the CE term (eq. 8)
    dim: int = 128  # CML DAM common width d
    proj_hidden: int = 128  # CML DAM and AVDLN hidden width of the low-level MLPs
    avdln_dim: int = 64  # AVDLN embedding width
    margin: float = 2.0  # AVDLN contrastive margin
    att_hidden: int = 49  # audio-guided attention hidden width (Tian et al.)
    lstm_hidden: int = 128  # Bi-LSTM width per direction (Tian et al.)
    head_hidden: int = 64  # SEL classifier hidden width (Tian et al.)
    heads: int = 4  # self-attention heads
    ffn_mult: int = 4  # self-attention FFN width / d
    dropout: float = 0.1  # self-attention dropout
    scaled_matching: bool = True  # DAM: sigma(g . f / sqrt(d)) instead of sigma(g . f) (see models/dam.py)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        if self.embedding not in SEQUENCE_EMBEDDINGS:
            raise ValueError(f"unknown embedding {self.embedding!r}; choose one of: {', '.join(SEQUENCE_EMBEDDINGS.names())}")
        allowed = SEL_MATCHINGS if self.task == "sel" else MATCHINGS
        if self.matching not in allowed:
            raise ValueError(f"matching {self.matching!r} is not available for {self.task}; choose one of: {', '.join(allowed)}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


MODELS: Registry = Registry("model")


def register_model(task: str, name: str) -> Callable:
    return MODELS.register(f"{task}/{name}")


def model_names(task: str) -> list[str]:
    """Names registered for a task, e.g. model_names("sel") == ["dam", "av_att"]."""
    return [key.split("/", 1)[1] for key in MODELS.names() if key.startswith(task + "/")]


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS.get(f"{cfg.task}/{cfg.model}")(cfg)


@register_model("sel", "dam")
def _sel_dam(cfg: ModelConfig) -> SELDAM:
    return SELDAM(
        num_classes=cfg.num_classes, audio_dim=cfg.audio_dim, visual_dim=cfg.visual_dim, att_hidden=cfg.att_hidden,
        lstm_hidden=cfg.lstm_hidden, head_hidden=cfg.head_hidden, embedding=cfg.embedding, matching=cfg.matching,
        lam=cfg.lam, heads=cfg.heads, dropout=cfg.dropout, ffn_mult=cfg.ffn_mult, scaled_matching=cfg.scaled_matching,
    )


@register_model("sel", "av_att")
def _sel_av_att(cfg: ModelConfig) -> AVAtt:
    return AVAtt(
        num_classes=cfg.num_classes, audio_dim=cfg.audio_dim, visual_dim=cfg.visual_dim, att_hidden=cfg.att_hidden,
        lstm_hidden=cfg.lstm_hidden, head_hidden=cfg.head_hidden,
    )


@register_model("cml", "dam")
def _cml_dam(cfg: ModelConfig) -> CMLDAM:
    return CMLDAM(
        audio_dim=cfg.audio_dim, visual_dim=cfg.visual_dim, dim=cfg.dim, proj_hidden=cfg.proj_hidden,
        embedding=cfg.embedding, matching=cfg.matching, heads=cfg.heads, dropout=cfg.dropout, ffn_mult=cfg.ffn_mult,
        scaled_matching=cfg.scaled_matching,
    )


@register_model("cml", "avdln")
def _cml_avdln(cfg: ModelConfig) -> AVDLN:
    return AVDLN(audio_dim=cfg.audio_dim, visual_dim=cfg.visual_dim, hidden=cfg.proj_hidden, dim=cfg.avdln_dim, margin=cfg.margin)
