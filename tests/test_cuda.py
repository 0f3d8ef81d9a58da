"""The CUDA path against the CPU: fp32 features of identical frames agree to 1e-4 relative
(convolutions in IEEE float32, not TF32), and the whole batch job on the GPU equals the
CPU's. bf16 / fp16 against fp32: tests/test_precision.py. Skipped without a CUDA device;
benchmarks/gpu_check.sh runs them on a GPU machine. The context that turns TF32 off is
checked everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mediagen import tone, write_video

from avel.core.config import FeatureSettings
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.extract.features import FeatureExtractor, ieee_fp32
from avel.pipeline.extract.local import Job, run_extraction
from avel.pipeline.extract.options import ExtractOptions
from avel.pipeline.media.decode import DecodeOptions, decode_video

SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=4)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return write_video(
        tmp_path_factory.mktemp("cuda") / "v.mp4",
        duration_s=3,
        size=(160, 120),
        color=lambda t: (int(70 * t), 90, 200 - int(50 * t)),
        audio=tone(700),
    )


def test_ieee_fp32_context_restores_the_setting():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        read, ieee = (lambda: conv.fp32_precision), "ieee"
    else:  # older torch
        read, ieee = (lambda: torch.backends.cudnn.allow_tf32), False
    before = read()
    with ieee_fp32():
        assert read() == ieee
    assert read() == before


@cuda
def test_fp32_cuda_features_equal_the_cpus(video):
    decoded = decode_video(video, DecodeOptions(frames_per_segment=4))  # the same frames for both
    cpu = FeatureExtractor(SETTINGS, device="cpu")
    gpu = FeatureExtractor(SETTINGS, device="cuda")
    close(gpu.visual_features(decoded.frames), cpu.visual_features(decoded.frames))
    close(gpu.audio_features(decoded.audio), cpu.audio_features(decoded.audio))


@cuda
def test_batch_job_on_the_gpu_equals_the_cpus(video, tmp_path):
    for device in ("cpu", "cuda"):
        extractor = FeatureExtractor(SETTINGS, device=device)
        summary = run_extraction(
            [Job("v", video)], tmp_path / device, extractor, ExtractOptions(workers=1, pooled=True, progress=False)
        )
        assert summary.done == 1
    cpu, gpu = FeatureCache(tmp_path / "cpu"), FeatureCache(tmp_path / "cuda")
    for want, got in zip(cpu.read("v"), gpu.read("v")):
        close(got, want)


@cuda
@pytest.mark.parametrize("mode", ["default", "max-autotune"])
def test_compiled_cuda_features_equal_the_cpus(video, mode):
    """--compile on the GPU (fp32, IEEE convolutions): the CPU's eager features within 1e-4."""
    decoded = decode_video(video, DecodeOptions(frames_per_segment=4))
    cpu = FeatureExtractor(SETTINGS, device="cpu")
    gpu = FeatureExtractor(SETTINGS, device="cuda", batch_size=8)
    gpu.compile(mode)
    close(gpu.visual_features(decoded.frames), cpu.visual_features(decoded.frames))
    close(gpu.audio_features(decoded.audio), cpu.audio_features(decoded.audio))


@cuda
def test_pinned_staging_keeps_batches_apart(video):
    """Many batches through the two reused pinned buffers and the copy stream: each batch's
    features are its own (a buffer overwritten too early would mix them)."""
    decoded = decode_video(video, DecodeOptions(frames_per_segment=4))
    frames = np.concatenate([decoded.frames, decoded.frames[::-1], 255 - decoded.frames])
    cpu = FeatureExtractor(SETTINGS, device="cpu")
    gpu = FeatureExtractor(SETTINGS, device="cuda", batch_size=4)  # one segment a batch: 9 batches, 2 buffers
    close(gpu.visual_features(frames), cpu.visual_features(frames))


@cuda
def test_convert_device_cuda_equals_the_cpus(video, tmp_path):
    """--convert device: the planes converted on the GPU are the CPU's conversion within one
    level (float rounding at .5), and the batch job's features the CPU's within 1e-4 relative."""
    from avel.pipeline.extract.yuv import planes_to_rgb
    from avel.pipeline.media.decode import BatchReader

    batch = next(iter(BatchReader(video, DecodeOptions(frames_per_segment=4, convert="device"), 3)))
    flat = torch.from_numpy(batch.frames.reshape(-1, batch.frames.shape[-1])[:, : batch.planes.nbytes].copy())
    cpu_rgb = planes_to_rgb(flat, batch.planes, 224).numpy().astype(np.int16)
    gpu_rgb = planes_to_rgb(flat.cuda(), batch.planes, 224).cpu().numpy().astype(np.int16)
    assert np.abs(gpu_rgb - cpu_rgb).max() <= 1
    settings = FeatureSettings(**{**SETTINGS.to_dict(), "convert": "device"})
    for device in ("cpu", "cuda"):
        extractor = FeatureExtractor(settings, device=device)
        summary = run_extraction(
            [Job("v", video)], tmp_path / device, extractor, ExtractOptions(workers=1, pooled=True, progress=False)
        )
        assert summary.done == 1
    cpu, gpu = FeatureCache(tmp_path / "cpu"), FeatureCache(tmp_path / "cuda")
    for want, got in zip(cpu.read("v"), gpu.read("v")):
        close(got, want)
