"""The feature cache and batch preprocessing: layout, provenance, refusal of mixed
settings, failures recorded per video, shards and merge, and a real kill -9 + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mediagen import solid, tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import CacheError, SettingsMismatch
from avel.pipeline.cache.merge import merge_caches
from avel.pipeline.cache.meta import CacheMeta
from avel.pipeline.cache.parts import Failure, VideoFeatures
from avel.pipeline.cache.store import FeatureCache

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--visual-model", "random", "--audio-model", "random", "--frames-per-segment", "1", "--device", "cpu"]


def avel(*args, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "avel.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"avel {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def make_videos(folder: Path, n: int, duration_s: float = 2.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
    return [
        Path(
            write_video(
                folder / f"v{i:02d}.mp4", duration_s=duration_s, color=solid(colors[i % 6]), audio=tone(300 + 50 * i)
            )
        )
        for i in range(n)
    ]


def fake(vid: str, t: int = 3, seed: int = 0) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    return VideoFeatures(
        vid,
        f"/data/{vid}.mp4",
        float(t),
        rng.random((t, 7, 7, 512), dtype=np.float32),
        rng.random((t, 128), dtype=np.float32),
    )


def test_part_layout_and_lazy_reads(tmp_path):
    meta = CacheMeta(FeatureSettings(visual_model="random", audio_model="random"))
    cache = FeatureCache.create_or_open(tmp_path / "c", meta)
    a, b = fake("a", 3, 0), fake("b/with/slash", 5, 1)
    with cache.writer(max_videos=1) as w:
        w.add(a)
        w.add(b)
        w.fail(Failure("c", "/data/c.mp4", "corrupt", "/data/c.mp4: corrupt stream"))
    assert len(cache.parts) == 3
    reopened = FeatureCache(tmp_path / "c")
    assert sorted(reopened.ids()) == ["a", "b/with/slash"]
    assert reopened.failures["c"].kind == "corrupt"
    visual, audio = reopened.read("b/with/slash")
    np.testing.assert_array_equal(visual, b.visual)
    np.testing.assert_array_equal(audio, b.audio)
    np.testing.assert_allclose(reopened.read("a", pooled=True)[0], a.visual.mean(axis=(1, 2)), rtol=1e-6)
    with h5py.File(reopened.entries["a"].part, "r") as f:
        assert f.attrs["avel_format"] == "avel-features/1"
        assert f.attrs["setting.visual_model"] == "random"
        g = f["videos/a"]
        assert g["visual"].shape == (3, 7, 7, 512) and g["audio"].shape == (3, 128)
        assert g.attrs["num_segments"] == 3 and g.attrs["source_path"] == "/data/a.mp4"


def test_float16_storage(tmp_path):
    cache = FeatureCache.create_or_open(tmp_path / "c", CacheMeta(FeatureSettings(), storage_dtype="float16"))
    with cache.writer() as w:
        w.add(fake("a"))
    visual, _ = FeatureCache(tmp_path / "c").read("a")
    assert visual.dtype == np.float16


def test_mixed_settings_refused(tmp_path):
    FeatureCache.create_or_open(tmp_path / "c", CacheMeta(FeatureSettings(visual_model="random")))
    with pytest.raises(SettingsMismatch, match="visual_model"):
        FeatureCache.create_or_open(tmp_path / "c", CacheMeta(FeatureSettings(visual_model="caffe")))
    with pytest.raises(SettingsMismatch, match="storage_dtype"):
        FeatureCache.create_or_open(
            tmp_path / "c", CacheMeta(FeatureSettings(visual_model="random"), storage_dtype="float16")
        )


def test_merge_refuses_mixed_and_joins(tmp_path):
    for name, seed in (("s0", 0), ("s1", 0), ("other", 1)):
        c = FeatureCache.create_or_open(tmp_path / name, CacheMeta(FeatureSettings(seed=seed)))
        with c.writer() as w:
            w.add(fake(f"{name}-video"))
    assert merge_caches([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all.h5") == (2, 0)
    assert sorted(FeatureCache(tmp_path / "all.h5").ids()) == ["s0-video", "s1-video"]
    with pytest.raises(SettingsMismatch, match="seed"):
        merge_caches([tmp_path / "s0", tmp_path / "other"], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_not_a_cache(tmp_path):
    with pytest.raises(CacheError, match="no such feature cache"):
        FeatureCache(tmp_path / "missing")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(CacheError, match="x.h5"):
        FeatureCache(tmp_path / "x.h5")


def test_batch_records_failures_and_goes_on(tmp_path):
    videos = make_videos(tmp_path / "src", 2)
    write_video(tmp_path / "src" / "silent.mp4", duration_s=2, audio=None)
    (tmp_path / "src" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    proc = avel("preprocess", tmp_path / "src", "--out", tmp_path / "cache", "--workers", "1", *FAST, check=False)
    assert proc.returncode == 1, proc.stderr  # something failed: the exit status says so
    cache = FeatureCache(tmp_path / "cache")
    assert sorted(cache.ids()) == sorted(v.stem for v in videos)
    assert cache.failures["silent"].kind == "no-audio"
    assert cache.failures["broken"].kind in ("not-media", "corrupt")
    assert "broken.mp4" in proc.stderr and "silent.mp4" in proc.stderr


def test_shards_are_disjoint_and_merge(tmp_path):
    make_videos(tmp_path / "src", 5)
    for i in range(2):
        avel(
            "preprocess",
            tmp_path / "src",
            "--out",
            tmp_path / f"shard{i}",
            "--shard",
            f"{i}/2",
            "--workers",
            "0",
            *FAST,
        )
    ids = [set(FeatureCache(tmp_path / f"shard{i}").ids()) for i in range(2)]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 5
    avel("merge", tmp_path / "shard0", tmp_path / "shard1", "--out", tmp_path / "merged.h5")
    assert len(FeatureCache(tmp_path / "merged.h5")) == 5


def test_kill_minus_nine_then_resume_is_identical(tmp_path):
    make_videos(tmp_path / "src", 12)
    args = ["preprocess", tmp_path / "src", "--workers", "1", "--commit-every", "2", *FAST]
    avel(*args, "--out", tmp_path / "clean")

    killed = tmp_path / "killed"
    for delay_s in (0.0, 1.5):  # right after the first part, and again later
        proc = subprocess.Popen(
            [sys.executable, "-m", "avel.cli", *map(str, args), "--out", str(killed)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        start = len(list((killed / "parts").glob("part-*.h5"))) if killed.exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if killed.exists() and len(list((killed / "parts").glob("part-*.h5"))) > start:
                break
            time.sleep(0.05)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = FeatureCache(killed)  # a killed run never leaves a cache that cannot be opened
        assert 0 < len(partial) < 12 or proc.returncode == 0
    avel(*args, "--out", killed)
    clean, resumed = FeatureCache(tmp_path / "clean"), FeatureCache(killed)
    assert sorted(clean.ids()) == sorted(resumed.ids()) and len(clean) == 12
    for vid in clean.ids():
        for x, y in zip(clean.read(vid), resumed.read(vid)):
            assert x.dtype == y.dtype and np.array_equal(x, y), vid  # bit for bit
    assert not list((killed / "parts").glob(".tmp-*"))


def test_extract_single_file_and_resume(tmp_path):
    videos = make_videos(tmp_path / "src", 2)
    out = tmp_path / "features.h5"
    avel("extract", videos[0], "--out", out, *FAST)
    proc = avel("extract", *videos, "--out", out, *FAST)
    assert "1 extracted, 1 already done" in proc.stderr
    cache = FeatureCache(out)
    assert sorted(cache.ids()) == ["v00", "v01"]
    assert not (tmp_path / "features.h5.partial").exists()
    proc = avel(
        "extract",
        videos[0],
        "--out",
        out,
        "--visual-model",
        "random",
        "--audio-model",
        "random",
        "--frames-per-segment",
        "2",
        check=False,
    )
    assert proc.returncode == 2 and "frames_per_segment" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one clear line


def test_missing_input_is_one_line_error(tmp_path):
    proc = avel("preprocess", tmp_path / "nothing-here", "--out", tmp_path / "c", *FAST, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nothing-here'}: no such folder or list file"
