"""Part files: the records a part holds (`VideoFeatures` to write, `Entry` and `Failure` as
read back), the part writer (`PartWriter`, a video at a time through `VideoSink`), its commit
rule (rule 2 of pipeline/cache/__init__.py: a temporary file that names its writer, fsynced
and renamed by `AtomicH5`) and the index of one part read from its attributes (`part_index`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ...core.atomic import AtomicFile
from ...core.errors import CacheError, UnstorableVideo, shown
from .keys import attr_text, encode_key, text_attr
from .lock import temp_name, write_error
from .meta import CacheMeta, write_root

if TYPE_CHECKING:
    from .store import FeatureCache


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


def add_failure(f: h5py.File, x: Failure) -> None:
    key = encode_key(x.id)
    if key in f["failures"]:
        del f["failures"][key]
    g = f["failures"].create_group(key)
    g.attrs.update(id=text_attr(x.id), source_path=text_attr(x.source_path), kind=shown(x.kind), error=shown(x.error))


class VideoSink:
    """One video's group in the part being written, filled a batch of segments at a time
    (`append`), so a video's features are never held whole. `close` records it as finished;
    `discard` removes it (a video that failed half way). Made by `PartWriter.open_video`."""

    # HDF5 allocates whole chunks: at most 64 KiB and 16 segments a chunk (one segment of pool5),
    # so that a 10 s video takes no more room than its features (1 MiB chunks doubled an AVE video)
    CHUNK_BYTES, CHUNK_ROWS = 1 << 16, 16

    def __init__(self, writer: PartWriter, video_id: str, source_path: str) -> None:
        self.writer, self.id, self.source_path = writer, video_id, source_path
        self.dtype = np.dtype(writer.meta.storage_dtype)
        self.key = encode_key(video_id)
        self.num_segments = 0
        videos = writer._part.f["videos"]
        if self.key in videos:  # the same id again in this part: the later one wins
            del videos[self.key]
        self.group = videos.create_group(self.key)
        try:
            self.group.attrs.update(id=text_attr(video_id), source_path=text_attr(source_path))
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
                    # fletcher32: a checksum a chunk, verified by HDF5 on every read (a damaged chunk fails)
                    rows = min(self.CHUNK_ROWS, max(1, self.CHUNK_BYTES // max(1, row)))
                    self.group.create_dataset(
                        name,
                        shape=(0, *x.shape[1:]),
                        maxshape=(None, *x.shape[1:]),
                        dtype=self.dtype,
                        chunks=(rows, *x.shape[1:]),
                        fletcher32=True,
                    )
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


class AtomicH5:
    """An HDF5 file written through core's atomic writer under a temporary name that names its
    writer (rule 2: `temp_name`, so that a lock holder can tell when its writer is dead);
    renamed onto the target by `commit`, removed by `discard` and on any failure; OSError
    (a full disk) becomes CacheError. Also a context manager (commit on success)."""

    def __init__(self, path: Path, meta: CacheMeta, provenance: dict[str, str] | None = None) -> None:
        self.path, self.meta = path, meta
        self._file = AtomicFile(path, tmp=temp_name(path.suffix))
        self.tmp = self._file.tmp
        self.f: h5py.File | None = None
        try:
            # no chunk cache: a full disk fails the write that hits it, never a later flush in close,
            # which HDF5 survives badly (a segfault when the chunk cache cannot be written back)
            self.f = h5py.File(self.tmp, "x", rdcc_nbytes=0)
            write_root(self.f, meta)
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
        self._file.discard()

    def commit(self) -> Path:
        try:
            self.f.close()
            self.f = None
            self._file.commit()  # fsync, rename, fsync of the folder
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


@contextmanager
def reading(part: Path, video_id: str | None = None) -> Iterator[None]:
    """HDF5 errors of a damaged part file (overwritten bytes, a truncated copy, a chunk whose
    checksum fails) -> one CacheError naming the part, and the video when reading its features."""
    try:
        yield
    except CacheError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        if video_id is not None:
            raise CacheError(
                f"{shown(part)}: the stored features of video {shown(video_id)!r} are damaged "
                f"({type(e).__name__}: {e}); `avel preprocess --verify` into this cache extracts "
                "them again"
            ) from None
        raise CacheError(
            f"{shown(part)}: a damaged part file ({type(e).__name__}: {e}); move it away and run "
            "the job again to redo its videos"
        ) from None


def part_index(f: h5py.File, part: Path) -> tuple[dict[str, Entry], dict[str, Failure]]:
    """The videos and the failures one part (open as `f`) holds, from attributes only."""
    videos: dict[str, Entry] = {}
    failures: dict[str, Failure] = {}
    with reading(part):
        for key, g in f.get("videos", {}).items():
            a = g.attrs
            vid = attr_text(a["id"])
            videos[vid] = Entry(
                vid, attr_text(a["source_path"]), float(a["duration_s"]), int(a["num_segments"]), part, key
            )
        for g in f.get("failures", {}).values():
            a = g.attrs
            vid = attr_text(a["id"])
            failures[vid] = Failure(vid, attr_text(a["source_path"]), str(a["kind"]), str(a["error"]))
    return videos, failures


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
    cache: FeatureCache | None = None  # its index follows the commits
    seq: int = 0  # the next part's sequence number (names stay unique without it: 64 random bits)
    provenance: dict[str, str] = field(default_factory=dict)  # who wrote the part (root attrs provenance.NAME)
    committed: list[Path] = field(default_factory=list)
    rejected: list[Failure] = field(default_factory=list)  # videos `add` could not store (recorded as failures)
    _part: AtomicH5 | None = None
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

    def _open_part(self) -> AtomicH5:
        if self._part is None:
            try:
                self._part = AtomicH5(
                    Path(self.directory) / "parts" / new_part_name(self.seq), self.meta, self.provenance
                )
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
            add_failure(self._open_part().f, failure)
        self._failed.append(failure)
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if (
            len(self._videos) + len(self._failed) >= self.max_videos
            or time.monotonic() - self._since >= self.max_seconds
        ):
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
            self.cache.add_committed(path, self._videos, self._failed)
        self._videos, self._failed = [], []
        self._since = time.monotonic()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._sink is not None:
            self._sink.discard()  # a video cut short is not kept
        if self._broken is None:
            self.commit()  # what is finished is kept, even when the job stops with an error
