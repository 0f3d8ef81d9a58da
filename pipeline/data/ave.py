"""The AVE release layout (Tian et al., ECCV 2018): a directory of single-dataset HDF5 files.

    visual_feature.h5      avadataset [V, T, 7, 7, 512]  pool5 features (released: float64)
    audio_feature.h5       avadataset [V, T, 128]        VGGish (released: float64)
    labels.h5              avadataset [V, T, K+1]        one-hot, index K = background
    labels_closs.h5        avadataset [V, T]     float32 0/1 event mask
    mil_labels.h5          avadataset [V, K+1]   float32 video-level label
    visual_feature_vec.h5  avadataset [V, T, 512]        pool5 mean over the 7x7 cells (CML)
    {train,val,test}_order.h5        order [N] int64 row indices into Annotations.txt
    {train,val,test}_order_match.h5  order [N] int64 (the CML split)

`write_ave_layout` writes this (plus `Annotations.txt` and an `avel_settings.json` sidecar
with the FeatureSettings when they are known); `read_ave_layout` reads it into `AVData`,
the real released files included: the 7.7-GB float64 visual file is read in row chunks and
converted chunk by chunk, never held whole in float64.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from ...core.annotations import (
    AnnotationRow,
    category_index,
    labels_for,
    read_annotations,
    write_annotations,
)
from ...core.atomic import atomic_path, write_text_atomic
from ...core.config import FeatureSettings
from ...core.errors import AnnotationError, CacheError, DataError
from .dataset import AVData, check_disjoint_splits

log = logging.getLogger(__name__)

KEY = "avadataset"  # the one dataset of every feature / label file
ORDER_KEY = "order"  # the one dataset of every split file
VISUAL = "visual_feature.h5"
AUDIO = "audio_feature.h5"
LABELS = "labels.h5"
LABELS_CLOSS = "labels_closs.h5"
MIL_LABELS = "mil_labels.h5"
VISUAL_VEC = "visual_feature_vec.h5"
ANNOTATIONS = "Annotations.txt"
SETTINGS_SIDECAR = "avel_settings.json"
# split name in AVData.splits -> file name
SPLIT_FILES = {
    "train": "train_order.h5",
    "val": "val_order.h5",
    "test": "test_order.h5",
    "train_match": "train_order_match.h5",
    "val_match": "val_order_match.h5",
    "test_match": "test_order_match.h5",
}
CHUNK_BYTES = 64 << 20  # row chunks of about this many bytes (in the file's dtype)
_EXPORT_DTYPES = {"float32": np.float32, "float64": np.float64}


# --- writing -------------------------------------------------------------------------
def _atomic_h5(path: Path, key: str, shape: tuple[int, ...], dtype, fill) -> None:
    """Create `path` holding one plain contiguous dataset `key` (no chunking, no compression)
    atomically (core/atomic.py). `fill(ds)` writes the values."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(key, shape=shape, dtype=dtype)
            fill(ds)


def _rows_per_chunk(row_shape: tuple[int, ...], itemsize: int) -> int:
    return max(1, CHUNK_BYTES // max(1, int(np.prod(row_shape)) * itemsize))


def _write_chunked(ds: h5py.Dataset, tensor: torch.Tensor, transform=None) -> None:
    """Copy `tensor` into `ds` a row chunk at a time, in ds.dtype (optionally transformed)."""
    V = tensor.shape[0]
    step = _rows_per_chunk(tuple(tensor.shape[1:]), 8)
    for i in range(0, V, step):
        part = tensor[i : i + step].detach().cpu()
        if transform is not None:
            part = transform(part)
        ds[i : i + part.shape[0]] = part.to(torch.float64).numpy().astype(ds.dtype, copy=False)


def _derive_rows(data: AVData) -> list[AnnotationRow] | None:
    """Annotation rows recovered from the labels, when each video has one contiguous event of
    one class (None otherwise: such labels cannot be written in the AVE format)."""
    rows = []
    labels = data.labels.cpu().numpy()
    for v, vid in enumerate(data.video_ids):
        event = np.flatnonzero(labels[v] != data.background)
        classes = np.unique(labels[v][event])
        if len(classes) != 1 or event[-1] - event[0] + 1 != len(event):
            return None
        rows.append(AnnotationRow(data.class_names[classes[0]], vid, "good", int(event[0]), int(event[-1]) + 1))
    return rows


def write_ave_layout(
    out_dir: str | os.PathLike,
    data: AVData,
    *,
    dtype: str = "float32",
    annotations: Sequence[AnnotationRow] | None = None,
    visual_vec: bool = True,
) -> list[Path]:
    """Export `data` in the AVE release layout; returns the files written.

    Features (visual, audio, visual_feature_vec) and labels.h5 are stored in `dtype`
    ("float32", or "float64" like the release); labels_closs and mil_labels are float32.
    Splits are taken from `data.splits` (names in SPLIT_FILES; indices written sorted, i.e. in
    annotation order). `annotations` (one row per video, matching the labels) are written as
    Annotations.txt; without them rows are derived from the labels when every video has one
    contiguous single-class event (all-background videos cannot be, so then no
    Annotations.txt is written and the reader falls back to `class_i` names).
    mil_labels: the event class(es) present in the video's segment labels; a video with no
    event segment (AVE's zero-length row) gets background.
    """
    if dtype not in _EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_EXPORT_DTYPES)}, not {dtype!r}")
    np_dtype = _EXPORT_DTYPES[dtype]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    V, T = data.labels.shape
    K1 = data.num_classes
    if tuple(data.visual.shape[:2]) != (V, T) or tuple(data.visual.shape[2:]) != (7, 7, 512):
        raise ValueError(f"visual must be [{V}, {T}, 7, 7, 512], got {list(data.visual.shape)}")
    if tuple(data.audio.shape) != (V, T, 128):
        raise ValueError(f"audio must be [{V}, {T}, 128], got {list(data.audio.shape)}")
    if len(data.video_ids) != V:
        raise ValueError(f"{len(data.video_ids)} video ids for {V} videos")
    unknown = sorted(set(data.splits) - set(SPLIT_FILES))
    if unknown:
        raise ValueError(f"splits {unknown} have no AVE file (known: {', '.join(SPLIT_FILES)})")
    labels = data.labels.detach().cpu().to(torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() > data.background):
        raise ValueError(f"labels must lie in 0..{data.background} (background = {data.background})")

    rows = list(annotations) if annotations is not None else _derive_rows(data)
    if annotations is not None:
        if len(rows) != V:
            raise AnnotationError(f"{len(rows)} annotation rows for {V} videos")
        names = category_index(rows)
        if names != list(data.class_names):
            raise AnnotationError(
                f"the annotations' categories in order of first appearance {names} differ from data.class_names"
            )
        for v, row in enumerate(rows):
            if not np.array_equal(labels_for(row, names, T), labels[v].numpy()):
                raise AnnotationError(
                    f"annotation row {v + 1} ({row.to_line()}) disagrees with the labels of video {v}"
                )
    elif rows is not None and category_index(rows) != list(data.class_names):
        rows = None  # first-appearance order would not give back data.class_names
    if rows is None:
        log.warning(
            "no Annotations.txt written for %s: labels are not one contiguous event per video "
            "or do not name every class in order; readers will see class_i names",
            out,
        )

    written: list[Path] = []

    def emit(name: str, key: str, shape, dt, fill) -> None:
        _atomic_h5(out / name, key, tuple(shape), dt, fill)
        written.append(out / name)

    emit(VISUAL, KEY, data.visual.shape, np_dtype, lambda ds: _write_chunked(ds, data.visual))
    emit(AUDIO, KEY, data.audio.shape, np_dtype, lambda ds: _write_chunked(ds, data.audio))
    if visual_vec:
        emit(
            VISUAL_VEC,
            KEY,
            (V, T, 512),
            np_dtype,
            lambda ds: _write_chunked(ds, data.visual, lambda x: x.to(torch.float64).mean(dim=(2, 3))),
        )
    onehot = np.zeros((V, T, K1), dtype=np_dtype)
    np.put_along_axis(onehot, labels.numpy()[..., None], 1, axis=-1)
    emit(LABELS, KEY, onehot.shape, np_dtype, lambda ds: ds.__setitem__(Ellipsis, onehot))
    mask = (labels != data.background).numpy().astype(np.float32)
    emit(LABELS_CLOSS, KEY, mask.shape, np.float32, lambda ds: ds.__setitem__(Ellipsis, mask))
    mil = onehot.max(axis=1).astype(np.float32)  # [V, K+1]: classes present in the video
    has_event = mil[:, : data.background].any(axis=1)
    mil[has_event, data.background] = 0  # background only for videos with no event segment
    emit(MIL_LABELS, KEY, mil.shape, np.float32, lambda ds: ds.__setitem__(Ellipsis, mil))
    for name, indices in data.splits.items():
        order = np.sort(torch.as_tensor(indices).cpu().numpy().astype(np.int64))
        if order.size and (order[0] < 0 or order[-1] >= V):
            raise ValueError(f"split {name!r} has row indices outside 0..{V - 1}")
        emit(SPLIT_FILES[name], ORDER_KEY, order.shape, np.int64, lambda ds, o=order: ds.__setitem__(Ellipsis, o))

    if rows is not None:
        write_annotations(out / ANNOTATIONS, rows, header=True)
        written.append(out / ANNOTATIONS)
    sidecar = out / SETTINGS_SIDECAR
    if data.settings is not None:
        write_text_atomic(sidecar, data.settings.to_json() + "\n")
        written.append(sidecar)
    else:
        sidecar.unlink(missing_ok=True)  # a stale sidecar would claim settings we do not know
    return written


# --- reading -------------------------------------------------------------------------
def _dataset(path: Path, f: h5py.File, key: str) -> h5py.Dataset:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise CacheError(f"{path}: no {key!r} dataset (keys: {', '.join(f.keys()) or 'none'})")
    return f[key]


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise CacheError(f"{path}: missing (the AVE layout needs this file)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"{path}: not a readable HDF5 file ({e})") from None


def _read_features(path: Path, shape_tail: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """[V, *shape_tail] in `dtype`, read a row chunk at a time into a reused buffer."""
    with _open(path) as f:
        ds = _dataset(path, f, KEY)
        if ds.ndim != 1 + len(shape_tail) or tuple(ds.shape[2:]) != shape_tail[1:]:
            raise CacheError(f"{path}: {KEY} has shape {ds.shape}, expected [V, {', '.join(map(str, shape_tail))}]")
        if ds.dtype.kind != "f":
            raise CacheError(f"{path}: {KEY} has dtype {ds.dtype}, expected floating point")
        V = ds.shape[0]
        out = torch.empty(ds.shape, dtype=dtype)
        step = _rows_per_chunk(tuple(ds.shape[1:]), ds.dtype.itemsize)
        buf = np.empty((min(step, V),) + tuple(ds.shape[1:]), dtype=ds.dtype)
        for i in range(0, V, step):
            n = min(step, V - i)
            ds.read_direct(buf, source_sel=np.s_[i : i + n], dest_sel=np.s_[0:n])
            finite = np.isfinite(buf[:n]).reshape(n, -1).all(axis=1)
            if not finite.all():
                raise DataError(f"{path}: row {i + int(np.argmin(finite))} of {KEY} holds NaN or infinity")
            out[i : i + n] = torch.from_numpy(buf[:n])  # converts to `dtype` chunk by chunk
        return out


def _read_order(path: Path, V: int) -> torch.Tensor:
    with _open(path) as f:
        ds = _dataset(path, f, ORDER_KEY)
        order = np.asarray(ds[...])
    if order.ndim != 1 or order.dtype.kind not in "iu":
        raise CacheError(f"{path}: {ORDER_KEY} must be a 1-d integer array, got {order.dtype} {order.shape}")
    order = order.astype(np.int64)
    if order.size and (order.min() < 0 or order.max() >= V):
        raise CacheError(f"{path}: row indices outside 0..{V - 1}")
    return torch.from_numpy(order)


def _one_hot_labels(path: Path, onehot: np.ndarray) -> np.ndarray:
    """labels.h5's [V, T, K+1] -> [V, T] class indices; every second must be one-hot over the
    classes, background (the last) included: a multi-hot, negative, fractional or all-zero
    row has no one label (argmax would pick one silently)."""
    if onehot.dtype.kind not in "fiub":
        raise CacheError(f"{path}: {KEY} has dtype {onehot.dtype}, expected numbers 0/1")
    ok = np.isin(onehot, (0, 1)).all(axis=-1) & (onehot.sum(axis=-1) == 1)
    if not ok.all():
        v, t = (int(i) for i in np.argwhere(~ok)[0])
        row = ", ".join(f"{x:g}" for x in onehot[v, t].tolist())
        raise CacheError(
            f"{path}: {KEY} is not one-hot at video {v}, second {t} ([{row:.80}]); every second "
            f"needs exactly one 1 over the {onehot.shape[-1]} classes, background (the last) included"
        )
    return onehot.argmax(axis=-1).astype(np.int64)


def _read_mil_labels(path: Path, V: int, K1: int) -> torch.Tensor:
    """mil_labels.h5 -> [V, K+1] float32 0/1 (the video-level labels of weak supervision)."""
    with _open(path) as f:
        mil = np.asarray(_dataset(path, f, KEY)[...])
    if mil.shape != (V, K1):
        raise CacheError(f"{path}: {KEY} has shape {mil.shape}, expected [{V}, {K1}] (videos, classes + background)")
    if mil.dtype.kind not in "fiub" or not np.isin(mil, (0, 1)).all() or (mil.sum(axis=1) == 0).any():
        raise CacheError(f"{path}: {KEY} must be 0/1 with at least one class per video")
    return torch.from_numpy(mil.astype(np.float32))


def read_ave_layout(
    directory: str | os.PathLike,
    annotations: str | os.PathLike | Sequence[AnnotationRow] | None = None,
    dtype: torch.dtype = torch.float32,
) -> AVData:
    """Read an AVE-layout directory (the released files or a `write_ave_layout` export).

    Labels come from labels.h5 (one-hot per second; the last index is background); the
    video-level labels from mil_labels.h5 when present (else `video_labels` is None), read on
    first use of `video_labels` only. Class names and video
    ids come from `annotations` (rows, or a path) or else an Annotations.txt in the directory;
    without either, classes are named class_0.. and videos row_0.. (with a logged note).
    Splits: every *_order.h5 / *_order_match.h5 present. settings: from the
    avel_settings.json sidecar, else None (unknown, as for the released files)."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be a floating torch dtype, not {dtype}")
    d = Path(directory)
    if not d.is_dir():
        raise CacheError(f"{d}: not a directory (expected the AVE feature layout)")
    with _open(d / LABELS) as f:
        onehot = np.asarray(_dataset(d / LABELS, f, KEY)[...])
    if onehot.ndim != 3 or onehot.shape[-1] < 2:
        raise CacheError(f"{d / LABELS}: {KEY} has shape {onehot.shape}, expected [V, T, classes + 1]")
    V, T, K1 = onehot.shape
    background = K1 - 1
    labels = _one_hot_labels(d / LABELS, onehot)

    visual = _read_features(d / VISUAL, (T, 7, 7, 512), dtype)
    audio = _read_features(d / AUDIO, (T, 128), dtype)
    for path, x in ((d / VISUAL, visual), (d / AUDIO, audio)):
        if tuple(x.shape[:2]) != (V, T):
            raise CacheError(f"{path}: {x.shape[0]} videos x {x.shape[1]} segments, but {LABELS} has {V} x {T}")

    rows: list[AnnotationRow] | None
    source = None
    if annotations is None:
        if (d / ANNOTATIONS).is_file():
            source = d / ANNOTATIONS
            rows = read_annotations(source, max_seconds=T)
        else:
            rows = None
    elif isinstance(annotations, (str, os.PathLike)):
        source = Path(annotations)
        rows = read_annotations(source, max_seconds=T)
    else:
        source = "the given annotations"
        rows = list(annotations)
    if rows is not None:
        class_names = category_index(rows)
        if len(rows) != V:
            raise AnnotationError(f"{source}: {len(rows)} rows, but {LABELS} has {V} videos")
        if len(class_names) != background:
            raise AnnotationError(
                f"{source}: {len(class_names)} categories, but {LABELS} has {background} (+ background)"
            )
        video_ids = [row.video_id for row in rows]
    else:
        log.warning(
            "%s: no Annotations.txt; classes are named class_0..class_%d and videos row_0..row_%d",
            d,
            background - 1,
            V - 1,
        )
        class_names = [f"class_{k}" for k in range(background)]
        video_ids = [f"row_{v}" for v in range(V)]

    splits = {name: _read_order(d / file, V) for name, file in SPLIT_FILES.items() if (d / file).is_file()}
    check_disjoint_splits(splits, lambda name: str(d / SPLIT_FILES[name]))
    # read (and checked) on first use: only weak supervision needs them
    video_labels = (lambda: _read_mil_labels(d / MIL_LABELS, V, K1)) if (d / MIL_LABELS).is_file() else None
    settings = None
    if (d / SETTINGS_SIDECAR).is_file():
        try:
            settings = FeatureSettings.from_json((d / SETTINGS_SIDECAR).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as e:
            raise CacheError(f"{d / SETTINGS_SIDECAR}: not a FeatureSettings JSON ({e})") from None
    return AVData(
        visual=visual,
        audio=audio,
        labels=torch.from_numpy(labels),
        class_names=class_names,
        video_ids=video_ids,
        splits=splits,
        settings=settings,
        source=str(d),
        video_labels=video_labels,
    )
