"""Issue #10, items 2-6: the cache under hostile conditions. Any id or file name is stored
(or one video fails, never a part); readers never write; one writer per cache; a full disk is
one clear error that leaves committed parts intact and nothing behind; storage dtypes are
checked before any work."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mediagen import solid, tone, write_video
from test_cache import FAST, ROOT, avel, fake

from avel.core.config import FeatureSettings
from avel.core.errors import CacheError, ConfigError
from avel.pipeline.cache.keys import decode_key, encode_key
from avel.pipeline.cache.merge import merge_caches
from avel.pipeline.cache.meta import CacheMeta
from avel.pipeline.cache.parts import VideoFeatures
from avel.pipeline.cache.store import FeatureCache

META = CacheMeta(FeatureSettings(visual_model="random", audio_model="random"))
TINY = [*FAST, "--segments", "2", "--workers", "0"]  # 2 one-frame segments a video: about a second each


def tiny_video(path: Path, freq: float = 300.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(write_video(path, duration_s=2.0, size=(32, 32), color=solid((200, 30, 30)), audio=tone(freq)))


def groups(cache_dir: Path) -> list[str]:
    """Every stored video id, over all parts (an id stored twice appears twice)."""
    ids = []
    for part in sorted((cache_dir / "parts").glob("part-*.h5")):
        with h5py.File(part, "r") as f:
            ids += [g.attrs["id"] for g in f["videos"].values()]
    return ids


# -- item 2: names ---------------------------------------------------------------------------------
def test_ids_that_shared_an_hdf5_name_or_could_not_be_one_are_all_stored(tmp_path):
    """`x/y` and `x|y` were one HDF5 name, `.` was none: the part failed, on every rerun."""
    src = tmp_path / "src"
    for name, freq in (("x/y.mp4", 300), ("x|y.mp4", 400), ("..mp4", 500), ("ok.mp4", 600)):
        tiny_video(src / name, freq)
    rows = [
        "Category&VideoID&Quality&StartTime&EndTime",
        "a&x/y&good&0&2",
        "b&x|y&good&0&1",
        "a&.&good&1&2",
        "b&ok&good&0&2",
    ]
    (tmp_path / "Annotations.txt").write_text("\n".join(rows) + "\n")
    proc = avel("preprocess", src, "--annotations", tmp_path / "Annotations.txt", "--out", tmp_path / "c", *TINY)
    assert "4 extracted" in proc.stderr
    cache = FeatureCache(tmp_path / "c")
    assert sorted(cache.ids()) == [".", "ok", "x/y", "x|y"]
    x1, x2 = cache.read("x/y")[1], cache.read("x|y")[1]
    assert not np.array_equal(x1, x2)  # two videos, two groups


def test_a_file_name_that_is_not_utf8_round_trips(tmp_path):
    src = tmp_path / "src"
    tiny_video(src / "ok.mp4")
    bad = os.fsdecode(os.fsencode(str(src)) + b"/bad\xff.mp4")
    shutil.copy(src / "ok.mp4", bad)
    avel("preprocess", src, "--out", tmp_path / "c", *TINY)
    cache = FeatureCache(tmp_path / "c")
    assert sorted(cache.ids()) == ["bad\udcff", "ok"]
    assert os.fsencode(cache.entries["bad\udcff"].source_path) == os.fsencode(bad)  # exactly the file's bytes
    np.testing.assert_array_equal(cache.read("bad\udcff")[1], cache.read("ok")[1])  # the same media


def test_keys_are_injective_and_round_trip():
    ids = [
        "a",
        "x/y",
        "x|y",
        "x%2Fy",
        "%",
        "",
        ".",
        "..",
        ".hidden",
        "a.b",
        "tab\there",
        "new\nline",
        "bad\udcff",
        "lone\ud800",
        "caf\u00e9",
        "\u6f22\u5b57",
        " space ",
        "a" * 300,
    ]
    keys = [encode_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    for vid, key in zip(ids, keys):
        assert decode_key(key) == vid
        assert "/" not in key and key not in (".", "..") and key.isprintable()
        key.encode("utf-8")  # a valid HDF5 (UTF-8) name
    assert encode_key("AVE_id-09") == "AVE_id-09"  # ordinary ids keep their name


def test_one_bad_video_never_fails_its_part(tmp_path):
    cache = FeatureCache.create_or_open(tmp_path / "c", META)
    broken = VideoFeatures(
        "broken", "/data/broken.mp4", 3.0, np.array([["not a number"]]), np.zeros((3, 128), np.float32)
    )
    with cache.writer(max_videos=3) as w:
        w.add(fake("a", seed=0))
        w.add(broken)
        w.add(fake("b", seed=1))
    reopened = FeatureCache(tmp_path / "c")
    assert sorted(reopened.ids()) == ["a", "b"]
    assert reopened.failures["broken"].kind == "unstorable"
    assert "broken.mp4" in reopened.failures["broken"].error


def test_caches_written_with_the_old_key_rule_stay_readable(tmp_path):
    """Parts written before the injective keys named the group of `x/y` `x|y`."""
    cache = FeatureCache.create_or_open(tmp_path / "c", META)
    with cache.writer() as w:
        w.add(fake("x/y", seed=3))
    [part] = (tmp_path / "c" / "parts").glob("part-*.h5")
    with h5py.File(part, "r+") as f:
        f.move("videos/x%2Fy", "videos/x|y")
    reopened = FeatureCache(tmp_path / "c")
    assert reopened.ids() == ["x/y"]
    np.testing.assert_array_equal(reopened.read("x/y")[0], fake("x/y", seed=3).visual)
    merge_caches([tmp_path / "c"], tmp_path / "m.h5")
    np.testing.assert_array_equal(FeatureCache(tmp_path / "m.h5").read("x/y")[0], fake("x/y", seed=3).visual)


# -- item 3: readers never write -------------------------------------------------------------------
def test_readers_never_touch_temporary_files_or_write_anything(tmp_path, monkeypatch):
    cache = FeatureCache.create_or_open(tmp_path / "c", META)
    with cache.writer() as w:
        w.add(fake("a"))
    cache.close()
    parts = tmp_path / "c" / "parts"
    writing = [parts / ".tmp-k1l2m3n4.h5", parts / f".tmp-{os.uname().nodename}-1-{os.getpid()}-1-0badc0de.h5"]
    for p in writing:
        p.write_bytes(b"a part being written")

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "read-only (a reader tried to change the cache)")

    real_open = os.open

    def open_for_reading(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse()
        return real_open(path, flags, *args, **kwargs)

    for name in ("unlink", "remove", "rename", "replace", "rmdir", "truncate", "ftruncate", "mkdir"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(os, "open", open_for_reading)
    monkeypatch.setattr(Path, "unlink", refuse)
    reader = FeatureCache(tmp_path / "c")
    assert reader.ids() == ["a"]
    np.testing.assert_array_equal(reader.read("a")[1], fake("a").audio)
    reader.close()
    monkeypatch.undo()
    assert all(p.read_bytes() == b"a part being written" for p in writing)


def _start(pid: int) -> str:
    """A process's start time (clock ticks after boot), read from /proc as the reference."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _dead_pid() -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = _start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def test_the_lock_holder_removes_only_temporaries_of_provably_dead_writers(tmp_path):
    FeatureCache.create_or_open(tmp_path / "c", META).close()
    parts = tmp_path / "c" / "parts"
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    ns = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_pid, dead_start = _dead_pid()
        live_start = _start(live.pid)
        names = {
            "dead": f".tmp-{host}-{ns}-{dead_pid}-{dead_start}-0badc0de.h5",
            "pid reused by a later process": f".tmp-{host}-{ns}-{live.pid}-{int(live_start) - 1}-0badc0de.h5",
            "live": f".tmp-{host}-{ns}-{live.pid}-{live_start}-0badc0de.h5",
            "other host": f".tmp-{host}x-{ns}-{dead_pid}-{dead_start}-0badc0de.h5",
            "other pid namespace": f".tmp-{host}-{int(ns) + 1}-{dead_pid}-{dead_start}-0badc0de.h5",
            "older avel": ".tmp-k1l2m3n4.h5",
        }
        for name in names.values():
            (parts / name).write_bytes(b"x")
        FeatureCache.create_or_open(tmp_path / "c", META).close()  # takes the lock
        left = {why for why, name in names.items() if (parts / name).exists()}
        assert left == {"live", "other host", "other pid namespace", "older avel"}
    finally:
        live.kill()
        live.wait()


# -- item 4: one writer per cache ------------------------------------------------------------------
def _lock_record(directory: Path, timeout_s: float = 120) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            return json.loads((directory / "write.lock").read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"{directory}: no lock record after {timeout_s} s")


def _frozen_writer(args: list) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "avel.cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("command", ["preprocess", "extract"])
def test_a_second_writer_is_refused_naming_the_first(tmp_path, command):
    """Two runs on one cache both extracted everything; two `extract --out same.h5` raced.
    The first run is frozen (SIGSTOP) while it holds the lock, so the two surely overlap."""
    videos = [tiny_video(tmp_path / "src" / f"v{i}.mp4", 300 + 100 * i) for i in range(2)]
    if command == "preprocess":
        out, locked = tmp_path / "cache", tmp_path / "cache"
        args = ["preprocess", tmp_path / "src", "--out", out, *TINY]
    else:
        out, locked = tmp_path / "same.h5", tmp_path / "same.h5.partial"
        args = ["extract", *videos, "--out", out, *TINY]
    first = _frozen_writer(args)
    try:
        record = _lock_record(locked)
        os.kill(first.pid, signal.SIGSTOP)
        second = avel(*args, check=False)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out_first, err_first = first.communicate(timeout=300)
    assert first.returncode == 0, err_first
    assert second.returncode == 2, second.stderr
    [line] = second.stderr.strip().splitlines()
    assert record["pid"] == first.pid
    assert f"pid {first.pid} on " in line and "another avel run is writing" in line and command in line
    assert "Traceback" not in second.stderr
    stored = groups(out) if command == "preprocess" else list(FeatureCache(out).ids())
    assert sorted(stored) == ["v0", "v1"]  # every id once


def test_a_lock_never_outlives_its_process(tmp_path):
    """The kernel drops a killed holder's flock: the next writer goes on."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from avel.pipeline.cache.lock import WriteLock
        lock = WriteLock.acquire({str(tmp_path / "c")!r}, command="avel preprocess (killed)")
        print("held", flush=True)
        time.sleep(120)
    """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CacheError, match=rf"pid {holder.pid} on .*avel preprocess \(killed\)"):
        FeatureCache.create_or_open(tmp_path / "c", META)
    holder.kill()
    holder.wait()
    FeatureCache.create_or_open(tmp_path / "c", META).close()


# -- item 5: a full disk ---------------------------------------------------------------------------
def _fail_writes_after(monkeypatch, budget_bytes: int) -> None:
    """ENOSPC once `budget_bytes` have gone into temporary files (os.write, what the cache uses)."""
    real_write = os.write
    left = [budget_bytes]

    def write(fd, data):
        if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            if left[0] < len(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            left[0] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def _fail_hdf5_writes(monkeypatch) -> None:
    """ENOSPC from HDF5 as a part's features are written (h5py raises OSError for it)."""

    def write(self, key, value):
        raise OSError(
            errno.ENOSPC, "Can't write data (file write failed: errno = 28, error message = 'No space left on device')"
        )

    monkeypatch.setattr(h5py.Dataset, "__setitem__", write)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    cache = FeatureCache.create_or_open(tmp_path / "c", META)
    with cache.writer(max_videos=1) as w:
        w.add(fake("a", seed=0))
    _fail_hdf5_writes(monkeypatch)
    with pytest.raises(CacheError, match=r"^no space left on device while writing .*parts/part-.*\.h5"):
        with cache.writer(max_videos=1) as w:
            w.add(fake("b", seed=1))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "c" / "parts").iterdir() if p.name.startswith(".tmp-")] == []
    reopened = FeatureCache(tmp_path / "c")
    assert reopened.ids() == ["a"]
    np.testing.assert_array_equal(reopened.read("a")[0], fake("a", seed=0).visual)
    with cache.writer(max_videos=1) as w:  # space again: the run resumes
        w.add(fake("b", seed=1))
    assert sorted(FeatureCache(tmp_path / "c").ids()) == ["a", "b"]


def test_a_full_disk_at_creation_leaves_nothing_that_refuses_the_cache(tmp_path, monkeypatch):
    meta = CacheMeta(
        META.settings,
        annotations="Category&VideoID&Quality&StartTime&EndTime\na&v&good&0&2\n",
        splits={"train": "a&v&good&0&2\n"},
    )
    _fail_writes_after(monkeypatch, 0)
    with pytest.raises(CacheError, match="^no space left on device while writing"):
        FeatureCache.create_or_open(tmp_path / "c", meta)
    monkeypatch.undo()
    assert not (tmp_path / "c" / "cache.json").exists()
    assert not [p for p in (tmp_path / "c").rglob(".tmp-*")]
    cache = FeatureCache.create_or_open(tmp_path / "c", meta)  # a later run creates it
    assert cache.meta.splits == {"train": "a&v&good&0&2\n"} and cache.meta.annotations == meta.annotations


def test_merge_refuses_a_disk_without_room_before_writing(tmp_path, monkeypatch):
    cache = FeatureCache.create_or_open(tmp_path / "c", META)
    with cache.writer() as w:
        w.add(fake("a"))
    usage = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    with pytest.raises(CacheError, match="no space left on device while writing .*m.h5.*nothing was written"):
        merge_caches([tmp_path / "c"], tmp_path / "m.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = (
        subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
            capture_output=True,
        ).returncode
        == 0
    )
    probe.rmdir()
    return ok


DISK_SCRIPT = r"""
import json, os, subprocess, sys
from pathlib import Path
disk, src, one, out = map(Path, sys.argv[1:5])
args = sys.argv[5:]
def mount(opts):
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(disk)], check=True)
def avel(*a):
    p = subprocess.run([sys.executable, "-m", "avel.cli", *map(str, a)], capture_output=True, text=True)
    lines = p.stderr.replace("\r", "\n").splitlines()  # progress bars end their lines with \r
    return {"rc": p.returncode, "errors": [l for l in lines if l.startswith("error")],
            "lines": len([l for l in lines if "error" in l or "Traceback" in l])}
def listing(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []
def readable(c):
    from avel.pipeline.cache.store import FeatureCache
    cache = FeatureCache(c)
    for vid in cache.ids():
        cache.read(vid)
    return sorted(cache.ids())
r = {}
mount("size=600k")
r["full"] = avel("preprocess", src, "--out", disk / "c", "--commit-every", "1", *args)
r["full_files"], r["full_ids"] = listing(disk / "c"), readable(disk / "c")
r["again"] = avel("preprocess", src, "--out", disk / "c", "--commit-every", "1", *args)
r["again_files"] = listing(disk / "c")
subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
r["resumed"] = avel("preprocess", src, "--out", disk / "c", "--commit-every", "1", *args)
r["resumed_ids"] = readable(disk / "c")
subprocess.run(["umount", str(disk)], check=True)
mount("size=64k")
fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"x" * 4096)
except OSError:
    os.close(fd)
r["create_full"] = avel("preprocess", one, "--out", disk / "c2", *args)
r["create_files"] = listing(disk / "c2")
os.remove(disk / "filler")
subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
r["create_later"] = avel("preprocess", one, "--out", disk / "c2", *args)
(disk / "c2" / "parts" / ".tmp-k1l2m3n4.h5").write_bytes(b"a leftover")
subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
(r["ro_write"], r["ro_ids"]) = avel("preprocess", src, "--out", disk / "c2", *args), readable(disk / "c2")
out.write_text(json.dumps(r))
"""


def test_a_full_tmpfs_end_to_end(tmp_path):
    """The issue's reproduction (a small tmpfs, --commit-every 1), inside a private mount
    namespace: one line and exit 2, committed parts intact, no leftovers, the rerun fails the
    same way, more room resumes; a disk full at cache creation; a read-only cache."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs root and unshare to mount a private tmpfs")
    for i in range(5):
        tiny_video(tmp_path / "src" / f"v{i}.mp4", 300 + 100 * i)
    tiny_video(tmp_path / "one" / "w.mp4")
    (tmp_path / "disk").mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_SCRIPT)
    subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            script,
            tmp_path / "disk",
            tmp_path / "src",
            tmp_path / "one",
            tmp_path / "r.json",
            *TINY,
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    r = json.loads((tmp_path / "r.json").read_text())
    for run in ("full", "again"):
        assert r[run]["rc"] == 2 and r[run]["lines"] == 1, r[run]
        assert r[run]["errors"][0].startswith("error: no space left on device while writing ")
    assert 0 < len(r["full_ids"]) < 5
    for files in (r["full_files"], r["again_files"]):
        assert not [f for f in files if ".tmp-" in f], files
        assert len([f for f in files if f.startswith("parts/part-")]) == len(r["full_ids"])
    assert r["resumed"]["rc"] == 0 and r["resumed_ids"] == [f"v{i}" for i in range(5)]
    assert r["create_full"]["rc"] == 2 and r["create_full"]["lines"] == 1, r["create_full"]
    assert r["create_full"]["errors"][0].startswith("error: no space left on device while writing")
    assert not [f for f in r["create_files"] if ".tmp-" in f or f == "cache.json"], r["create_files"]
    assert r["create_later"]["rc"] == 0, r["create_later"]
    assert r["ro_write"]["rc"] == 2 and r["ro_write"]["lines"] == 1, r["ro_write"]
    assert "cannot write into this cache" in r["ro_write"]["errors"][0]
    assert r["ro_ids"] == ["w"]  # a read-only cache with a leftover temporary file reads


# -- item 6: storage dtypes ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "uint8", "bogus", "float64"])
def test_storage_dtype_is_checked_before_any_work(tmp_path, dtype):
    with pytest.raises(ConfigError, match="storage_dtype"):
        CacheMeta(FeatureSettings(), storage_dtype=dtype)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cache.json").write_text(json.dumps({"settings": {}, "storage_dtype": dtype}))
    with pytest.raises(CacheError, match="cache.json: storage_dtype"):
        FeatureCache(tmp_path / "c")


def _write_concurrently(directory: str, writer: int, start_at: float) -> list[str]:
    """One of several processes that commit parts into one cache at once (what the Ray
    engine's actors do while the driver holds the lock): 12 videos, a part every 2."""
    from avel.pipeline.cache.parts import PartWriter

    time.sleep(max(0.0, start_at - time.time()))
    with PartWriter(Path(directory), META, max_videos=2, provenance={"writer": str(writer)}) as w:
        for i in range(12):
            w.add(fake(f"w{writer}-{i}", t=2, seed=100 * writer + i))
    return [p.name for p in w.committed]


def test_concurrent_part_writers_while_the_holder_keeps_the_lock(tmp_path):
    import multiprocessing

    cache = FeatureCache.create_or_open(tmp_path / "c", META)  # the lock holder, as the Ray driver
    try:
        start_at = time.time() + 1.0  # all writers start together
        with multiprocessing.get_context("fork").Pool(4) as pool:
            names = pool.starmap(_write_concurrently, [(str(tmp_path / "c"), w, start_at) for w in range(4)])
    finally:
        cache.close()
    parts = sorted((tmp_path / "c" / "parts").iterdir())
    assert [p.name for p in parts] == sorted(n for ns in names for n in ns) and len(
        parts
    ) == 4 * 6  # no temporaries left
    ids = groups(tmp_path / "c")
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(12))  # every video once
    with FeatureCache(tmp_path / "c") as c:
        for w in range(4):
            visual, audio = c.read(f"w{w}-5")
            expected = fake(f"w{w}-5", t=2, seed=100 * w + 5)
            assert np.array_equal(visual, expected.visual) and np.array_equal(audio, expected.audio)
