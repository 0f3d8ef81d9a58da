"""Stopping batch jobs and losing decoder processes: Ctrl-C and SIGTERM sent to the whole
process group (as a terminal and a service manager do) commit what is finished and exit
130 with one line; the next run resumes. Decoder processes share memory with the model
process without a name in /dev/shm, never import torch, and one that dies fails its video
only. A killed model process leaves no decoder behind."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mediagen import solid, tone, write_video

from avel.core.errors import DecoderCrashed
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.media.decode import DecodeOptions, decode_video
from avel.pipeline.media.pool import DecoderPool

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--visual-model", "random", "--audio-model", "random", "--frames-per-segment", "1", "--device", "cpu"]
VIDEOS = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stop") / "src"
    folder.mkdir()
    for i in range(VIDEOS):
        write_video(folder / f"v{i:02d}.mp4", duration_s=2, color=solid((25 * i, 120, 60)), audio=tone(300 + 40 * i))
    return folder


def group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and _running(int(entry)):
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


def shm_mappings(pids: list[int]) -> list[str]:
    """Named files under /dev/shm that these processes map (POSIX semaphores and shared
    memory that would outlive them; an unlinked one, "(deleted)", cannot)."""
    found = []
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        found += [ln.split()[-1] for ln in lines if "/dev/shm/" in ln and not ln.endswith("(deleted)")]
    return found


class Run:
    """`avel preprocess` in a session of its own (a process group, as from a terminal),
    its stderr read as it comes."""

    def __init__(self, *args) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avel.cli", "preprocess", *map(str, args), *FAST],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):
            self.stderr += chunk

    def done_videos(self) -> int:
        """Videos finished so far, from the progress bar."""
        counts = re.findall(rb"(\d+)/\d+ \[", self.stderr)
        return int(counts[-1]) if counts else 0

    def wait_until(self, condition, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while not condition():
            assert self.proc.poll() is None, self.stderr.decode(errors="replace")
            assert time.time() < deadline, "timed out"
            time.sleep(0.1)

    def finish(self, timeout_s: float = 60) -> int:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"still running {timeout_s} s after the signal:\n{self.stderr.decode(errors='replace')}")
        self._reader.join(timeout=10)
        return rc

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:  # whatever happened, nothing of it keeps running
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in group(self.proc.pid):
            os.kill(pid, signal.SIGKILL)  # an orphan the group signal missed

    def lines(self) -> list[str]:
        """stderr without the progress bar's updates."""
        text = self.stderr.decode(errors="replace").replace("\r", "\n")
        return [ln for ln in text.splitlines() if ln.strip() and not re.search(r"\d+/\d+ \[", ln)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_commits_and_resumes(tmp_path, videos, sig):
    """Default --workers 2, --commit-every 64: nothing is committed before the signal, so
    every video in the cache afterwards was committed on the way out."""
    cache = tmp_path / "cache"
    with Run(videos, "--out", cache) as run:
        run.wait_until(lambda: run.done_videos() >= 2 and len(group(run.proc.pid)) >= 3)  # the decoders are up
        processes = group(run.proc.pid)
        assert not shm_mappings(processes)  # nothing in /dev/shm that could be left behind
        finished = run.done_videos()
        os.killpg(run.proc.pid, sig)
        rc = run.finish()
        lines = run.lines()
        assert rc == 130, lines
        assert "Traceback" not in run.stderr.decode(errors="replace")
        assert len(lines) == 1 and lines[0].startswith(f"interrupted: {sig.name}: "), lines
        assert not group(run.proc.pid)  # no decoder process left running
    committed = FeatureCache(cache)
    assert len(committed) >= finished and not committed.failures
    assert not list((cache / "parts").glob(".tmp-*"))
    resumed = subprocess.run(
        [sys.executable, "-m", "avel.cli", "preprocess", str(videos), "--out", str(cache), *FAST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr and f"{VIDEOS - len(committed)} extracted" in resumed.stderr
    assert len(FeatureCache(cache)) == VIDEOS


def test_killed_model_process_leaves_no_decoder_behind(tmp_path, videos):
    with Run(videos, "--out", tmp_path / "cache", "--workers", "2") as run:
        run.wait_until(lambda: len(group(run.proc.pid)) >= 3)
        decoders = [p for p in group(run.proc.pid) if p != run.proc.pid]
        run.proc.send_signal(signal.SIGKILL)  # the model process only
        run.finish()
        deadline = time.time() + 30
        while any(_running(p) for p in decoders):
            assert time.time() < deadline, "decoder processes outlived the model process"
            time.sleep(0.1)
    FeatureCache(tmp_path / "cache")  # whatever was committed can be opened


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# -- the decoder pool itself ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_video(folder / f"c{i}.mp4", duration_s=3, color=solid((60 * i, 30, 200)), audio=tone(500 + 100 * i))
        for i in range(3)
    ]


OPTIONS = DecodeOptions(frames_per_segment=2, frame_size=64, threads=1)


def test_pool_batches_equal_decode_video_and_use_no_named_memory(clips):
    with DecoderPool(2, OPTIONS, segments_per_batch=2) as pool:
        workers = [w.proc.pid for w in pool._workers]
        for path, source in zip(clips, pool.videos(clips)):
            whole = decode_video(path, OPTIONS)
            got = []
            for batch in source:
                assert batch.frames.base is not None  # a view of the shared memory, not a copy
                got.append((batch.first, batch.frames.copy(), batch.audio.copy()))
                batch.release()
            assert [g[0] for g in got] == [0, 2]
            np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), whole.frames)
            np.testing.assert_array_equal(np.concatenate([g[2] for g in got]), whole.audio)
            assert (source.num_segments, source.duration_s) == (3, whole.duration_s)
        maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in workers + [os.getpid()]}
    for pid, text in maps.items():
        assert "memfd:avel-decoders" in text or "(deleted)" in text, pid  # anonymous shared memory
        assert "libtorch" not in text or pid == os.getpid(), "a decoder process imported torch"
    assert not shm_mappings(list(maps))


def test_a_decoder_process_that_dies_fails_its_video_only(clips):
    """One worker with three one-segment slots: it decodes video 0 into them, starts video
    1 and waits for a slot. Killed then, video 1 fails; video 0 (already in shared memory)
    and video 2 (decoded by the replacement) are whole."""
    with DecoderPool(1, OPTIONS, segments_per_batch=1, slots_per_worker=3) as pool:
        sources = pool.videos(clips)
        first = next(sources)
        deadline = time.time() + 60
        while len(pool._events.get(0, ())) < 4:  # three batches and the end of video 0
            pool._pump()
            assert time.time() < deadline
        os.kill(pool._workers[0].proc.pid, signal.SIGKILL)
        results = []
        for source in itertools.chain([first], sources):  # one at a time: the pool moves on as each is read
            try:
                n = 0
                for batch in source:
                    n += len(batch)
                    batch.release()
                results.append(n)
            except DecoderCrashed as e:
                results.append(str(e))
    assert results[0] == 3 and results[2] == 3, results
    assert re.fullmatch(r".*c1.mp4: the decoder process died \(signal 9 \(SIGKILL\)\)", results[1]), results
