"""The writes behind the model (pipeline/extract/behind.py, issue #22): a cache written by
run_extraction with its writer thread holds exactly what the sequential path (extract_job
into the PartWriter, one batch after the other) writes; a slow writer does not hold the
model up; the queue between them stays within its bound; a write error still stops the run
with its CacheError."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from mediagen import solid, tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import CacheError
from avel.pipeline.cache import parts
from avel.pipeline.cache.store import CacheMeta, FeatureCache
from avel.pipeline.extract import behind as behind_module
from avel.pipeline.extract.behind import WriteBehind
from avel.pipeline.extract.features import FeatureExtractor
from avel.pipeline.extract.local import Job, extract_job, failure_of, run_extraction
from avel.pipeline.extract.options import ExtractOptions
from avel.pipeline.extract.stream import FeatureStream
from avel.pipeline.media.decode import DecodeOptions

SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2)
OPTIONS = ExtractOptions(pooled=True, progress=False, commit_every=2)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(SETTINGS, device="cpu", batch_size=2)  # one segment a batch: many batches a video


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> list[Job]:
    folder = tmp_path_factory.mktemp("overlap")
    out = []
    for i in range(4):
        write_video(
            folder / f"v{i}.mp4", duration_s=3, color=solid((60 * i, 90, 200 - 40 * i)), audio=tone(300 + 90 * i)
        )
        out.append(Job(f"v{i}", str(folder / f"v{i}.mp4")))
    out.insert(2, Job("missing", str(folder / "missing.mp4")))  # fails: its failure is recorded in order
    return out


def sequential(jobs, cache_dir, extractor) -> None:
    """The reference: every batch written before the next is computed (what extract_job does)."""
    cache = FeatureCache.create_or_open(cache_dir, CacheMeta(extractor.settings, "float32"))
    options = DecodeOptions.from_settings(extractor.settings)
    with cache, cache.writer(max_videos=OPTIONS.commit_every) as writer:
        for job in jobs:
            extract_job(job, FeatureStream(job.path, extractor, options=options), writer, pooled=True)


def contents(cache_dir) -> dict:
    with FeatureCache(cache_dir) as cache:
        out = {
            i: (
                *cache.read(i),
                cache.read(i, pooled=True)[0],
                cache.entries[i].num_segments,
                cache.entries[i].duration_s,
            )
            for i in cache.ids()
        }
        return out, {k: (f.kind, f.error) for k, f in cache.failures.items()}


@pytest.mark.parametrize("workers,flush", [(0, 64), (2, 2)])
def test_written_behind_equals_the_sequential_path(tmp_path, extractor, jobs, workers, flush, monkeypatch):
    monkeypatch.setattr(behind_module, "FLUSH_SEGMENTS", flush)  # 2: a video's batches gathered, then one append
    sequential(jobs, tmp_path / "seq", extractor)
    seen = []
    summary = run_extraction(
        jobs,
        tmp_path / "behind",
        extractor,
        dataclasses.replace(OPTIONS, workers=workers),
        on_video=lambda job, failure: seen.append((job.id, failure is None)),
    )
    assert seen == [(j.id, j.id != "missing") for j in jobs]  # reported in order, each once
    assert summary.done == 4 and [f.id for f in summary.failed] == ["missing"]
    (a, fa), (b, fb) = contents(tmp_path / "seq"), contents(tmp_path / "behind")
    assert sorted(a) == sorted(b) == ["v0", "v1", "v2", "v3"]
    assert fa == fb and list(fa) == ["missing"]
    for vid in a:
        for x, y in zip(a[vid], b[vid]):
            np.testing.assert_array_equal(x, y)  # bit-identical, pooled vector and segment count included


def test_a_slow_writer_does_not_hold_the_model_up(tmp_path, extractor, jobs, monkeypatch):
    """The first HDF5 append waits until the model has computed every batch of the next
    video too (or 60 s): the sequential path cannot get there, since it would wait for it."""
    computed = []
    real_visual, real_append = FeatureExtractor.visual_features, parts.VideoSink.append
    total = 3 + 3  # two 3-s videos, one segment a batch
    reached = threading.Event()

    def counting(self, frames):
        computed.append(len(frames))
        if len(computed) >= total:
            reached.set()
        return real_visual(self, frames)

    def slow(self, *args, **kwargs):
        reached.wait(timeout=60)
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(FeatureExtractor, "visual_features", counting)
    monkeypatch.setattr(parts.VideoSink, "append", slow)
    monkeypatch.setattr(behind_module, "FLUSH_SEGMENTS", 1)
    two = [j for j in jobs if j.id != "missing"][:2]
    summary = run_extraction(two, tmp_path / "c", extractor, OPTIONS)
    assert reached.is_set(), f"the model computed {len(computed)} batches while the first write waited"
    assert summary.done == 2


class _StuckWriter:
    """A PartWriter whose first open_video waits for `go`."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def open_video(self, video_id, path):
        self.calls += 1
        self.go.wait(timeout=60)
        return _NullSink()

    def fail(self, failure):
        pass


class _NullSink:
    def append(self, *a):
        pass

    def close(self, duration_s):
        pass

    def discard(self):
        pass


def test_the_queue_holds_at_most_its_bound():
    writer = _StuckWriter()
    sent = []
    depth = 3
    b = WriteBehind(writer, failure_of, depth=depth)
    frames = np.zeros((1, 7, 7, 512), np.float32), np.zeros((1, 128), np.float32)

    def model():
        b.open(Job("a", "a.mp4"))
        sent.append("open")
        for _ in range(10):
            b.append(*frames)
            sent.append("append")

    producer = threading.Thread(target=model, daemon=True)
    producer.start()
    deadline = time.monotonic() + 30
    while len(sent) < 1 + depth and time.monotonic() < deadline:  # the open is taken, `depth` appends wait
        time.sleep(0.01)
    time.sleep(0.3)  # the producer, were the queue unbounded, would be done with its ten appends by now
    assert writer.calls == 1 and len(sent) == 1 + depth and b.queue.qsize() == depth
    writer.go.set()
    producer.join(timeout=30)
    assert len(sent) == 11 and b.max_queued <= depth
    b.close(Job("a", "a.mp4"), 1.0)
    assert [j.id for j, f in b.finish()] == ["a"]


def test_a_write_error_behind_the_model_stops_the_run(tmp_path, extractor, jobs, monkeypatch):
    def full(self, *args, **kwargs):
        raise CacheError("no space left on device while writing the part")

    monkeypatch.setattr(parts.VideoSink, "append", full)
    monkeypatch.setattr(behind_module, "FLUSH_SEGMENTS", 1)
    with pytest.raises(CacheError, match="no space left"):
        run_extraction(jobs[:2], tmp_path / "c", extractor, OPTIONS)
    assert FeatureCache(tmp_path / "c").ids() == []


def test_compiled_features_equal_eager():
    """--compile default on the CPU (inductor): the eager features (the reference path) on a
    small input; VGG-19 exactly here, VGGish within float tolerance (its fused front end)."""
    settings = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2, frame_size=64)
    fe = FeatureExtractor(settings, device="cpu", batch_size=4)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
    audio = rng.uniform(-1, 1, (2, 16000)).astype(np.float32)
    visual, vggish = fe.visual_features(frames), fe.audio_features(audio)
    fe.compile("default")
    np.testing.assert_allclose(fe.visual_features(frames), visual, rtol=1e-5, atol=1e-5 * float(np.abs(visual).max()))
    np.testing.assert_allclose(fe.audio_features(audio), vggish, rtol=1e-5, atol=1e-5 * float(np.abs(vggish).max()))
    fe.compile("off")
    np.testing.assert_array_equal(fe.visual_features(frames), visual)  # eager again
