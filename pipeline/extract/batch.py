"""The jobs of `avel extract` and `avel preprocess`, each one call:

    extract_videos(videos, out, settings, network, options)    # into a cache directory or one .h5 file
    preprocess(source, out, settings, network, options, engine=..., ray_config=..., annotations=...)

Both return the engine's RunSummary (`summary_lines` is its report)."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Iterable

from ...core.config import FeatureSettings
from ...core.errors import ConfigError
from ..cache.lock import WriteLock
from ..cache.merge import merge_caches
from ..cache.meta import CacheMeta
from ..cache.store import FeatureCache
from .features import FeatureExtractor
from .local import Job, RunSummary, annotated_jobs, find_videos, jobs_from_paths, run_extraction
from .options import ExtractOptions, NetworkOptions
from .ray_engine import ENGINES, ExtractorSpec, RayConfig, require_ray


def extract_to_file(jobs: list[Job], out: str | os.PathLike, extractor: FeatureExtractor,
                    options: ExtractOptions = ExtractOptions()) -> RunSummary:
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


def extract_videos(videos: Iterable[str | os.PathLike], out: str | os.PathLike, settings: FeatureSettings,
                   network: NetworkOptions | None = None, options: ExtractOptions = ExtractOptions()) -> RunSummary:
    """`avel extract`: the features of `videos` into `out`, a directory cache, or one HDF5
    file when its name ends in .h5 (`extract_to_file`)."""
    jobs = jobs_from_paths(videos)
    extractor = (network or NetworkOptions()).extractor(settings)
    if Path(out).suffix != ".h5":
        return run_extraction(jobs, out, extractor, options)
    return extract_to_file(jobs, out, extractor, options)


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
        changed = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(RayConfig)
                   if getattr(ray_config, f.name) != f.default]
        raise ConfigError("engine", engine, f"{', '.join(changed)} need --engine ray")
    if engine == "ray":
        require_ray()  # before the source is read: the install line at once
    network = network or NetworkOptions()
    text, splits = None, {}
    if annotations is not None:
        jobs, text, splits = annotated_jobs(source, annotations)
    else:
        jobs = jobs_from_paths(find_videos(source))
    if engine == "ray":
        from .ray_engine import run_ray_extraction

        return run_ray_extraction(jobs, out, ExtractorSpec(settings, network), ray_config, options,
                                  annotations=text, splits=splits)
    return run_extraction(jobs, out, network.extractor(settings), options, annotations=text, splits=splits)
