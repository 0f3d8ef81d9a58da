"""The Python API shown in the README, run as a user would (random weights, tiny data)."""
from __future__ import annotations

from mediagen import solid, tone, write_video


def test_readme_python_api(tmp_path):
    from pipeline import FeatureExtractor, FeatureSettings, TrainConfig, extract_features, load_data, run_extraction
    from pipeline import save_checkpoint, synthesize
    from pipeline.extract import annotated_jobs
    from pipeline.localize import localize
    from pipeline.train import train

    video = write_video(tmp_path / "clip.mp4", duration_s=3, color=solid((10, 200, 10)), audio=tone(300))
    settings = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1)
    features = extract_features(video, settings, device="cpu")
    assert features.visual.shape == (3, 7, 7, 512) and features.audio.shape == (3, 128)

    synthesize(tmp_path / "synth", videos=12, classes=2, seed=1, progress=False)
    jobs, text, splits = annotated_jobs(tmp_path / "synth" / "videos", tmp_path / "synth" / "Annotations.txt")
    extractor = FeatureExtractor(FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1,
                                                 segments=10), device="cpu")
    run_extraction(jobs, tmp_path / "cache", extractor, annotations=text, splits=splits, progress=False)
    data = load_data(tmp_path / "cache")
    result = train(data, TrainConfig(task="sel", epochs=2, progress=False, device="cpu"))
    ckpt = save_checkpoint(tmp_path / "sel.safetensors", result.model, result.model_config, data.class_names,
                           data.settings, {"test": result.test})
    [loc] = localize([video], ckpt, device="cpu", progress=False)
    assert loc.error is None and len(loc.segments) == 3
