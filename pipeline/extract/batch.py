"""The jobs of `avel extract` and `avel preprocess`, each one call:

    extract_videos(videos, out, settings, network, options)    # into a cache directory or one .h5 file
    preprocess(source, out, settings, network, options, engine=..., ray_config=..., annotations=...)

Both return the engine's RunSummary (`summary_lines` is its report). Before any model is
built (seconds and a gigabyte), both take the cache's write lock (a second writer is refused
at once) and probe the files left to do in order until one opens: a run where none can be
opened builds no model and writes nothing; its failures are reported (exit status 1)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ...core.config import FeatureSettings
from ...core.errors import ConfigError, MediaError
from ..cache.lock import LOCK_FILE, TEMP_PREFIX, WriteLock
from ..cache.merge import merge_caches
from ..cache.meta import CacheMeta
from ..cache.parts import Failure
from ..cache.store import FeatureCache
from ..media.container import probe
from .features import FeatureExtractor
from .local import (
    Job,
    RunSummary,
    annotated_listing,
    failure_of,
    jobs_from_paths,
    plan_jobs,
    run_extraction,
    source_jobs,
)
from .options import ExtractOptions, NetworkOptions, take_shard
from .ray_engine import ENGINES, ExtractorSpec, RayConfig, require_ray


def extract_to_file(
    jobs: list[Job], out: str | os.PathLike, extractor: FeatureExtractor, options: ExtractOptions = ExtractOptions()
) -> RunSummary:
    """Extract `jobs` into the single-file cache `out` (.h5), created or extended: the videos
    not in it yet go into a resumable side directory OUT.partial, which is merged with OUT
    atomically and then removed. The side directory's write lock, held throughout, makes this
    the only writer of OUT; an OUT of other settings is refused before any work."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if out.exists():
        with FeatureCache(out) as existing:  # refuse other settings before any work
            existing.meta.check_compatible(CacheMeta(extractor.settings, options.storage_dtype), str(out))
    with WriteLock.acquire(partial):
        done: set[str] = set()
        if out.exists():
            with FeatureCache(out) as existing:
                done = set(existing.ids())
        todo = [j for j in jobs if j.id not in done]
        summary = run_extraction(todo, partial, extractor, options)
        summary.skipped += len(jobs) - len(todo)
        merge_caches(([out] if out.exists() else []) + [partial], out)
        shutil.rmtree(partial)
    return summary


def extract_videos(
    videos: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    settings: FeatureSettings,
    network: NetworkOptions | None = None,
    options: ExtractOptions = ExtractOptions(),
) -> RunSummary:
    """`avel extract`: the features of `videos` into `out`, a directory cache, or one HDF5
    file when its name ends in .h5 (`extract_to_file`)."""
    jobs = jobs_from_paths(videos)
    out = Path(out)
    to_file = out.suffix == ".h5"
    target = out.with_name(out.name + ".partial") if to_file else out
    with _claimed(target):
        done: set[str] = set()
        if to_file and out.is_file():
            with FeatureCache(out) as existing:
                done = set(existing.ids())
        summary = _unopenable(jobs, target, settings, options, done)
        if summary is not None:
            return summary
        extractor = (network or NetworkOptions()).extractor(settings)
        if not to_file:
            return run_extraction(jobs, out, extractor, options)
        return extract_to_file(jobs, out, extractor, options)


@contextmanager
def _claimed(directory: Path) -> Iterator[None]:
    """The write lock of the cache `directory` held inside the block, taken before any model
    is built; a directory it creates is removed again when no cache was made in it. A path
    that is neither a cache nor new (a file, a folder of other things) is left to the cache's
    own refusal."""
    if directory.exists() and not (
        directory.is_dir()
        and (
            (directory / "cache.json").is_file()
            or all(
                p.name in (LOCK_FILE, "parts", "splits", "annotations.txt") or p.name.startswith(TEMP_PREFIX)
                for p in directory.iterdir()
            )
        )
    ):
        yield
        return
    created = not directory.exists()
    with WriteLock.acquire(directory):
        try:
            yield
        finally:  # a directory made for the lock and left without a cache (nothing opened, a refusal) goes
            if created and directory.is_dir() and not (directory / "cache.json").exists():
                shutil.rmtree(directory, ignore_errors=True)


def _unopenable(
    jobs: list[Job], cache_dir: Path, settings: FeatureSettings, options: ExtractOptions, done: set[str] = frozenset()
) -> RunSummary | None:
    """The report of a run that needs no model: the jobs left to do (of this shard, not in
    `done` or in the cache at `cache_dir`, not recorded as failed unless retried) are probed
    in order until one opens (None: the models are needed). When none can be opened, the
    summary lists their failures (nothing is written). With nothing left to do, None too:
    the models' settings are checked against the cache's."""
    summary = RunSummary()
    left = take_shard(jobs, options.part)
    summary.skipped += sum(j.id in done for j in left)
    left = [j for j in left if j.id not in done]
    if (cache_dir / "cache.json").is_file():
        with FeatureCache(cache_dir) as cache:
            left = plan_jobs(cache, left, summary, retry_failed=options.retry_failed)
    if not left:
        return None
    for job in left:
        try:
            probe(job.path, require_audio=settings.on_missing_audio == "error")
        except MediaError as e:
            summary.failed.append(failure_of(job, e))
            continue
        return None
    return summary


def _record(cache_dir: Path, failures: list[Failure], summary: RunSummary, options: ExtractOptions) -> None:
    """Record failures found while listing (an id that names two files) in the cache the run
    wrote, as any video's: counted in `summary`, skipped when recorded before."""
    if not failures or not (cache_dir / "cache.json").is_file():
        summary.failed += failures
        return
    with FeatureCache(cache_dir) as cache, cache.writer(max_videos=options.commit_every) as writer:
        for f in failures:
            if f.id in cache or (f.id in cache.failures and not options.retry_failed):
                summary.skipped += 1
                if f.id not in cache:
                    summary.earlier_failed.append(cache.failures[f.id])
            else:
                writer.fail(f)
                summary.failed.append(f)


def preprocess(
    source: str | os.PathLike,
    out: str | os.PathLike,
    settings: FeatureSettings,
    network: NetworkOptions | None = None,
    options: ExtractOptions = ExtractOptions(),
    *,
    engine: str = "local",
    ray_config: RayConfig = RayConfig(),
    annotations: str | os.PathLike | None = None,
) -> RunSummary:
    """`avel preprocess`: the videos of `source` (a folder, recursive; a text file of paths;
    with `annotations`, the AVE video folder, its rows the unit and its split files stored)
    into the cache directory `out` on the `engine` ("local" | "ray"). A Ray setting with the
    local engine is refused (ConfigError) before anything is read."""
    if engine not in ENGINES:
        raise ConfigError("engine", engine, f"choose one of: {', '.join(ENGINES)}")
    if engine != "ray" and ray_config != RayConfig():
        changed = [
            "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(RayConfig)
            if getattr(ray_config, f.name) != f.default
        ]
        raise ConfigError("engine", engine, f"{', '.join(changed)} need --engine ray")
    if engine == "ray":
        require_ray()  # before the source is read: the install line at once
    network = network or NetworkOptions()
    text, splits, clashes, skipped = None, {}, [], []
    if annotations is not None:
        jobs, clashes, text, splits = annotated_listing(source, annotations)
    else:
        jobs = source_jobs(source, skipped)
    out = Path(out)
    with _claimed(out):
        summary = _unopenable(jobs, out, settings, options)
        if summary is not None:  # no model built, nothing written
            summary.failed += clashes
        else:
            if engine == "ray":
                from .ray_engine import run_ray_extraction

                summary = run_ray_extraction(
                    jobs, out, ExtractorSpec(settings, network), ray_config, options, annotations=text, splits=splits
                )
            else:
                summary = run_extraction(
                    jobs, out, network.extractor(settings), options, annotations=text, splits=splits
                )
            _record(out, clashes, summary, options)
    summary.unlisted = skipped
    return summary
