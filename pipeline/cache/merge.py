"""Merging caches: `merge_caches` joins caches (directories or files) into one single-file
cache, copied group by group inside HDF5. An id held by more than one cache is merged as one
when its features are identical, else refused or resolved as `on_conflict` says (fail |
first | last); annotations and splits are merged row by row (`merge_rows`), refused when two
caches give one id different rows."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import h5py

from ...core.annotations import HEADER, AnnotationRow, parse_annotations
from ...core.config import check_choice
from ...core.errors import AvelError, CacheError, shown
from .keys import encode_key
from .lock import make_dir
from .meta import CacheMeta
from .parts import AtomicH5, Entry, Failure, add_failure, reading
from .store import FeatureCache

ON_CONFLICT = ("fail", "first", "last")
_ROWS_A_SLICE = 64  # segments compared at a time (a long video is never loaded whole)


def _stored_bytes(cache: FeatureCache, entry: Entry) -> int:
    f = cache.open_part(entry.part)
    with reading(entry.part):
        g = f["videos"][entry.key]
        return sum(ds.id.get_storage_size() for ds in g.values() if isinstance(ds, h5py.Dataset))


def same_features(vid: str, a: tuple[FeatureCache, Entry], b: tuple[FeatureCache, Entry]) -> bool:
    """Whether two stored copies of video `vid` hold bit-identical features (the same arrays, shapes, dtypes
    and values), compared a slice of segments at a time."""
    (ca, ea), (cb, eb) = a, b
    with reading(ea.part, vid):
        ga = ca.open_part(ea.part)["videos"][ea.key]
    with reading(eb.part, vid):
        gb = cb.open_part(eb.part)["videos"][eb.key]
    names = sorted(k for k, v in ga.items() if isinstance(v, h5py.Dataset))
    if names != sorted(k for k, v in gb.items() if isinstance(v, h5py.Dataset)):
        return False
    for name in names:
        da, db = ga[name], gb[name]
        if da.shape != db.shape or da.dtype != db.dtype:
            return False
        for i in range(0, da.shape[0], _ROWS_A_SLICE):
            with reading(ea.part, vid):
                xa = da[i : i + _ROWS_A_SLICE]
            with reading(eb.part, vid):
                xb = db[i : i + _ROWS_A_SLICE]
            if xa.tobytes() != xb.tobytes():
                return False
    return True


def merge_rows(texts: list[tuple[str, str]], what: str, *, header: bool = True) -> str | None:
    """AVE rows of several caches ((where, text) each) merged: every id's rows in order of first
    appearance; the same id in two caches must have the same rows (CacheError naming the id
    and both caches). One text, or identical texts, are kept as they are; merged ones start with
    the AVE header when `header` (annotations; split files have none)."""
    if not texts:
        return None
    if all(text == texts[0][1] for _, text in texts):
        return texts[0][1]
    rows: dict[str, list[AnnotationRow]] = {}
    source: dict[str, str] = {}
    for where, text in texts:
        try:
            parsed = parse_annotations(text, f"{where} ({what})", max_seconds=10**6)
        except AvelError as e:
            raise CacheError(f"merge: {e}") from None
        by_id: dict[str, list[AnnotationRow]] = defaultdict(list)
        for r in parsed:
            by_id[r.video_id].append(r)
        for vid, rs in by_id.items():
            if vid in rows and rows[vid] != rs:
                raise CacheError(
                    f"merge: video {shown(vid)!r} has other {what} rows in {shown(where)} than in "
                    f"{shown(source[vid])} ({' | '.join(r.to_line() for r in rs)} != "
                    f"{' | '.join(r.to_line() for r in rows[vid])}); correct one of them"
                )
            rows.setdefault(vid, rs)
            source.setdefault(vid, where)
    lines = [HEADER] if header else []
    return "".join(line + "\n" for line in lines + [r.to_line() for rs in rows.values() for r in rs])


def merged_meta(caches: list[FeatureCache]) -> CacheMeta:
    """The settings of the first cache (the others are checked against them), and the
    annotations and splits of all of them (`merge_rows`)."""
    meta = caches[0].meta
    for c in caches[1:]:
        c.meta.check_compatible(meta, str(c.path))
    annotations = merge_rows(
        [(str(c.path), c.meta.annotations) for c in caches if c.meta.annotations is not None], "annotation"
    )
    names = sorted({name for c in caches for name in c.meta.splits})
    splits = {
        name: merge_rows(
            [(str(c.path), c.meta.splits[name]) for c in caches if name in c.meta.splits], f"{name} split", header=False
        )
        for name in names
    }
    return CacheMeta(meta.settings, meta.storage_dtype, annotations, splits)


def merge_caches(
    sources: list[str | os.PathLike], out: str | os.PathLike, *, on_conflict: str = "fail"
) -> tuple[int, int]:
    """Join caches (directories or files) into one single-file cache `out`, written
    atomically and copied group by group inside HDF5 (nothing is loaded whole); mixed
    settings, disagreeing annotations or splits, and a disk without room for the result, are
    refused before anything is written. An id in several caches with identical features is
    kept once; with different features, `on_conflict` "fail" refuses (naming the id and both
    caches), "first" / "last" keep the one of the first / last cache that has it (recorded
    failures likewise). Returns (videos, failures)."""
    check_choice("on_conflict", on_conflict, ON_CONFLICT)
    if not sources:
        raise CacheError("merge: no source caches")
    caches: list[FeatureCache] = []
    try:
        for s in sources:
            caches.append(FeatureCache(s))
        meta = merged_meta(caches)
        chosen: dict[str, tuple[FeatureCache, Entry]] = {}
        failed: dict[str, Failure] = {}
        for c in caches:
            for vid, e in c.entries.items():
                held = chosen.get(vid)
                if held is None:
                    chosen[vid] = (c, e)
                elif same_features(vid, held, (c, e)):
                    continue  # the same video twice (e.g. overlapping shards): kept once
                elif on_conflict == "fail":
                    raise CacheError(
                        f"merge: video {shown(vid)!r} has different features in {shown(held[0].path)} and "
                        f"{shown(c.path)}; keep one with --on-conflict first|last"
                    )
                elif on_conflict == "last":
                    chosen[vid] = (c, e)
            for vid, x in c.failures.items():
                if on_conflict == "last" or vid not in failed:
                    failed[vid] = x
        failed = {vid: x for vid, x in failed.items() if vid not in chosen}
        out = Path(out)
        make_dir(out.parent)
        needed = sum(_stored_bytes(c, e) for c, e in chosen.values()) + (1 << 20) + 4096 * len(chosen)
        free = shutil.disk_usage(out.parent).free
        if free < needed:
            raise CacheError(
                f"no space left on device while writing {shown(out)}: it needs about {needed >> 20} MiB, "
                f"{free >> 20} MiB are free (nothing was written)"
            )
        with AtomicH5(out, meta) as f:
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
