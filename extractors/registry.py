"""The extractor registries. A visual builder is called as
`build(weights_file=None | path, seed=int)` and returns an `nn.Module` mapping RGB uint8
frames [N, 224, 224, 3] to pool5 maps [N, 7, 7, 512] (HWC, AVE's order). An audio builder
is called as `build(weights_file=..., pca_file=..., seed=int)` and returns an `nn.Module`
mapping 16 kHz mono float waveforms [N, 16000] to embeddings [N, 128]. Every module has
`weights_sha256: str` (and audio ones `pca_sha256: str`, "" when PCA is off)."""
from pipeline.registry import Registry

VISUAL_MODELS: Registry = Registry("visual model")
AUDIO_MODELS: Registry = Registry("audio model")


def random_weights_tag(seed: int) -> str:
    """What a cache records instead of a SHA-256 for seeded random weights."""
    return f"random-seed-{seed}"
