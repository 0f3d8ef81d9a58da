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
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path`, with its suffix."""
    p = Path(path)
    return p.with_name(f".{p.stem}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{p.suffix}")


def is_temp_path(path: str | os.PathLike) -> bool:
    """A name `temp_path` makes (a file being written, or left by a writer that was killed)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


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


class AtomicFile:
    """The writer behind `atomic_path`, as an object, for a file written over many calls (the
    feature cache's part files): write `tmp`, then `commit()` (flushed to disk unless `durable`
    is False, renamed onto `path`) or `discard()` (removed). `tmp` is a file name beside `path`
    (default `temp_path`: a writer that must recognise its temporaries names them itself)."""

    def __init__(self, path: str | os.PathLike, *, tmp: str | None = None, durable: bool = True) -> None:
        self.path = Path(path)
        self.tmp = temp_path(self.path) if tmp is None else self.path.with_name(tmp)
        self.durable = durable

    def commit(self) -> Path:
        """Rename the temporary file onto the target; on failure it is removed and the target untouched."""
        try:
            if self.durable:
                _fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        if self.durable:
            fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True, tmp: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (flushed to disk first
    unless `durable` is False), on failure it is removed. `tmp`: the temporary file's name
    (beside `path`), when the writer must recognise it later. The folder is made if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pending = AtomicFile(path, tmp=tmp, durable=durable)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO]:
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


def move_aside(path: str | os.PathLike, name: str) -> Path:
    """Rename `path` to `name` in its folder, durably (a file set aside, e.g. a damaged cache
    part kept for inspection): one rename, so a reader sees it under one name or the other."""
    source = Path(path)
    target = source.with_name(name)
    os.replace(source, target)
    fsync_dir(source.parent)
    return target
