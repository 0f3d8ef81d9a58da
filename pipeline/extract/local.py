"""Stage one's engine: videos -> VGG-19 pool5 + VGGish features, one video at a time
(`extract_video`: decoded batches through `FeatureStream` into a sink, a chunk of segments
at a time), and the batch job that fills a cache from many videos (`run_extraction`:
decoding in a thread or in decoder processes ahead of the one model process, failures
recorded per video, resumable, stopped cleanly by Ctrl-C or SIGTERM).

Memory is bounded by the batch, not the video: frames travel from the decoders a batch of
segments at a time (pipeline/media/pool.py) and features are written to the cache's part file
a batch at a time (`VideoSink`), so a two-hour video needs no more than a ten-second one.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from ..cache.meta import CacheMeta
from ..cache.parts import Failure, PartWriter, VideoFeatures
from ..cache.store import FeatureCache
from ...core.atomic import is_temp_path
from ...core.config import FeatureSettings
from ..media.decode import DecodeOptions
from ..media.pool import StopSignals, open_decoders
from ...core.errors import AvelError, CacheError, Interrupted, shown
from .features import FeatureExtractor
from .options import ExtractOptions, take_shard
from .stream import FeatureStream


class Sink(Protocol):
    """Where one video's features go, a batch of segments at a time (the cache's VideoSink)."""

    def append(self, visual: np.ndarray, audio: np.ndarray, visual_vec: np.ndarray | None = None) -> None: ...

    def close(self, duration_s: float) -> None: ...


def extract_video(stream: FeatureStream, sink: Sink, *, pooled: bool = False,
                  check: Callable[[], None] = lambda: None) -> None:
    """One video's features into `sink`, a batch at a time; `sink.close` once it is whole.
    Raises the video's MediaError (the sink is then left to the caller to discard);
    `check` runs after every batch (where a stop request may raise)."""
    for audio, visual in stream.batches():
        sink.append(visual, audio, visual.mean(axis=(1, 2)) if pooled else None)  # (n, 7, 7, 512), (n, 128), (n, 512)
        check()
    sink.close(float(stream.duration_s))


@dataclass
class _Collected:
    """A sink that keeps the features in memory (one video, the Python API)."""

    chunks: list = dataclasses.field(default_factory=list)
    duration_s: float | None = None

    def append(self, visual, audio, visual_vec=None) -> None:
        self.chunks.append((visual, audio, visual_vec))

    def close(self, duration_s: float) -> None:
        self.duration_s = duration_s

    def features(self, video_id: str, path: str) -> VideoFeatures:
        visual, audio, vec = (np.concatenate(x) if x[0] is not None else None for x in zip(*self.chunks))
        return VideoFeatures(video_id, path, float(self.duration_s), visual, audio, vec)


@dataclass(frozen=True)
class Job:
    id: str
    path: str


@dataclass
class RunSummary:
    done: int = 0  # videos extracted in this run
    skipped: int = 0  # already in the cache, or recorded as failed (see earlier_failed)
    failed: list[Failure] = dataclasses.field(default_factory=list)
    earlier_failed: list[Failure] = dataclasses.field(default_factory=list)  # skipped: failed in an earlier run

    @property
    def all_failed(self) -> list[Failure]:
        """The videos that failed, in this run and in earlier ones (a batch job's exit status 1)."""
        return self.failed + self.earlier_failed


REPORTED_FAILURES = 20  # failures listed one a line in the summary; the rest are counted


def summary_lines(summary: RunSummary, where: str) -> list[str]:
    """The report of a batch job into `where`: the counts, then one line per failure (the
    first REPORTED_FAILURES), each one line whatever its message."""
    earlier = len(summary.earlier_failed)
    lines = [f"{summary.done} extracted, {summary.skipped - earlier} already done, {len(summary.failed)} failed"
             + (f", {earlier} failed in an earlier run (--retry-failed tries them again)" if earlier else "")
             + f" -> {where}"]
    failed = summary.all_failed
    lines += [f"  {f.kind}: {' '.join(str(f.error).split())}" for f in failed[:REPORTED_FAILURES]]
    if len(failed) > REPORTED_FAILURES:
        lines.append(f"  ... and {len(failed) - REPORTED_FAILURES} more (see the cache's failures)")
    return lines


def plan_jobs(cache: FeatureCache, jobs: list[Job], summary: RunSummary, *, retry_failed: bool = False) -> list[Job]:
    """The jobs left to do: ids already in the cache, and those recorded as failed (unless
    `retry_failed`), are counted in `summary` as skipped, before anything is scheduled."""
    todo = []
    for j in jobs:
        if j.id in cache or (j.id in cache.failures and not retry_failed):
            summary.skipped += 1
            if j.id not in cache:
                summary.earlier_failed.append(cache.failures[j.id])
        else:
            todo.append(j)
    return todo


def failure_of(job: Job, error: AvelError) -> Failure:
    """The record of a video that failed with `error` (its message names the file)."""
    message = str(error) if shown(job.path) in str(error) else f"{shown(job.path)}: {error}"
    return Failure(job.id, job.path, getattr(error, "kind", "error"), message)


def extract_job(job: Job, stream: FeatureStream, writer: PartWriter, *, pooled: bool = False,
                check: Callable[[], None] = lambda: None) -> Failure | None:
    """One job's features into the part `writer` is writing, or its failure recorded there
    (returned). A video that fails half way leaves nothing of its features; CacheError (the
    cache cannot be written: a full disk) is raised, what is committed stays. What both
    engines run per video (the local one in its process, the Ray one in each actor)."""
    try:
        sink = writer.open_video(job.id, job.path)
        try:
            extract_video(stream, sink, pooled=pooled, check=check)
        except BaseException:
            sink.discard()
            raise
    except CacheError:
        raise
    except AvelError as e:  # the video's MediaError, an unstorable id, an extractor's refusal
        failure = failure_of(job, e)
        writer.fail(failure)
        return failure
    return None


def decoder_threads(workers: int) -> int:
    """FFmpeg threads per decoder: automatic for the one decoding thread; with decoder
    processes, the cores shared out (one each when there are as many processes as cores:
    frame threading costs 20-40% more CPU per frame than one thread, measured)."""
    if workers == 0:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def run_extraction(
    jobs: list[Job],
    cache_dir: str | os.PathLike,
    extractor: FeatureExtractor,
    options: ExtractOptions = ExtractOptions(),
    *,
    annotations: str | None = None,
    splits: dict[str, str] | None = None,
    on_video: Callable[[Job, Failure | None], None] | None = None,
) -> RunSummary:
    """Extract every job (of `options.shard`) into the directory cache `cache_dir` (created, or
    resumed), which records `annotations` (the text of an AVE Annotations.txt) and `splits`
    (split file name -> text). `on_video(job, failure or None)` is called as each video is
    done (progress reports).

    Ctrl-C or SIGTERM: the video being extracted is dropped, every finished one is committed,
    and `Interrupted` is raised with a one-line message (the CLI exits 130); running the same
    job again resumes."""
    from tqdm import tqdm

    meta = CacheMeta(extractor.settings, options.storage_dtype, annotations, dict(splits or {}))
    cache = FeatureCache.create_or_open(cache_dir, meta, verify=options.verify)
    summary = RunSummary()
    todo = plan_jobs(cache, take_shard(jobs, options.part), summary, retry_failed=options.retry_failed)
    decode = DecodeOptions.from_settings(extractor.settings, threads=decoder_threads(options.workers))
    progress = options.progress
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    try:
        # the bar ends before an error is printed; the cache (and its write lock) is closed in any case
        with cache, bar, StopSignals() as stop, cache.writer(max_videos=options.commit_every) as writer, \
                open_decoders(options.workers, decode, extractor.segments_per_batch, check=stop.check) as decoders:
            for job, source in zip(todo, decoders.videos([j.path for j in todo])):
                stop.check()
                stream = FeatureStream(job.path, extractor, source=source, progress=progress and len(todo) == 1)
                failure = extract_job(job, stream, writer, pooled=options.pooled, check=stop.check)
                if failure is None:
                    summary.done += 1
                else:
                    summary.failed.append(failure)
                    bar.write(f"failed: {failure.error}")
                bar.update(1)
                if on_video is not None:
                    on_video(job, failure)
    except KeyboardInterrupt as e:
        raise stopped(e, summary, cache_dir) from None
    return summary


def stopped(signal: KeyboardInterrupt, summary: RunSummary, cache_dir: str | os.PathLike) -> Interrupted:
    """The one line of a batch job stopped by Ctrl-C or SIGTERM (either engine)."""
    return Interrupted(f"{signal or 'SIGINT'}: {summary.done} video{'' if summary.done == 1 else 's'} extracted in this "
                       f"run committed to {shown(cache_dir)}; run the same command again to resume")


def jobs_from_paths(paths: Iterable[str | os.PathLike]) -> list[Job]:
    """One job per file; the id is the file name without extension (the parent folders
    are added where two files would share an id)."""
    paths = [os.fspath(p) for p in paths]
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    jobs, seen = [], set()
    for p, s in zip(paths, stems):
        vid = s if counts[s] == 1 else os.path.splitext(os.path.normpath(p))[0].lstrip(os.sep)
        if vid not in seen:
            seen.add(vid)
            jobs.append(Job(vid, p))
    return jobs


VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp"}


def find_videos(source: str | os.PathLike) -> list[Path]:
    """The videos of a folder (recursive), or the paths listed in a text file (one a line,
    relative to the file's folder; blank lines and # comments skipped). A folder's files being
    written (core/atomic.py's temporaries, which keep their suffix) are not videos yet."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*")
                      if p.suffix.lower() in VIDEO_SUFFIXES and not is_temp_path(p) and p.is_file())
    if source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        return [Path(ln) if os.path.isabs(ln) else source.parent / ln for ln in lines if ln and not ln.startswith("#")]
    raise AvelError(f"{source}: no such folder or list file")


def annotated_jobs(source: str | os.PathLike, annotations: str | os.PathLike) -> tuple[list[Job], str, dict[str, str]]:
    """Jobs of an AVE-style dataset: one per distinct video id of the annotation rows (an id
    annotated twice is extracted once), the file found by name anywhere under `source`
    (else SOURCE/<id>.mp4, which then fails as not found). Also returns the annotation text
    and the split files found beside it (`split_files`: trainSet.txt ... and the CML split)."""
    from ...core.annotations import read_annotations, split_files

    annotations = Path(annotations)
    rows = read_annotations(annotations)
    text = annotations.read_text(encoding="utf-8-sig")
    splits = {name: f.read_text(encoding="utf-8-sig") for name, f in split_files(annotations.parent).items()}
    source = Path(source)
    files = {p.stem: p for p in find_videos(source)} if source.is_dir() else {}
    ids = list(dict.fromkeys(r.video_id for r in rows))
    return [Job(i, str(files.get(i, source / f"{i}.mp4"))) for i in ids], text, splits


def extract_features(
    video: str | os.PathLike,
    settings: FeatureSettings = FeatureSettings(),
    *,
    device: str = "auto",
    visual_weights_file: str | None = None,
    audio_weights_file: str | None = None,
    audio_pca_file: str | None = None,
    pooled: bool = False,
) -> VideoFeatures:
    """Features of one video in one call (the Python API of `avel extract`).
    For many videos build one FeatureExtractor and reuse it."""
    extractor = FeatureExtractor(settings, visual_weights_file=visual_weights_file, audio_weights_file=audio_weights_file,
                                 audio_pca_file=audio_pca_file, device=device)
    [job] = jobs_from_paths([video])
    collected = _Collected()
    options = DecodeOptions.from_settings(extractor.settings)
    extract_video(FeatureStream(job.path, extractor, options=options), collected, pooled=pooled)
    return collected.features(job.id, job.path)
