"""The feature cache: HDF5 part files, crash-safe and resumable.

A cache is a directory:

    CACHE/
      cache.json          settings (FeatureSettings) + storage dtype, written once, atomically
      annotations.txt     the AVE-format rows, when the job had annotations (optional)
      splits/NAME.txt     split rows (train/val/test, AVE format), when the job had them
      parts/part-*.h5     committed part files (the set of parts is the index)

or a single `.h5` file with the same layout as one part (what `avel extract --out x.h5`
and `avel merge --out x.h5` write). A part file:

    /                     attrs: avel_format, feature_settings (JSON), storage_dtype,
                          annotations and split.NAME (AVE text, optional), and
                          setting.NAME: each feature setting as its own attr
    /videos/<key>/        one group per video; attrs id, source_path, duration_s, num_segments
        visual            (T, 7, 7, 512) float32|float16, pool5 (HWC)
        audio             (T, 128)
        visual_vec        (T, 512), optional: pool5 mean over 7x7
    /failures/<key>       attrs id, source_path, kind, error

Crash safety: a part is written to a temporary file, fsynced and renamed into place,
so after a kill at any moment the cache holds whole parts only; leftovers of a killed
writer are removed on the next open. Resuming skips ids already in a part.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from avel.pipeline.config import FeatureSettings
from avel.pipeline.annotations import split_key
from avel.pipeline.errors import CacheError, SettingsMismatch

FORMAT = "avel-features/1"
STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class VideoFeatures:
    id: str
    source_path: str
    duration_s: float
    visual: np.ndarray  # [T, 7, 7, 512]
    audio: np.ndarray  # [T, 128]
    visual_vec: np.ndarray | None = None  # [T, 512]

    @property
    def num_segments(self) -> int:
        return int(self.visual.shape[0])


@dataclass(frozen=True)
class Failure:
    id: str
    source_path: str
    kind: str
    error: str


@dataclass(frozen=True)
class Entry:
    id: str
    source_path: str
    duration_s: float
    num_segments: int
    part: Path


def key_of(video_id: str) -> str:
    """HDF5 group name of an id ('/' is the only character HDF5 names cannot hold)."""
    return video_id.replace("/", "|")


@dataclass
class CacheMeta:
    settings: FeatureSettings
    storage_dtype: str = "float32"
    annotations: str | None = None  # AVE-format text
    splits: dict[str, str] = field(default_factory=dict)  # split name -> AVE-format rows (trainSet.txt...)

    def check_compatible(self, other: "CacheMeta", where: str) -> None:
        diffs = self.settings.differences(other.settings)
        if self.storage_dtype != other.storage_dtype:
            diffs.append(f"storage_dtype: {self.storage_dtype!r} != {other.storage_dtype!r}")
        if diffs:
            raise SettingsMismatch(f"{where}: features made with other settings ({'; '.join(diffs)})")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _AtomicPart:
    """A part file being written: a temporary file in the target's directory, fsynced and
    renamed onto the target on success, removed on failure."""

    def __init__(self, path: Path, meta: CacheMeta) -> None:
        self.path, self.meta = path, meta

    def __enter__(self) -> h5py.File:
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".h5")
        os.close(fd)
        self.f = h5py.File(self.tmp, "w")
        f, meta = self.f, self.meta
        f.attrs["avel_format"] = FORMAT
        f.attrs["feature_settings"] = meta.settings.to_json()
        f.attrs["storage_dtype"] = meta.storage_dtype
        for k, v in meta.settings.to_dict().items():
            f.attrs[f"setting.{k}"] = "" if v is None else v
        if meta.annotations is not None:
            f.attrs["annotations"] = meta.annotations
        for name, text in meta.splits.items():
            f.attrs[f"split.{name}"] = text
        f.create_group("videos")
        f.create_group("failures")
        return f

    def __exit__(self, exc_type, *rest) -> None:
        self.f.close()
        try:
            if exc_type is None:
                with open(self.tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, self.path)
                _fsync_dir(self.path.parent)
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


class VideoSink:
    """One video's group in an open part file, written a chunk of segments at a time
    (`append`), so a video's features never need to be held whole. `close` records it as
    finished; `discard` removes it (a video that failed half way)."""

    CHUNK_BYTES = 1 << 20  # HDF5 chunk size of the growing datasets: ~1 MiB

    def __init__(self, f: h5py.File, dtype: np.dtype, video_id: str, source_path: str,
                 writer: "PartWriter | None" = None) -> None:
        self.id, self.source_path, self.dtype, self.writer = video_id, source_path, dtype, writer
        self.group = f["videos"].create_group(key_of(video_id))
        self.num_segments = 0

    def append(self, visual: np.ndarray, audio: np.ndarray, visual_vec: np.ndarray | None = None) -> None:
        """visual [n, 7, 7, 512], audio [n, 128], visual_vec [n, 512]: the next n segments."""
        n = int(visual.shape[0])
        for name, x in (("visual", visual), ("audio", audio), ("visual_vec", visual_vec)):
            if x is None:
                continue
            if name not in self.group:
                row = int(np.prod(x.shape[1:])) * self.dtype.itemsize
                self.group.create_dataset(name, shape=(0, *x.shape[1:]), maxshape=(None, *x.shape[1:]), dtype=self.dtype,
                                          chunks=(max(1, self.CHUNK_BYTES // max(1, row)), *x.shape[1:]))
            d = self.group[name]
            d.resize(self.num_segments + n, axis=0)
            d[self.num_segments :] = np.asarray(x, dtype=self.dtype)
        self.num_segments += n

    def close(self, duration_s: float) -> None:
        self.group.attrs.update(id=self.id, source_path=self.source_path, duration_s=float(duration_s),
                                num_segments=self.num_segments)
        if self.writer is not None:
            self.writer._finished(self, float(duration_s))

    def discard(self) -> None:
        del self.group.file[self.group.name]
        if self.writer is not None:
            self.writer._sink = None


def write_part(path: Path, meta: CacheMeta, videos: list[VideoFeatures], failures: list[Failure]) -> None:
    """Write one part file atomically."""
    dtype = np.dtype(meta.storage_dtype)
    with _AtomicPart(path, meta) as f:
        for v in videos:
            sink = VideoSink(f, dtype, v.id, v.source_path)
            sink.append(v.visual, v.audio, v.visual_vec)
            sink.close(v.duration_s)
        for x in failures:
            _write_failure(f, x)


def _write_failure(f: h5py.File, x: Failure) -> None:
    g = f["failures"].create_group(key_of(x.id))
    g.attrs.update(id=x.id, source_path=x.source_path, kind=x.kind, error=x.error)


def read_meta(h5: h5py.File, where: str) -> CacheMeta:
    if h5.attrs.get("avel_format") != FORMAT:
        raise CacheError(f"{where}: not an avel feature file (no avel_format={FORMAT} attribute)")
    ann = h5.attrs.get("annotations")
    splits = {k[len("split."):]: str(v) for k, v in h5.attrs.items() if k.startswith("split.")}
    return CacheMeta(
        FeatureSettings.from_json(h5.attrs["feature_settings"]),
        str(h5.attrs.get("storage_dtype", "float32")),
        None if ann is None else str(ann),
        splits,
    )


class FeatureCache:
    """Read (and, for directories, append to) a feature cache. Reads are lazy slices
    through cached read-only handles; listing ids never loads arrays."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handles: dict[Path, h5py.File] = {}
        if self.path.is_dir():
            meta_file = self.path / "cache.json"
            if not meta_file.is_file():
                raise CacheError(f"{self.path}: not a feature cache (no cache.json)")
            d = json.loads(meta_file.read_text())
            ann = self.path / "annotations.txt"
            self.meta = CacheMeta(
                FeatureSettings.from_dict(d["settings"]), d.get("storage_dtype", "float32"),
                ann.read_text() if ann.is_file() else None,
                {split_key(p.name): p.read_text() for p in sorted((self.path / "splits").glob("*.txt"))},
            )
            for leftover in (self.path / "parts").glob(".tmp-*"):
                leftover.unlink(missing_ok=True)  # a writer killed mid-part
            self.parts = sorted((self.path / "parts").glob("part-*.h5"))
        elif self.path.is_file():
            try:
                with h5py.File(self.path, "r") as f:
                    self.meta = read_meta(f, str(self.path))
            except OSError as e:
                raise CacheError(f"{self.path}: not a readable HDF5 file ({e})") from None
            self.parts = [self.path]
        else:
            raise CacheError(f"{self.path}: no such feature cache")
        self._index: dict[str, Entry] | None = None
        self._failures: dict[str, Failure] | None = None

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: str | os.PathLike, meta: CacheMeta) -> "FeatureCache":
        """Open the directory cache at `path`, creating it with `meta` if it does not exist;
        an existing cache made with other settings is refused."""
        path = Path(path)
        if path.is_file():
            raise CacheError(f"{path}: is a file; a cache to write into is a directory")
        if not (path / "cache.json").is_file():
            if path.is_dir() and any(path.iterdir()):
                raise CacheError(f"{path}: exists and is not an avel feature cache")
            (path / "parts").mkdir(parents=True, exist_ok=True)
            if meta.annotations is not None:
                (path / "annotations.txt").write_text(meta.annotations)
            _write_json_atomic(path / "cache.json", {
                "format": FORMAT, "settings": meta.settings.to_dict(), "storage_dtype": meta.storage_dtype,
            })
        cache = cls(path)
        cache.meta.check_compatible(meta, str(path))
        if meta.annotations is not None and cache.meta.annotations is None:
            (path / "annotations.txt").write_text(meta.annotations)
            cache.meta.annotations = meta.annotations
        for name, text in meta.splits.items():
            if name not in cache.meta.splits:
                (path / "splits").mkdir(exist_ok=True)
                (path / "splits" / f"{name}.txt").write_text(text)
                cache.meta.splits[name] = text
        return cache

    # -- index ----------------------------------------------------------------------------------
    def _scan(self) -> None:
        index: dict[str, Entry] = {}
        failures: dict[str, Failure] = {}
        for part in self.parts:
            f = self._open(part)
            if part != self.path:
                read_meta(f, str(part)).check_compatible(self.meta, str(part))
            for g in f.get("videos", {}).values():
                a = g.attrs
                index[str(a["id"])] = Entry(str(a["id"]), str(a["source_path"]), float(a["duration_s"]), int(a["num_segments"]), part)
            for g in f.get("failures", {}).values():
                a = g.attrs
                failures[str(a["id"])] = Failure(str(a["id"]), str(a["source_path"]), str(a["kind"]), str(a["error"]))
        for vid in index:
            failures.pop(vid, None)  # a later success supersedes a recorded failure
        self._index, self._failures = index, failures

    def _open(self, part: Path) -> h5py.File:
        f = self._handles.get(part)
        if f is None:
            try:
                f = self._handles[part] = h5py.File(part, "r")
            except OSError as e:
                raise CacheError(f"{part}: cannot be read ({e})") from None
        return f

    @property
    def entries(self) -> dict[str, Entry]:
        if self._index is None:
            self._scan()
        return self._index

    @property
    def failures(self) -> dict[str, Failure]:
        if self._failures is None:
            self._scan()
        return self._failures

    @property
    def settings(self) -> FeatureSettings:
        return self.meta.settings

    def ids(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, video_id: str, *, pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(visual [T,7,7,512] or pooled [T,512], audio [T,128]) of one video, as stored."""
        try:
            entry = self.entries[video_id]
        except KeyError:
            raise CacheError(f"{self.path}: no video {video_id!r} in the cache") from None
        g = self._open(entry.part)["videos"][key_of(video_id)]
        if pooled:
            visual = g["visual_vec"][()] if "visual_vec" in g else g["visual"][()].mean(axis=(1, 2))
        else:
            visual = g["visual"][()]
        return visual, g["audio"][()]

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------
    def writer(self, max_videos: int = 64, max_seconds: float = 30.0) -> "PartWriter":
        if not self.path.is_dir():
            raise CacheError(f"{self.path}: a single-file cache is read-only; write into a directory")
        return PartWriter(self, max_videos, max_seconds)


@dataclass
class PartWriter:
    """Writes finished videos into a part file as they come and commits it (fsync, rename)
    every `max_videos` videos or `max_seconds` seconds, and on close. A video is written
    whole (`add`) or a chunk at a time (`open_video`); one video is open at a time, and a
    part is committed only between videos. Use as a context manager: on the way out,
    a video left open is discarded and what is finished is committed."""

    cache: FeatureCache
    max_videos: int
    max_seconds: float
    committed_parts: int = 0
    _part: _AtomicPart | None = None
    _file: h5py.File | None = None
    _sink: VideoSink | None = None
    _videos: list[Entry] = field(default_factory=list)  # finished, in the open part
    _failed: list[Failure] = field(default_factory=list)
    _since: float = field(default_factory=time.monotonic)

    def _open_part(self) -> h5py.File:
        if self._file is None:
            name = f"part-{len(self.cache.parts):06d}-{uuid.uuid4().hex[:8]}.h5"
            self._part = _AtomicPart(self.cache.path / "parts" / name, self.cache.meta)
            self._file = self._part.__enter__()
        return self._file

    def open_video(self, video_id: str, source_path: str) -> VideoSink:
        """A sink for one video's features; `close` it (finished) or `discard` it."""
        if self._sink is not None:
            raise CacheError(f"{self.cache.path}: one video at a time ({self._sink.id!r} is still open)")
        self._sink = VideoSink(self._open_part(), np.dtype(self.cache.meta.storage_dtype), video_id, source_path, self)
        return self._sink

    def _finished(self, sink: VideoSink, duration_s: float) -> None:
        self._sink = None
        self._videos.append(Entry(sink.id, sink.source_path, duration_s, sink.num_segments, self._part.path))
        self._maybe_commit()

    def add(self, video: VideoFeatures) -> None:
        sink = self.open_video(video.id, video.source_path)
        sink.append(video.visual, video.audio, video.visual_vec)
        sink.close(video.duration_s)

    def fail(self, failure: Failure) -> None:
        _write_failure(self._open_part(), failure)
        self._failed.append(failure)
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if len(self._videos) + len(self._failed) >= self.max_videos or time.monotonic() - self._since >= self.max_seconds:
            self.commit()

    def commit(self) -> None:
        if self._sink is not None:
            raise CacheError(f"{self.cache.path}: cannot commit while {self._sink.id!r} is being written")
        if self._file is None:
            return
        part, self._part, self._file = self._part, None, None
        if not self._videos and not self._failed:
            part.__exit__(CacheError, None, None)  # nothing finished: no part
            return
        part.__exit__(None, None, None)
        self.cache.parts.append(part.path)
        if self.cache._index is not None:
            for e in self._videos:
                self.cache._index[e.id] = e
                self.cache._failures.pop(e.id, None)
            for x in self._failed:
                self.cache._failures[x.id] = x
        self._videos, self._failed = [], []
        self.committed_parts += 1
        self._since = time.monotonic()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._sink is not None:
            self._sink.discard()  # a video cut short is not kept
        self.commit()  # what is finished is kept, even when the job stops with an error


def iter_features(cache: FeatureCache, ids: list[str], pooled: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for vid in ids:
        visual, audio = cache.read(vid, pooled=pooled)
        yield vid, visual, audio


def merge_caches(sources: list[str | os.PathLike], out: str | os.PathLike) -> tuple[int, int]:
    """Join caches (directories or files) into one single-file cache `out`, written
    atomically and copied group by group inside HDF5 (nothing is loaded whole); mixed
    settings are refused before anything is written. Returns (videos, failures)."""
    if not sources:
        raise CacheError("merge: no source caches")
    caches = [FeatureCache(s) for s in sources]
    meta = caches[0].meta
    for c in caches[1:]:
        c.meta.check_compatible(meta, str(c.path))
    annotations = next((c.meta.annotations for c in caches if c.meta.annotations is not None), None)
    splits = next((c.meta.splits for c in caches if c.meta.splits), {})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    failed: dict[str, tuple[FeatureCache, Failure]] = {}
    with _AtomicPart(out, CacheMeta(meta.settings, meta.storage_dtype, annotations, splits)) as f:
        for c in caches:
            for vid, e in c.entries.items():
                if vid not in seen:
                    seen.add(vid)
                    c._open(e.part).copy(f"videos/{key_of(vid)}", f["videos"])
            for vid, x in c.failures.items():
                failed.setdefault(vid, (c, x))
        failed = {vid: v for vid, v in failed.items() if vid not in seen}
        for _, x in failed.values():
            _write_failure(f, x)
    for c in caches:
        c.close()
    return len(seen), len(failed)
