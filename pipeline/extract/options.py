"""How stage one runs, as two frozen configs validated where they are made:

    ExtractOptions   how a batch job runs (pooled vector, storage dtype, decoder processes,
                     commit size, failed videos retried, a shard): both engines take it,
                     and `avel extract` / `avel preprocess` generate their options from it
    NetworkOptions   which weight files and which device the networks use (VGG-19, VGGish,
                     VGGish's PCA): `extract`, `preprocess`, `localize` and `cml` take it

and the shard of a job list (`parse_shard`, `take_shard`): every n-th job of the sorted ids,
disjoint parts for n machines."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ...core.config import (
    MAX_BATCH_FRAMES,
    MAX_WORKERS,
    FeatureSettings,
    check_choice,
    check_range,
    check_types,
    option,
    resolve_device,
)
from ...core.errors import ConfigError

STORAGE_DTYPES = ("float32", "float16")
COMPILE_MODES = ("off", "default", "max-autotune")  # features.FeatureExtractor.compile
MAX_COMMIT_EVERY = 1_000_000  # videos per part file (as many as a generated set holds)
J = TypeVar("J")


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n; None -> None (every job)."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ConfigError("shard", shard, "expected i/n with 0 <= i < n, e.g. 0/4") from None
    return i, n


def take_shard(jobs: Sequence[J], shard: tuple[int, int] | None) -> list[J]:
    """Every n-th job of the sorted ids, from the i-th: disjoint parts for n machines."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [j for k, j in enumerate(sorted(jobs, key=lambda j: j.id)) if k % n == i]


@dataclass(frozen=True)
class ExtractOptions:
    """How a batch extraction runs, on either engine (`workers` is the local engine's: the Ray
    engine's decoders are RayConfig's). The CLI's `extract` and `preprocess` options map onto
    these fields one to one (`preprocess` has other defaults for `pooled` and `workers`)."""

    pooled: bool = option(
        "also store the 512-d pooled visual vector (AVE's visual_feature_vec)",
        flag="--pooled/--no-pooled",
        default=False,
    )
    storage_dtype: str = option("how features are stored", choices=STORAGE_DTYPES, default="float32")
    workers: int = option("decoder processes (0: one decoding thread)", default=0)
    commit_every: int = option("videos per committed part file (a crash loses at most this many)", default=64)
    retry_failed: bool = option("try videos recorded as failed again", flag="--retry-failed", default=False)
    shard: str | None = option("i/n: process the i-th of n disjoint parts (0-based)", default=None)
    compile: str = option(
        "torch.compile the networks (off | default | max-autotune: slower to start, see benchmarks/README.md)",
        choices=COMPILE_MODES,
        default="off",
    )
    verify: bool = option(
        "first read every stored video, checking its checksums; damaged ones are extracted again "
        "(reads the whole cache)",
        flag="--verify",
        default=False,
    )
    progress: bool = option("a progress bar on stderr", cli=False, default=True)

    def __post_init__(self) -> None:
        check_types(self)
        check_range("workers", self.workers, 0, MAX_WORKERS)
        check_range("commit_every", self.commit_every, 1, MAX_COMMIT_EVERY)
        parse_shard(self.shard)
        check_choice("storage_dtype", self.storage_dtype, STORAGE_DTYPES)
        check_choice("compile", self.compile, COMPILE_MODES)

    @property
    def part(self) -> tuple[int, int] | None:
        """The shard as (i, n), or None for every job."""
        return parse_shard(self.shard)


@dataclass(frozen=True)
class NetworkOptions:
    """The weight files and the device of the networks; a checkpoint or the feature settings
    say which networks. Paths are kept as strings; the device must exist on this machine
    (checked here, before any file is read)."""

    visual_weights_file: str | None = None  # Keras HDF5 or PyTorch state dict of the VGG-19 weights
    audio_weights_file: str | None = None  # vggish-10086976.pth (PyTorch state dict)
    audio_pca_file: str | None = None  # VGGish PCA + 8-bit quantisation (off by default, as in AVE)
    device: str = "auto"
    batch_size: int | None = None  # frames per VGG-19 forward (None: the device's default)

    def __post_init__(self) -> None:
        for name in ("visual_weights_file", "audio_weights_file", "audio_pca_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        check_types(self)
        if self.batch_size is not None:
            check_range("batch_size", self.batch_size, 1, MAX_BATCH_FRAMES)
        resolve_device(self.device)

    def as_kwargs(self) -> dict:
        """The keyword arguments of FeatureExtractor and Predictor.build."""
        return dataclasses.asdict(self)

    def extractor(self, settings: FeatureSettings):
        """The FeatureExtractor of `settings` with these files, on this device."""
        from .features import FeatureExtractor

        return FeatureExtractor(settings, **self.as_kwargs())
