"""`avel synth --features-only` (pipeline/data/synth.py): the structure the generator
promises, read back from the features themselves (noise 0 and no scene: a class dim is 1.5
where its modality carries the class, 0.5 elsewhere), the noise knob, determinism, and the
AVE layout."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from avel.cli import main
from avel.core.errors import ConfigError
from avel.pipeline.data import synth as module
from avel.pipeline.data.ave import read_ave_layout
from avel.pipeline.data.synth import FeatureSynthConfig, prototypes, synth_features, write_features

TINY = dict(audio_dim=32, visual_dim=48, audio_active=8, visual_active=8)


@pytest.fixture(scope="module")
def clean():
    cfg = FeatureSynthConfig(videos=120, classes=6, noise=0.0, seed=5, full_event=0.2, **TINY)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(module, "SCENE_STD", 0.0)
        return cfg, synth_features(cfg), synth_features(dataclasses.replace(cfg, distractor=1.0, late_visual=0.0))


def steps(x: torch.Tensor, active: np.ndarray) -> torch.Tensor:
    """x [V, T, ..., D] -> [V, T, ...] bool: the class's prototype is there (its dims at
    0.5 + 1, not 0.5)."""
    level = x[..., active].float().mean(-1)  # (V, T, ...)
    assert ((level - 0.5).abs() < 1e-6).logical_or((level - 1.5).abs() < 1e-6).all()
    return level > 1.0


def test_structure_at_noise_zero(clean):
    cfg, data, _ = clean
    a_proto, v_proto = prototypes(cfg)
    V, T, bg = cfg.videos, cfg.segments, data.background
    late_videos = 0
    places = set()
    for v in range(V):
        event = data.labels[v] != bg
        c = int(data.labels[v][event][0])
        assert (data.labels[v][event] == c).all()
        idx = torch.nonzero(event).squeeze(1)
        start, end = int(idx[0]), int(idx[-1]) + 1
        assert end - start == len(idx) and end - start >= cfg.min_event_s  # one contiguous event
        sound = steps(data.audio[v : v + 1], np.flatnonzero(a_proto[c]))[0]  # (T,)
        cells = steps(data.visual[v : v + 1].flatten(2, 3), np.flatnonzero(v_proto[c]))[0]  # (T, 49)
        seen = cells.any(1)
        # the object: object_cells neighbouring cells, the same ones whenever it is on screen
        where = {tuple(torch.nonzero(cells[t]).squeeze(1).tolist()) for t in range(T) if seen[t]}
        assert len(where) == 1
        (place,) = where
        assert len(place) == cfg.object_cells
        rows, cols = {i // 7 for i in place}, {i % 7 for i in place}
        assert max(rows) - min(rows) <= 1 and max(cols) - min(cols) <= 1
        places.add(place)
        late = not seen[start]
        late_videos += late
        assert sound[event].all()  # the class sounds through its event
        inside = event.clone()
        if late:  # the visual track one second late: on screen from start + 1 to end (inclusive)
            inside[start] = False
            assert seen[start + 1 : min(end + 1, T)].all()
        assert seen[inside].all()
        background = ~event
        if late and end < T:
            background[end] = False  # the late object lingers there, whatever that second's kind
        # a background second keeps exactly one modality of the class (distractor = 0)
        assert (sound[background] ^ seen[background]).all(), (v, sound, seen, data.labels[v])
    assert 0.12 < late_videos / V < 0.38  # late_visual = 0.25
    assert len(places) > V // 4  # the place changes from video to video
    # every class has its own prototypes
    assert len({tuple(np.flatnonzero(p)) for p in a_proto}) == cfg.classes
    assert len({tuple(np.flatnonzero(p)) for p in v_proto}) == cfg.classes


def test_background_kinds_and_distractors(clean):
    cfg, data, mixed = clean
    a_proto, v_proto = prototypes(cfg)
    for d, expect_one in ((data, True), (mixed, False)):
        sound = torch.stack(
            [steps(d.audio[v : v + 1], np.flatnonzero(a_proto[int(d.labels[v].min())]))[0] for v in range(cfg.videos)]
        )
        seen = torch.stack(
            [
                steps(d.visual[v : v + 1].flatten(2, 3), np.flatnonzero(v_proto[int(d.labels[v].min())]))[0].any(1)
                for v in range(cfg.videos)
            ]
        )
        background = d.labels == d.background
        one = (sound ^ seen)[background].float().mean().item()
        neither = (~sound & ~seen)[background].float().mean().item()
        if expect_one:
            assert one > 0.85 and 0.3 < (sound & background).sum() / background.sum() < 0.7  # half each
        else:
            assert neither == 1.0


def test_noise_knob_and_determinism():
    base = FeatureSynthConfig(videos=30, classes=3, seed=2, **TINY)
    stds = []
    for noise in (0.0, 1.0, 2.0, 4.0):
        d = synth_features(dataclasses.replace(base, noise=noise))
        stds.append(d.audio.std(1).mean().item())  # over time, within a video
    assert stds[0] < 0.25 and stds[0] < stds[1] < stds[2] < stds[3]
    a, b = synth_features(base), synth_features(base)
    assert torch.equal(a.visual, b.visual) and torch.equal(a.audio, b.audio) and torch.equal(a.labels, b.labels)
    assert all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)
    other = synth_features(dataclasses.replace(base, seed=3))
    assert not torch.equal(other.audio, a.audio)
    assert sorted(len(v) for v in a.splits.values()) == [3, 3, 24]
    assert torch.equal(torch.sort(torch.cat(list(a.splits.values()))).values, torch.arange(30))


def test_audio_and_visual_noise_apart(monkeypatch):
    """audio_noise / visual_noise scale one modality's noise each (None: `noise`): the
    residual against the noise-free set of the same seed has the standard deviation asked for
    (no scene, so every value is 0.5 + noise * N(0, 1) [+ 1], far from the ReLU's 0 at these
    levels), and exactly 0 for a modality at 0 whatever the other's."""
    monkeypatch.setattr(module, "SCENE_STD", 0.0)
    base = FeatureSynthConfig(videos=20, classes=3, seed=1, noise=0.0, **TINY)
    clean = synth_features(base)

    def residual_std(**noise):
        d = synth_features(dataclasses.replace(base, **noise))
        return (d.audio - clean.audio).std().item(), (d.visual - clean.visual).std().item()

    audio, visual = residual_std(audio_noise=0.05, visual_noise=0.1)
    assert audio == pytest.approx(0.05, rel=0.05) and visual == pytest.approx(0.1, rel=0.05)
    audio, visual = residual_std(noise=0.1, audio_noise=0.0)  # `noise` is the visual's only
    assert audio == 0.0 and visual == pytest.approx(0.1, rel=0.05)
    audio, visual = residual_std(noise=0.1, visual_noise=0.0)
    assert visual == 0.0 and audio == pytest.approx(0.1, rel=0.05)
    audio, visual = residual_std(visual_noise=0.08)  # audio_noise None: `noise` (0 here)
    assert audio == 0.0 and visual == pytest.approx(0.08, rel=0.05)


def test_modality_noise_uses_the_same_draws():
    """A modality's features at audio_noise / visual_noise x are those of the set at noise x
    (the same draws, scaled): the two knobs mix two existing sets, one modality from each."""
    base = FeatureSynthConfig(videos=12, classes=3, seed=6, noise=1.0, **TINY)
    mixed = synth_features(dataclasses.replace(base, audio_noise=2.0))
    at_two = synth_features(dataclasses.replace(base, noise=2.0))
    at_one = synth_features(base)
    assert torch.equal(mixed.audio, at_two.audio) and torch.equal(mixed.visual, at_one.visual)
    assert torch.equal(mixed.labels, at_one.labels)
    both = synth_features(dataclasses.replace(base, noise=0.5, audio_noise=1.0, visual_noise=2.0))
    assert torch.equal(both.audio, at_one.audio) and torch.equal(both.visual, at_two.visual)


def test_config_is_validated():
    for bad in (dict(noise=-1.0), dict(late_visual=1.5), dict(object_cells=50), dict(classes=29), dict(min_event_s=11)):
        with pytest.raises(ConfigError):
            FeatureSynthConfig(**bad)
    for name in ("audio_noise", "visual_noise"):
        for value, why in ((-0.5, ">= 0"), (float("nan"), "finite"), (float("inf"), "finite"), ("1", "float")):
            with pytest.raises(ConfigError, match=f"{name}.*{why}"):
                FeatureSynthConfig(**{name: value})
    with pytest.raises(ConfigError, match="AVE layout"):
        write_features("unused", FeatureSynthConfig(videos=3, classes=2, **TINY))


def test_ave_layout_and_cli(tmp_path, capsys):
    cfg = FeatureSynthConfig(videos=12, classes=3, noise=1.5, seed=4)
    files = write_features(tmp_path / "api", cfg, progress=False)
    assert {f.name for f in files} >= {
        "visual_feature.h5",
        "audio_feature.h5",
        "labels.h5",
        "labels_closs.h5",
        "mil_labels.h5",
        "visual_feature_vec.h5",
        "train_order.h5",
        "val_order.h5",
        "test_order.h5",
        "Annotations.txt",
        "features.json",
    }
    back = read_ave_layout(tmp_path / "api")
    data = synth_features(cfg)
    assert torch.equal(back.visual, data.visual) and torch.equal(back.audio, data.audio)
    assert torch.equal(back.labels, data.labels) and back.video_ids == data.video_ids
    assert back.class_names == data.class_names
    assert all(torch.equal(back.splits[k], data.splits[k]) for k in data.splits)
    with h5py.File(tmp_path / "api" / "mil_labels.h5") as f:  # one video-level label (weak supervision)
        mil = f["avadataset"][...]
    assert mil.shape == (12, 4) and (mil.sum(1) == 1).all()
    assert (mil.argmax(1) == data.labels.min(1).values.numpy()).all()
    assert json.loads((tmp_path / "api" / "features.json").read_text())["config"]["noise"] == 1.5
    # the CLI writes the same set
    out = tmp_path / "cli"
    assert (
        main(
            ["synth", str(out), "--features-only", "--videos", "12", "--classes", "3", "--noise", "1.5", "--seed", "4"]
        )
        == 0
    )
    cli = read_ave_layout(out)
    assert torch.equal(cli.visual, data.visual) and torch.equal(cli.labels, data.labels)
    # the modalities' noise apart: the options are the config's fields, stored in features.json
    args = ["synth", str(tmp_path / "apart"), "--features-only", "--videos", "12", "--classes", "3", "--seed", "4"]
    assert main(args + ["--noise", "1.5", "--audio-noise", "0.5"]) == 0
    apart = read_ave_layout(tmp_path / "apart")
    at_half = synth_features(dataclasses.replace(cfg, noise=0.5))
    assert torch.equal(apart.audio, at_half.audio) and torch.equal(apart.visual, data.visual)
    stored = json.loads((tmp_path / "apart" / "features.json").read_text())["config"]
    assert (stored["noise"], stored["audio_noise"], stored["visual_noise"]) == (1.5, 0.5, None)
    capsys.readouterr()
    assert main(args[:2] + ["--features-only", "--visual-noise", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--visual-noise -1.0" in err and ">= 0" in err
    # generator options without --features-only: one line, exit 2, nothing written
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "videos"), "--noise", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--features-only" in err
    assert not (tmp_path / "videos").exists()
