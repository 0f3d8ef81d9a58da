"""The feature cache: HDF5 part files, crash-safe, resumable, one writer at a time.

A cache is a directory:

    CACHE/
      cache.json          settings (FeatureSettings) + storage dtype, written once, atomically
      write.lock          the write lock (an advisory flock) and the record of its holder
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

Keys: a video's group name is `encode_key(id)`, an injective encoding (percent-encoding of
'%', '/', unprintable characters, a leading '.' and the bytes of names that are not UTF-8),
so every id, whatever file name it came from, has a group of its own; `decode_key` gives it
back exactly. The `id` and `source_path` attrs hold the exact text (a UTF-8 string, or its
bytes when it is not valid UTF-8). Readers take ids from the attrs and remember each group's
name, so caches written with the older rule ('/' -> '|') stay readable.

Rules for writers (what makes crashed, concurrent and full-disk writes safe):

1. One writer per cache. A run that writes takes the cache's write lock first
   (`WriteLock.acquire`, done by `create_or_open`): an advisory `flock` on CACHE/write.lock,
   held until the run ends and released by the kernel when its process dies (locks work on
   local filesystems and NFSv4 across machines). The file records the holder (pid, host,
   command, since); a second writer is refused with that record in a one-line error. Nested
   acquisitions within one process share the lock.
2. Parts. A part is written to `parts/.tmp-HOST-PIDNS-PID-START-RANDOM.h5` (its writer's
   identity: host name, pid namespace, pid and the process's start time), fsynced and renamed
   to a unique `parts/part-*.h5`: renaming is atomic, so a reader sees whole parts or
   nothing. `commit_part` needs no lock of its own: processes that work for the lock holder's
   run (extraction workers, possibly on other machines sharing the directory) commit their
   own parts concurrently while the holder keeps the lock for the whole run.
3. Temporary files are removed by their writer (renamed on success, deleted on failure).
   Otherwise only the lock holder removes them, when it takes the lock, and only those whose
   writer is provably dead: same host and pid namespace, and no process with that pid and
   start time. Anything else (another host, an older avel's temp file) is left alone.
4. Readers never write. Opening, listing, reading, merging or exporting a cache changes
   nothing in it: a read-only cache is readable, and reading while a run writes is safe.
5. Full disk. A part is assembled in memory (HDF5 into a BytesIO) and written with plain
   writes, so ENOSPC is one clear error ("no space left on device while writing PART"), the
   temporary file is removed, committed parts are untouched, and a rerun resumes.
   cache.json, annotations.txt and split files are written the same way (temp + rename), so
   a failed creation leaves nothing that makes a later run refuse the directory.

Resuming skips ids already in a part.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from avel.pipeline.annotations import split_key
from avel.pipeline.cachelock import (
    LOCK_FILE,
    TEMP_PREFIX,
    WriteLock,
    fsync_dir,
    make_dir,
    remove_quietly,
    temp_name,
    write_error,
    write_file_atomic,
)
from avel.pipeline.config import FeatureSettings, check_choice
from avel.pipeline.errors import CacheError, ConfigError, SettingsMismatch, shown

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
    key: str = ""  # the group's name in its part (older parts used another rule than encode_key)


# -- keys and text attributes -------------------------------------------------------------------
def _needs_escape(c: str, first: bool) -> bool:
    return c in "%/" or not c.isprintable() or (first and c == ".")


def encode_key(video_id: str) -> str:
    """The HDF5 group name of an id: '%', '/', unprintable characters (lone surrogates of
    names that are not UTF-8 included) and a leading '.' become %XX of their UTF-8 bytes.
    Injective ('%' is always escaped) and total; "" -> "%"."""
    if not video_id:
        return "%"
    out = []
    for i, c in enumerate(video_id):
        if _needs_escape(c, i == 0):
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
        else:
            out.append(c)
    return "".join(out)


def decode_key(key: str) -> str:
    """The id of a group name written by `encode_key` (exactly)."""
    if key == "%":
        return ""
    out, pending, i = [], bytearray(), 0
    while i < len(key):
        if key[i] == "%":
            pending.append(int(key[i + 1 : i + 3], 16))
            i += 3
            continue
        if pending:
            out.append(pending.decode("utf-8", "surrogatepass"))
            pending.clear()
        out.append(key[i])
        i += 1
    if pending:
        out.append(pending.decode("utf-8", "surrogatepass"))
    return "".join(out)


def _text_attr(text: str) -> str | np.bytes_:
    """An attribute value holding `text` exactly: a UTF-8 string, or its bytes when it holds
    surrogates (a file name that is not UTF-8)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return np.bytes_(text.encode("utf-8", "surrogatepass"))


def _attr_text(value) -> str:
    """The text `_text_attr` stored (h5py gives bytes back as a str with escaped bytes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, np.bytes_, np.void)):
        return bytes(value).decode("utf-8", "surrogatepass")
    return str(value)


# -- metadata ----------------------------------------------------------------------------------------
@dataclass
class CacheMeta:
    settings: FeatureSettings
    storage_dtype: str = "float32"
    annotations: str | None = None  # AVE-format text
    splits: dict[str, str] = field(default_factory=dict)  # split name -> AVE-format rows (trainSet.txt...)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, FeatureSettings):
            raise ConfigError("feature_settings", self.settings, "must be a FeatureSettings")
        check_choice("storage_dtype", self.storage_dtype, STORAGE_DTYPES)

    def check_compatible(self, other: "CacheMeta", where: str) -> None:
        diffs = self.settings.differences(other.settings)
        if self.storage_dtype != other.storage_dtype:
            diffs.append(f"storage_dtype: {self.storage_dtype!r} != {other.storage_dtype!r}")
        if diffs:
            raise SettingsMismatch(f"{where}: features made with other settings ({'; '.join(diffs)})")


def _meta_from(where, settings, storage_dtype, annotations=None, splits=None) -> CacheMeta:
    """CacheMeta of values read from a file; a bad value is a CacheError naming the file."""
    try:
        if isinstance(settings, (str, bytes)):
            settings = FeatureSettings.from_json(settings)
        else:
            settings = FeatureSettings.from_dict(settings)
        return CacheMeta(settings, storage_dtype, annotations, dict(splits or {}))
    except ConfigError as e:
        raise CacheError(f"{shown(where)}: {e}") from None


def read_meta(h5: h5py.File, where: str) -> CacheMeta:
    if h5.attrs.get("avel_format") != FORMAT:
        raise CacheError(f"{shown(where)}: not an avel feature file (no avel_format={FORMAT} attribute)")
    if "feature_settings" not in h5.attrs:
        raise CacheError(f"{shown(where)}: no feature_settings attribute")
    ann = h5.attrs.get("annotations")
    splits = {k[len("split."):]: str(v) for k, v in h5.attrs.items() if k.startswith("split.")}
    return _meta_from(where, h5.attrs["feature_settings"], str(h5.attrs.get("storage_dtype", "float32")),
                      None if ann is None else str(ann), splits)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CacheError(f"{shown(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CacheError(f"{shown(path)}: cannot be read ({e.strerror or e})") from None


def _read_cache_json(path: Path) -> CacheMeta:
    """The CacheMeta of a directory cache (cache.json, annotations.txt, splits/*.txt)."""
    meta_file = path / "cache.json"
    try:
        d = json.loads(_read_text(meta_file))
    except ValueError as e:
        raise CacheError(f"{shown(meta_file)}: not valid JSON ({e}); a cache.json is written once, atomically: "
                         "was it edited by hand?") from None
    if not isinstance(d, dict):
        raise CacheError(f"{shown(meta_file)}: a JSON {type(d).__name__}, expected an object with the cache's settings")
    if d.get("format", FORMAT) != FORMAT:
        raise CacheError(f"{shown(meta_file)}: format {d.get('format')!r}, expected {FORMAT!r}")
    if "settings" not in d:
        raise CacheError(f"{shown(meta_file)}: no \"settings\" (the FeatureSettings of the cache)")
    ann = path / "annotations.txt"
    splits = {split_key(p.name): _read_text(p) for p in sorted((path / "splits").glob("*.txt"))}
    return _meta_from(meta_file, d["settings"], d.get("storage_dtype", "float32"),
                      _read_text(ann) if ann.is_file() else None, splits)


# -- parts -------------------------------------------------------------------------------------------
def _write_root(f: h5py.File, meta: CacheMeta) -> None:
    f.attrs["avel_format"] = FORMAT
    f.attrs["feature_settings"] = meta.settings.to_json()
    f.attrs["storage_dtype"] = meta.storage_dtype
    for k, v in meta.settings.to_dict().items():
        f.attrs[f"setting.{k}"] = "" if v is None else v
    if meta.annotations is not None:
        f.attrs["annotations"] = meta.annotations
    for name, text in meta.splits.items():
        f.attrs[f"split.{name}"] = text
    f.require_group("videos")
    f.require_group("failures")


def _add_failure(f: h5py.File, x: Failure) -> None:
    key = encode_key(x.id)
    if key in f["failures"]:
        del f["failures"][key]
    g = f["failures"].create_group(key)
    g.attrs.update(id=_text_attr(x.id), source_path=_text_attr(x.source_path), kind=shown(x.kind),
                   error=shown(x.error))


def _add_video(f: h5py.File, v: VideoFeatures, dtype: np.dtype) -> None:
    key = encode_key(v.id)
    g = f["videos"].create_group(key)  # an id given twice fails here, before anything is removed
    try:
        g.attrs.update(id=_text_attr(v.id), source_path=_text_attr(v.source_path), duration_s=float(v.duration_s),
                       num_segments=v.num_segments)
        # contiguous, uncompressed: whole-dataset reads are the common case
        g.create_dataset("visual", data=np.asarray(v.visual, dtype=dtype))
        g.create_dataset("audio", data=np.asarray(v.audio, dtype=dtype))
        if v.visual_vec is not None:
            g.create_dataset("visual_vec", data=np.asarray(v.visual_vec, dtype=dtype))
    except BaseException:
        del f["videos"][key]
        raise


def part_image(meta: CacheMeta, videos: list[VideoFeatures], failures: list[Failure]) -> tuple[memoryview, list[Failure]]:
    """The bytes of a part file holding `videos` and `failures`, assembled in memory (HDF5
    writes into a BytesIO; nothing touches the disk). A video that cannot be stored is not
    stored and comes back as a Failure (kind "unstorable"), which the part records too: one
    video never fails a part."""
    dtype = np.dtype(meta.storage_dtype)
    rejected: list[Failure] = []
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _write_root(f, meta)
        for v in videos:
            try:
                _add_video(f, v, dtype)
            except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
                rejected.append(Failure(v.id, v.source_path, "unstorable",
                                        f"{shown(v.source_path)}: cannot be stored in the cache ({e})"))
        for x in [*failures, *rejected]:
            _add_failure(f, x)
    return buffer.getbuffer(), rejected


def new_part_name(seq: int) -> str:
    """part-SEQ-RANDOM.h5: 64 random bits, so writers that count their own SEQ never collide."""
    return f"part-{seq:06d}-{uuid.uuid4().hex[:16]}.h5"


def commit_part(directory: str | os.PathLike, meta: CacheMeta, videos: list[VideoFeatures], failures: list[Failure],
                *, seq: int = 0) -> tuple[Path, list[Failure]]:
    """Commit one part into the cache `directory` (rule 2): assembled in memory, written to a
    temporary file that names its writer, fsynced, renamed to a new unique part name. Returns
    the part and the videos it could not store (recorded in it as failures). Safe to call
    from several processes at once; CacheError on a full disk, nothing left behind."""
    path = Path(directory) / "parts" / new_part_name(seq)
    image, rejected = part_image(meta, videos, failures)
    write_file_atomic(path, image)
    return path, rejected


class _AtomicH5:
    """An HDF5 file written on disk (too large to assemble in memory: merge) through a
    temporary file that names its writer; renamed onto the target on success, removed on any
    failure; OSError (a full disk) becomes CacheError."""

    def __init__(self, path: Path, meta: CacheMeta) -> None:
        self.path, self.meta = path, meta
        self.tmp = path.parent / temp_name(path.suffix)

    def __enter__(self) -> h5py.File:
        try:
            self.f = h5py.File(self.tmp, "x")
            _write_root(self.f, self.meta)
        except BaseException as e:
            self._discard()
            raise write_error(e, self.path) if isinstance(e, OSError) else e from None
        return self.f

    def _discard(self) -> None:
        try:
            if getattr(self, "f", None) is not None:
                self.f.close()
        except Exception:  # closing a file whose writes failed may fail again
            pass
        remove_quietly(self.tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            if isinstance(exc, OSError):
                raise write_error(exc, self.path) from None
            return
        try:
            self.f.close()
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as e:
            self._discard()
            raise write_error(e, self.path) from None
        except BaseException:
            self._discard()
            raise


# -- reading -------------------------------------------------------------------------------------
@contextmanager
def _reading(part: Path) -> Iterator[None]:
    """HDF5 errors of a damaged part file (overwritten bytes, a truncated copy) -> one CacheError."""
    try:
        yield
    except CacheError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CacheError(f"{shown(part)}: a damaged part file ({type(e).__name__}: {e}); move it away and run "
                         "the job again to redo its videos") from None


class FeatureCache:
    """Read (and, for directories, append to) a feature cache. Reads are lazy slices
    through cached read-only handles; listing ids never loads arrays; reading never writes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handles: dict[Path, h5py.File] = {}
        self._lock: WriteLock | None = None
        if self.path.is_dir():
            if not (self.path / "cache.json").is_file():
                raise CacheError(f"{shown(self.path)}: not a feature cache (no cache.json)")
            self.meta = _read_cache_json(self.path)
            self.parts = sorted((self.path / "parts").glob("part-*.h5"))
        elif self.path.is_file():
            f = self._open(self.path)
            try:
                with _reading(self.path):
                    self.meta = read_meta(f, str(self.path))
            except CacheError:
                self.close()
                raise
            self.parts = [self.path]
        else:
            raise CacheError(f"{shown(self.path)}: no such feature cache")
        self._index: dict[str, Entry] | None = None
        self._failures: dict[str, Failure] | None = None

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: str | os.PathLike, meta: CacheMeta) -> "FeatureCache":
        """Open the directory cache at `path` for writing, creating it with `meta` if it does not
        exist; the returned cache holds the write lock until `close()` (CacheLocked when another
        process holds it). An existing cache made with other settings is refused."""
        path = Path(path)
        if path.is_file():
            raise CacheError(f"{shown(path)}: is a file; a cache to write into is a directory")
        _check_fresh_or_cache(path)
        lock = WriteLock.acquire(path)
        try:
            if not (path / "cache.json").is_file():
                _check_fresh_or_cache(path)
                _create(path, meta)
            cache = cls(path)
            cache._lock = lock
        except BaseException:
            lock.release()
            raise
        try:
            cache.meta.check_compatible(meta, str(path))
            if meta.annotations is not None and cache.meta.annotations is None:
                write_file_atomic(path / "annotations.txt", meta.annotations.encode("utf-8"))
                cache.meta.annotations = meta.annotations
            for name, text in meta.splits.items():
                if name not in cache.meta.splits:
                    make_dir(path / "splits")
                    write_file_atomic(path / "splits" / f"{name}.txt", text.encode("utf-8"))
                    cache.meta.splits[name] = text
        except BaseException:
            cache.close()
            raise
        return cache

    # -- index ----------------------------------------------------------------------------------
    def _scan(self) -> None:
        index: dict[str, Entry] = {}
        failures: dict[str, Failure] = {}
        for part in self.parts:
            f = self._open(part)
            with _reading(part):
                if part != self.path:
                    read_meta(f, str(part)).check_compatible(self.meta, str(part))
                for key, g in f.get("videos", {}).items():
                    a = g.attrs
                    vid = _attr_text(a["id"])
                    index[vid] = Entry(vid, _attr_text(a["source_path"]), float(a["duration_s"]), int(a["num_segments"]),
                                       part, key)
                for g in f.get("failures", {}).values():
                    a = g.attrs
                    vid = _attr_text(a["id"])
                    failures[vid] = Failure(vid, _attr_text(a["source_path"]), str(a["kind"]), str(a["error"]))
        for vid in index:
            failures.pop(vid, None)  # a later success supersedes a recorded failure
        self._index, self._failures = index, failures

    def _open(self, part: Path) -> h5py.File:
        f = self._handles.get(part)
        if f is None:
            try:
                f = self._handles[part] = h5py.File(part, "r")
            except OSError as e:
                raise CacheError(f"{shown(part)}: cannot be read ({e})") from None
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
            raise CacheError(f"{shown(self.path)}: no video {shown(video_id)!r} in the cache") from None
        f = self._open(entry.part)
        with _reading(entry.part):
            g = f["videos"][entry.key or encode_key(video_id)]
            if pooled:
                visual = g["visual_vec"][()] if "visual_vec" in g else g["visual"][()].mean(axis=(1, 2))
            else:
                visual = g["visual"][()]
            return visual, g["audio"][()]

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------
    def writer(self, max_videos: int = 64, max_seconds: float = 30.0) -> "PartWriter":
        if not self.path.is_dir():
            raise CacheError(f"{shown(self.path)}: a single-file cache is read-only; write into a directory")
        if self._lock is None:
            self._lock = WriteLock.acquire(self.path)
        return PartWriter(self, max_videos, max_seconds)


_OWN_NAMES = {LOCK_FILE, "parts", "splits", "annotations.txt"}


def _check_fresh_or_cache(path: Path) -> None:
    """A directory to create a cache in holds nothing but what a cache creation that failed
    (full disk, a kill) leaves: refuse anything else."""
    if not path.is_dir() or (path / "cache.json").is_file():
        return
    foreign = [p.name for p in path.iterdir() if p.name not in _OWN_NAMES and not p.name.startswith(TEMP_PREFIX)]
    if (path / "parts").is_dir() and any((path / "parts").glob("part-*.h5")):
        foreign.append("parts/part-*.h5 without cache.json")
    if foreign:
        raise CacheError(f"{shown(path)}: exists and is not an avel feature cache (holds {shown(', '.join(sorted(foreign)[:5]))})")


def _create(path: Path, meta: CacheMeta) -> None:
    """Write a new cache's files; cache.json last (its presence makes the directory a cache)."""
    make_dir(path / "parts")
    if meta.annotations is not None:
        write_file_atomic(path / "annotations.txt", meta.annotations.encode("utf-8"))
    if meta.splits:
        make_dir(path / "splits")
        for name, text in meta.splits.items():
            write_file_atomic(path / "splits" / f"{name}.txt", text.encode("utf-8"))
    doc = {"format": FORMAT, "settings": meta.settings.to_dict(), "storage_dtype": meta.storage_dtype}
    write_file_atomic(path / "cache.json", json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"))


@dataclass
class PartWriter:
    """Buffers finished videos and commits them as a new part every `max_videos` videos or
    `max_seconds` seconds, and on close. Use as a context manager. After a commit fails (a full
    disk), nothing more is written: the error is raised again on every call."""

    cache: FeatureCache
    max_videos: int
    max_seconds: float
    videos: list[VideoFeatures] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    committed_parts: int = 0
    rejected: list[Failure] = field(default_factory=list)  # videos a part could not store
    _since: float = field(default_factory=time.monotonic)
    _broken: CacheError | None = None

    def add(self, video: VideoFeatures) -> None:
        self._check()
        self.videos = [v for v in self.videos if v.id != video.id] + [video]
        self._maybe_commit()

    def fail(self, failure: Failure) -> None:
        self._check()
        self.failed = [x for x in self.failed if x.id != failure.id] + [failure]
        self._maybe_commit()

    def _check(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _maybe_commit(self) -> None:
        if len(self.videos) + len(self.failed) >= self.max_videos or time.monotonic() - self._since >= self.max_seconds:
            self.commit()

    def commit(self) -> None:
        self._check()
        if not self.videos and not self.failed:
            return
        try:
            path, rejected = commit_part(self.cache.path, self.cache.meta, self.videos, self.failed,
                                         seq=len(self.cache.parts))
        except CacheError as e:
            self._broken = e
            raise
        self.cache.parts.append(path)
        if self.cache._index is not None:
            bad = {x.id for x in rejected}
            for v in self.videos:
                if v.id not in bad:
                    self.cache._index[v.id] = Entry(v.id, v.source_path, float(v.duration_s), v.num_segments, path,
                                                    encode_key(v.id))
                    self.cache._failures.pop(v.id, None)
            for x in [*self.failed, *rejected]:
                self.cache._failures[x.id] = x
        self.rejected.extend(rejected)
        self.videos, self.failed = [], []
        self.committed_parts += 1
        self._since = time.monotonic()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._broken is None:
            self.commit()  # what is finished is kept, even when the job stops with an error


def _stored_bytes(cache: FeatureCache, entry: Entry) -> int:
    f = cache._open(entry.part)
    with _reading(entry.part):
        g = f["videos"][entry.key]
        return sum(ds.id.get_storage_size() for ds in g.values() if isinstance(ds, h5py.Dataset))

def merge_caches(sources: list[str | os.PathLike], out: str | os.PathLike) -> tuple[int, int]:
    """Join caches (directories or files) into one single-file cache `out`, written
    atomically and copied group by group inside HDF5 (nothing is loaded whole); mixed
    settings, and a disk without room for the result, are refused before anything is
    written. Returns (videos, failures)."""
    if not sources:
        raise CacheError("merge: no source caches")
    caches: list[FeatureCache] = []
    try:
        for s in sources:
            caches.append(FeatureCache(s))
        meta = caches[0].meta
        for c in caches[1:]:
            c.meta.check_compatible(meta, str(c.path))
        annotations = next((c.meta.annotations for c in caches if c.meta.annotations is not None), None)
        splits = next((c.meta.splits for c in caches if c.meta.splits), {})
        chosen: dict[str, tuple[FeatureCache, Entry]] = {}
        failed: dict[str, Failure] = {}
        for c in caches:
            for vid, e in c.entries.items():
                chosen.setdefault(vid, (c, e))
            for vid, x in c.failures.items():
                failed.setdefault(vid, x)
        failed = {vid: x for vid, x in failed.items() if vid not in chosen}
        out = Path(out)
        make_dir(out.parent)
        needed = sum(_stored_bytes(c, e) for c, e in chosen.values()) + (1 << 20) + 4096 * len(chosen)
        free = shutil.disk_usage(out.parent).free
        if free < needed:
            raise CacheError(f"no space left on device while writing {shown(out)}: it needs about {needed >> 20} MiB, "
                             f"{free >> 20} MiB are free (nothing was written)")
        with _AtomicH5(out, CacheMeta(meta.settings, meta.storage_dtype, annotations, splits)) as f:
            for vid, (c, e) in chosen.items():
                src = c._open(e.part)
                with _reading(e.part):
                    src.copy(src["videos"][e.key], f["videos"], name=encode_key(vid))
            for x in failed.values():
                _add_failure(f, x)
        return len(chosen), len(failed)
    finally:
        for c in caches:
            c.close()
