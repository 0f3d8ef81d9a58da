"""The AVE annotation format: `Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`.

One line per *row* (a row, not a file, is the unit: AVE has 45 video ids that appear twice
with different categories):

    Category&VideoID&Quality&StartTime&EndTime

with integer seconds; segment t is an event segment iff `start <= t < end`. Some copies start
with that exact text as a header line. `AnnotationRow` is a small frozen manifest entry
(lhotse style): primitives only, symmetric `to_line` / `from_line`.
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .errors import AnnotationError

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
FIELDS = 5
AVE_SECONDS = 10  # every AVE video lasts 10 s: the default sanity bound on EndTime
# the label of a second with no event (localize, the report, the labels' last index): no
# category may be called so, or its events would read as "no event"
BACKGROUND = "background"
# characters no field may hold: control characters (NUL, \x0b, \x0c, \x1c-\x1f, \x85...), which
# str.splitlines, HDF5 or a terminal treat as line ends or string ends, and U+2028 / U+2029
_REFUSED_CATEGORIES = ("Cc", "Zl", "Zp")


def field_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be the text field `name` of a row (None: it can): a control or
    line-separator character anywhere in it."""
    for c in value:
        if unicodedata.category(c) in _REFUSED_CATEGORIES:
            return f"{name} {value!r} holds U+{ord(c):04X}, a control or line-separator character"
    return None


def is_background(name: str) -> bool:
    """Whether a category name reads as the reserved word `background`: any case, width
    (NFKC), surrounding whitespace or invisible format characters (zero-width space...)."""
    text = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")
    return text.strip().casefold() == BACKGROUND


def check_category(name: str) -> None:
    """The one rule for category names, wherever they enter (annotation rows, hence the
    AVE layout's class list and a cache's): ValueError for a name that prints as
    `background` or holds a control character."""
    problem = field_problem("category", name)
    if problem:
        raise ValueError(problem)
    if is_background(name):
        raise ValueError(f"category {name!r} is reserved: {BACKGROUND!r} is the label of a second with no event")


@dataclass(frozen=True)
class AnnotationRow:
    category: str
    video_id: str
    quality: str
    start_s: int  # first event second (inclusive)
    end_s: int  # end of the event (exclusive); start_s == end_s: no event segment

    def __post_init__(self) -> None:
        """Every row, however made, obeys the rules of its fields (ValueError otherwise; the
        parser adds the file and line)."""
        check_category(self.category)
        for name, value in (("video id", self.video_id), ("quality", self.quality)):
            problem = field_problem(name, value)
            if problem:
                raise ValueError(problem)

    @property
    def key(self) -> tuple[str, str, int, int]:
        """What split files are matched on: (category, video_id, start_s, end_s)."""
        return (self.category, self.video_id, self.start_s, self.end_s)

    @property
    def duration_s(self) -> int:
        return self.end_s - self.start_s

    def event_mask(self, T: int = AVE_SECONDS) -> np.ndarray:  # [T] bool
        t = np.arange(T)
        return (t >= self.start_s) & (t < self.end_s)

    def to_line(self) -> str:
        return "&".join([self.category, self.video_id, self.quality, str(self.start_s), str(self.end_s)])

    @classmethod
    def from_line(cls, line: str, *, max_seconds: int = AVE_SECONDS) -> AnnotationRow:
        """Parse one line; a malformed one raises ValueError with the problem (no location)."""
        raw = line.split("&")
        if len(raw) != FIELDS:
            raise ValueError(f"expected {FIELDS} '&'-separated fields ({HEADER}), got {len(raw)}")
        for name, text in zip(("category", "video id", "quality"), raw):  # before the strip below eats one
            problem = field_problem(name, text.replace("\t", " "))  # a tab beside '&' is white space
            if problem:
                raise ValueError(problem)
        fields = [f.strip() for f in raw]
        category, video_id, quality, start, end = fields
        if not category:
            raise ValueError("empty category")
        if not video_id:
            raise ValueError("empty video id")
        times = []
        for name, text in (("start", start), ("end", end)):
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"{name} time {text!r} is not a non-negative integer number of seconds")
            times.append(int(text))
        start_s, end_s = times
        if start_s > end_s:
            raise ValueError(f"start {start_s} s is after end {end_s} s")
        if end_s > max_seconds:
            raise ValueError(f"end {end_s} s is beyond the {max_seconds}-s video length (max_seconds)")
        return cls(category, video_id, quality, start_s, end_s)


def read_annotations(path: str | os.PathLike, *, max_seconds: int = AVE_SECONDS) -> list[AnnotationRow]:
    """Rows of an AVE-format file, in file order. The header line is optional (only as the
    first non-blank line), blank lines are skipped, a UTF-8 BOM is tolerated. A malformed
    line raises AnnotationError "path:LINE: problem"; `max_seconds` bounds EndTime (AVE: 10)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such annotation file") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_annotations(text, str(path), max_seconds=max_seconds)


def parse_annotations(
    text: str, source: str = "<annotations>", *, max_seconds: int = AVE_SECONDS
) -> list[AnnotationRow]:
    """Rows of AVE-format text (what `read_annotations` reads); errors name `source`:LINE.
    Lines end at '\n' (or '\r\n') only: str.splitlines would also split at '\x0b', '\x0c',
    '\x1c'-'\x1e', '\x85' and U+2028, which a field then refuses (`field_problem`)."""
    rows: list[AnnotationRow] = []
    seen_content = False
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if not seen_content:
            seen_content = True
            if line == HEADER:
                continue
        try:
            rows.append(AnnotationRow.from_line(line, max_seconds=max_seconds))
        except ValueError as e:
            raise AnnotationError(f"{source}:{lineno}: {e}") from None
    return rows


def write_annotations(path: str | os.PathLike, rows: Iterable[AnnotationRow], header: bool = True) -> None:
    """Write rows in AVE format (UTF-8, no BOM, '\\n' line ends), atomically (core/atomic.py)."""
    path = Path(path)
    lines = [HEADER] if header else []
    for row in rows:
        for name, value in (("category", row.category), ("video_id", row.video_id), ("quality", row.quality)):
            if "&" in value or "\n" in value or value != value.strip():
                raise AnnotationError(f"{path}: {name} {value!r} cannot be written in the '&' format")
        lines.append(row.to_line())
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def category_index(rows: Iterable[AnnotationRow]) -> list[str]:
    """Class names in order of first appearance (AVE: 28); background is index len(names)."""
    names: dict[str, None] = {}
    for row in rows:
        names.setdefault(row.category, None)
    return list(names)


def labels_for(row: AnnotationRow, class_names: Sequence[str], T: int = AVE_SECONDS) -> np.ndarray:
    """[T] int64: the row's category index on its event segments, background elsewhere."""
    try:
        index = list(class_names).index(row.category)
    except ValueError:
        raise AnnotationError(f"category {row.category!r} of video {row.video_id} is not a known class") from None
    if row.end_s > T:
        raise AnnotationError(f"video {row.video_id}: event ends at {row.end_s} s, beyond {T} segments")
    labels = np.full(T, len(class_names), dtype=np.int64)
    labels[row.event_mask(T)] = index
    return labels


def split_rows(annotation_rows: Sequence[AnnotationRow], split_rows: Sequence[AnnotationRow]) -> np.ndarray:
    """[len(split_rows)] int64 indices into `annotation_rows`, in split-file order.

    Rows are matched on (category, video_id, start_s, end_s), so an id that appears twice with
    different categories maps each split row to its own annotation row. Should the same key
    occur k times, the split's occurrences take the annotation's occurrences in order. A split
    row with no (or no remaining) annotation row raises AnnotationError."""
    free: dict[tuple, deque[int]] = defaultdict(deque)
    for i, row in enumerate(annotation_rows):
        free[row.key].append(i)
    indices = np.empty(len(split_rows), dtype=np.int64)
    for j, row in enumerate(split_rows):
        slots = free.get(row.key)
        if not slots:
            problem = "is used more often than it appears in" if row.key in free else "is not in"
            raise AnnotationError(f"split row {j + 1} ({row.to_line()}) {problem} the annotations")
        indices[j] = slots.popleft()
    return indices


SPLIT_FILE_NAMES = tuple(
    f"{split}{suffix}.txt" for split in ("train", "val", "test") for suffix in ("Set", "_order", "_order_match")
)  # AVE's names, CML split included


def split_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The split files in `folder` (trainSet.txt, valSet.txt, testSet.txt and the CML split
    train/val/test_order_match.txt), by split name (`split_key`: val_order_match.txt ->
    val_match). Two files that name one split (trainSet.txt and train_order.txt) are an error."""
    found: dict[str, Path] = {}
    for name in SPLIT_FILE_NAMES:
        path = Path(folder) / name
        if path.is_file():
            key = split_key(name)
            if key in found:
                raise AnnotationError(f"{path}: the {key!r} split is also in {found[key]}; keep one of them")
            found[key] = path
    return found


def split_key(file_name: str) -> str:
    """The one naming rule of splits, for every file that holds one: trainSet.txt -> train,
    val_order.h5 -> val, test_order_match.txt -> test_match (AVE's CML split)."""
    stem = Path(file_name).stem
    for suffix, replacement in (("Set", ""), ("_order_match", "_match"), ("_order", "")):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)] + replacement
    return stem
