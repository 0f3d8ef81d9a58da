"""`AVData`: the in-memory form of a labelled feature set that training and evaluation
consume, whichever storage it came from (a feature cache or the AVE release layout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ...core.config import FeatureSettings
from ...core.errors import DataError


@dataclass
class AVData:
    visual: torch.Tensor  # [V, T, 7, 7, 512] float32 or float16 (pool5, HWC)
    audio: torch.Tensor  # [V, T, 128] float32 or float16 (VGGish)
    labels: torch.Tensor  # [V, T] int64 class index per segment; background = len(class_names)
    class_names: list[str]  # event categories, background excluded (AVE: 28)
    video_ids: list[str]
    splits: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> int64 row indices
    settings: FeatureSettings | None = None  # None: unknown (e.g. the released AVE files)
    source: str = "the data"  # where it was read from (named in errors)
    # [V, K+1] float 0/1: the classes each video holds (AVE's mil_labels; background only for
    # a video without event), what weak supervision trains on; None: not known. May be given
    # as a function that reads them: it is called on first use only (the AVE layout's
    # mil_labels.h5 is read by weak supervision, never by a task that does not need it)
    video_labels: torch.Tensor | None | Callable[[], torch.Tensor | None] = None

    @property
    def num_classes(self) -> int:
        """Event categories plus background (AVE: 29)."""
        return len(self.class_names) + 1

    @property
    def background(self) -> int:
        return len(self.class_names)

    @property
    def event_mask(self) -> torch.Tensor:  # [V, T] float 0/1
        return (self.labels != self.background).float()

    def split(self, name: str) -> torch.Tensor:
        """The row indices of a split; DataError naming the source when there is none."""
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(f"{self.source}: no {name!r} split (it has: {', '.join(self.splits) or 'none'})") from None

    def task_split(self, task: str, name: str) -> str:
        """The split a task uses for `name` ("train" | "val" | "test"): CML prefers the
        "<name>_match" split (AVE's CML split) when the data has it."""
        if task == "cml" and f"{name}_match" in self.splits:
            return f"{name}_match"
        return name


def _video_labels(self: AVData) -> torch.Tensor | None:
    value = self.__dict__.get("_video_labels")
    if callable(value):  # read on first use, once
        value = self.__dict__["_video_labels"] = value()
    return value


def _set_video_labels(self: AVData, value) -> None:
    self.__dict__["_video_labels"] = value


AVData.video_labels = property(_video_labels, _set_video_labels)  # type: ignore[assignment]  # (after @dataclass)


# the splits that must not share a video: each family's train, val and test (AVE's CML split is its own family)
DISJOINT_SPLITS = (("train", "val", "test"), ("train_match", "val_match", "test_match"))


def check_disjoint_splits(splits: dict[str, torch.Tensor], source: Callable[[str], str]) -> None:
    """DataError naming both splits' files (`source(name)`) when two splits of one family share
    a row: a model would be selected or scored on videos it trained on."""
    for family in DISJOINT_SPLITS:
        present = [name for name in family if name in splits]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                shared = np.intersect1d(np.asarray(splits[a]), np.asarray(splits[b]))
                if shared.size:
                    raise DataError(
                        f"{source(a)} and {source(b)} share {shared.size} rows (first: row "
                        f"{int(shared[0])}); the {a} and {b} splits must not overlap"
                    )


def video_labels_from_classes(classes: list[int], num_events: int) -> torch.Tensor:
    """One event class per video (-1: no event) -> the video-level labels [V, K+1] in
    mil_labels form: the class's column at 1, or the background column (K) for -1."""
    if any(not -1 <= c < num_events for c in classes):
        raise ValueError(f"video classes must lie in -1..{num_events - 1}")
    idx = torch.tensor([num_events if c < 0 else c for c in classes], dtype=torch.int64)
    return torch.nn.functional.one_hot(idx, num_events + 1).float()  # (V, K+1)
