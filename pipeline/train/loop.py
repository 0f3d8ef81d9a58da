"""Training and evaluation of the SEL and CML models, nanoGPT-style: a config, the data held
in RAM as tensors, the model, the optimiser, `evaluate()`, one loop. Model selection on the
validation split; the test split is evaluated once, for the selected model.

    cfg = TrainConfig(model_config("sel", "dam"), epochs=60)
    result = train(data, cfg)              # result.val, result.test, result.model
    save_checkpoint("sel.safetensors", result.model, result.model_config, data.class_names,
                    data.settings, result.test)

A loss (or, after an epoch, a weight) that is NaN or infinite stops training at once:
TrainingDiverged "loss is nan at epoch 3, batch 2 (try a lower --lr)", never a model trained
on, selected and saved from garbage.

Splits: SEL uses "train" / "val" / "test"; CML uses "train_match" / "val_match" /
"test_match" when the data has them (AVE's CML split), else the SEL names
(`AVData.task_split`). What differs between the tasks (the features, the loss call, the
evaluation, the selection score) is the task's (pipeline/train/tasks.py); what differs between
the models is the registry's (models/registry.py: the recipe, segment pairs) or the model's own
(`start_epoch`). Checkpoints: pipeline/train/checkpoint.py.
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

from ...core.config import (
    DEVICE_HELP,
    DEVICE_PATTERN,
    check_choice,
    check_range,
    check_types,
    from_mapping,
    option,
    resolve_device,
)
from ...core.errors import ConfigError, TrainingDiverged
from ...models.registry import MODELS, ModelConfig, SELDAMConfig, build_model, model_entry
from ..data.dataset import AVData
from .tasks import RAM_DTYPES, Features, Task, get_task, pooled_visual  # noqa: F401  (Features, pooled_visual: API)
from .weak import WeakFeatures


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, apart from the optimiser's settings."""

    epochs: int
    batch_size: int  # in `unit`s
    unit: str  # "video": a batch is whole videos | "segment": single (audio, visual) segment pairs
    selection: str  # "best-val": keep the best validation epoch | "last": keep the last epoch
    about: str


# upper bounds of the training options: a seed is a torch seed (a signed 64-bit integer); an Adam
# step of lr > 10 throws every weight far beyond its range; more seeds or epochs are no run anyone waits for
MAX_EPOCHS, MAX_BATCH, MAX_SEEDS, MAX_SEED, MAX_LR = 100_000, 1_000_000, 1000, 2**63 - 1, 10.0
MAX_WEIGHT_DECAY = 10.0  # an L2 term ten times the weights' own size outweighs any loss (1e308 overflows the gradient)


RECIPES = {
    "avel": Recipe(
        60,
        64,
        "video",
        "best-val",
        "batches of 64 videos, 60 epochs, the best validation epoch kept (AV_att's batch and optimiser)",
    ),
    "tian-avdln": Recipe(
        20,
        8,
        "segment",
        "last",
        "Tian et al.'s AVDLN script (cmm_train.py): shuffled batches of 8 synchronized segment "
        "pairs, 20 epochs, the last epoch kept (validation is only reported)",
    ),
}


# -----------------------------------------------------------------------------------------
# config
@dataclass(frozen=True)
class TrainConfig:
    """Training options around a model config. Optimiser: Adam, lr 1e-3, no weight decay:
    AV_att's published recipe (Tian et al.); DAM's optimiser is not published, so it gets the
    same one, which also keeps the comparison fair. `recipe` sets the batches, the epochs and
    the model selection (RECIPES): "auto" is the model's published one (its registry entry's),
    AVDLN's for AVDLN (8 segment pairs, 20 epochs, last epoch), "avel" (64 videos, 60 epochs,
    best validation epoch) for the others; `epochs` and `batch_size` override the recipe's.
    All three are resolved when the config is made ("auto" and None never remain), so a
    checkpoint's stored TrainConfig holds the values in force."""

    model: ModelConfig = option("the model (task, name and hyperparameters)", cli=False, default_factory=SELDAMConfig)
    recipe: str = option(
        "auto (the model's: tian-avdln for AVDLN, avel otherwise) | avel (64 videos a batch, 60 "
        "epochs, best validation epoch kept) | tian-avdln (8 segment pairs a batch, 20 epochs, last "
        "epoch kept)",
        choices=("auto", *RECIPES),
        default="auto",
    )
    epochs: int | None = option("training epochs (default: the recipe's, 60 or 20)", default=None)
    batch_size: int | None = option(
        "videos (segment pairs for tian-avdln) per batch (default: the recipe's, 64 or 8)", default=None
    )
    lr: float = option("Adam learning rate", default=1e-3)
    weight_decay: float = option("Adam weight decay (L2)", default=0.0)
    seed: int = option("seed of the weights, dropout and batch order", default=0)
    device: str = option(DEVICE_HELP, default="auto")
    dtype_in_ram: str = option("how the features are held in RAM", choices=("float32", "float16"), default="float32")
    eval_batch_size: int = option("videos per evaluation batch", cli=False, default=256)
    progress: bool | None = option("progress bar: None = only on a terminal", cli=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise ConfigError("model", self.model, "must be a model config (avel.model_config(task, name, ...))")
        check_types(self)
        check_choice("recipe", self.recipe, ("auto", *RECIPES))
        if self.epochs is not None:
            check_range("epochs", self.epochs, 1, MAX_EPOCHS)
        if self.batch_size is not None:
            check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)
        check_range("lr", self.lr, 0.0, MAX_LR, lo_open=True)  # finite: check_types
        check_range("weight_decay", self.weight_decay, 0.0, MAX_WEIGHT_DECAY)
        check_range("seed", self.seed, 0, MAX_SEED)
        check_choice("dtype_in_ram", self.dtype_in_ram, tuple(RAM_DTYPES))
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError("device", self.device, f"choose {DEVICE_HELP}")
        entry = model_entry(self.model.task, self.model.name)
        recipe = entry.recipe if self.recipe == "auto" else self.recipe
        if RECIPES[recipe].unit == "segment" and not entry.segment_pairs:
            raise ConfigError(
                "recipe",
                self.recipe,
                f"trains on single segment pairs, which only "
                f"{', '.join(_segment_models())} can (its loss treats every segment alone)",
            )
        object.__setattr__(self, "recipe", recipe)  # resolved: the stored config holds the values in force
        object.__setattr__(self, "epochs", self.epochs or RECIPES[recipe].epochs)
        object.__setattr__(self, "batch_size", self.batch_size or RECIPES[recipe].batch_size)

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def recipe_name(self) -> str:
        """The recipe in force (resolved when the config was made)."""
        return self.recipe

    @property
    def resolved(self) -> Recipe:
        """The recipe in force with `epochs` and `batch_size` applied."""
        return dataclasses.replace(RECIPES[self.recipe], epochs=self.epochs, batch_size=self.batch_size)

    def model_config(self, data: AVData) -> ModelConfig:
        """The model config with the widths and the number of classes of `data`."""
        return dataclasses.replace(
            self.model, num_classes=data.num_classes, audio_dim=data.audio.shape[-1], visual_dim=data.visual.shape[-1]
        )

    def to_dict(self) -> dict:
        """Every field, the model's config as its `to_dict` (with its task and name)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, model: ModelConfig, where: str = "train_config") -> TrainConfig:
        """A stored TrainConfig (its model config read apart: `model`)."""
        if not isinstance(d, dict):
            raise ConfigError(where, d, "must be a JSON object of TrainConfig fields")
        return from_mapping(cls, {**d, "model": model}, where)


def _segment_models() -> list[str]:
    """The registered models that can train on segment pairs."""
    return [key for key in MODELS.names() if MODELS.get(key).segment_pairs]


def prepare_features(data: AVData, task: str, dtype_in_ram: str | None = None) -> Features | WeakFeatures:
    """The features of `data` as the task consumes them, held as `dtype_in_ram` (None: as
    stored when float16 or float32, else float32). A conversion copies the features; hand
    over float16 data to hold AVE-sized pool5 maps (1.7 GB) only once. wsel: the video-level
    labels only (pipeline/train/weak.py)."""
    return get_task(task).prepare(data, dtype_in_ram)


# -----------------------------------------------------------------------------------------
# evaluation
def split_rows(data: AVData, task: str, name: str) -> tuple[str, torch.Tensor]:
    """(the split `task` uses for `name`, its row indices): DataError when it is missing,
    empty, or (CML) holds no video the CML protocol evaluates, instead of a NaN metric or
    an epoch of zero batches."""
    return get_task(task).rows(data, name)


def evaluate(
    model: nn.Module,
    data: AVData,
    split: str,
    *,
    batch_size: int = 256,
    features: Features | WeakFeatures | None = None,
) -> dict:
    """Metrics of `model` on a split of `data`, by the task of `features` (or, without, of
    the model: a weak model is an SEL model at test time). SEL: {"accuracy"}. CML: {"a2v",
    "v2a", "average", "n_videos"} under the CML protocol (pipeline.metrics); "train" / "val" /
    "test" mean the *_match splits when the data has them. wsel (WeakFeatures, validation of a
    weak model): video-level metrics (pipeline/train/weak.py)."""
    task = get_task(features.task if features is not None else model.task)
    return task.evaluate(model, data, split, batch_size=batch_size, features=features)


def selection_score(task: str, metrics: dict) -> float:
    """What model selection maximises: SEL accuracy, CML mean of A2V and V2A, WSEL minus
    the validation loss of the video labels (pipeline/train/weak.py)."""
    return get_task(task).selection_score(metrics)


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
        task: Task = get_task(cfg.task)
        _, train_idx = task.rows(data, "train")
        val_split, _ = task.rows(data, "val")
        test_split = data.task_split(cfg.task, "test")
        if test_split in data.splits:
            task.rows(data, "test")
        feats = task.prepare(data, cfg.dtype_in_ram)

        # model and optimiser
        model_config = cfg.model_config(data)
        model = build_model(model_config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        recipe = cfg.resolved
        if recipe.unit == "segment":  # every training segment pair is a one-segment video
            train_feats, train_idx = task.segment_pairs(feats, train_idx)
        else:
            train_feats = feats

        # loop
        best_score, best_epoch, best_state, best_val = -math.inf, 0, None, {}
        history = []
        bar = tqdm(
            range(1, recipe.epochs + 1),
            desc=f"{cfg.task}/{cfg.model.name}",
            disable=None if cfg.progress is None else not cfg.progress,
        )
        for epoch in bar:
            model.train()
            model.start_epoch(epoch, recipe.epochs)  # models whose loss changes over training (SEL DAM's warm-up)
            order = train_idx[torch.randperm(len(train_idx), generator=shuffle)]
            total, count = 0.0, 0
            for batch, i in enumerate(range(0, len(order), recipe.batch_size), 1):
                loss, n = task.loss(model, train_feats, order[i : i + recipe.batch_size], device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"loss is {value} at epoch {epoch}, batch {batch} (try a lower --lr)")
                total, count = total + value * n, count + n
            diverged = next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
            if diverged is not None:
                raise TrainingDiverged(f"weight {diverged} is not finite after epoch {epoch} (try a lower --lr)")
            val = task.evaluate(model, data, val_split, batch_size=cfg.eval_batch_size, features=feats)
            score = task.selection_score(val)
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
        test = (
            task.test(model, data, test_split, batch_size=cfg.eval_batch_size, features=feats)
            if test_split in data.splits
            else None
        )
        return TrainResult(model, model_config, cfg, best_epoch, best_val, test, history, time.perf_counter() - t0)
    finally:
        if device.type == "cuda":
            torch.use_deterministic_algorithms(deterministic_before)


def check_seeds(seeds: list[int]) -> None:
    """1 to MAX_SEEDS seeds, each in 0..MAX_SEED (ConfigError "seeds", before any work)."""
    check_range("seeds", len(seeds), 1, MAX_SEEDS)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise ConfigError("seeds", len(seeds), f"runs seed {s!r}, which is not an integer in 0..{MAX_SEED}")


@dataclass
class SeedsResult:
    results: list[TrainResult]
    split: str  # "test", or "val" when the data has no test split
    mean: dict  # metric -> mean over seeds
    std: dict  # metric -> sample standard deviation over seeds (0 for one seed)


def train_seeds(data: AVData, cfg: TrainConfig, seeds: list[int]) -> SeedsResult:
    """One run per seed; mean and std of the selected models' test metrics (the paper reports
    mean +- std over 3 runs). ConfigError "seeds" for more than MAX_SEEDS seeds or one out of range."""
    check_seeds(seeds)
    results = [train(data, dataclasses.replace(cfg, seed=s)) for s in seeds]
    split = "test" if all(r.test is not None for r in results) else "val"
    per_run = [r.test if split == "test" else r.val for r in results]
    keys = [k for k, v in per_run[0].items() if isinstance(v, (int, float))]
    mean = {k: statistics.fmean(m[k] for m in per_run) for k in keys}
    std = {k: statistics.stdev([m[k] for m in per_run]) if len(per_run) > 1 else 0.0 for k in keys}
    return SeedsResult(results, split, mean, std)
