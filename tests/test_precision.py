"""Numerical equivalence of the extraction paths, and the reduced-precision bound.

fp32: the batch job (`run_extraction`, several videos, decoding in a thread or a worker
process, frames batched across segments) gives the features of direct, one-frame-at-a-time
`FeatureExtractor` calls to 1e-5; VGGish on a video's segments at once equals it segment
by segment. (VGG-19 batched vs one frame at a time on one video: tests/test_extract.py.)

bf16 on the CPU (autocast; the log-mel front end stays float32): features of decoded
generated frames keep a cosine similarity >= BF16_MIN_COSINE to fp32, per segment. Measured
on a 2-core AMD EPYC (Zen 4, avx512_bf16), torch 2.14, seeded random weights: pool5 0.99996,
VGGish 0.99998 here; 0.99997 / 0.99997 (minimum over 20 segments) in
`benchmarks/bench.py --precision bf16`. The bound, 1 - cosine <= 1e-3, leaves a margin of
20x. bf16's rounding error is relative (8 significant bits); the real Caffe / VGGish weights
were not available to measure with. On a CUDA machine the same bound is checked for fp16
and bf16 autocast (not measured yet: no GPU here).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mediagen import tone, write_video

from avel.core.config import FeatureSettings
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.extract.features import FeatureExtractor
from avel.pipeline.extract.local import Job, run_extraction
from avel.pipeline.extract.options import ExtractOptions
from avel.pipeline.media.decode import DecodeOptions, decode_video

BF16_MIN_COSINE = 0.999
# 64 x 64 frames (pool5 2 x 2): the same code path as 224 x 224 at a twelfth of the cost
SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2, frame_size=64)
OPTIONS = DecodeOptions(frames_per_segment=2, frame_size=64)


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def cosine_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def single():
    """The reference: one frame per VGG-19 forward."""
    return FeatureExtractor(SETTINGS, device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three short videos (2, 1 and 2 s) of different content."""
    root = tmp_path_factory.mktemp("precision")
    specs = [
        (2, 300, lambda t: (200, int(80 * t), 30)),
        (1, 700, lambda t: (30, 160, int(90 * t))),
        (2, 1500, lambda t: (90, 90, 220)),
    ]
    return [
        write_video(root / f"v{i}.mp4", duration_s=d, color=c, audio=tone(f), size=(64, 48))
        for i, (d, f, c) in enumerate(specs)
    ]


def test_vggish_video_at_once_equals_segment_by_segment(videos, single):
    audio = np.concatenate([decode_video(v, OPTIONS).audio for v in videos])  # [5, 16000]
    whole = single.audio_features(audio)
    one_by_one = np.concatenate([single.audio_features(audio[t : t + 1]) for t in range(len(audio))])
    assert whole.shape == (5, 128)
    close(whole, one_by_one)


@pytest.mark.parametrize("workers", [0, 1])
def test_run_extraction_equals_direct_calls(videos, single, tmp_path, workers):
    batched = FeatureExtractor(SETTINGS, device="cpu", batch_size=3)  # chunks cross segment boundaries
    jobs = [Job(f"v{i}", p) for i, p in enumerate(videos)]
    summary = run_extraction(
        jobs, tmp_path / "cache", batched, ExtractOptions(workers=workers, pooled=True, progress=False)
    )
    assert summary.done == 3 and not summary.failed
    with FeatureCache(tmp_path / "cache") as cache:
        for job in jobs:
            video = decode_video(job.path, OPTIONS)
            visual, audio = cache.read(job.id)
            pooled, _ = cache.read(job.id, pooled=True)
            want_visual = single.visual_features(video.frames)
            assert visual.shape == want_visual.shape == (video.num_segments, 2, 2, 512)
            close(visual, want_visual)
            close(pooled, want_visual.mean(axis=(1, 2)))
            close(audio, single.audio_features(video.audio))


def bf16_supported() -> bool:
    """bf16 autocast convolutions run on this CPU (oneDNN, natively or emulated)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        conv = torch.nn.Conv2d(3, 4, 3)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(torch.ones(1, 3, 8, 8)).dtype == torch.bfloat16
    except RuntimeError:
        return False


REDUCED = [
    pytest.param("cpu", "bf16", marks=pytest.mark.skipif(not bf16_supported(), reason="no bf16 autocast on this CPU")),
    pytest.param("cuda", "fp16", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    pytest.param(
        "cuda",
        "bf16",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="needs a CUDA device with bf16"
        ),
    ),
]


@pytest.mark.parametrize("device,precision", REDUCED)
def test_reduced_precision_features_close_to_fp32(tmp_path, device, precision):
    from avel.pipeline.media.synth import synthesize

    synthesize(tmp_path, videos=1, classes=1, seed=3, duration_s=3, progress=False)
    path = next((tmp_path / "videos").glob("*.mp4"))
    video = decode_video(path, DecodeOptions(frames_per_segment=1))  # [3, 1, 224, 224, 3]
    settings = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1)
    features = {}
    for p in ("fp32", precision):
        fe = FeatureExtractor(dataclasses.replace(settings, precision=p), device=device)
        features[p] = (fe.visual_features(video.frames), fe.audio_features(video.audio))
    (v32, a32), (v16, a16) = features["fp32"], features[precision]
    assert v16.dtype == np.float32 and a16.dtype == np.float32  # features are stored float32 either way
    assert not np.array_equal(v16, v32)  # reduced precision really ran
    pool5 = cosine_per_row(v16, v32)
    vggish = cosine_per_row(a16, a32)
    assert pool5.min() >= BF16_MIN_COSINE, pool5
    assert vggish.min() >= BF16_MIN_COSINE, vggish
