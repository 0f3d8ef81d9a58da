"""The store: `FeatureCache` reads a cache (a directory of parts or one `.h5` file) through
cached read-only handles: its settings, the ids and failures it holds (from attributes only)
and each video's arrays; `create_or_open` makes a directory cache or opens one for writing,
under the write lock (the layout and the writer rules: pipeline/cache/__init__.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np

from ...core import jsonio
from ...core.atomic import move_aside
from ...core.config import FeatureSettings
from ...core.errors import CacheError, shown
from .keys import encode_key
from .labels import apply_labels
from .lock import LOCK_FILE, TEMP_PREFIX, WriteLock, make_dir, write_cache_file, write_error
from .meta import FORMAT, CacheMeta, read_cache_json, read_meta
from .parts import AtomicH5, Entry, Failure, PartWriter, add_failure, new_part_name, part_index, reading


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
            self.meta = read_cache_json(self.path)
            self.parts = sorted((self.path / "parts").glob("part-*.h5"))
        elif self.path.is_file():
            f = self.open_part(self.path)
            try:
                with reading(self.path):
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
    def create_or_open(cls, path: str | os.PathLike, meta: CacheMeta, *, verify: bool = False) -> FeatureCache:
        """Open the directory cache at `path` for writing, creating it with `meta` if it does not
        exist; the returned cache holds the write lock until `close()` (CacheLocked when another
        process holds it). An existing cache made with other settings is refused; annotations and
        splits in `meta` that differ from the stored ones replace them, said in one line on
        stderr (labels.py: `apply_labels`). `verify`: every stored video is read and checked
        first, and the damaged ones are taken out of the cache (`repair`), so the job extracts
        them again."""
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
            change = apply_labels(path, cache.meta, meta)
            if change:
                print(f"{shown(path)}: {change} -> stored (the features are unchanged)", file=sys.stderr)
            if verify:
                for line in cache.repair():
                    print(line, file=sys.stderr)
        except BaseException:
            cache.close()
            raise
        return cache

    # -- index ----------------------------------------------------------------------------------
    def _scan(self) -> None:
        index: dict[str, Entry] = {}
        failures: dict[str, Failure] = {}
        for part in self.parts:
            f = self.open_part(part)
            if part != self.path:
                with reading(part):
                    read_meta(f, str(part)).check_compatible(self.meta, str(part))
            videos, failed = part_index(f, part)
            index.update(videos)
            failures.update(failed)
        for vid in index:
            failures.pop(vid, None)  # a later success supersedes a recorded failure
        self._index, self._failures = index, failures

    def open_part(self, part: Path) -> h5py.File:
        """The read-only handle of one of its parts, opened once and kept until `close`."""
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
        f = self.open_part(entry.part)
        with reading(entry.part, video_id):  # a chunk whose checksum fails: one line naming the part and the video
            g = f["videos"][entry.key or encode_key(video_id)]
            if pooled:
                visual = g["visual_vec"][()] if "visual_vec" in g else g["visual"][()].mean(axis=(1, 2))
            else:
                visual = g["visual"][()]
            return visual, g["audio"][()]

    # -- checksums --------------------------------------------------------------------------------
    def damaged(self, ids=None) -> dict[Path, list[str]]:
        """{part: ids of its videos whose features fail to read}: every stored array is read
        (a slice of segments at a time), so HDF5 checks every chunk's fletcher32 checksum
        (parts written before checksums were stored can only fail on a damaged structure).
        Reads the whole cache (or the videos `ids`): a job asks for it (`--verify`), a resume
        does not."""
        found: dict[Path, list[str]] = {}
        for vid, entry in self.entries.items():
            if ids is not None and vid not in ids:
                continue
            try:
                with reading(entry.part, vid):
                    g = self.open_part(entry.part)["videos"][entry.key or encode_key(vid)]
                    for ds in g.values():
                        if isinstance(ds, h5py.Dataset):
                            for i in range(0, max(1, ds.shape[0]), 64):
                                ds[i : i + 64]
            except CacheError:
                found.setdefault(entry.part, []).append(vid)
        return found

    def repair(self) -> list[str]:
        """Take damaged videos (`damaged`) out of this directory cache, under its write lock:
        each damaged part's intact videos and failures are copied into a new part (committed
        first), then the damaged part is renamed parts/damaged-NAME.h5 (kept for a look, never
        read again). A job then extracts the damaged videos again. One line a damaged part."""
        if self._lock is None or not self.path.is_dir():
            raise CacheError(f"{shown(self.path)}: a cache is repaired by its writer (preprocess --verify)")
        lines = []
        found = self.damaged()
        while found:
            lines += [self._take_out(part, ids) for part, ids in found.items()]
            # a damaged copy may have hidden an older one of the same id: check those too
            found = self.damaged({vid for ids in found.values() for vid in ids})
        return lines

    def _take_out(self, part: Path, ids: list[str]) -> str:
        """`repair` of one part: its intact videos and failures into a new part, then the part
        renamed damaged-NAME; the line that says so."""
        f = self.open_part(part)
        provenance = {k[len("provenance.") :]: str(v) for k, v in f.attrs.items() if k.startswith("provenance.")}
        kept = [e for e in self.entries.values() if e.part == part and e.id not in ids]
        failed = list(part_index(f, part)[1].values())
        if kept or failed:
            target = part.parent / new_part_name(len(self.parts))
            with AtomicH5(target, self.meta, provenance) as out:
                with reading(part):
                    for e in kept:
                        f.copy(f["videos"][e.key], out["videos"], name=e.key)
                for x in failed:
                    add_failure(out, x)
            self.parts.append(target)
        self._handles.pop(part).close()
        try:
            move_aside(part, "damaged-" + part.name)
        except OSError as e:
            raise write_error(e, part) from None
        self.parts.remove(part)
        self._index = self._failures = None
        shown_ids = ", ".join(repr(shown(i)) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
        return (
            f"{shown(part)}: {len(ids)} damaged video{'' if len(ids) == 1 else 's'} ({shown_ids}) taken out "
            f"(the part is now {shown(part.with_name('damaged-' + part.name).name)}); the job extracts them again"
        )

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------
    def writer(self, max_videos: int = 64, max_seconds: float = 30.0) -> PartWriter:
        if not self.path.is_dir():
            raise CacheError(f"{shown(self.path)}: a single-file cache is read-only; write into a directory")
        if self._lock is None:
            self._lock = WriteLock.acquire(self.path)
        return PartWriter(self.path, self.meta, max_videos, max_seconds, cache=self, seq=len(self.parts))

    def add_committed(self, part: Path, videos: list[Entry], failures: list[Failure]) -> None:
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
        raise CacheError(
            f"{shown(path)}: exists and is not an avel feature cache (holds {shown(', '.join(sorted(foreign)[:5]))})"
        )


def _create(path: Path, meta: CacheMeta) -> None:
    """Write a new cache's files; cache.json last (its presence makes the directory a cache)."""
    make_dir(path / "parts")
    if meta.annotations is not None:
        write_cache_file(path / "annotations.txt", meta.annotations.encode("utf-8"))
    if meta.splits:
        make_dir(path / "splits")
        for name, text in meta.splits.items():
            write_cache_file(path / "splits" / f"{name}.txt", text.encode("utf-8"))
    doc = {"format": FORMAT, "settings": meta.settings.to_dict(), "storage_dtype": meta.storage_dtype}
    write_cache_file(
        path / "cache.json", jsonio.dumps(doc, nonfinite="refuse", indent=2, sort_keys=True).encode("utf-8")
    )
