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
        visual            (T, 7, 7, 512) float32|float16, pool5 (HWC), chunks of ~1 MiB
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
   nothing. A `PartWriter` needs no lock of its own: processes that work for the lock holder's
   run (extraction workers, possibly on other machines sharing the directory) commit their
   own parts concurrently while the holder keeps the lock for the whole run.
3. Temporary files are removed by their writer (renamed on success, deleted on failure).
   Otherwise only the lock holder removes them, when it takes the lock, and only those whose
   writer is provably dead: same host and pid namespace, and no process with that pid and
   start time. Anything else (another host, an older avel's temp file) is left alone.
4. Readers never write. Opening, listing, reading, merging or exporting a cache changes
   nothing in it: a read-only cache is readable, and reading while a run writes is safe.
5. Full disk. A part is written as the features come (a batch of segments at a time, so
   memory never holds a video's features whole); any write error (ENOSPC) discards the
   part's temporary file and is one clear error ("no space left on device while writing
   PART"); committed parts are untouched and a rerun resumes. cache.json, annotations.txt
   and split files are written with plain writes (temp + rename), so a failed creation
   leaves nothing that makes a later run refuse the directory.

Resuming skips ids already in a part.
"""
from __future__ import annotations

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

from ...core.annotations import split_key
from .lock import (
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
from ...core.config import FeatureSettings, check_choice
from ...core.errors import CacheError, ConfigError, SettingsMismatch, UnstorableVideo, shown

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


class VideoSink:
    """One video's group in the part being written, filled a batch of segments at a time
    (`append`), so a video's features are never held whole. `close` records it as finished;
    `discard` removes it (a video that failed half way). Made by `PartWriter.open_video`."""

    # HDF5 allocates whole chunks: at most 64 KiB and 16 segments a chunk (one segment of pool5),
    # so that a 10 s video takes no more room than its features (1 MiB chunks doubled an AVE video)
    CHUNK_BYTES, CHUNK_ROWS = 1 << 16, 16

    def __init__(self, writer: "PartWriter", video_id: str, source_path: str) -> None:
        self.writer, self.id, self.source_path = writer, video_id, source_path
        self.dtype = np.dtype(writer.meta.storage_dtype)
        self.key = encode_key(video_id)
        self.num_segments = 0
        videos = writer._part.f["videos"]
        if self.key in videos:  # the same id again in this part: the later one wins
            del videos[self.key]
        self.group = videos.create_group(self.key)
        try:
            self.group.attrs.update(id=_text_attr(video_id), source_path=_text_attr(source_path))
        except (ValueError, TypeError, KeyError, RuntimeError) as e:
            del videos[self.key]
            raise UnstorableVideo(source_path, f"cannot be stored in the cache ({e})") from None

    def append(self, visual: np.ndarray, audio: np.ndarray, visual_vec: np.ndarray | None = None) -> None:
        """visual [n, 7, 7, 512], audio [n, 128], visual_vec [n, 512]: the next n segments."""
        with self.writer._writing():
            n = int(visual.shape[0])
            for name, x in (("visual", visual), ("audio", audio), ("visual_vec", visual_vec)):
                if x is None:
                    continue
                if name not in self.group:
                    row = int(np.prod(x.shape[1:])) * self.dtype.itemsize
                    self.group.create_dataset(name, shape=(0, *x.shape[1:]), maxshape=(None, *x.shape[1:]),
                                              dtype=self.dtype, chunks=(min(self.CHUNK_ROWS, max(1, self.CHUNK_BYTES // max(1, row))), *x.shape[1:]))
                d = self.group[name]
                d.resize(self.num_segments + n, axis=0)
                d[self.num_segments :] = np.asarray(x, dtype=self.dtype)
            self.num_segments += n

    def close(self, duration_s: float) -> None:
        with self.writer._writing():
            self.group.attrs.update(duration_s=float(duration_s), num_segments=self.num_segments)
        self.writer._finished(self, float(duration_s))

    def discard(self) -> None:
        if self.writer._sink is self:
            self.writer._sink = None
            if self.writer._part is not None:
                with self.writer._writing():
                    del self.group.file[self.group.name]


def new_part_name(seq: int) -> str:
    """part-SEQ-RANDOM.h5: 64 random bits, so writers that count their own SEQ never collide."""
    return f"part-{seq:06d}-{uuid.uuid4().hex[:16]}.h5"


class _AtomicH5:
    """An HDF5 file written through a temporary file that names its writer (rule 2);
    renamed onto the target by `commit`, removed by `discard` and on any failure; OSError
    (a full disk) becomes CacheError. Also a context manager (commit on success)."""

    def __init__(self, path: Path, meta: CacheMeta, provenance: dict[str, str] | None = None) -> None:
        self.path, self.meta = path, meta
        self.tmp = path.parent / temp_name(path.suffix)
        self.f: h5py.File | None = None
        try:
            # no chunk cache: a full disk fails the write that hits it, never a later flush in close,
            # which HDF5 survives badly (a segfault when the chunk cache cannot be written back)
            self.f = h5py.File(self.tmp, "x", rdcc_nbytes=0)
            _write_root(self.f, meta)
            for k, v in (provenance or {}).items():
                self.f.attrs[f"provenance.{k}"] = str(v)
        except BaseException as e:
            self.discard()
            raise write_error(e, self.path) if isinstance(e, OSError) else e from None

    def discard(self) -> None:
        try:
            if self.f is not None:
                self.f.close()
        except Exception:  # closing a file whose writes failed may fail again
            pass
        self.f = None
        remove_quietly(self.tmp)

    def commit(self) -> Path:
        try:
            self.f.close()
            self.f = None
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as e:
            self.discard()
            raise write_error(e, self.path) from None
        except BaseException:
            self.discard()
            raise
        return self.path

    def __enter__(self) -> h5py.File:
        return self.f

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        if isinstance(exc, OSError):
            raise write_error(exc, self.path) from None


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


def part_index(f: h5py.File, part: Path) -> tuple[dict[str, Entry], dict[str, Failure]]:
    """The videos and the failures one part (open as `f`) holds, from attributes only."""
    videos: dict[str, Entry] = {}
    failures: dict[str, Failure] = {}
    with _reading(part):
        for key, g in f.get("videos", {}).items():
            a = g.attrs
            vid = _attr_text(a["id"])
            videos[vid] = Entry(vid, _attr_text(a["source_path"]), float(a["duration_s"]), int(a["num_segments"]), part, key)
        for g in f.get("failures", {}).values():
            a = g.attrs
            vid = _attr_text(a["id"])
            failures[vid] = Failure(vid, _attr_text(a["source_path"]), str(a["kind"]), str(a["error"]))
    return videos, failures


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
            if part != self.path:
                with _reading(part):
                    read_meta(f, str(part)).check_compatible(self.meta, str(part))
            videos, failed = part_index(f, part)
            index.update(videos)
            failures.update(failed)
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
        return PartWriter(self.path, self.meta, max_videos, max_seconds, cache=self, seq=len(self.parts))

    def _committed(self, part: Path, videos: list[Entry], failures: list[Failure]) -> None:
        """A part this process committed: the index follows."""
        self.parts.append(part)
        if self._index is not None:
            for e in videos:
                self._index[e.id] = e
                self._failures.pop(e.id, None)
            for x in failures:
                self._failures[x.id] = x


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
    """Writes videos into a part as they come, a batch of segments at a time (`open_video`)
    or whole (`add`), and commits the part (fsync, rename: rule 2) every `max_videos` videos or
    `max_seconds` seconds, and on close. It needs the cache's directory and meta only, not
    its lock: a process that works for the lock holder's run (a Ray extraction actor, maybe
    on another machine) commits its own parts with one. One video is open at a time; a part
    is committed between videos. After a write fails (a full disk) the part is discarded
    (committed parts are intact) and nothing more is written: the error is raised again on
    every call. Use as a context manager: on the way out a video left open is discarded and
    what is finished is committed."""

    directory: Path
    meta: CacheMeta
    max_videos: int = 64
    max_seconds: float = 30.0
    cache: "FeatureCache | None" = None  # its index follows the commits
    seq: int = 0  # the next part's sequence number (names stay unique without it: 64 random bits)
    provenance: dict[str, str] = field(default_factory=dict)  # who wrote the part (root attrs provenance.NAME)
    committed: list[Path] = field(default_factory=list)
    rejected: list[Failure] = field(default_factory=list)  # videos `add` could not store (recorded as failures)
    _part: _AtomicH5 | None = None
    _sink: VideoSink | None = None
    _videos: list[Entry] = field(default_factory=list)  # finished, in the open part
    _failed: list[Failure] = field(default_factory=list)
    _since: float = field(default_factory=time.monotonic)
    _broken: CacheError | None = None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Any OSError of the part being written (ENOSPC...) breaks the writer: the part is
        discarded and one CacheError names it."""
        self._check()
        try:
            yield
        except OSError as e:
            target = self._part.path if self._part is not None else self.directory
            self._broken = write_error(e, target)
            self._sink = None
            if self._part is not None:
                self._part.discard()
                self._part = None
            raise self._broken from None

    def _check(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _open_part(self) -> _AtomicH5:
        if self._part is None:
            try:
                self._part = _AtomicH5(Path(self.directory) / "parts" / new_part_name(self.seq), self.meta, self.provenance)
            except CacheError as e:
                self._broken = e
                raise
        return self._part

    def open_video(self, video_id: str, source_path: str) -> VideoSink:
        """A sink for one video's features; `close` it (finished) or `discard` it.
        UnstorableVideo: an id or a name the cache cannot hold (recorded by the caller)."""
        self._check()
        if self._sink is not None:
            raise CacheError(f"{shown(self.directory)}: one video at a time ({shown(self._sink.id)!r} is still open)")
        with self._writing():
            self._open_part()
            self._sink = VideoSink(self, video_id, source_path)
        return self._sink

    def _finished(self, sink: VideoSink, duration_s: float) -> None:
        self._sink = None
        self._videos.append(Entry(sink.id, sink.source_path, duration_s, sink.num_segments, self._part.path, sink.key))
        self._maybe_commit()

    def add(self, video: VideoFeatures) -> None:
        """A whole video; one that cannot be stored (its id, or arrays that are not features)
        is recorded as a failure of kind unstorable: one video never fails a part."""
        try:
            sink = self.open_video(video.id, video.source_path)
            try:
                sink.append(video.visual, video.audio, video.visual_vec)
            except (ValueError, TypeError) as e:
                sink.discard()
                raise UnstorableVideo(video.source_path, f"cannot be stored in the cache ({e})") from None
        except UnstorableVideo as e:
            failure = Failure(video.id, video.source_path, e.kind, str(e))
            self.rejected.append(failure)
            return self.fail(failure)
        sink.close(video.duration_s)

    def fail(self, failure: Failure) -> None:
        with self._writing():
            _add_failure(self._open_part().f, failure)
        self._failed.append(failure)
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if len(self._videos) + len(self._failed) >= self.max_videos or time.monotonic() - self._since >= self.max_seconds:
            self.commit()

    def commit(self) -> None:
        self._check()
        if self._sink is not None:
            raise CacheError(f"{shown(self.directory)}: cannot commit while {shown(self._sink.id)!r} is being written")
        if self._part is None:
            return
        part, self._part = self._part, None
        if not self._videos and not self._failed:
            part.discard()  # nothing finished: no part
            return
        try:
            path = part.commit()
        except CacheError as e:
            self._broken = e
            raise
        self.committed.append(path)
        self.seq += 1
        if self.cache is not None:
            self.cache._committed(path, self._videos, self._failed)
        self._videos, self._failed = [], []
        self._since = time.monotonic()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._sink is not None:
            self._sink.discard()  # a video cut short is not kept
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
