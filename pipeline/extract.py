"""Stage one's engine: decoded segments -> VGG-19 pool5 + VGGish features, and the
batch job that feeds a cache from many videos (decoding in threads or worker processes,
one model process, failures recorded per video, resumable)."""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from avel.pipeline.cache import CacheMeta, Failure, FeatureCache, VideoFeatures
from avel.pipeline.config import FeatureSettings
from avel.pipeline.decode import DecodeOptions, Video, decode_or_error, decode_video
from avel.pipeline.errors import AvelError, shown
from avel.pipeline.features import FeatureExtractor
from avel.pipeline.stream import prefetch


def video_features(extractor: FeatureExtractor, video: Video, video_id: str, pooled: bool = False) -> VideoFeatures:
    """The features of a decoded video, as a cache stores them."""
    visual = extractor.visual_features(video.frames)
    return VideoFeatures(
        video_id, video.path, video.duration_s, visual, extractor.audio_features(video.audio),
        visual.mean(axis=(1, 2)) if pooled else None,
    )


# -- decoding ahead of the model --------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    id: str
    path: str


def _decode_job(args: tuple[Job, DecodeOptions]):
    job, options = args
    return (job, *decode_or_error(job.path, options))


def decoded(jobs: list[Job], options: DecodeOptions, workers: int) -> Iterator[tuple[Job, Video | None, tuple | None]]:
    """Decode jobs in order, ahead of the consumer: `workers` processes, or (0) one thread.
    At most 2 x workers videos (2 with the thread) are decoded ahead, so memory stays
    bounded however many jobs there are."""
    if workers > 0:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            pending: deque = deque()
            todo = iter(jobs)
            for job in itertools.islice(todo, 2 * workers):
                pending.append((job, pool.apply_async(decode_or_error, (job.path, options))))
            while pending:
                job, result = pending.popleft()
                video, error = result.get()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.apply_async(decode_or_error, (nxt.path, options))))
                yield job, video, error
        return
    yield from prefetch((_decode_job((j, options)) for j in jobs), maxsize=2)


@dataclass
class RunSummary:
    done: int = 0  # videos extracted in this run
    skipped: int = 0  # already in the cache, or recorded as failed (see earlier_failed)
    failed: list[Failure] = dataclasses.field(default_factory=list)
    earlier_failed: list[Failure] = dataclasses.field(default_factory=list)  # skipped: failed in an earlier run


def run_extraction(
    jobs: list[Job],
    cache_dir: str | os.PathLike,
    extractor: FeatureExtractor,
    *,
    workers: int = 0,
    pooled: bool = False,
    storage_dtype: str = "float32",
    annotations: str | None = None,
    splits: dict[str, str] | None = None,
    retry_failed: bool = False,
    commit_every: int = 64,
    progress: bool = True,
) -> RunSummary:
    """Extract every job into the directory cache `cache_dir` (created, or resumed)."""
    from tqdm import tqdm

    meta = CacheMeta(extractor.settings, storage_dtype, annotations, dict(splits or {}))
    cache = FeatureCache.create_or_open(cache_dir, meta)
    summary = RunSummary()
    todo = []
    for j in jobs:
        if j.id in cache or (j.id in cache.failures and not retry_failed):
            summary.skipped += 1
            if j.id not in cache:
                summary.earlier_failed.append(cache.failures[j.id])
        else:
            todo.append(j)
    options = DecodeOptions.from_settings(extractor.settings)
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    # the bar ends before an error is printed; the cache (and its write lock) is closed in any case
    with cache, bar, cache.writer(max_videos=commit_every) as writer:
        for job, video, error in decoded(todo, options, workers):
            if video is not None:
                try:
                    writer.add(video_features(extractor, video, job.id, pooled))
                    summary.done += 1
                except AvelError as e:
                    error = ("error", f"{shown(job.path)}: {e}")
            if error is not None:
                failure = Failure(job.id, job.path, error[0], error[1])
                writer.fail(failure)
                summary.failed.append(failure)
                bar.write(f"failed: {failure.error}")
            bar.update(1)
    summary.failed += writer.rejected  # videos a part could not store
    return summary


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
    relative to the file's folder; blank lines and # comments skipped)."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        return [Path(ln) if os.path.isabs(ln) else source.parent / ln for ln in lines if ln and not ln.startswith("#")]
    raise AvelError(f"{source}: no such folder or list file")


def annotated_jobs(source: str | os.PathLike, annotations: str | os.PathLike) -> tuple[list[Job], str, dict[str, str]]:
    """Jobs of an AVE-style dataset: one per distinct video id of the annotation rows (an id
    annotated twice is extracted once), the file found by name anywhere under `source`
    (else SOURCE/<id>.mp4, which then fails as not found). Also returns the annotation text
    and the split files found beside it (`split_files`: trainSet.txt ... and the CML split)."""
    from avel.pipeline.annotations import read_annotations, split_files

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
    return video_features(extractor, decode_video(job.path, DecodeOptions.from_settings(extractor.settings)), job.id, pooled)
