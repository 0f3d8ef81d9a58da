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
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ...core.atomic import is_temp_path
from ...core.config import FeatureSettings
from ...core.errors import AvelError, CacheError, Interrupted, MediaError, NoVideoStream, shown
from ..cache.meta import CacheMeta
from ..cache.parts import Failure, PartWriter, VideoFeatures
from ..cache.store import FeatureCache
from ..media.decode import DecodeOptions
from ..media.pool import StopSignals, open_decoders
from .behind import WriteBehind
from .features import FeatureExtractor
from .options import ExtractOptions, take_shard
from .stream import FeatureStream


class Sink(Protocol):
    """Where one video's features go, a batch of segments at a time (the cache's VideoSink)."""

    def append(self, visual: np.ndarray, audio: np.ndarray, visual_vec: np.ndarray | None = None) -> None: ...

    def close(self, duration_s: float) -> None: ...


def extract_video(
    stream: FeatureStream, sink: Sink, *, pooled: bool = False, check: Callable[[], None] = lambda: None
) -> None:
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
    unlisted: list[Skipped] = dataclasses.field(default_factory=list)  # files of the folder that are not videos

    @property
    def all_failed(self) -> list[Failure]:
        """The videos that failed, in this run and in earlier ones (a batch job's exit status 1)."""
        return self.failed + self.earlier_failed


REPORTED_FAILURES = 20  # failures listed one a line in the summary; the rest are counted


def summary_lines(summary: RunSummary, where: str) -> list[str]:
    """The report of a batch job into `where`: the counts, then one line per failure (the
    first REPORTED_FAILURES), each one line whatever its message."""
    earlier = len(summary.earlier_failed)
    lines = [
        f"{summary.done} extracted, {summary.skipped - earlier} already done, {len(summary.failed)} failed"
        + (f", {earlier} failed in an earlier run (--retry-failed tries them again)" if earlier else "")
        + f" -> {shown(where)}"
    ]  # a newline in the name stays escaped: one line
    unlisted = skipped_line(summary.unlisted)
    if unlisted is not None:
        lines.append(unlisted)
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


def extract_job(
    job: Job,
    stream: FeatureStream,
    writer: PartWriter,
    *,
    pooled: bool = False,
    check: Callable[[], None] = lambda: None,
) -> Failure | None:
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


def extract_behind(
    job: Job, stream: FeatureStream, behind: WriteBehind, *, check: Callable[[], None] = lambda: None
) -> None:
    """`extract_job` with the writes behind the model: one job's features handed to the
    writer thread a batch at a time, or its failure (the video's MediaError, an extractor's
    refusal). The outcome comes back from `behind.done()`."""
    behind.open(job)
    try:
        for audio, visual in stream.batches():
            behind.append(visual, audio)  # (n, 7, 7, 512), (n, 128)
            check()
    except CacheError:
        raise
    except AvelError as e:
        behind.fail(job, failure_of(job, e))
        return
    behind.close(job, float(stream.duration_s))


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

    extractor.compile(options.compile)
    meta = CacheMeta(extractor.settings, options.storage_dtype, annotations, dict(splits or {}))
    cache = FeatureCache.create_or_open(cache_dir, meta, verify=options.verify)
    summary = RunSummary()
    todo = plan_jobs(cache, take_shard(jobs, options.part), summary, retry_failed=options.retry_failed)
    decode = DecodeOptions.from_settings(extractor.settings, threads=decoder_threads(options.workers))
    progress = options.progress
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    try:
        # the bar ends before an error is printed; the cache (and its write lock) is closed in any case
        # the writes run in a thread behind the model (pipeline/extract/behind.py), the decoding in
        # processes ahead of it: the model loop only receives batches, runs the networks, hands features on
        with (
            cache,
            bar,
            StopSignals() as stop,
            cache.writer(max_videos=options.commit_every) as writer,
            WriteBehind(writer, failure_of, pooled=options.pooled) as behind,
            open_decoders(options.workers, decode, extractor.segments_per_batch, check=stop.check) as decoders,
        ):

            def written(done: list[tuple]) -> None:
                for job, failure in done:
                    if failure is None:
                        summary.done += 1
                    else:
                        summary.failed.append(failure)
                        bar.write(f"failed: {failure.error}")
                    bar.update(1)
                    if on_video is not None:
                        on_video(job, failure)

            try:
                for job, source in zip(todo, decoders.videos([j.path for j in todo])):
                    stop.check()
                    stream = FeatureStream(job.path, extractor, source=source, progress=progress and len(todo) == 1)
                    extract_behind(job, stream, behind, check=stop.check)
                    written(behind.done())
            except BaseException:
                written(behind.finish(raising=False))  # what was finished is written (and committed) all the same
                raise
            written(behind.finish())
    except KeyboardInterrupt as e:
        raise stopped(e, summary, cache_dir) from None
    return summary


def stopped(signal: KeyboardInterrupt, summary: RunSummary, cache_dir: str | os.PathLike) -> Interrupted:
    """The one line of a batch job stopped by Ctrl-C or SIGTERM (either engine)."""
    return Interrupted(
        f"{signal or 'SIGINT'}: {summary.done} video{'' if summary.done == 1 else 's'} extracted in this "
        f"run committed to {shown(cache_dir)}; run the same command again to resume"
    )


def jobs_from_paths(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> list[Job]:
    """One job per file, its id by `video_ids`: the file name without extension where that
    is unique; for files that share one, the path relative to `root` (default: the files'
    common parent folder) without the extension, and with it where that still clashes. The
    same file listed twice (after normalisation) is one job."""
    distinct: dict[str, str] = {}
    for p in map(os.fspath, paths):
        distinct.setdefault(os.path.normpath(os.path.abspath(p)), p)
    paths = list(distinct.values())
    return [Job(i, p) for i, p in zip(video_ids(paths, root), paths)]


def video_ids(paths: list[str], root: str | os.PathLike | None = None) -> list[str]:
    """The ids of distinct files, unique and the same on every machine (never an absolute
    path): each file's id is the first of (stem, relative path without extension, relative
    path) that no other file of the list shares, `/`-separated, relative to `root` (default:
    the files' common parent folder). Today's ids of files whose stems are unique are their
    stems, so caches written before keep their ids."""
    absolute = [os.path.abspath(p) for p in paths]
    if root is None:
        root = os.path.commonpath([os.path.dirname(a) for a in absolute]) if absolute else "."
    root = os.path.abspath(root)
    names = []
    for a in absolute:
        rel = Path(os.path.relpath(a, root)).as_posix()
        names.append((os.path.splitext(os.path.basename(a))[0], os.path.splitext(rel)[0], rel))
    level = [0] * len(paths)
    while True:  # move the files whose id is shared one step further until none is (distinct files end distinct)
        owners: dict[str, list[int]] = {}
        for k, n in enumerate(names):
            owners.setdefault(n[level[k]], []).append(k)
        shared = [k for ks in owners.values() if len(ks) > 1 for k in ks if level[k] < 2]
        if not shared:
            return [n[level[k]] for k, n in enumerate(names)]
        for k in shared:
            level[k] += 1


# Listed without opening them: the extensions of video containers, and of files that are not media
# (FFmpeg would open some of those: a .txt as ANSI art, a .jpg as a one-frame video)
VIDEO_SUFFIXES = {
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".flv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wmv",
    ".3gp",
    ".ogv",
    ".mts",
    ".m2ts",
    ".asf",
    ".rm",
    ".rmvb",
    ".mxf",
    ".vob",
    ".3g2",
    ".264",
    ".h264",
    ".265",
    ".hevc",
    ".divx",
    ".f4v",
    ".m2v",
    ".mjpeg",
    ".nut",
    ".ogm",
    ".dv",
}
NOT_MEDIA_SUFFIXES = {
    ".txt",
    ".json",
    ".jsonl",
    ".h5",
    ".hdf5",
    ".md",
    ".rst",
    ".csv",
    ".tsv",
    ".py",
    ".yaml",
    ".yml",
    ".toml",
    ".xml",
    ".html",
    ".htm",
    ".log",
    ".nfo",
    ".pdf",
    ".zip",
    ".tar",
    ".gz",
    ".bz2",
    ".xz",
    ".7z",
    ".npy",
    ".npz",
    ".pt",
    ".pth",
    ".safetensors",
    ".pkl",
    ".srt",
    ".vtt",
    ".ass",
    ".ssa",
    ".sub",
    ".idx",
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".svg",
    ".ico",
    ".lock",
    ".sh",
    ".ini",
    ".cfg",
    ".db",
    ".sqlite",
    ".part",
    ".crdownload",
}


@dataclass(frozen=True)
class Skipped:
    """A file of a folder that is not taken as a video, and why ("not media", "a FIFO"...)."""

    path: str
    reason: str


def scan_folder(folder: str | os.PathLike) -> tuple[list[Path], list[Skipped]]:
    """The videos of a folder (recursive, sorted) and the files skipped, each with its reason.
    A known video extension is taken by its name, a known other one skipped by its name; any
    other file is probed (opened with PyAV: a video when it holds a moving picture). FIFOs,
    sockets, devices and dangling symbolic links are skipped unopened."""
    from ..media.container import probe

    videos, skipped = [], []
    for p in sorted(Path(folder).rglob("*")):
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            skipped.append(Skipped(str(p), "dangling symlink" if p.is_symlink() else "vanished"))
            continue
        except OSError as e:
            skipped.append(Skipped(str(p), f"unreadable ({e.strerror})"))
            continue
        if stat.S_ISDIR(mode) or is_temp_path(
            p
        ):  # a file being written (core/atomic.py's temporaries keep their suffix)
            continue
        if not stat.S_ISREG(mode):
            what = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
            skipped.append(Skipped(str(p), what))
            continue
        suffix = p.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            videos.append(p)
        elif suffix in NOT_MEDIA_SUFFIXES:
            skipped.append(Skipped(str(p), "not media"))
        else:
            try:
                probe(p, require_audio=False)
                videos.append(p)
            except NoVideoStream:
                skipped.append(Skipped(str(p), "no video stream"))
            except MediaError:
                skipped.append(Skipped(str(p), "not media"))
    return videos, skipped


def skipped_line(skipped: list[Skipped], shown_files: int = 3) -> str | None:
    """One line for the files a listing skipped: "skipped 3 files: 2 not media (notes.txt,
    a.json), 1 FIFO" (a few names per reason), or None when none was."""
    if not skipped:
        return None
    by_reason: dict[str, list[str]] = {}
    for s in skipped:
        by_reason.setdefault(s.reason, []).append(shown(os.path.basename(s.path)))
    parts = [
        f"{len(names)} {reason} ({', '.join(names[:shown_files])}{', ...' if len(names) > shown_files else ''})"
        for reason, names in by_reason.items()
    ]
    return f"skipped {len(skipped)} file{'' if len(skipped) == 1 else 's'}: {', '.join(parts)}"


def find_videos(source: str | os.PathLike, skipped: list[Skipped] | None = None) -> list[Path]:
    """The videos of a folder (recursive: `scan_folder`; the files it skips are appended to
    `skipped`), or the paths listed in a text file (one a line, relative to the file's
    folder; blank lines and # comments skipped)."""
    source = Path(source)
    if source.is_dir():
        videos, passed = scan_folder(source)
        if skipped is not None:
            skipped += passed
        return videos
    if source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        return [Path(ln) if os.path.isabs(ln) else source.parent / ln for ln in lines if ln and not ln.startswith("#")]
    raise AvelError(f"{source}: no such folder or list file")


def source_jobs(source: str | os.PathLike, skipped: list[Skipped] | None = None) -> list[Job]:
    """The jobs of `avel preprocess SOURCE`: ids relative to SOURCE for a folder, to the
    listed files' common parent for a list file (`jobs_from_paths`)."""
    videos = find_videos(source, skipped)
    return jobs_from_paths(videos, root=source if Path(source).is_dir() else None)


def annotated_listing(
    source: str | os.PathLike, annotations: str | os.PathLike
) -> tuple[list[Job], list[Failure], str, dict[str, str]]:
    """`annotated_jobs`, with the ids that name two files under `source` (`a/vid.mp4` and
    `b/vid.mkv` for the id `vid`) as failures naming both, in place of jobs."""
    from ...core.annotations import read_annotations, split_files

    annotations = Path(annotations)
    rows = read_annotations(annotations)
    text = annotations.read_text(encoding="utf-8-sig")
    splits = {name: f.read_text(encoding="utf-8-sig") for name, f in split_files(annotations.parent).items()}
    source = Path(source)
    files: dict[str, list[Path]] = {}
    for p in find_videos(source) if source.is_dir() else []:
        files.setdefault(p.stem, []).append(p)
    jobs, clashes = [], []
    for i in dict.fromkeys(r.video_id for r in rows):
        found = files.get(i, [source / f"{i}.mp4"])
        if len(found) == 1:
            jobs.append(Job(i, str(found[0])))
        else:
            named = " and ".join(shown(p) for p in found[:2]) + (
                f" (and {len(found) - 2} more)" if len(found) > 2 else ""
            )
            clashes.append(
                Failure(
                    i,
                    str(found[0]),
                    "id-clash",
                    f"{named}: both are video {shown(i)!r} of the annotations; keep one of them",
                )
            )
    return jobs, clashes, text, splits


def annotated_jobs(source: str | os.PathLike, annotations: str | os.PathLike) -> tuple[list[Job], str, dict[str, str]]:
    """Jobs of an AVE-style dataset: one per distinct video id of the annotation rows (an id
    annotated twice is extracted once), the file found by name anywhere under `source`
    (else SOURCE/<id>.mp4, which then fails as not found). Also returns the annotation text
    and the split files found beside it (`split_files`: trainSet.txt ... and the CML split).
    An id that names two files is an AvelError naming both (`avel preprocess` records it as
    that video's failure: `annotated_listing`)."""
    jobs, clashes, text, splits = annotated_listing(source, annotations)
    if clashes:
        raise AvelError(clashes[0].error)
    return jobs, text, splits


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
    extractor = FeatureExtractor(
        settings,
        visual_weights_file=visual_weights_file,
        audio_weights_file=audio_weights_file,
        audio_pca_file=audio_pca_file,
        device=device,
    )
    [job] = jobs_from_paths([video])
    collected = _Collected()
    options = DecodeOptions.from_settings(extractor.settings)
    extract_video(FeatureStream(job.path, extractor, options=options), collected, pooled=pooled)
    return collected.features(job.id, job.path)
