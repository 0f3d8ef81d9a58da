"""Stage one's engine: decoded segments -> VGG-19 pool5 + VGGish features, and the
batch job that feeds a cache from many videos (decoding in threads or worker processes,
one model process, failures recorded per video, resumable)."""
from __future__ import annotations

import contextlib
import itertools
import dataclasses
import multiprocessing as mp
import os
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

import extractors  # noqa: F401  (registers the extractors)
from extractors.registry import AUDIO_MODELS, VISUAL_MODELS
from pipeline.cache import CacheMeta, Failure, FeatureCache, VideoFeatures
from pipeline.config import FeatureSettings
from pipeline.decode import DecodeOptions, Video, decode_or_error, decode_video
from pipeline.errors import AvelError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AvelError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def decode_options(settings: FeatureSettings) -> DecodeOptions:
    return DecodeOptions(
        frames_per_segment=settings.frames_per_segment, segments=settings.segments,
        frame_size=settings.frame_size, on_missing_audio=settings.on_missing_audio,
    )


class FeatureExtractor:
    """Both extractors on one device. `settings` in, settings with the weights' SHA-256
    filled in out (`self.settings`): that is what a cache records."""

    def __init__(
        self,
        settings: FeatureSettings,
        *,
        visual_weights_file: str | None = None,
        audio_weights_file: str | None = None,
        audio_pca_file: str | None = None,
        device: str = "auto",
        batch_size: int = 160,
    ) -> None:
        if settings.precision not in PRECISIONS:
            raise AvelError(f"--precision {settings.precision}: choose one of {', '.join(PRECISIONS)}")
        if settings.audio_pca and audio_pca_file is None:
            audio_pca_file = "download"
        self.device = resolve_device(device)
        if settings.precision == "fp16" and self.device.type == "cpu":
            raise AvelError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        self.batch_size = batch_size
        torch.manual_seed(settings.seed)
        self.visual = VISUAL_MODELS.get(settings.visual_model)(weights_file=visual_weights_file, seed=settings.seed)
        self.audio = AUDIO_MODELS.get(settings.audio_model)(
            weights_file=audio_weights_file, pca_file=audio_pca_file if settings.audio_pca else None, seed=settings.seed,
        )
        self.visual.eval().to(self.device, memory_format=torch.channels_last)
        self.audio.eval().to(self.device)
        self.settings = dataclasses.replace(
            settings,
            visual_weights_sha256=self.visual.weights_sha256,
            audio_weights_sha256=self.audio.weights_sha256,
            audio_pca_sha256=getattr(self.audio, "pca_sha256", ""),
        )
        self._autocast = PRECISIONS[settings.precision]

    def _amp(self):
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    @torch.inference_mode()
    def visual_features(self, frames: np.ndarray) -> np.ndarray:
        """frames [T, K, S, S, 3] uint8 -> mean pool5 over the K frames [T, 7, 7, 512] float32.
        Frames of a video go through VGG-19 in chunks of `batch_size` (a video's features
        never depend on which other videos were processed: resumed runs are bit-identical)."""
        T, K = frames.shape[:2]
        flat = frames.reshape(T * K, *frames.shape[2:])
        out = []
        for i in range(0, T * K, self.batch_size):
            with self._amp():
                out.append(self.visual(self._to_device(flat[i : i + self.batch_size])).float())
        pool5 = torch.cat(out).reshape(T, K, *out[0].shape[1:])  # [T, K, 7, 7, 512]
        return pool5.mean(dim=1).cpu().numpy()

    @torch.inference_mode()
    def audio_features(self, audio: np.ndarray) -> np.ndarray:
        """audio [T, 16000] float32 -> VGGish embeddings [T, 128] float32."""
        with self._amp():
            return self.audio(self._to_device(np.ascontiguousarray(audio))).float().cpu().numpy()

    def __call__(self, video: Video, video_id: str, pooled: bool = False) -> VideoFeatures:
        visual = self.visual_features(video.frames)
        return VideoFeatures(
            video_id, video.path, video.duration_s, visual, self.audio_features(video.audio),
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
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def run() -> None:
        for j in jobs:
            if stop.is_set():
                return
            q.put(_decode_job((j, options)))
        q.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        stop.set()


@dataclass
class RunSummary:
    done: int = 0  # videos extracted in this run
    skipped: int = 0  # already in the cache
    failed: list[Failure] = dataclasses.field(default_factory=list)


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
        else:
            todo.append(j)
    options = decode_options(extractor.settings)
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    with cache.writer(max_videos=commit_every) as writer:
        for job, video, error in decoded(todo, options, workers):
            if video is not None:
                try:
                    writer.add(extractor(video, job.id, pooled))
                    summary.done += 1
                except AvelError as e:
                    error = ("error", f"{job.path}: {e}")
            if error is not None:
                failure = Failure(job.id, job.path, error[0], error[1])
                writer.fail(failure)
                summary.failed.append(failure)
                bar.write(f"failed: {failure.error}")
            bar.update(1)
    bar.close()
    cache.close()
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
    and the split files found beside it (trainSet.txt, valSet.txt, testSet.txt)."""
    from pipeline.annotations import read_annotations

    annotations = Path(annotations)
    rows = read_annotations(annotations)
    text = annotations.read_text(encoding="utf-8-sig")
    splits = {}
    for name in ("train", "val", "test"):
        f = annotations.parent / f"{name}Set.txt"
        if f.is_file():
            splits[name] = f.read_text(encoding="utf-8-sig")
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
    return extractor(decode_video(job.path, decode_options(extractor.settings)), job.id, pooled)
