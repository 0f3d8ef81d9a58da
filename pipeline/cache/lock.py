"""The mechanisms behind the writer rules of a feature cache (pipeline/cache/__init__.py states
the rules): `WriteLock`, the advisory flock on DIRECTORY/write.lock with its holder's record
(pid, host, command, since), shared by nested acquisitions in one process and released by
the kernel when the process dies; `temp_name`, temporary files that name their writer
(.tmp-HOST-PIDNS-PID-START-RANDOM.suffix: host, pid namespace, pid and the process's start
time in clock ticks after boot); `writer_is_dead`, the proof a clean-up needs before it
removes someone's temporary file; and `write_cache_file`, a cache's own files through core's
atomic writer under such a name, with ENOSPC turned into one clear CacheError.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path

from ...core import jsonio
from ...core.atomic import atomic_path
from ...core.errors import CacheError, CacheLocked, shown

LOCK_FILE = "write.lock"
TEMP_PREFIX = ".tmp-"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"\.tmp-(?P<host>.+)-(?P<ns>\d+)-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+(\.[A-Za-z0-9]+)?")


def _pid_namespace() -> str:
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks after boot, /proc), "0" where /proc
    cannot tell, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return "0"


def temp_name(suffix: str) -> str:
    """A temporary file name that names its writer: .tmp-HOST-PIDNS-PID-START-RANDOM<suffix>."""
    pid = os.getpid()
    return f"{TEMP_PREFIX}{_HOST}-{_pid_namespace()}-{pid}-{_process_start(pid) or 0}-{uuid.uuid4().hex[:8]}{suffix}"


def writer_is_dead(name: str) -> bool:
    """True only when the temporary file `name` provably belongs to a process that no longer
    exists: written on this host in this pid namespace by a pid that is gone (or now belongs
    to a process started at another time). Unknown owners are never declared dead."""
    m = _TEMP.fullmatch(name)
    if m is None or m["host"] != _HOST or m["ns"] != _pid_namespace() or int(m["pid"]) == os.getpid():
        return False
    start = _process_start(int(m["pid"]))
    return start is None or (start != "0" and m["start"] != "0" and start != m["start"])


def write_error(e: OSError, target: Path) -> CacheError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(
            f"no space left on device while writing {shown(target)} (what was committed before is "
            "intact; free some space and run again to resume)"
        )
    return CacheError(f"{shown(target)}: cannot be written ({e.strerror or e})")


def write_cache_file(path: Path, data: bytes) -> None:
    """A cache's own file (cache.json, annotations.txt, splits/NAME.txt): `data` through core's
    atomic writer, under a temporary name that names its writer (`temp_name`), with plain
    writes; on any failure the temporary file is removed and the error is a CacheError (ENOSPC:
    "no space left on device while writing PATH")."""
    path = Path(path)
    try:
        with atomic_path(path, tmp=temp_name(path.suffix)) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
    except OSError as e:
        raise write_error(e, path) from None


def remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


# -- the write lock ---------------------------------------------------------------------------------
class _Holding:
    """This process's hold of one cache's lock: the locked file descriptor, shared by every
    WriteLock of the process for that cache; closing it releases the lock."""

    def __init__(self, key: str, fd: int) -> None:
        self.key, self.fd, self.count = key, fd, 0

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # the holder record goes while the lock is still ours
        except OSError:
            pass
        os.close(fd)
        with _HELD_GUARD:
            if _HELD.get(self.key) is not None and _HELD[self.key]() in (self, None):
                del _HELD[self.key]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the modules may be gone; the kernel drops the lock
            pass


_HELD: dict[str, weakref.ref] = {}
_HELD_GUARD = threading.RLock()


def _command() -> str:
    args = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if args[0] in ("cli.py", "__main__.py"):
        args[0] = "avel"
    return shown(" ".join(args))[:300]


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        return (
            f"pid {record['pid']} on {record['host']}, since {record['since']}: "
            f"{shown(str(record.get('command', '?')))}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class WriteLock:
    """The write lock of a directory cache (rule 1 of pipeline/cache/__init__.py). Use as a context
    manager, or call `release()`; a lock that is dropped is released too."""

    def __init__(self, directory: Path, holding: _Holding) -> None:
        self.directory, self._holding = directory, holding
        holding.count += 1

    @classmethod
    def acquire(cls, directory: str | os.PathLike, command: str | None = None) -> WriteLock:
        """Take the lock of the cache `directory` (created if missing), or raise CacheLocked
        naming the holder. The first acquisition in a process removes the temporary files of
        dead writers (rule 3 of pipeline/cache/__init__.py)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(e, directory) from None
        key = os.path.realpath(directory)
        with _HELD_GUARD:
            held = _HELD.get(key)
            holding = held() if held is not None else None
            if holding is not None and holding.fd is not None:
                return cls(directory, holding)
            holding = _Holding(key, _lock(directory))
            _HELD[key] = weakref.ref(holding)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or _command(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "start": _process_start(os.getpid()),
        }
        try:
            os.ftruncate(holding.fd, 0)
            os.pwrite(holding.fd, (jsonio.dumps(record, nonfinite="refuse") + "\n").encode(), 0)
        except OSError:
            pass  # the record is information; the flock is the lock
        lock = cls(directory, holding)
        remove_dead_temporaries(directory)
        return lock

    @property
    def held(self) -> bool:
        return self._holding is not None and self._holding.fd is not None

    def release(self) -> None:
        holding, self._holding = self._holding, None
        if holding is not None:
            holding.count -= 1
            if holding.count == 0:
                holding.close()

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # see _Holding.__del__
            pass


def _lock(directory: Path) -> int:
    """A descriptor of DIRECTORY/write.lock holding an exclusive flock (the file is never
    removed; should it be replaced between open and flock, the new one is locked instead)."""
    path = directory / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CacheError(f"{shown(directory)}: cannot write into this cache ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise CacheLocked(
                f"{shown(directory)}: another avel run is writing this cache ({holder}); one writer per "
                "cache: wait for it to end, or stop it"
            ) from None
        except OSError as e:
            os.close(fd)
            raise CacheError(
                f"{shown(directory)}: the filesystem cannot lock {LOCK_FILE} ({e.strerror or e}); "
                "a cache is written on a filesystem with file locks (local, NFSv4)"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_dead_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files in a cache directory (and its parts/) whose writer is
    provably dead (`writer_is_dead`); returns them. Only a lock holder calls this."""
    removed = []
    for folder in (Path(directory), Path(directory) / "parts"):
        try:
            names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            if writer_is_dead(name):
                remove_quietly(folder / name)
                removed.append(folder / name)
    return removed


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, path) from None
