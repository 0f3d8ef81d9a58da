"""The model registry: (task, name) -> builder, and the typed config every model is built from
(stored in every checkpoint; a checkpoint is rebuilt from it before its weights load).

    sel/dam     SELDAM  (DAM framework, Sec. 3.4)        sel/av_att  AVAtt (Tian et al.)
    wsel/dam    WeakDAM (video labels, models/weak.py)   wsel/av_att WeakAVAtt (Tian et al.'s weak)
    cml/dam     CMLDAM  (DAM, Sec. 3.3)                  cml/avdln   AVDLN (Tian et al.)

Every SEL model has `loss(audio, visual [B,T,N,Dv], labels [B,T])`, `predict(audio, visual)
-> [B,T]` and `score_segments` (models/inference.py); every CML model has `loss(audio,
visual [B,T,Dv], event_mask [B,T])`, `localize(audio, visual, query_mask, direction) ->
start [B]` and `score_query`; both carry `task`.

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
  * SEL DAM's training recipe (issue #11, README "DAM on hard data"): warmup=0.6 (the first
    60% of the epochs train the low-level encoder alone with AV_att's per-segment head and
    CE), segment_loss=1.0 (that CE stays in the loss), relevance_smoothing=0.2 (BCE targets
    0.2 and 0.8), input_dropout=0.2 (on the input features). Training only: the model and its
    inference are the paper's. The paper's loss alone: warmup=0, segment_loss=0,
    relevance_smoothing=0, input_dropout=0.
  * relevance_fusion: geometric (sqrt(p^A p^V)) for SEL DAM, the one default that changes a
    formula of the paper (eq. 7's mean: relevance_fusion="mean"); mean for wsel DAM.
  * Fields whose default depends on the model (relevance_fusion, input_dropout: AV_att and
    wsel keep the published 0 / mean) default to None and are resolved when the config is
    made, so a stored config always holds the values in force.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .baselines import AVAtt, AVDLN
from .cml import CMLDAM
from .dam import FUSIONS, MATCHINGS
from .embeddings import DEFAULT_EMBEDDING, SEQUENCE_EMBEDDINGS
from .sel import SEL_MATCHINGS, SELDAM
from .weak import WEAK_RELEVANCE, WeakAVAtt, WeakDAM
from ..core.config import check_choice, check_range, check_types, from_mapping, option
from ..core.errors import ConfigError
from ..core.registry import Registry

TASKS = ("sel", "cml", "wsel")
SEL_TASKS = ("sel", "wsel")  # tasks whose models are SEL models at test time
PER_SECOND_RECIPE = ("warmup", "segment_loss", "relevance_smoothing")  # SEL DAM options that read per-second labels
# fields whose default depends on the model: SEL DAM's recipe (README "DAM on hard data"), and
# the published form (eq. 7, no input dropout) for the others and for a stored config written
# before these fields existed
SEL_DAM_DEFAULTS = {"relevance_fusion": "geometric", "input_dropout": 0.2}
PUBLISHED_DEFAULTS = {"relevance_fusion": "mean", "input_dropout": 0.0}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model's architecture and loss. Stored in every checkpoint;
    a checkpoint is rebuilt from it. The CLI's `avel train` options are its fields."""

    task: str = option("sel | cml | wsel", cli=False, default="sel")
    name: str = option("sel, wsel: dam | av_att;  cml: dam | avdln", flag="--model", default="dam",
                       choices=lambda: list(dict.fromkeys(k.split("/", 1)[1] for k in MODELS.names())))
    num_classes: int = option("event categories + background (from the data)", cli=False, default=29)
    audio_dim: int = option("audio feature width (from the data)", cli=False, default=128)
    visual_dim: int = option("visual feature width (from the data)", cli=False, default=512)
    embedding: str = option("DAM sequence embedding (Table 3)", choices=SEQUENCE_EMBEDDINGS.names,
                            default=DEFAULT_EMBEDDING)
    matching: str = option("cross (DAM) | self (ablation, Tables 4-5) | none (SEL without DAM, Table 5)",
                           choices=SEL_MATCHINGS, default="cross")
    lam: float = option("SEL: weight of the category CE in the loss (eq. 8)", flag="--lambda", default=0.5)
    dim: int = option("CML DAM: common width d of both modalities", default=128)
    proj_hidden: int = option("CML DAM and AVDLN: hidden width of the low-level MLPs (DAM: 0 = one Linear)", default=128)
    avdln_dim: int = option("AVDLN: embedding width", default=64)
    margin: float = option("AVDLN: contrastive margin", default=2.0)
    att_hidden: int = option("SEL: audio-guided attention hidden width (Tian et al.: 49)", default=49)
    lstm_hidden: int = option("SEL: Bi-LSTM width per direction (Tian et al.: 128)", default=128)
    head_hidden: int = option("SEL: classifier hidden width (Tian et al.: 64)", default=64)
    heads: int = option("self-attention heads (must divide the width)", default=4)
    ffn_mult: int = option("self-attention FFN width / d", default=4)
    dropout: float = option("self-attention dropout", default=0.1)
    scaled_matching: bool = option("DAM score sigma(g.f/sqrt(d)) (scaled) or the literal sigma(g.f) (unscaled)",
                                   flag="--scaled-matching/--unscaled-matching", default=True)
    relevance_fusion: str | None = option("SEL and wsel DAM: p_t from p^A and p^V: mean (eq. 7, the paper) | geometric "
                                          "(sqrt(p^A p^V): low when either modality is; README 'DAM on hard data'); "
                                          "default: geometric for SEL DAM, mean for wsel DAM",
                                          choices=FUSIONS, default=None)
    input_dropout: float | None = option("SEL (DAM and AV_att): dropout on the input features; default: 0.2 for SEL DAM (its "
                                         "recipe), 0 for AV_att (as published) and wsel", default=None)
    feature_dropout: float = option("SEL DAM: dropout on the local features and the fused global features", default=0.0)
    relevance_smoothing: float = option("SEL DAM (not wsel): label smoothing of the relevance targets (0 -> eps, 1 -> 1 - eps; "
                                        "0 = the paper's eq. 8)", default=0.2)
    warmup: float = option("SEL DAM (not wsel): fraction of the training epochs (rounded down) that first train the low-level "
                           "encoder alone with AV_att's per-segment head and loss, before DAM's loss (0 = none, the "
                           "paper)", default=0.6)
    segment_loss: float = option("SEL DAM (not wsel): weight of AV_att's per-segment CE (on the low-level features) added to "
                                 "DAM's loss (0 = none, the paper)", default=1.0)
    weak_relevance: str = option("wsel DAM: the relevance targets (models/weak.py): agreement (the minimum of the "
                                 "audio's and the visual's per-second class scores) | fused (their maximum, ablation) | "
                                 "none (no relevance)",
                                 choices=WEAK_RELEVANCE, default="agreement")

    def __post_init__(self) -> None:
        check_types(self)
        for name, value in self.recipe_defaults().items():  # None: the default of this task and model
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.task == "wsel":  # SEL DAM's recipe steps need per-second labels, which wsel never sees
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in PER_SECOND_RECIPE:
                if getattr(self, name) not in (0.0, defaults[name]):
                    raise ConfigError(name, getattr(self, name), "needs per-second labels (task sel); wsel has none")
                object.__setattr__(self, name, 0.0)
        check_choice("task", self.task, TASKS)
        check_choice("name", self.name, model_names(self.task))
        check_choice("embedding", self.embedding, SEQUENCE_EMBEDDINGS.names())
        check_choice("matching", self.matching, SEL_MATCHINGS if self.task in SEL_TASKS else MATCHINGS)
        check_choice("weak_relevance", self.weak_relevance, WEAK_RELEVANCE)
        check_choice("relevance_fusion", self.relevance_fusion, FUSIONS)
        check_range("lam", self.lam, 0.0, 1.0)
        for name in ("num_classes",):
            check_range(name, getattr(self, name), 2)
        for name in ("audio_dim", "visual_dim", "dim", "avdln_dim", "att_hidden", "lstm_hidden", "head_hidden", "heads",
                     "ffn_mult"):
            check_range(name, getattr(self, name), 1)
        check_range("proj_hidden", self.proj_hidden, 1 if self.name == "avdln" else 0)
        check_range("margin", self.margin, 0.0, lo_open=True)
        check_range("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_range("feature_dropout", self.feature_dropout, 0.0, 1.0, hi_open=True)
        check_range("input_dropout", self.input_dropout, 0.0, 1.0, hi_open=True)
        check_range("relevance_smoothing", self.relevance_smoothing, 0.0, 0.5, hi_open=True)
        check_range("warmup", self.warmup, 0.0, 1.0, hi_open=True)
        check_range("segment_loss", self.segment_loss, 0.0)
        width = self.matching_width
        if self.embedding == "self-att" and width % self.heads:
            raise ConfigError("heads", self.heads, f"must divide the self-attention width {width}")
        if self.embedding == "bilstm" and width % 2:
            raise ConfigError("dim", width, "a bidirectional embedding needs an even width")

    def recipe_defaults(self) -> dict:
        """The defaults of the fields whose default depends on the task and model (issue #11):
        SEL DAM's recipe, the published form for the others."""
        if self.task == "sel" and self.name == "dam":
            return SEL_DAM_DEFAULTS
        return PUBLISHED_DEFAULTS

    @property
    def matching_width(self) -> int:
        """The width DAM matches at: SEL, the Bi-LSTM outputs (2 x lstm_hidden); CML, dim."""
        return 2 * self.lstm_hidden if self.task in SEL_TASKS else self.dim

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "model_config") -> "ModelConfig":
        if isinstance(d, dict) and "model" in d and "name" not in d:  # written before the field was renamed
            d = {**d, "name": d["model"]}
        if isinstance(d, dict):  # written before these fields existed: the behaviour of then
            d = {**PUBLISHED_DEFAULTS, **d}
        return from_mapping(cls, d, where)


MODELS: Registry = Registry("model")


def register_model(task: str, name: str) -> Callable:
    return MODELS.register(f"{task}/{name}")


def model_names(task: str) -> list[str]:
    """Names registered for a task, e.g. model_names("sel") == ["dam", "av_att"]."""
    return [key.split("/", 1)[1] for key in MODELS.names() if key.startswith(task + "/")]


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS.get(f"{cfg.task}/{cfg.name}")(cfg)


def _sel_dam_kwargs(cfg: ModelConfig) -> dict:
    return {**_av_att_kwargs(cfg), "embedding": cfg.embedding, "matching": cfg.matching, "lam": cfg.lam,
            "heads": cfg.heads, "dropout": cfg.dropout, "ffn_mult": cfg.ffn_mult, "scaled_matching": cfg.scaled_matching,
            "feature_dropout": cfg.feature_dropout, "relevance_smoothing": cfg.relevance_smoothing,
            "warmup": cfg.warmup, "segment_loss": cfg.segment_loss, "relevance_fusion": cfg.relevance_fusion}


def _av_att_kwargs(cfg: ModelConfig) -> dict:
    return {"num_classes": cfg.num_classes, "audio_dim": cfg.audio_dim, "visual_dim": cfg.visual_dim,
            "att_hidden": cfg.att_hidden, "lstm_hidden": cfg.lstm_hidden, "head_hidden": cfg.head_hidden,
            "input_dropout": cfg.input_dropout}


@register_model("sel", "dam")
def _sel_dam(cfg: ModelConfig) -> SELDAM:
    return SELDAM(**_sel_dam_kwargs(cfg))


@register_model("sel", "av_att")
def _sel_av_att(cfg: ModelConfig) -> AVAtt:
    return AVAtt(**_av_att_kwargs(cfg))


@register_model("wsel", "dam")
def _wsel_dam(cfg: ModelConfig) -> WeakDAM:
    return WeakDAM(relevance=cfg.weak_relevance, **_sel_dam_kwargs(cfg))


@register_model("wsel", "av_att")
def _wsel_av_att(cfg: ModelConfig) -> WeakAVAtt:
    return WeakAVAtt(**_av_att_kwargs(cfg))


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
