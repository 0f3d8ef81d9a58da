"""Atomic file writes: the one way avel writes a file.

A file is written under a temporary name beside its target (same folder, so the rename
stays on one file system), flushed to disk, and renamed over the target; a reader sees the
old file or the new one, never half of one. On any error, Ctrl-C included, the temporary
file is removed and the target is untouched.

    write_text_atomic("out.json", text)
    with atomic_path("timeline.png") as tmp:   # for writers that take a path (h5py, matplotlib)
        figure.savefig(tmp)
    with atomic_open("rows.csv", newline="") as f:
        csv.writer(f).writerows(rows)

The temporary name keeps the target's suffix (matplotlib and h5py read the format from
it): `.NAME.tmp-PID-TOKEN.SUFFIX`, hidden, and unique per writer."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path`, with its suffix."""
    p = Path(path)
    return p.with_name(f".{p.stem}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{p.suffix}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (flushed to disk first
    unless `durable` is False), on failure it is removed."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """`open()` for writing, atomically (mode "w" or "wb")."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        if "b" in mode:
            with open(tmp, mode) as f:
                yield f
        else:
            with open(tmp, mode, encoding=encoding, newline=newline) as f:
                yield f


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
