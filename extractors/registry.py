"""The extractor contract and its registries.

A visual model maps RGB uint8 frames [N, S, S, 3] (S = 224 for AVE) to pool5 maps
[N, S/32, S/32, 512] float32 (HWC, AVE's order); an audio model maps 16-kHz mono float
waveforms [N, 16000] (one 1-s segment each) to embeddings [N, 128] float32. Both are
`nn.Module`s that say which weights they carry (`weights_sha256`: the SHA-256 of the weight
file, or "random-seed-S"); an audio model also says which PCA file it applies
(`pca_sha256`, "" when none). That is what a cache records as the features' provenance.

Builders are registered by name and called with keyword arguments only:
`VISUAL_MODELS.get(name)(weights_file=None | path, seed=int)` and
`AUDIO_MODELS.get(name)(weights_file=..., pca_file=None | path | "download", seed=int)`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..core.registry import Registry


@runtime_checkable
class VisualExtractor(Protocol):
    weights_sha256: str
    input_memory_format: torch.memory_format  # the layout frames are given to the network in (the weights' own)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, S, S, 3] uint8 RGB -> pool5 [N, S/32, S/32, 512] float32."""
        ...


@runtime_checkable
class AudioExtractor(Protocol):
    weights_sha256: str
    pca_sha256: str

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        """waveforms [N, 16000] float 16-kHz mono -> embeddings [N, 128] float32."""
        ...


class VisualBuilder(Protocol):
    def __call__(self, *, weights_file: str | None = None, seed: int = 0) -> VisualExtractor: ...


class AudioBuilder(Protocol):
    def __call__(
        self, *, weights_file: str | None = None, pca_file: str | None = None, seed: int = 0
    ) -> AudioExtractor: ...


VISUAL_MODELS: Registry[VisualBuilder] = Registry("visual model")
AUDIO_MODELS: Registry[AudioBuilder] = Registry("audio model")


def random_weights_tag(seed: int) -> str:
    """What a cache records instead of a SHA-256 for seeded random weights."""
    return f"random-seed-{seed}"
