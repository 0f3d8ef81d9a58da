"""Training and evaluation of the SEL and CML models, nanoGPT-style: a config, the data held
in RAM as tensors, the model, the optimiser, `evaluate()`, one loop. Model selection on the
validation split; the test split is evaluated once, for the selected model.

    cfg = TrainConfig(ModelConfig(task="sel", name="dam"), epochs=60)
    result = train(data, cfg)              # result.val, result.test, result.model
    save_checkpoint("sel.safetensors", result.model, result.model_config, data.class_names,
                    data.settings, result.test)

Splits: SEL uses "train" / "val" / "test"; CML uses "train_match" / "val_match" /
"test_match" when the data has them (AVE's CML split), else the SEL names
(`AVData.task_split`). Checkpoints: pipeline/train/checkpoint.py.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ...models.registry import ModelConfig, build_model
from ...core.config import DEVICE_HELP, DEVICE_PATTERN, check_choice, check_range, check_types, option, resolve_device
from ..data.dataset import AVData
from ...core.errors import ConfigError, DataError
from .metrics import cml_accuracy, cml_queries, sel_accuracy
from .weak import WeakFeatures, evaluate_video_labels, weak_features, weak_selection_score

RAM_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, apart from the optimiser's settings."""

    epochs: int
    batch_size: int  # in `unit`s
    unit: str  # "video": a batch is whole videos | "segment": single (audio, visual) segment pairs
    selection: str  # "best-val": keep the best validation epoch | "last": keep the last epoch
    about: str


RECIPES = {
    "avel": Recipe(60, 64, "video", "best-val",
                   "batches of 64 videos, 60 epochs, the best validation epoch kept (AV_att's batch and optimiser)"),
    "tian-avdln": Recipe(20, 8, "segment", "last",
                         "Tian et al.'s AVDLN script (cmm_train.py): shuffled batches of 8 synchronized segment "
                         "pairs, 20 epochs, the last epoch kept (validation is only reported)"),
}
MODEL_RECIPES = {"cml/avdln": "tian-avdln"}  # the published recipe of a model; others: "avel"
SEGMENT_MODELS = ("cml/avdln",)  # models whose loss treats every segment alone (can train on pairs)


# -----------------------------------------------------------------------------------------
# config
@dataclass(frozen=True)
class TrainConfig:
    """Training options around a model config. Optimiser: Adam, lr 1e-3, no weight decay:
    AV_att's published recipe (Tian et al.); DAM's optimiser is not published, so it gets the
    same one, which also keeps the comparison fair. `recipe` sets the batches, the epochs and
    the model selection (RECIPES): "auto" is the model's published one, AVDLN's for AVDLN
    (8 segment pairs, 20 epochs, last epoch), "avel" (64 videos, 60 epochs, best validation
    epoch) for the others; `epochs` and `batch_size` override the recipe's."""

    model: ModelConfig = option("the model (task, name and hyperparameters)", cli=False, default_factory=ModelConfig)
    recipe: str = option("auto (the model's: tian-avdln for AVDLN, avel otherwise) | avel (64 videos a batch, 60 "
                         "epochs, best validation epoch kept) | tian-avdln (8 segment pairs a batch, 20 epochs, last "
                         "epoch kept)", choices=("auto", *RECIPES), default="auto")
    epochs: int | None = option("training epochs (default: the recipe's, 60 or 20)", default=None)
    batch_size: int | None = option("videos (segment pairs for tian-avdln) per batch (default: the recipe's, 64 or 8)",
                                    default=None)
    lr: float = option("Adam learning rate", default=1e-3)
    weight_decay: float = option("Adam weight decay (L2)", default=0.0)
    seed: int = option("seed of the weights, dropout and batch order", default=0)
    device: str = option(DEVICE_HELP, default="auto")
    dtype_in_ram: str = option("how the features are held in RAM", choices=("float32", "float16"), default="float32")
    eval_batch_size: int = option("videos per evaluation batch", cli=False, default=256)
    progress: bool | None = option("progress bar: None = only on a terminal", cli=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise ConfigError("model", self.model, "must be a ModelConfig")
        check_types(self)
        check_choice("recipe", self.recipe, ("auto", *RECIPES))
        if self.epochs is not None:
            check_range("epochs", self.epochs, 1)
        if self.batch_size is not None:
            check_range("batch_size", self.batch_size, 1)
        check_range("eval_batch_size", self.eval_batch_size, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_choice("dtype_in_ram", self.dtype_in_ram, tuple(RAM_DTYPES))
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError("device", self.device, f"choose {DEVICE_HELP}")
        key = f"{self.model.task}/{self.model.name}"
        if RECIPES[self.recipe_name].unit == "segment" and key not in SEGMENT_MODELS:
            raise ConfigError("recipe", self.recipe, f"trains on single segment pairs, which only "
                              f"{', '.join(SEGMENT_MODELS)} can (its loss treats every segment alone)")

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def recipe_name(self) -> str:
        """The recipe in force: `recipe`, or the model's own for "auto"."""
        if self.recipe != "auto":
            return self.recipe
        return MODEL_RECIPES.get(f"{self.model.task}/{self.model.name}", "avel")

    @property
    def resolved(self) -> Recipe:
        """The recipe in force with `epochs` and `batch_size` applied."""
        r = RECIPES[self.recipe_name]
        return dataclasses.replace(r, epochs=self.epochs or r.epochs, batch_size=self.batch_size or r.batch_size)

    def model_config(self, data: AVData) -> ModelConfig:
        """The model config with the widths and the number of classes of `data`."""
        return dataclasses.replace(self.model, num_classes=data.num_classes, audio_dim=data.audio.shape[-1],
                                   visual_dim=data.visual.shape[-1])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -----------------------------------------------------------------------------------------
# data: every feature in RAM once; a batch is an index slice converted to float32 on device
@dataclass
class Features:
    task: str
    audio: torch.Tensor  # [V, T, Da]
    visual: torch.Tensor  # sel: [V, T, N, Dv] cells (N = 7x7);  cml: [V, T, Dv] pooled
    labels: torch.Tensor  # [V, T] int64
    background: int

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> audio, visual (float32 on device), target (sel: labels [B, T]; cml: event mask [B, T] bool)."""
        audio = self.audio[idx].to(device).float()
        visual = self.visual[idx].to(device).float()
        labels = self.labels[idx].to(device)
        return audio, visual, (labels if self.task == "sel" else labels != self.background)

    def segment_pairs(self, idx: torch.Tensor) -> "Features":
        """The segments of videos `idx` as one-segment videos: [V, T, ...] -> [V*T, 1, ...]
        (for a model whose loss treats every segment alone, trained on shuffled pairs)."""
        def flat(x: torch.Tensor) -> torch.Tensor:
            return x[idx].flatten(0, 1).unsqueeze(1)  # (V*T, 1, ...)

        return Features(self.task, flat(self.audio), flat(self.visual), flat(self.labels), self.background)


def pooled_visual(visual: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """pool5 [V, T, 7, 7, Dv] -> the mean over the cells [V, T, Dv] (AVE's visual_feature_vec),
    computed in float32 a chunk of videos at a time; [V, T, Dv] input is returned as is."""
    if visual.dim() == 3:
        return visual
    parts = [visual[i : i + chunk].float().mean(dim=(2, 3)) for i in range(0, visual.shape[0], chunk)]
    return torch.cat(parts).to(visual.dtype)


def prepare_features(data: AVData, task: str, dtype_in_ram: str | None = None) -> Features | WeakFeatures:
    """The features of `data` as the task consumes them, held as `dtype_in_ram` (None: as
    stored when float16 or float32, else float32). A conversion copies the features; hand
    over float16 data to hold AVE-sized pool5 maps (1.7 GB) only once. wsel: the video-level
    labels only (pipeline/train/weak.py)."""
    if dtype_in_ram is None:
        dtype = data.visual.dtype if data.visual.dtype in (torch.float16, torch.float32) else torch.float32
    elif dtype_in_ram in RAM_DTYPES:
        dtype = RAM_DTYPES[dtype_in_ram]
    else:
        raise ValueError(f"dtype_in_ram must be one of {', '.join(RAM_DTYPES)}, got {dtype_in_ram!r}")
    if task in ("sel", "wsel"):
        if data.visual.dim() != 5:
            raise ValueError(f"SEL needs pool5 maps [V, T, H, W, C], got visual {tuple(data.visual.shape)}")
        visual = data.visual.to(dtype).flatten(2, 3)  # (V, T, N, Dv), a view when no conversion
    else:
        visual = pooled_visual(data.visual).to(dtype)  # (V, T, Dv)
    if task == "wsel":
        return weak_features(data, data.audio.to(dtype), visual)
    return Features(task, data.audio.to(dtype), visual, data.labels.long(), data.background)


# -----------------------------------------------------------------------------------------
# evaluation
def split_rows(data: AVData, task: str, name: str) -> tuple[str, torch.Tensor]:
    """(the split `task` uses for `name`, its row indices): DataError when it is missing,
    empty, or (CML) holds no video the CML protocol evaluates, instead of a NaN metric or
    an epoch of zero batches."""
    split = data.task_split(task, name)
    idx = data.split(split)
    if len(idx) == 0:
        raise DataError(f"{data.source}: the {split!r} split is empty")
    if task == "cml" and name != "train" and not cml_queries(data.labels[idx] != data.background).keep.any():
        raise DataError(f"{data.source}: no video of the {split!r} split has an event that is partial (1 to T-1 "
                        "segments); the CML protocol evaluates only those")
    return split, idx


@torch.no_grad()
def evaluate(model: nn.Module, data: AVData, split: str, *, batch_size: int = 256,
             features: Features | WeakFeatures | None = None) -> dict:
    """Metrics of `model` on a split of `data`. SEL: {"accuracy"}. CML: {"a2v", "v2a",
    "average", "n_videos"} under the CML protocol (pipeline.metrics). For CML, "train" /
    "val" / "test" mean the *_match splits when the data has them. With WeakFeatures
    (validation of a weak model): video-level metrics (pipeline/train/weak.py)."""
    if isinstance(features, WeakFeatures):
        return evaluate_video_labels(model, features, data.split(split), batch_size)
    task = model.task
    _, idx = split_rows(data, task, split)
    feats = features if features is not None else prepare_features(data, task)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if task == "sel":
            preds = [model.predict(*feats.batch(idx[i : i + batch_size], device)[:2]).cpu() for i in range(0, len(idx), batch_size)]
            pred = torch.cat(preds) if preds else torch.empty(0, data.labels.shape[1], dtype=torch.long)
            return {"accuracy": sel_accuracy(pred, feats.labels[idx])}
        event_mask = feats.labels[idx] != feats.background  # (V, T)
        queries = cml_queries(event_mask)
        query_mask = queries.mask(event_mask.shape[1])  # (V, T)
        pred = {"a2v": torch.zeros(len(idx), dtype=torch.long), "v2a": torch.zeros(len(idx), dtype=torch.long)}
        kept = torch.nonzero(queries.keep).squeeze(1)  # positions within the split
        for i in range(0, len(kept), batch_size):
            pos = kept[i : i + batch_size]
            audio, visual, _ = feats.batch(idx[pos], device)
            for direction in ("a2v", "v2a"):
                pred[direction][pos] = model.localize(audio, visual, query_mask[pos].to(device), direction).cpu()
        metrics = cml_accuracy(pred["a2v"], pred["v2a"], event_mask)
        metrics["average"] = (metrics["a2v"] + metrics["v2a"]) / 2
        return metrics
    finally:
        model.train(was_training)


def selection_score(task: str, metrics: dict) -> float:
    """What model selection maximises: SEL accuracy, CML mean of A2V and V2A, WSEL minus
    the validation loss of the video labels (pipeline/train/weak.py)."""
    if task == "wsel":
        return weak_selection_score(metrics)
    score = metrics["accuracy"] if task == "sel" else metrics["average"]
    return -math.inf if math.isnan(score) else score


# -----------------------------------------------------------------------------------------
# training
@dataclass
class TrainResult:
    model: nn.Module  # the selected model (best validation epoch, or the last one), in eval mode
    model_config: ModelConfig
    config: TrainConfig
    best_epoch: int  # 1-based
    val: dict  # metrics of the selected model on validation
    test: dict | None  # metrics of the selected model on test (None: the data has no test split)
    history: list[dict] = field(default_factory=list)  # per epoch: loss and validation metrics
    seconds: float = 0.0


def train(data: AVData, cfg: TrainConfig) -> TrainResult:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    # CPU kernels used here are deterministic already; on CUDA ask for deterministic ones
    # (warn_only: an op without one warns instead of failing)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA start)
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(cfg.seed)  # weights and dropout
        shuffle = torch.Generator().manual_seed(cfg.seed)  # batch order

        # data: every split checked before the first epoch
        _, train_idx = split_rows(data, cfg.task, "train")
        val_split, _ = split_rows(data, cfg.task, "val")
        test_split = data.task_split(cfg.task, "test")
        if test_split in data.splits:
            split_rows(data, cfg.task, "test")
        feats = prepare_features(data, cfg.task, cfg.dtype_in_ram)

        # model and optimiser
        model_config = cfg.model_config(data)
        model = build_model(model_config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        recipe = cfg.resolved
        if recipe.unit == "segment":  # every training segment pair is a one-segment video
            train_feats, train_idx = feats.segment_pairs(train_idx), torch.arange(len(train_idx) * feats.labels.shape[1])
        else:
            train_feats = feats

        # loop
        best_score, best_epoch, best_state, best_val = -math.inf, 0, None, {}
        history = []
        bar = tqdm(range(1, recipe.epochs + 1), desc=f"{cfg.task}/{cfg.model.name}", disable=None if cfg.progress is None else not cfg.progress)
        for epoch in bar:
            model.train()
            if hasattr(model, "start_epoch"):  # models whose loss changes over training (SEL DAM's warm-up)
                model.start_epoch(epoch, recipe.epochs)
            order = train_idx[torch.randperm(len(train_idx), generator=shuffle)]
            total, count = 0.0, 0
            for i in range(0, len(order), recipe.batch_size):
                audio, visual, target = train_feats.batch(order[i : i + recipe.batch_size], device)
                loss = model.loss(audio, visual, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(audio), count + len(audio)
            val = evaluate(model, data, val_split, batch_size=cfg.eval_batch_size, features=feats)
            score = selection_score(cfg.task, val)
            history.append({"epoch": epoch, "loss": total / max(count, 1), **val})
            if recipe.selection == "last":  # no selection: the model is the last epoch's
                best_score, best_epoch, best_val = score, epoch, val
            elif score > best_score or best_state is None:
                best_score, best_epoch, best_val = score, epoch, val
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", val=f"{score:.3f}", best=f"{best_score:.3f}")

        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        test_feats = feats if isinstance(feats, Features) else None  # wsel: SEL's, with the per-second labels
        test = evaluate(model, data, test_split, batch_size=cfg.eval_batch_size, features=test_feats) if test_split in data.splits else None
        return TrainResult(model, model_config, cfg, best_epoch, best_val, test, history, time.perf_counter() - t0)
    finally:
        if device.type == "cuda":
            torch.use_deterministic_algorithms(deterministic_before)


@dataclass
class SeedsResult:
    results: list[TrainResult]
    split: str  # "test", or "val" when the data has no test split
    mean: dict  # metric -> mean over seeds
    std: dict  # metric -> sample standard deviation over seeds (0 for one seed)


def train_seeds(data: AVData, cfg: TrainConfig, seeds: list[int]) -> SeedsResult:
    """One run per seed; mean and std of the selected models' test metrics (the paper reports
    mean +- std over 3 runs)."""
    results = [train(data, dataclasses.replace(cfg, seed=s)) for s in seeds]
    split = "test" if all(r.test is not None for r in results) else "val"
    per_run = [r.test if split == "test" else r.val for r in results]
    keys = [k for k, v in per_run[0].items() if isinstance(v, (int, float))]
    mean = {k: statistics.fmean(m[k] for m in per_run) for k in keys}
    std = {k: statistics.stdev([m[k] for m in per_run]) if len(per_run) > 1 else 0.0 for k in keys}
    return SeedsResult(results, split, mean, std)
