"""The model registry: (task, name) -> builder, and the typed config every model is built from
(stored in every checkpoint; a checkpoint is rebuilt from it before its weights load).

    sel/dam     SELDAM  (DAM framework, Sec. 3.4)        sel/av_att  AVAtt (Tian et al.)
    wsel/dam    WeakDAM (video labels, models/weak.py)   wsel/av_att WeakAVAtt (Tian et al.'s weak)
    cml/dam     CMLDAM  (DAM, Sec. 3.3)                  cml/avdln   AVDLN (Tian et al.)
    sel/psp, wsel/psp    PSP, WeakPSP   (models/psp.py)  sel/cmbs, wsel/cmbs  CMBS, WeakCMBS (models/cmbs.py)

A model in its own file (psp.py, cmbs.py) holds its config class (subclassing the bases here)
and registers its builders with `register_model`; its name in models/__init__.py's one import
line is its registration (the import runs its decorators; this file never imports them, so
there is no import cycle, and the package's __init__ runs before any of its modules, so every
model is registered, in one order, whichever module is imported first).

Every SEL model has `loss(audio, visual [B,T,N,Dv], labels [B,T])`, `predict(audio, visual)
-> [B,T]` and `score_segments` (models/inference.py); every CML model has `loss(audio,
visual [B,T,Dv], event_mask [B,T])`, `localize(audio, visual, query_mask, direction) ->
start [B]` and `score_query`; both carry `task`.

Every model has its own frozen config class (SELDAMConfig, AVAttConfig, WeakDAMConfig,
WeakAVAttConfig, CMLDAMConfig, AVDLNConfig; shared fields through small base classes), registered
with its builder, its training recipe and whether it trains on segment pairs (`MODELS`, a
`ModelEntry` per "task/name"). `model_config(task, name, **fields)` builds one and refuses a field
the model does not have (ConfigError "does not apply to sel/dam"); `model_config_from_dict` reads a
stored one. Every config carries `task` and `name`.

Hyperparameters the papers do not publish (DAM has no public code) are config fields.
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
    wsel keep the published 0 / mean; wsel DAM's warmup, segment_loss, relevance_smoothing
    are 0, it has no per-second labels) are each config class's own plain defaults, so a
    stored config always holds the values in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..core.config import check_choice, check_range, check_types, from_mapping, option
from ..core.errors import ConfigError
from ..core.registry import Registry
from .baselines import AVDLN, AVAtt
from .cml import CMLDAM
from .dam import FUSIONS, MATCHINGS
from .embeddings import DEFAULT_EMBEDDING, SEQUENCE_EMBEDDINGS
from .sel import SEL_MATCHINGS, SELDAM
from .weak import WEAK_RELEVANCE, WeakAVAtt, WeakDAM

TASKS = ("sel", "cml", "wsel")
SEL_TASKS = ("sel", "wsel")  # tasks whose models are SEL models at test time
PER_SECOND_RECIPE = ("warmup", "segment_loss", "relevance_smoothing")  # SEL DAM options that read per-second labels
# the published form (eq. 7, no input dropout): the defaults of the models other than SEL DAM, and
# the values of a stored config written before these fields existed (pipeline/train/checkpoint.py)
PUBLISHED_DEFAULTS = {"relevance_fusion": "mean", "input_dropout": 0.0}
# upper bounds of the sizes (a config above them would allocate until the machine runs out of memory):
# hidden widths, feature widths (VGG-19 512, VGGish 128: room for any other backbone), classes, heads, FFN factor
MAX_WIDTH, MAX_FEATURE_DIM, MAX_CLASSES, MAX_HEADS, MAX_FFN_MULT = 8192, 65536, 100_000, 256, 64
MAX_FFN_WIDTH = 65536  # ffn_mult x the matching width (the FFN's hidden layer)
MAX_LOSS_WEIGHT = 10_000.0  # a loss term's weight (PSP's paper: 100): beyond it the others are rounding noise
MAX_LAYERS = 64  # stacked layers of one encoder

# help texts shared by the fields that several classes declare (with their own defaults)
_INPUT_DROPOUT = (
    "SEL (DAM and AV_att): dropout on the input features; default: 0.2 for SEL DAM (its recipe), 0 for "
    "AV_att (as published) and wsel"
)
_FUSION = (
    "SEL and wsel DAM: p_t from p^A and p^V: mean (eq. 7, the paper) | geometric (sqrt(p^A p^V): low when either "
    "modality is; README 'DAM on hard data'); default: geometric for SEL DAM, mean for wsel DAM"
)
_SMOOTHING = (
    "SEL DAM (not wsel): label smoothing of the relevance targets (0 -> eps, 1 -> 1 - eps; 0 = the paper's eq. 8)"
)
_WARMUP = (
    "SEL DAM (not wsel): fraction of the training epochs (rounded down) that first train the low-level encoder "
    "alone with AV_att's per-segment head and loss, before DAM's loss (0 = none, the paper)"
)
_SEGMENT_LOSS = (
    "SEL DAM (not wsel): weight of AV_att's per-segment CE (on the low-level features) added to DAM's loss "
    "(0 = none, the paper)"
)
_PROJ_HIDDEN = "CML DAM and AVDLN: hidden width of the low-level MLPs (DAM: 0 = one Linear)"


# -- configs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """What every model config has: its task and name (class constants, stored with it) and
    the widths of the data. Stored in every checkpoint; a checkpoint is rebuilt from it. The
    CLI's `avel train` options are the fields of all the registered configs."""

    task: ClassVar[str] = ""
    name: ClassVar[str] = ""
    num_classes: int = option("event categories + background (from the data)", cli=False, default=29)
    audio_dim: int = option("audio feature width (from the data)", cli=False, default=128)
    visual_dim: int = option("visual feature width (from the data)", cli=False, default=512)

    def __post_init__(self) -> None:
        if not self.task:
            raise TypeError("ModelConfig is the base class; make a config with model_config(task, name, **fields)")
        check_types(self)
        self.validate()

    def validate(self) -> None:
        """Each class checks its own fields, then calls super().validate()."""
        check_range("num_classes", self.num_classes, 2, MAX_CLASSES)
        for name in ("audio_dim", "visual_dim"):
            check_range(name, getattr(self, name), 1, MAX_FEATURE_DIM)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"

    def to_dict(self) -> dict:
        return {"task": self.task, "name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "model_config") -> ModelConfig:
        """A stored config (pipeline/train/checkpoint.py upgrades older ones first)."""
        return model_config_from_dict(d, where)


@dataclass(frozen=True)
class SELConfig(ModelConfig):
    """AV_att's low-level encoder and head widths, shared by every SEL model (sel and wsel)."""

    att_hidden: int = option("SEL: audio-guided attention hidden width (Tian et al.: 49)", default=49)
    lstm_hidden: int = option("SEL: Bi-LSTM width per direction (Tian et al.: 128)", default=128)
    head_hidden: int = option("SEL: classifier hidden width (Tian et al.: 64)", default=64)
    input_dropout: float = option(_INPUT_DROPOUT, default=0.0)

    def validate(self) -> None:
        super().validate()
        for name in ("att_hidden", "lstm_hidden", "head_hidden"):
            check_range(name, getattr(self, name), 1, MAX_WIDTH)
        check_range("input_dropout", self.input_dropout, 0.0, 1.0, hi_open=True)

    @property
    def matching_width(self) -> int:
        """The width DAM matches at: the Bi-LSTM outputs (2 x lstm_hidden)."""
        return 2 * self.lstm_hidden


@dataclass(frozen=True)
class DAMFields:
    """DAM's sequence embedding and matching (Sec. 3.2), shared by SEL DAM and CML DAM."""

    MATCHINGS: ClassVar[tuple] = MATCHINGS
    embedding: str = option(
        "DAM sequence embedding (Table 3)", choices=SEQUENCE_EMBEDDINGS.names, default=DEFAULT_EMBEDDING
    )
    matching: str = option(
        "cross (DAM) | self (ablation, Tables 4-5) | none (SEL without DAM, Table 5)",
        choices=SEL_MATCHINGS,
        default="cross",
    )
    heads: int = option("self-attention heads (must divide the width)", default=4)
    ffn_mult: int = option("self-attention FFN width / d", default=4)
    dropout: float = option("self-attention dropout", default=0.1)
    scaled_matching: bool = option(
        "DAM score sigma(g.f/sqrt(d)) (scaled) or the literal sigma(g.f) (unscaled)",
        flag="--scaled-matching/--unscaled-matching",
        default=True,
    )

    def validate(self) -> None:
        super().validate()
        check_choice("embedding", self.embedding, SEQUENCE_EMBEDDINGS.names())
        check_choice("matching", self.matching, self.MATCHINGS)
        check_range("heads", self.heads, 1, MAX_HEADS)
        check_range("ffn_mult", self.ffn_mult, 1, MAX_FFN_MULT)
        check_range("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        width = self.matching_width
        if self.embedding == "self-att" and self.ffn_mult * width > MAX_FFN_WIDTH:
            raise ConfigError(
                "ffn_mult", self.ffn_mult, f"x the self-attention width {width} must be <= {MAX_FFN_WIDTH}"
            )
        if self.embedding == "self-att" and width % self.heads:
            raise ConfigError("heads", self.heads, f"must divide the self-attention width {width}")
        if self.embedding == "bilstm" and width % 2:
            raise ConfigError("dim", width, "a bidirectional embedding needs an even width")


@dataclass(frozen=True)
class AVAttConfig(SELConfig):
    """sel/av_att: Tian et al.'s AV_att, as published (no input dropout)."""

    task: ClassVar[str] = "sel"
    name: ClassVar[str] = "av_att"


@dataclass(frozen=True)
class WeakAVAttConfig(SELConfig):
    """wsel/av_att: AV_att trained on video labels (Tian et al.'s weak variant)."""

    task: ClassVar[str] = "wsel"
    name: ClassVar[str] = "av_att"


@dataclass(frozen=True)
class SELDAMConfig(DAMFields, SELConfig):
    """sel/dam: DAM for SEL (Sec. 3.4) with its training recipe (README "DAM on hard data")."""

    task: ClassVar[str] = "sel"
    name: ClassVar[str] = "dam"
    MATCHINGS: ClassVar[tuple] = SEL_MATCHINGS
    lam: float = option("SEL: weight of the category CE in the loss (eq. 8)", flag="--lambda", default=0.5)
    input_dropout: float = option(_INPUT_DROPOUT, default=0.2)
    relevance_fusion: str = option(_FUSION, choices=FUSIONS, default="geometric")
    feature_dropout: float = option("SEL DAM: dropout on the local features and the fused global features", default=0.0)
    relevance_smoothing: float = option(_SMOOTHING, default=0.2)
    warmup: float = option(_WARMUP, default=0.6)
    segment_loss: float = option(_SEGMENT_LOSS, default=1.0)

    def validate(self) -> None:
        super().validate()
        check_range("lam", self.lam, 0.0, 1.0)
        check_choice("relevance_fusion", self.relevance_fusion, FUSIONS)
        check_range("feature_dropout", self.feature_dropout, 0.0, 1.0, hi_open=True)
        check_range("relevance_smoothing", self.relevance_smoothing, 0.0, 0.5, hi_open=True)
        check_range("warmup", self.warmup, 0.0, 1.0, hi_open=True)
        # finite, no upper bound: a weight that overflows the float32 loss stops training in one line naming
        # the epoch (tests/test_nonfinite.py drives the real loop that way)
        check_range("segment_loss", self.segment_loss, 0.0)


@dataclass(frozen=True)
class WeakDAMConfig(SELDAMConfig):
    """wsel/dam: SEL DAM trained on video labels (models/weak.py): the published eq. 7 and no
    input dropout, and none of SEL DAM's recipe steps that read per-second labels."""

    task: ClassVar[str] = "wsel"
    name: ClassVar[str] = "dam"
    input_dropout: float = option(_INPUT_DROPOUT, default=0.0)
    relevance_fusion: str = option(_FUSION, choices=FUSIONS, default="mean")
    relevance_smoothing: float = option(_SMOOTHING, default=0.0)
    warmup: float = option(_WARMUP, default=0.0)
    segment_loss: float = option(_SEGMENT_LOSS, default=0.0)
    weak_relevance: str = option(
        "wsel DAM: the relevance targets (models/weak.py): agreement (the minimum of the "
        "audio's and the visual's per-second class scores) | fused (their maximum, ablation) | "
        "none (no relevance)",
        choices=WEAK_RELEVANCE,
        default="agreement",
    )

    def validate(self) -> None:
        for name in PER_SECOND_RECIPE:  # SEL DAM's recipe steps need per-second labels, which wsel never sees
            if getattr(self, name) != 0.0:
                raise ConfigError(name, getattr(self, name), "needs per-second labels (task sel); wsel has none")
        super().validate()
        check_choice("weak_relevance", self.weak_relevance, WEAK_RELEVANCE)


@dataclass(frozen=True)
class CMLDAMConfig(DAMFields, ModelConfig):
    """cml/dam: DAM for CML (Sec. 3.3)."""

    task: ClassVar[str] = "cml"
    name: ClassVar[str] = "dam"
    dim: int = option("CML DAM: common width d of both modalities", default=128)
    proj_hidden: int = option(_PROJ_HIDDEN, default=128)

    def validate(self) -> None:
        check_range("dim", self.dim, 1, MAX_WIDTH)
        check_range("proj_hidden", self.proj_hidden, 0, MAX_WIDTH)
        super().validate()

    @property
    def matching_width(self) -> int:
        """The width DAM matches at: dim."""
        return self.dim


@dataclass(frozen=True)
class AVDLNConfig(ModelConfig):
    """cml/avdln: Tian et al.'s AVDLN, as published."""

    task: ClassVar[str] = "cml"
    name: ClassVar[str] = "avdln"
    proj_hidden: int = option(_PROJ_HIDDEN, default=128)
    avdln_dim: int = option("AVDLN: embedding width", default=64)
    margin: float = option("AVDLN: contrastive margin", default=2.0)

    def validate(self) -> None:
        super().validate()
        check_range("proj_hidden", self.proj_hidden, 1, MAX_WIDTH)
        check_range("avdln_dim", self.avdln_dim, 1, MAX_WIDTH)
        check_range("margin", self.margin, 0.0, MAX_LOSS_WEIGHT, lo_open=True)


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its config class, its builder, its training recipe ("avel" or
    "tian-avdln", pipeline/train/loop.py) and whether its loss treats every segment alone
    (so it can train on shuffled segment pairs)."""

    config: type
    builder: Callable[[ModelConfig], nn.Module]
    recipe: str = "avel"
    segment_pairs: bool = False

    @property
    def key(self) -> str:
        return f"{self.config.task}/{self.config.name}"


MODELS: Registry = Registry("model")


def register_model(config: type, *, recipe: str = "avel", segment_pairs: bool = False) -> Callable:
    """Register the decorated builder `config -> nn.Module` under "<config.task>/<config.name>"."""

    def decorate(builder: Callable) -> Callable:
        MODELS.register(f"{config.task}/{config.name}")(ModelEntry(config, builder, recipe, segment_pairs))
        return builder

    return decorate


def model_names(task: str) -> list[str]:
    """Names registered for a task, e.g. model_names("sel") == ["dam", "av_att"]."""
    return [key.split("/", 1)[1] for key in MODELS.names() if key.startswith(task + "/")]


def model_entry(task: str, name: str) -> ModelEntry:
    """The registered model `task/name`; ConfigError naming the task or the name otherwise."""
    check_choice("task", task, list(dict.fromkeys(key.split("/", 1)[0] for key in MODELS.names())))
    check_choice("name", name, model_names(task))
    return MODELS.get(f"{task}/{name}")


def config_classes() -> list[type]:
    """The config class of every registered model, in registration order."""
    return [MODELS.get(key).config for key in MODELS.names()]


def field_help(field: str) -> str | None:
    """The help text of a config field of any registered model (None: no model has it)."""
    for cls in config_classes():
        for f in dataclasses.fields(cls):
            if f.name == field:
                return f.metadata.get("help")
    return None


def does_not_apply(cfg_key: str, field: str, value) -> ConfigError:
    """The error for a field the model `cfg_key` ("sel/dam") does not have."""
    about = field_help(field)
    if about is None:
        return ConfigError(field, value, f"not a model config field (of {cfg_key} or any other model)")
    return ConfigError(field, value, f"does not apply to {cfg_key} ({about.split(';')[0]})")


def model_config(task: str = "sel", name: str = "dam", **fields) -> ModelConfig:
    """The config of the registered model task/name with `fields` set, validated; a field the
    model does not have is a ConfigError ("does not apply to sel/dam"), never ignored."""
    cls = model_entry(task, name).config
    names = {f.name for f in dataclasses.fields(cls)}
    for field, value in fields.items():
        if field not in names:
            raise does_not_apply(f"{task}/{name}", field, value)
    return cls(**fields)


def model_config_from_dict(d: dict, where: str = "model_config") -> ModelConfig:
    """A stored config (current version): its "task" and "name" pick the class; keys the class
    does not have are ignored (written by newer versions), a bad value is a ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(where, d, "must be a JSON object of model config fields")
    task, name = d.get("task", "sel"), d.get("name", "dam")
    if not isinstance(task, str) or not isinstance(name, str):
        raise ConfigError(where, d, "task and name must be strings")
    return from_mapping(model_entry(task, name).config, d, where)


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS.get(cfg.key).builder(cfg)


def sel_encoder_kwargs(cfg: SELConfig) -> dict:
    """The keyword arguments of the AV_att front end every SEL model builds on (widths, input dropout)."""
    return {
        "num_classes": cfg.num_classes,
        "audio_dim": cfg.audio_dim,
        "visual_dim": cfg.visual_dim,
        "att_hidden": cfg.att_hidden,
        "lstm_hidden": cfg.lstm_hidden,
        "head_hidden": cfg.head_hidden,
        "input_dropout": cfg.input_dropout,
    }


def _sel_dam_kwargs(cfg: SELDAMConfig) -> dict:
    return {
        **sel_encoder_kwargs(cfg),
        "embedding": cfg.embedding,
        "matching": cfg.matching,
        "lam": cfg.lam,
        "heads": cfg.heads,
        "dropout": cfg.dropout,
        "ffn_mult": cfg.ffn_mult,
        "scaled_matching": cfg.scaled_matching,
        "feature_dropout": cfg.feature_dropout,
        "relevance_smoothing": cfg.relevance_smoothing,
        "warmup": cfg.warmup,
        "segment_loss": cfg.segment_loss,
        "relevance_fusion": cfg.relevance_fusion,
    }


@register_model(SELDAMConfig)
def _sel_dam(cfg: SELDAMConfig) -> SELDAM:
    return SELDAM(**_sel_dam_kwargs(cfg))


@register_model(AVAttConfig)
def _sel_av_att(cfg: AVAttConfig) -> AVAtt:
    return AVAtt(**sel_encoder_kwargs(cfg))


@register_model(WeakDAMConfig)
def _wsel_dam(cfg: WeakDAMConfig) -> WeakDAM:
    return WeakDAM(relevance=cfg.weak_relevance, **_sel_dam_kwargs(cfg))


@register_model(WeakAVAttConfig)
def _wsel_av_att(cfg: WeakAVAttConfig) -> WeakAVAtt:
    return WeakAVAtt(**sel_encoder_kwargs(cfg))


@register_model(CMLDAMConfig)
def _cml_dam(cfg: CMLDAMConfig) -> CMLDAM:
    return CMLDAM(
        audio_dim=cfg.audio_dim,
        visual_dim=cfg.visual_dim,
        dim=cfg.dim,
        proj_hidden=cfg.proj_hidden,
        embedding=cfg.embedding,
        matching=cfg.matching,
        heads=cfg.heads,
        dropout=cfg.dropout,
        ffn_mult=cfg.ffn_mult,
        scaled_matching=cfg.scaled_matching,
    )


@register_model(AVDLNConfig, recipe="tian-avdln", segment_pairs=True)
def _cml_avdln(cfg: AVDLNConfig) -> AVDLN:
    return AVDLN(
        audio_dim=cfg.audio_dim, visual_dim=cfg.visual_dim, hidden=cfg.proj_hidden, dim=cfg.avdln_dim, margin=cfg.margin
    )
