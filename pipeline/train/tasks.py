"""The training tasks: sel, cml and wsel, each owning its view of the data (the features in
RAM and what a batch's target is), its batch -> loss call, its evaluation and its model
selection score. Registered by name; the training loop (pipeline/train/loop.py) talks to a
`Task` only, never to a task name.

    task = get_task("cml")
    feats = task.prepare(data, "float32")          # Features: audio, pooled visual, labels
    loss, n = task.loss(model, feats, idx, device) # model.loss(audio, visual, event mask)
    metrics = task.evaluate(model, data, "val", batch_size=256, features=feats)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ...core.errors import DataError
from ...core.registry import Registry
from ..data.dataset import AVData
from .metrics import cml_accuracy, cml_queries, sel_accuracy
from .weak import WeakFeatures, evaluate_video_labels, require_video_labels, weak_features, weak_selection_score


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """`model` in eval mode for the block (its training mode restored after); yields its device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


RAM_DTYPES = {"float32": torch.float32, "float16": torch.float16}


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

    def segment_pairs(self, idx: torch.Tensor) -> Features:
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


def ram_dtype(data: AVData, dtype_in_ram: str | None) -> torch.dtype:
    """`dtype_in_ram` (None: as stored when float16 or float32, else float32)."""
    if dtype_in_ram is None:
        return data.visual.dtype if data.visual.dtype in (torch.float16, torch.float32) else torch.float32
    if dtype_in_ram in RAM_DTYPES:
        return RAM_DTYPES[dtype_in_ram]
    raise ValueError(f"dtype_in_ram must be one of {', '.join(RAM_DTYPES)}, got {dtype_in_ram!r}")


def cell_visual(data: AVData, dtype: torch.dtype) -> torch.Tensor:
    """pool5 maps [V, T, H, W, C] -> cells [V, T, N, Dv] as `dtype` (a view when no conversion)."""
    if data.visual.dim() != 5:
        raise ValueError(f"SEL needs pool5 maps [V, T, H, W, C], got visual {tuple(data.visual.shape)}")
    return data.visual.to(dtype).flatten(2, 3)  # (V, T, N, Dv)


# -----------------------------------------------------------------------------------------
# the protocol
class Task(Protocol):
    """What the training loop needs of a task."""

    name: str

    def check_data(self, data: AVData, where: str) -> None:
        """Refuse data the task cannot train on (DataError naming `where`), before any work."""

    def rows(self, data: AVData, split: str) -> tuple[str, torch.Tensor]:
        """(the split the task uses for `split`, its row indices); DataError when it is
        missing, empty or holds nothing the task evaluates."""

    def prepare(self, data: AVData, dtype_in_ram: str | None = None):
        """The features of `data` as the task consumes them (each with `task` and `batch`)."""

    def segment_pairs(self, feats, idx: torch.Tensor) -> tuple[object, torch.Tensor]:
        """(features, indices) of the segments of videos `idx` as one-segment videos."""

    def loss(self, model: nn.Module, feats, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, int]:
        """(the model's loss on the batch `idx`, the batch's size)."""

    def evaluate(self, model: nn.Module, data: AVData, split: str, *, batch_size: int = 256, features=None) -> dict:
        """Metrics of `model` on a split (validation: on the features the task trains on)."""

    def selection_score(self, metrics: dict) -> float:
        """What model selection maximises."""

    def test(self, model: nn.Module, data: AVData, split: str, *, batch_size: int, features) -> dict:
        """Metrics of the selected model on the test split."""


TASK_REGISTRY: Registry = Registry("task")


def register_task(task):
    """Register a task object under its `name` (a class decorator registers one instance)."""
    obj = task() if isinstance(task, type) else task
    TASK_REGISTRY.register(obj.name)(obj)
    return task


def get_task(name: str) -> Task:
    return TASK_REGISTRY.get(name)


class FeatureTask:
    """The parts sel and cml share: features with per-second labels, the model's loss on a
    batch, the test split evaluated like the validation split."""

    name = ""

    def check_data(self, data: AVData, where: str) -> None:
        return None

    def rows(self, data: AVData, split: str) -> tuple[str, torch.Tensor]:
        name = data.task_split(self.name, split)
        idx = data.split(name)
        if len(idx) == 0:
            raise DataError(f"{data.source}: the {name!r} split is empty")
        return name, idx

    def segment_pairs(self, feats, idx: torch.Tensor):
        return feats.segment_pairs(idx), torch.arange(len(idx) * feats.labels.shape[1])

    def loss(self, model: nn.Module, feats, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, int]:
        audio, visual, target = feats.batch(idx, device)
        return model.loss(audio, visual, target), len(audio)

    def test(self, model: nn.Module, data: AVData, split: str, *, batch_size: int, features) -> dict:
        return self.evaluate(model, data, split, batch_size=batch_size, features=features)


@register_task
class SELTask(FeatureTask):
    """Supervised event localization: per-second labels; accuracy over every segment."""

    name = "sel"

    def prepare(self, data: AVData, dtype_in_ram: str | None = None) -> Features:
        dtype = ram_dtype(data, dtype_in_ram)
        visual = cell_visual(data, dtype)
        return Features(self.name, data.audio.to(dtype), visual, data.labels.long(), data.background)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: AVData, split: str, *, batch_size: int = 256, features=None) -> dict:
        _, idx = self.rows(data, split)
        feats = features if features is not None else self.prepare(data)
        with evaluating(model) as device:
            preds = [
                model.predict(*feats.batch(idx[i : i + batch_size], device)[:2]).cpu()
                for i in range(0, len(idx), batch_size)
            ]
        pred = torch.cat(preds) if preds else torch.empty(0, data.labels.shape[1], dtype=torch.long)
        return {"accuracy": sel_accuracy(pred, feats.labels[idx])}

    def selection_score(self, metrics: dict) -> float:
        score = metrics["accuracy"]
        return -math.inf if math.isnan(score) else score


@register_task
class CMLTask(FeatureTask):
    """Cross-modality localization: event masks; the CML protocol's A2V and V2A accuracy
    (the *_match splits when the data has them)."""

    name = "cml"

    def rows(self, data: AVData, split: str) -> tuple[str, torch.Tensor]:
        name, idx = super().rows(data, split)
        if split != "train" and not cml_queries(data.labels[idx] != data.background).keep.any():
            raise DataError(
                f"{data.source}: no video of the {name!r} split has an event that is partial (1 to T-1 "
                "segments); the CML protocol evaluates only those"
            )
        return name, idx

    def prepare(self, data: AVData, dtype_in_ram: str | None = None) -> Features:
        dtype = ram_dtype(data, dtype_in_ram)
        visual = pooled_visual(data.visual).to(dtype)  # (V, T, Dv)
        return Features(self.name, data.audio.to(dtype), visual, data.labels.long(), data.background)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: AVData, split: str, *, batch_size: int = 256, features=None) -> dict:
        _, idx = self.rows(data, split)
        feats = features if features is not None else self.prepare(data)
        with evaluating(model) as device:
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

    def selection_score(self, metrics: dict) -> float:
        score = metrics["average"]
        return -math.inf if math.isnan(score) else score


@register_task
class WSELTask(FeatureTask):
    """Weakly supervised event localization (pipeline/train/weak.py): training and validation
    see video labels only (WeakFeatures); the test split is evaluated as SEL, with the
    per-second labels, outside the loop's view."""

    name = "wsel"

    def check_data(self, data: AVData, where: str) -> None:
        require_video_labels(data, where)

    def rows(self, data: AVData, split: str) -> tuple[str, torch.Tensor]:
        """The validation split must hold a video with an event: its video accuracy is
        undefined without one, and the loss of background videos alone rewards a model that
        finds no event, so model selection would pick that (refused, as CML refuses a split
        it cannot evaluate)."""
        name, idx = super().rows(data, split)
        if split == "val" and not (require_video_labels(data, data.source)[idx, :-1].sum(1) > 0).any():
            raise DataError(
                f"{data.source}: every video of the {name!r} split is background (no event): weak "
                "validation (the video accuracy) has nothing to score; put videos with events in it"
            )
        return name, idx

    def prepare(self, data: AVData, dtype_in_ram: str | None = None) -> WeakFeatures:
        dtype = ram_dtype(data, dtype_in_ram)
        visual = cell_visual(data, dtype)
        return weak_features(data, data.audio.to(dtype), visual)

    def segment_pairs(self, feats, idx: torch.Tensor):
        raise DataError("wsel trains on whole videos (one label vector a video), never on segment pairs")

    def evaluate(self, model: nn.Module, data: AVData, split: str, *, batch_size: int = 256, features=None) -> dict:
        feats = features if features is not None else self.prepare(data)
        return evaluate_video_labels(model, feats, data.split(split), batch_size)

    def selection_score(self, metrics: dict) -> float:
        return weak_selection_score(metrics)

    def test(self, model: nn.Module, data: AVData, split: str, *, batch_size: int, features) -> dict:
        return get_task("sel").evaluate(model, data, split, batch_size=batch_size)  # SEL's, per-second labels
