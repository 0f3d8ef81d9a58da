"""What a model offers, as explicit protocols: the training loop's view (`Trainable`: a
loss and an epoch hook) and the apps' view at inference (`SELModel`, `CMLModel`). Every
registered model satisfies one of the inference protocols; `EpochHook` gives the no-op
`start_epoch` to models whose loss does not change over training."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .inference import QueryScores, SegmentScores


class EpochHook:
    """`start_epoch(epoch, epochs)`, called by the training loop before every epoch (1-based):
    a no-op here; a model whose loss changes over training (SEL DAM's warm-up) overrides it."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        return None


@runtime_checkable
class Trainable(Protocol):
    """What the training loop calls: the loss of a batch (the task decides what `target` is:
    per-second labels, an event mask or video labels) and the epoch hook."""

    def loss(self, audio: torch.Tensor, visual: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def start_epoch(self, epoch: int, epochs: int) -> None: ...


@runtime_checkable
class SELModel(Protocol):
    """An SEL model at inference (sel, and wsel at test time): `task == "sel"`."""

    task: str

    def predict(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor: ...

    def score_segments(self, audio: torch.Tensor, visual: torch.Tensor) -> SegmentScores: ...


@runtime_checkable
class CMLModel(Protocol):
    """A CML model at inference: `task == "cml"`."""

    task: str

    def localize(
        self, audio: torch.Tensor, visual: torch.Tensor, query_mask: torch.Tensor, direction: str
    ) -> torch.Tensor: ...

    def score_query(self, query: torch.Tensor, target: torch.Tensor, query_modality: str) -> QueryScores: ...
