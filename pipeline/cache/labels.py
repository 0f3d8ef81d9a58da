"""What a cache was built from: the annotation and split rows a job gives are compared with the
ones the cache stores (`label_changes`), and a difference is applied (`apply_labels`): the
features stay, annotations.txt and splits/*.txt are replaced (each file atomically; a crash
half way is finished by the next run, which compares again), and one line names the change.
A job without annotations (a folder of videos) compares nothing."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ...core.annotations import AnnotationRow, parse_annotations, split_key
from ...core.errors import AvelError
from .lock import make_dir, remove_quietly, write_cache_file
from .meta import CacheMeta


def _rows(text: str | None) -> list[AnnotationRow] | None:
    """The rows of stored or given AVE text; None when there is none or it does not parse."""
    if text is None:
        return None
    try:
        return parse_annotations(text, max_seconds=10**6)
    except AvelError:
        return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def rows_difference(old: list[AnnotationRow] | None, new: list[AnnotationRow] | None) -> str | None:
    """'2 rows relabelled, 1 added, 1 removed' (or 'rows reordered'); None when the rows are equal."""
    if old == new:
        return None
    if old is None or new is None:
        return "unreadable rows replaced" if new is not None else "removed"
    by_old, by_new = defaultdict(list), defaultdict(list)
    for r in old:
        by_old[r.video_id].append(r)
    for r in new:
        by_new[r.video_id].append(r)
    relabelled = sum(len(by_new[v]) for v in by_new if v in by_old and by_old[v] != by_new[v])
    added = sum(len(rs) for v, rs in by_new.items() if v not in by_old)
    removed = sum(len(rs) for v, rs in by_old.items() if v not in by_new)
    parts = [f"{_count(relabelled, 'row')} relabelled"] if relabelled else []
    if added:
        parts.append(f"{added} added" if parts else f"{_count(added, 'row')} added")
    if removed:
        parts.append(f"{removed} removed" if parts else f"{_count(removed, 'row')} removed")
    return ", ".join(parts) or "rows reordered"


def label_changes(stored: CacheMeta, given: CacheMeta) -> str | None:
    """One line naming how the annotations and splits `given` differ from the `stored` ones
    ("annotations changed: 1 row relabelled; splits: test changed"), or None. Nothing is
    compared when `given` has no annotations; with annotations, the splits given (those beside
    the annotation file) are the whole set."""
    if given.annotations is None:
        return None
    said = []
    if stored.annotations is None:
        said.append("annotations added")
    else:
        diff = rows_difference(_rows(stored.annotations), _rows(given.annotations))
        if diff:
            said.append(f"annotations changed: {diff}")
    splits = []
    for name in sorted(set(stored.splits) | set(given.splits)):
        if name not in given.splits:
            splits.append(f"{name} removed")
        elif name not in stored.splits:
            splits.append(f"{name} added")
        elif _rows(stored.splits[name]) != _rows(given.splits[name]):
            splits.append(f"{name} changed")
    if splits:
        said.append(f"splits: {', '.join(splits)}")
    return "; ".join(said) or None


def apply_labels(path: Path, stored: CacheMeta, given: CacheMeta) -> str | None:
    """Replace the directory cache's annotations and splits with `given`'s when they differ
    (`label_changes`), updating `stored` too; the features are untouched. Splits are written
    first and annotations.txt last, so that a crash half way leaves a difference the next run
    sees and finishes. Returns the line naming the change, or None (nothing written)."""
    change = label_changes(stored, given)
    if change is None:
        return None
    for name, text in given.splits.items():
        if stored.splits.get(name) != text:
            make_dir(path / "splits")
            write_cache_file(path / "splits" / f"{name}.txt", text.encode("utf-8"))
    for name in [n for n in stored.splits if n not in given.splits]:
        for f in (path / "splits").glob("*.txt"):  # the stored file of split NAME (trainSet.txt -> train)
            if split_key(f.name) == name:
                remove_quietly(f)
    write_cache_file(path / "annotations.txt", given.annotations.encode("utf-8"))
    stored.annotations, stored.splits = given.annotations, dict(given.splits)
    return change
