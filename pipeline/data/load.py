"""One data interface for training and evaluation: `load_data(path)` turns a feature cache
(directory or .h5 file) or a directory in the AVE release layout into `AVData`, loaded
once into RAM in float32 or float16. Storage formats are registered by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.annotations import AnnotationRow, category_index, labels_for, parse_annotations, split_rows
from ...core.errors import CacheError, DataError, shown
from ...core.registry import Registry
from ..cache.store import FeatureCache
from .dataset import AVData, check_disjoint_splits, video_labels_from_classes


@dataclass(frozen=True)
class DataFormat:
    name: str
    accepts: Callable[[Path], bool]
    load: Callable[[Path, torch.dtype], AVData]


DATA_FORMATS: Registry[DataFormat] = Registry("data format")


def _is_cache(p: Path) -> bool:
    return (p / "cache.json").is_file() or (p.is_file() and p.suffix in (".h5", ".hdf5"))


def _is_ave_layout(p: Path) -> bool:
    return (p / "visual_feature.h5").is_file() and (p / "labels.h5").is_file()


def check_finite(where: str, video_id: str, **arrays: np.ndarray) -> None:
    """DataError naming the file and the video when a feature array holds NaN or infinity
    (training would fail deep inside a loss, or learn nothing)."""
    for name, x in arrays.items():
        if not np.isfinite(x).all():
            raise DataError(f"{where}: the {name} features of video {shown(video_id)!r} hold NaN or infinity")


def default_splits(n: int) -> dict[str, torch.Tensor]:
    """Rows without split files: row i goes to val if i % 10 == 8, test if i % 10 == 9, else train."""
    idx = torch.arange(n)
    return {"train": idx[(idx % 10) < 8], "val": idx[idx % 10 == 8], "test": idx[idx % 10 == 9]}


def load_cache(
    path: Path,
    dtype: torch.dtype = torch.float32,
    rows: list[AnnotationRow] | None = None,
    split_texts: dict[str, str] | None = None,
) -> AVData:
    """Annotation rows (the cache's own, or `rows`) joined with the features of their
    videos; splits from `split_texts`, the cache's split files, or `default_splits`."""
    with FeatureCache(path) as cache:
        if rows is None:
            if cache.meta.annotations is None:
                raise CacheError(f"{path}: the cache has no annotations; preprocess with --annotations to train on it")
            rows = parse_annotations(cache.meta.annotations, f"{path} (annotations)", max_seconds=10**6)
        split_texts = cache.meta.splits if split_texts is None else split_texts
        missing = sorted({r.video_id for r in rows if r.video_id not in cache})
        if missing:
            failed = [m for m in missing if m in cache.failures]
            more = f" ({len(failed)} recorded as failed)" if failed else ""
            raise CacheError(
                f"{path}: {len(missing)} annotated videos are not in the cache{more}: {', '.join(missing[:10])}"
                + (" ..." if len(missing) > 10 else "")
            )
        lengths = {cache.entries[r.video_id].num_segments for r in rows}
        if len(lengths) != 1:
            raise CacheError(
                f"{path}: annotated videos have different segment counts {sorted(lengths)}; extract with --segments N"
            )
        T = lengths.pop()
        V = len(rows)
        visual = torch.empty((V, T, 7, 7, 512), dtype=dtype)
        audio = torch.empty((V, T, 128), dtype=dtype)
        for i, row in enumerate(rows):
            v, a = cache.read(row.video_id)
            check_finite(shown(path), row.video_id, visual=v, audio=a)
            visual[i] = torch.from_numpy(np.asarray(v, dtype=np.float32))
            audio[i] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        names = category_index(rows)
        labels = torch.from_numpy(np.stack([labels_for(r, names, T) for r in rows]))
        if split_texts:
            splits = {
                name: torch.from_numpy(
                    np.sort(split_rows(rows, parse_annotations(text, f"split {name}", max_seconds=10**6)))
                )
                for name, text in split_texts.items()
            }
            check_disjoint_splits(splits, lambda name: f"{shown(path)} (split {name})")
        else:
            splits = default_splits(V)
        classes = [names.index(r.category) if r.duration_s > 0 else -1 for r in rows]  # a row's video-level label
        return AVData(
            visual,
            audio,
            labels,
            names,
            [r.video_id for r in rows],
            splits,
            cache.settings,
            shown(path),
            video_labels_from_classes(classes, len(names)),
        )


class CacheDataset(torch.utils.data.Dataset):
    """Rows of a cache's annotations, read lazily one video at a time (nothing is loaded
    whole): item i -> (visual [T, 7, 7, 512], audio [T, 128], labels [T]) as float32 /
    int64 tensors. For training, `load_data` (everything in RAM once) is faster; this is
    for caches larger than RAM or for a quick look."""

    def __init__(self, path: str | Path) -> None:
        self.cache = FeatureCache(path)
        if self.cache.meta.annotations is None:
            raise CacheError(f"{path}: the cache has no annotations (rows to read)")
        self.rows = parse_annotations(self.cache.meta.annotations, f"{path} (annotations)", max_seconds=10**6)
        self.class_names = category_index(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        visual, audio = self.cache.read(row.video_id)
        check_finite(shown(self.cache.path), row.video_id, visual=visual, audio=audio)
        labels = labels_for(row, self.class_names, visual.shape[0])
        return (
            torch.from_numpy(np.asarray(visual, np.float32)),
            torch.from_numpy(np.asarray(audio, np.float32)),
            torch.from_numpy(labels),
        )


def _load_ave(path: Path, dtype: torch.dtype) -> AVData:
    from .ave import read_ave_layout

    return read_ave_layout(path, dtype=dtype)


DATA_FORMATS.register("avel-cache")(DataFormat("avel-cache", _is_cache, load_cache))
DATA_FORMATS.register("ave-layout")(DataFormat("ave-layout", _is_ave_layout, _load_ave))


def load_data(path: str | Path, dtype: torch.dtype = torch.float32) -> AVData:
    """AVData from a feature cache or an AVE-layout directory (recognised by its files)."""
    p = Path(path)
    if not p.exists():
        raise CacheError(f"{shown(p)}: no such feature cache or AVE feature directory")
    for name in DATA_FORMATS.names():
        fmt = DATA_FORMATS.get(name)
        if fmt.accepts(p):
            return fmt.load(p, dtype)
    raise CacheError(
        f"{shown(p)}: neither an avel feature cache (cache.json / .h5) nor the AVE layout (visual_feature.h5 + labels.h5)"
    )
