"""Stage one end to end: decoded segments through both extractors, pinned against what
the signal must do to the features (segment alignment of a visual change and of a sound)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mediagen import solid, tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import AvelError
from avel.extractors.melspec import log_mel_examples
from avel.pipeline.extract.features import FeatureExtractor
from avel.pipeline.extract.local import Job, jobs_from_paths
from avel.pipeline.media.decode import DecodeOptions, decode_video

SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(SETTINGS, device="cpu", batch_size=7)


def test_colour_change_at_second_5_changes_only_later_segments(tmp_path, extractor):
    red, blue = (200, 30, 30), (30, 30, 200)
    before = write_video(tmp_path / "red.mp4", duration_s=7, color=solid(red), audio=tone(440))
    after = write_video(tmp_path / "change.mp4", duration_s=7, color=lambda t: red if t < 5 else blue, audio=tone(440))
    a = extractor.visual_features(decode_video(before, DecodeOptions(frames_per_segment=2)).frames)
    b = extractor.visual_features(decode_video(after, DecodeOptions(frames_per_segment=2)).frames)
    assert a.shape == (7, 7, 7, 512) and a.dtype == np.float32
    scale = np.abs(a).mean()
    per_segment = np.abs(a - b).mean(axis=(1, 2, 3)) / scale
    assert per_segment[:5].max() < 0.02, per_segment
    assert per_segment[5:].min() > 0.2, per_segment


def test_tone_burst_in_second_3_lands_in_segment_3(tmp_path, extractor):
    path = write_video(
        tmp_path / "burst.mp4",
        duration_s=6,
        audio=tone(1000, 0.5, start_s=3, end_s=4),
        audio_rate=44100,
        audio_layout="stereo",
    )
    video = decode_video(path, DecodeOptions(frames_per_segment=2))
    mel = log_mel_examples(torch.from_numpy(video.audio))  # [T, 1, 96, 64]
    energy = mel.exp().sum(dim=(1, 2, 3))
    assert int(energy.argmax()) == 3
    assert energy[3] > 20 * torch.cat([energy[:3], energy[4:]]).max()
    emb = extractor.audio_features(video.audio)
    assert emb.shape == (6, 128)
    # segments with the same (quiet) content give the same embedding; segment 3 differs
    assert np.abs(emb[3] - emb[1]).max() > 10 * np.abs(emb[2] - emb[1]).max()


def test_batched_equals_one_video_at_a_time(tmp_path, extractor):
    path = write_video(tmp_path / "v.mp4", duration_s=3, color=lambda t: (int(60 * t), 100, 200), audio=tone(500))
    frames = decode_video(path, DecodeOptions(frames_per_segment=2)).frames  # [3, 2, 224, 224, 3]
    batched = extractor.visual_features(frames)  # chunks of 7 frames
    single = FeatureExtractor(SETTINGS, device="cpu", batch_size=1).visual_features(frames)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())


def test_settings_record_weights(extractor):
    assert extractor.settings.visual_weights_sha256 == "random-seed-0"
    assert extractor.settings.audio_weights_sha256 == "random-seed-0"


def test_bad_precision_and_device():
    with pytest.raises(AvelError, match="precision"):
        FeatureExtractor(FeatureSettings(visual_model="random", audio_model="random", precision="fp8"), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(AvelError, match="CUDA is not available"):
            FeatureExtractor(SETTINGS, device="cuda")


def test_job_ids_from_paths():
    jobs = jobs_from_paths(["/a/x.mp4", "/b/y.mkv", "/c/x.mp4"])
    assert [j.id for j in jobs] == ["a/x", "y", "c/x"]
    assert jobs[1] == Job("y", "/b/y.mkv")
