"""Merging caches: `merge_caches` joins caches (directories or files) into one single-file
cache, copied group by group inside HDF5."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py

from ...core.errors import CacheError, shown
from .keys import encode_key
from .lock import make_dir
from .meta import CacheMeta
from .parts import AtomicH5, Entry, Failure, add_failure, reading
from .store import FeatureCache


def _stored_bytes(cache: FeatureCache, entry: Entry) -> int:
    f = cache.open_part(entry.part)
    with reading(entry.part):
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
        with AtomicH5(out, CacheMeta(meta.settings, meta.storage_dtype, annotations, splits)) as f:
            for vid, (c, e) in chosen.items():
                src = c.open_part(e.part)
                with reading(e.part):
                    src.copy(src["videos"][e.key], f["videos"], name=encode_key(vid))
            for x in failed.values():
                add_failure(f, x)
        return len(chosen), len(failed)
    finally:
        for c in caches:
            c.close()
