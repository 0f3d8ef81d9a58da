"""Stage one on a Ray cluster (`avel preprocess --engine ray`): the local engine's per-video
work (pipeline/extract/local.py) spread over many machines and GPUs, into the same crash-safe cache.

    driver:   the cache's write lock, the jobs left to do (`plan_jobs`), a Ray Data pipeline,
              the progress bar; never a frame
    Ray Data: job indices -> `_Extractor` actors (`--extractors M`, `num_gpus` each when the
              cluster has GPUs), each loading the models once and streaming a few jobs a call
    actor:    per video, a decode task (`num_cpus=1`, a streaming generator of
              `decode_events`) whose segment batches reach the actor through Ray's object store
              (back-pressured: at most a few batches ahead), `FeatureStream` -> `extract_job`
              into the actor's own `PartWriter`, one committed part per call

Frames never pass through the driver, and each actor commits its own uniquely named parts
(the cache's rule 2: temporary file named after its writer, fsync, rename), so writing scales
with the actors; the driver holds the cache's write lock for the whole run. The cache
directory must be on storage every node sees (a shared filesystem).

Faults. A decode task whose worker dies: the video is dropped from the part and decoded
again (`retries` times), then recorded as a failure of kind `crash`. An actor that dies:
Ray restarts it and retries its call (`retries` times); an actor finds what was already
committed in this run before it starts a call, so a video is never written twice. Whatever
is still missing when the pipeline ends (a lost node, retries spent) is scheduled again,
and past `retries` rounds recorded as failed: no video is lost silently.

`ray` is optional (`pip install 'avel[ray]'`): it is imported inside the functions only."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.config import FeatureSettings, check_range, check_types, option
from ...core.errors import MEDIA_ERRORS, AvelError, CacheError, ConfigError, DecodeFailed, DecoderCrashed
from ..cache.meta import CacheMeta
from ..cache.parts import Failure, PartWriter, part_index
from ..cache.store import FeatureCache
from ..media.decode import DecodeOptions, SegmentBatch
from ..media.pool import VideoSource, decode_events
from .local import Job, RunSummary, extract_job, failure_of, plan_jobs, stopped
from .options import ExtractOptions, NetworkOptions, take_shard
from .stream import FeatureStream

ENGINES = ("local", "ray")
BATCHES_AHEAD = 4  # decoded segment batches a decode task may hold in the object store, unread
MAX_JOBS_PER_CALL = 8  # an actor's call: its committed part, and the driver's progress step


# upper bounds of RayConfig (a cluster-wide count above them asks Ray for more tasks or actors than any
# cluster schedules: the job would wait for ever): decode tasks, actors, GPUs of one actor (a node's), retries
MAX_DECODERS, MAX_EXTRACTORS, MAX_GPUS_PER_EXTRACTOR, MAX_RETRIES = 100_000, 10_000, 16, 100
RAY_INSTALL = "pip install 'avel[ray]'"


def require_ray() -> None:
    """AvelError with the install line unless Ray and what Ray Data imports (pandas, pyarrow) are
    there: called before any folder is read, so a machine without them is told at once."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise AvelError(f"--engine ray needs Ray: {RAY_INSTALL}") from None
    for extra in ("pandas", "pyarrow", "ray.data"):
        try:
            if extra == "pandas":
                import pandas  # noqa: F401
            elif extra == "pyarrow":
                import pyarrow  # noqa: F401
            else:
                import ray.data  # noqa: F401
        except ImportError as e:
            missing = getattr(e, "name", None) or extra
            raise AvelError(f"--engine ray needs Ray with its data extras ({missing}): {RAY_INSTALL}") from None


@dataclass(frozen=True)
class RayConfig:
    ray_address: str | None = option(
        "the Ray cluster: auto | HOST:PORT (default: a local Ray started for the run)", default=None
    )
    decoders: int | None = option(
        "decode tasks at once, cluster-wide, 1 CPU each (default: 2 per extractor)", default=None
    )
    extractors: int = option("extraction actors, each with its own copy of the models", default=1)
    gpus_per_extractor: float | None = option(
        "GPUs per extraction actor (default: 1 when the cluster has GPUs, else 0)", default=None
    )
    retries: int = option("how often a video whose Ray worker died is tried again", cli=False, default=2)

    def __post_init__(self) -> None:
        check_types(self)
        check_range("extractors", self.extractors, 1, MAX_EXTRACTORS)
        if self.decoders is not None:
            check_range("decoders", self.decoders, 1, MAX_DECODERS)
        if self.gpus_per_extractor is not None:
            check_range("gpus_per_extractor", self.gpus_per_extractor, 0, MAX_GPUS_PER_EXTRACTOR)
        check_range("retries", self.retries, 0, MAX_RETRIES)
        if self.ray_address is not None and self.ray_address != "auto" and ":" not in self.ray_address:
            raise ConfigError("ray_address", self.ray_address, "expected auto or HOST:PORT")


@dataclass(frozen=True)
class ExtractorSpec:
    """What an actor needs to build its FeatureExtractor (the models load where they run)."""

    settings: FeatureSettings
    network: NetworkOptions = field(default_factory=NetworkOptions)  # weight files, device, batch size

    def build(self):
        return self.network.extractor(self.settings)


# -- the decode task ---------------------------------------------------------------------------------
def _decode(path: str, options: DecodeOptions, segments_per_batch: int) -> Iterator[tuple]:
    """One video's `decode_events` in picklable form (a Ray streaming generator task): each
    batch becomes an object in the store, read by the actor in place."""
    for kind, value in decode_events(path, options, segments_per_batch):
        if kind == "batch":
            yield kind, (value.first, value.frames, value.audio, value.planes)
        elif kind == "error":
            yield kind, (value.kind, value.problem)
        else:
            yield kind, value


class _WorkerLost(Exception):
    """A decode task's worker died (not an AvelError: `extract_job` drops the video's sink
    and lets the actor decide whether to try again)."""


def _events(path: str, refs) -> Callable[[], tuple]:
    """`VideoSource`'s next_event over a decode task's stream of object refs."""
    import ray

    def next_event() -> tuple:
        try:
            kind, value = ray.get(next(refs))
        except StopIteration:
            raise _WorkerLost("the decode task ended without a last event") from None
        except ray.exceptions.RayError as e:
            raise _WorkerLost(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        if kind == "batch":
            first, frames, audio, planes = value
            return kind, SegmentBatch(first, frames, audio, planes=planes)  # (n, K, S, S, 3) uint8, (n, 16000) float32
        if kind == "error":
            return kind, MEDIA_ERRORS.get(value[0], DecodeFailed)(path, value[1])
        return kind, value

    return next_event


# -- the extraction actor --------------------------------------------------------------------------
class _Extractor:
    """A Ray Data actor: the models, loaded once; each call extracts a few jobs (by index)
    into one part it commits, then yields one row per job (kind "" done, else the failure's)."""

    def __init__(
        self,
        spec: ExtractorSpec,
        jobs: list[Job],
        directory: str,
        meta: CacheMeta,
        pooled: bool,
        earlier_parts: frozenset[str],
        lookahead: int,
        retries: int,
    ) -> None:
        import ray

        # the frames are read in place from the object store, read-only: the models never write them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.extractor = spec.build()
        if (
            self.extractor.device.type == "cpu"
        ):  # Ray gives an actor without CPUs one thread; the models share the node's cores
            import torch

            torch.set_num_threads(
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            )
        self.jobs, self.directory, self.meta, self.pooled = jobs, Path(directory), meta, pooled
        self.seen_parts, self.lookahead, self.retries = set(earlier_parts), lookahead, retries
        self.committed: dict[str, tuple[str, str]] = {}  # id -> ("", "") or its failure, committed in this run
        self.options = DecodeOptions.from_settings(self.extractor.settings, threads=1)
        self.decode = ray.remote(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=BATCHES_AHEAD)(_decode)
        self.provenance = {
            "engine": "ray",
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
        }

    def _refresh(self) -> None:
        """Learn the ids committed in this run since the last call (parts of any actor)."""
        import h5py

        for part in sorted((self.directory / "parts").glob("part-*.h5")):
            if part.name in self.seen_parts:
                continue
            with h5py.File(part, "r") as f:
                videos, failed = part_index(f, part)
            self.committed.update({x.id: (x.kind, x.error) for x in failed.values()})
            self.committed.update(dict.fromkeys(videos, ("", "")))
            self.seen_parts.add(part.name)

    def _start(self, job: Job):
        return self.decode.remote(job.path, self.options, self.extractor.segments_per_batch)

    def _extract(self, job: Job, refs, writer: PartWriter) -> Failure | None:
        """One job, its decode tried again while its worker dies (then a `crash` failure)."""
        import ray

        for _ in range(self.retries + 1):
            source = VideoSource(job.path, _events(job.path, refs))
            try:
                return extract_job(
                    job, FeatureStream(job.path, self.extractor, source=source), writer, pooled=self.pooled
                )
            except _WorkerLost as e:
                lost = e
            finally:
                if not source.finished:  # a video dropped half way: its decode task is stopped, not left holding a CPU
                    ray.cancel(refs, force=True)
            refs = self._start(job)
        failure = failure_of(job, DecoderCrashed(job.path, f"its decode task died {self.retries + 1} times ({lost})"))
        writer.fail(failure)
        return failure

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        self._refresh()
        todo = [int(i) for i in batch["i"] if self.jobs[int(i)].id not in self.committed]
        kinds = {int(i): self.committed.get(self.jobs[int(i)].id) for i in batch["i"]}  # committed before this call
        started = deque((i, self._start(self.jobs[i])) for i in todo[: self.lookahead])
        waiting = deque(todo[self.lookahead :])
        try:
            with PartWriter(self.directory, self.meta, max_videos=len(todo) + 1, provenance=self.provenance) as writer:
                while started:
                    i, refs = started.popleft()
                    failure = self._extract(self.jobs[i], refs, writer)
                    if waiting:
                        j = waiting.popleft()
                        started.append((j, self._start(self.jobs[j])))
                    kinds[i] = ("", "") if failure is None else (failure.kind, failure.error)
        except CacheError as e:  # the cache cannot be written: the driver stops the run
            kinds = {i: ("!cache", str(e)) for i in kinds}
        yield {
            "i": np.array(list(kinds), np.int64),
            "kind": np.array([k for k, _ in kinds.values()], object),
            "error": np.array([e for _, e in kinds.values()], object),
        }


# -- the driver ------------------------------------------------------------------------------------
def _connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray; True when this run started it."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # quiet unless asked: the progress bar is the driver's
    import ray

    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    try:
        if address is None:
            ray.init(**kw)
            return True
        ray.init(address=address, **{k: v for k, v in kw.items() if k != "include_dashboard"})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise AvelError(f"ray: cannot connect to {address or 'a local Ray'}: {str(e).splitlines()[0]}") from None
    return False


def _remote(fn, *args, **options):
    """Run `fn` as a Ray task; an AvelError it raises comes back as itself (one line)."""
    import ray

    try:
        return ray.get(ray.remote(**options)(fn).remote(*args))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, AvelError):
            raise e.cause from None
        raise


def _settings_of(spec: ExtractorSpec) -> FeatureSettings:
    return spec.build().settings  # the weights' SHA-256 filled in: what the cache records


@dataclass(frozen=True)
class _Plan:
    gpus: float  # per actor
    cpus: float  # per actor: one to feed a GPU; none on a CPU cluster, where the decode tasks hold the CPUs
    lookahead: int  # videos an actor has decoding at once


def _plan(config: RayConfig, device: str) -> _Plan:
    """The actors' resources and decode tasks, checked against the cluster's resources. On
    CPUs an actor reserves none: as the local engine's model process shares the cores with
    its decoder processes, the actors' models share them with the decode tasks
    (`--decoders` bounds those), and two actors fit on two one-CPU nodes."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    g = config.gpus_per_extractor
    if g is None:
        g = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if g * config.extractors > gpus:
        raise ConfigError(
            "gpus_per_extractor",
            g,
            f"{config.extractors} extractors need {g * config.extractors:g} GPUs; the cluster has {gpus:g}",
        )
    c = 1.0 if g > 0 else 0.0
    if c * config.extractors + 1 > cpus:
        raise ConfigError(
            "extractors",
            config.extractors,
            f"needs {c * config.extractors + 1:g} CPUs (one per GPU actor, "
            f"one for a decode task at least); the cluster has {cpus:g}",
        )
    decoders = config.decoders if config.decoders is not None else 2 * config.extractors
    return _Plan(g, c, max(1, math.ceil(decoders / config.extractors)))


def run_ray_extraction(
    jobs: list[Job],
    cache_dir: str | os.PathLike,
    spec: ExtractorSpec,
    config: RayConfig = RayConfig(),
    options: ExtractOptions = ExtractOptions(),
    *,
    annotations: str | None = None,
    splits: dict[str, str] | None = None,
) -> RunSummary:
    """`run_extraction`'s job on a Ray cluster: same cache, same skips, same failures."""
    require_ray()
    import ray
    from tqdm import tqdm

    started = _connect(config.ray_address)
    cache = None
    summary = RunSummary()
    try:
        plan = _plan(config, spec.network.device)
        settings = _remote(_settings_of, spec, num_cpus=1, num_gpus=plan.gpus)
        meta = CacheMeta(settings, options.storage_dtype, annotations, dict(splits or {}))
        # the write lock, held by the driver for the run
        cache = FeatureCache.create_or_open(cache_dir, meta, verify=options.verify)
        todo = plan_jobs(cache, take_shard(jobs, options.part), summary, retry_failed=options.retry_failed)
        bar = tqdm(
            total=len(todo), unit="video", disable=not options.progress or not todo, file=sys.stderr, dynamic_ncols=True
        )
        with bar:
            pending, earlier = todo, frozenset(p.name for p in cache.parts)
            for _ in range(config.retries + 1):
                if not pending:
                    break
                # calls small enough that every actor gets work, at most a part's worth
                per_call = max(
                    1, min(options.commit_every, MAX_JOBS_PER_CALL, math.ceil(len(pending) / (4 * config.extractors)))
                )
                settled = _pipeline(
                    pending, cache, spec, meta, config, options.pooled, earlier, plan, per_call, summary, bar
                )
                pending = [j for j in pending if j.id not in settled]
            if pending:  # retries spent (a node lost again and again): recorded, never dropped
                with cache.writer() as writer:
                    for j in pending:
                        failure = failure_of(
                            j, DecoderCrashed(j.path, f"its Ray workers were lost {config.retries + 1} times")
                        )
                        writer.fail(failure)
                        summary.failed.append(failure)
                        bar.update(1)
    except KeyboardInterrupt as e:
        raise stopped(e, summary, cache_dir) from None
    finally:
        if cache is not None:
            cache.close()
        if started:
            ray.shutdown()
    return summary


def _pipeline(
    jobs: list[Job],
    cache: FeatureCache,
    spec: ExtractorSpec,
    meta: CacheMeta,
    config: RayConfig,
    pooled: bool,
    earlier: frozenset[str],
    plan: _Plan,
    per_call: int,
    summary: RunSummary,
    bar,
) -> set[str]:
    """One pass of the Ray Data pipeline over `jobs`; returns the ids it settled (done or failed)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = -1  # a call whose retries are spent: its jobs are scheduled again, then recorded
    ctx.wait_for_min_actors_s = 600  # every actor's models loaded before the first call: the work spreads over all
    # the blocks are video indices made on the driver's node, not data (an actor reads its videos from the shared
    # filesystem): with Ray Data's actor locality every call went to the actor beside the driver until it had 4 in
    # flight, so on a small job one node did all the work. Least busy actor first instead.
    ctx.execution_options.actor_locality_enabled = False
    ds = ray.data.from_items([{"i": i} for i in range(len(jobs))], override_num_blocks=math.ceil(len(jobs) / per_call))
    with warnings.catch_warnings():  # Ray Data has no named parameter for an actor's restarts yet
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            _Extractor,
            batch_size=per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.extractors),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            scheduling_strategy="SPREAD",
            max_restarts=config.retries,
            max_task_retries=config.retries,
            fn_constructor_kwargs=dict(
                spec=spec,
                jobs=jobs,
                directory=str(cache.path),
                meta=meta,
                pooled=pooled,
                earlier_parts=earlier,
                lookahead=plan.lookahead,
                retries=config.retries,
            ),
        )
    settled: set[str] = set()
    for rows in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, kind, error in zip(rows["i"], rows["kind"], rows["error"]):
            if kind == "!cache":
                raise CacheError(str(error))
            job = jobs[int(i)]
            if job.id in settled:
                continue  # a retried call's report of what was already reported
            settled.add(job.id)
            if kind:
                failure = Failure(job.id, job.path, str(kind), str(error))
                summary.failed.append(failure)
                bar.write(f"failed: {failure.error}")
            else:
                summary.done += 1
            bar.update(1)
    return settled
