"""Training, evaluation and checkpoints on generated features.

The generated videos: each has one event class and one contiguous event span (2..T
segments, some full length). In an event segment the class's audio pattern is in the audio
and its visual pattern fills a 3x3 block of cells at a random place; a background segment is
noise, or the class's sound alone, or its look alone, so that, as in AVE, neither modality
alone tells event from background.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import statistics
import struct

import pytest
import torch
from safetensors.torch import save_file

from avel.core.config import FeatureSettings
from avel.core.errors import CheckpointError, ConfigError, SettingsMismatch
from avel.models.baselines import AVDLN
from avel.models.registry import ModelConfig, build_model, model_config
from avel.models.sel import SELDAM
from avel.pipeline.data.dataset import AVData
from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from avel.pipeline.train.loop import (
    RECIPES,
    TrainConfig,
    evaluate,
    prepare_features,
    train,
    train_seeds,
)
from avel.pipeline.train.metrics import cml_queries

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_avdata(
    n_videos: int = 200,
    T: int = 10,
    n_events: int = 5,
    hw: tuple[int, int] = (7, 7),
    visual_dim: int = 64,
    audio_dim: int = 128,
    seed: int = 0,
) -> AVData:
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    a_proto = torch.randn(n_events, audio_dim, generator=g)
    v_proto = torch.randn(n_events, visual_dim, generator=g)
    cls = torch.randint(n_events, (n_videos,), generator=g)
    length = torch.randint(2, T + 1, (n_videos,), generator=g)
    start = (torch.rand(n_videos, generator=g) * (T - length + 1)).long()
    t = torch.arange(T)
    event = (t >= start[:, None]) & (t < (start + length)[:, None])  # (V, T)
    labels = torch.where(event, cls[:, None], n_events)
    kind = torch.randint(0, 3, (n_videos, T), generator=g)  # background: 0 noise, 1 sound only, 2 look only
    has_audio, has_visual = event | (kind == 1), event | (kind == 2)
    audio = torch.randn(n_videos, T, audio_dim, generator=g) + has_audio[..., None] * a_proto[cls][:, None, :]
    r = torch.randint(0, H - 2, (n_videos, T, 1, 1), generator=g)
    c = torch.randint(0, W - 2, (n_videos, T, 1, 1), generator=g)
    hh, ww = torch.arange(H).view(1, 1, H, 1), torch.arange(W).view(1, 1, 1, W)
    block = (hh >= r) & (hh < r + 3) & (ww >= c) & (ww < c + 3)  # (V, T, H, W)
    visual = torch.randn(n_videos, T, H, W, visual_dim, generator=g)
    visual += (block & has_visual[..., None, None])[..., None] * v_proto[cls][:, None, None, None, :]
    perm = torch.randperm(n_videos, generator=g)
    a, b = int(0.6 * n_videos), int(0.8 * n_videos)
    splits = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    return AVData(
        visual, audio, labels, [f"class{i}" for i in range(n_events)], [f"vid{i}" for i in range(n_videos)], splits
    )


@pytest.fixture(scope="module")
def data() -> AVData:
    return make_avdata()


def majority_accuracy(data: AVData, split: str) -> float:
    labels = data.labels[data.split(split)].flatten()
    return (labels == labels.mode().values).double().mean().item()


def cml_chance(data: AVData, split: str) -> float:
    """Expected accuracy of a uniformly random window start."""
    q = cml_queries(data.event_mask[data.split(split)])
    T = data.labels.shape[1]
    return statistics.fmean(1 / (T - l + 1) for l in q.length[q.keep].tolist())


# --- learning -----------------------------------------------------------------------------------
def test_sel_dam_learns(data):
    # the scaled matching (the default) plateaus for ~15 epochs on these features, then learns
    result = train(data, TrainConfig(model_config(task="sel", name="dam"), epochs=30, progress=False))
    majority, chance = majority_accuracy(data, "test"), 1 / data.num_classes
    assert majority < 0.45
    assert result.test["accuracy"] >= majority + 0.3, (result.test, majority)
    assert result.test["accuracy"] >= 4 * chance
    # model selection: the kept epoch is the best on validation, and test is that model's
    best = max(result.history, key=lambda h: h["accuracy"])
    assert result.best_epoch == best["epoch"] and result.val["accuracy"] == best["accuracy"]
    assert evaluate(result.model, data, "test") == result.test


def test_sel_dam_warmup_is_the_first_fraction_of_the_epochs(data, monkeypatch):
    """The loop tells the model its epoch: warm-up 0.5 of 5 epochs is epochs 1-2; of 1 epoch, none."""
    small = dataclasses.replace(data, splits={**data.splits, "train": data.splits["train"][:16]})
    calls, start_epoch = [], SELDAM.start_epoch

    def spy(self, epoch, epochs):
        start_epoch(self, epoch, epochs)
        calls.append((epoch, epochs, self.warming_up))

    monkeypatch.setattr(SELDAM, "start_epoch", spy)
    cfg = TrainConfig(model_config(task="sel", name="dam", warmup=0.5), epochs=5, progress=False)
    train(small, cfg)
    assert calls == [(1, 5, True), (2, 5, True), (3, 5, False), (4, 5, False), (5, 5, False)]
    calls.clear()
    train(small, dataclasses.replace(cfg, epochs=1))
    assert calls == [(1, 1, False)]


def test_sel_av_att_learns(data):
    result = train(data, TrainConfig(model_config(task="sel", name="av_att"), epochs=8, progress=False))
    assert result.test["accuracy"] >= majority_accuracy(data, "test") + 0.15, result.test


@pytest.mark.parametrize("model,margin", [("dam", 0.3), ("avdln", 0.1)])
def test_cml_learns(data, model, margin):
    result = train(data, TrainConfig(model_config(task="cml", name=model), epochs=15, progress=False))
    chance = cml_chance(data, "test")
    assert result.test["n_videos"] == int(cml_queries(data.event_mask[data.split("test")]).keep.sum())
    assert result.test["a2v"] >= chance + margin, (result.test, chance)
    assert result.test["v2a"] >= chance + margin, (result.test, chance)


# --- recipes (issue #10, item 11) ------------------------------------------------------------------
def record_loss_inputs(monkeypatch) -> list:
    """Record the (audio, event mask) of every AVDLN.loss call."""
    calls = []
    original = AVDLN.loss

    def loss(self, audio, visual, event_mask):
        calls.append((audio.detach().clone(), event_mask.clone()))
        return original(self, audio, visual, event_mask)

    monkeypatch.setattr(AVDLN, "loss", loss)
    return calls


def test_avdln_default_is_the_reference_recipe(monkeypatch):
    # Tian et al.'s cmm_train.py: Keras fit on single synchronized segment pairs, batch 8,
    # 20 epochs, shuffled, no model selection (validation is only printed)
    cfg = TrainConfig(model_config(task="cml", name="avdln"), progress=False)
    r = cfg.resolved
    assert (r.epochs, r.batch_size, r.unit, r.selection) == (20, 8, "segment", "last")
    # the other models keep the avel recipe
    for model in (model_config(task="cml"), model_config(task="sel"), model_config(task="sel", name="av_att")):
        r = TrainConfig(model).resolved
        assert (r.epochs, r.batch_size, r.unit, r.selection) == (60, 64, "video", "best-val")
    small = make_avdata(n_videos=40, hw=(3, 3), visual_dim=16, audio_dim=16, seed=9)
    calls = record_loss_inputs(monkeypatch)
    result = train(small, dataclasses.replace(cfg, epochs=3))
    pairs = len(small.split("train")) * 10  # 24 videos x 10 segments
    assert len(calls) == 3 * math.ceil(pairs / 8)
    assert all(a.shape == (8, 1, 16) for a, _ in calls[:-1])
    # one epoch visits every training segment pair exactly once
    seen = torch.cat([a[:, 0] for a, _ in calls[: len(calls) // 3]])
    train_audio = small.audio[small.split("train")].flatten(0, 1)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, train_audio.tolist()))
    mask = torch.cat([m[:, 0] for _, m in calls[: len(calls) // 3]])
    assert int(mask.sum()) == int(small.event_mask[small.split("train")].sum())
    # no selection: the model is the last epoch's, whatever validation said
    assert result.best_epoch == 3 and result.val == {k: result.history[-1][k] for k in result.val}


def test_avdln_keeps_the_avel_recipe_as_an_option(monkeypatch):
    small = make_avdata(n_videos=40, hw=(3, 3), visual_dim=16, audio_dim=16, seed=9)
    calls = record_loss_inputs(monkeypatch)
    cfg = TrainConfig(model_config(task="cml", name="avdln"), recipe="avel", epochs=4, batch_size=10, progress=False)
    result = train(small, cfg)
    assert [a.shape for a, _ in calls[:3]] == [(10, 10, 16), (10, 10, 16), (4, 10, 16)]  # whole videos
    best = max(result.history, key=lambda h: h["average"])
    assert result.best_epoch == best["epoch"]


def test_segment_recipe_only_for_segment_models():
    with pytest.raises(ConfigError, match="recipe"):
        TrainConfig(model_config(task="sel", name="dam"), recipe="tian-avdln")
    with pytest.raises(ConfigError, match="recipe"):
        TrainConfig(model_config(task="cml", name="avdln"), recipe="tian")
    assert set(RECIPES) == {"avel", "tian-avdln"}


# --- determinism, data handling ----------------------------------------------------------------
@pytest.mark.parametrize("task", ["sel", "cml"])
def test_same_seed_same_run(task):
    small = make_avdata(n_videos=60, hw=(3, 3), visual_dim=16, audio_dim=16, seed=3)
    cfg = TrainConfig(model_config(task=task, name="dam"), epochs=2, batch_size=16, progress=False, seed=7)
    r1, r2 = train(small, cfg), train(small, cfg)
    assert r1.history == r2.history
    s1, s2 = r1.model.state_dict(), r2.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    r3 = train(small, dataclasses.replace(cfg, seed=8))
    assert r3.history != r1.history


def test_float16_in_ram():
    small = make_avdata(n_videos=40, hw=(3, 3), visual_dim=16, audio_dim=16, seed=4)
    feats = prepare_features(small, "sel", "float16")
    assert feats.visual.dtype == torch.float16 and feats.visual.shape == (40, 10, 9, 16)
    audio, visual, labels = feats.batch(torch.tensor([3, 1]), torch.device("cpu"))
    assert audio.dtype == visual.dtype == torch.float32 and labels.shape == (2, 10)
    torch.testing.assert_close(visual, small.visual[[3, 1]].flatten(2, 3).half().float())
    cml = prepare_features(small, "cml", "float16")
    torch.testing.assert_close(cml.visual.float(), small.visual.mean(dim=(2, 3)), atol=2e-3, rtol=1e-3)
    result = train(small, TrainConfig(model_config(task="sel"), epochs=1, dtype_in_ram="float16", progress=False))
    assert 0.0 <= result.test["accuracy"] <= 1.0
    with pytest.raises(ValueError):
        prepare_features(small, "sel", "int8")
    # without a dtype the features stay as stored (no float32 copy of float16 data)
    half = dataclasses.replace(small, visual=small.visual.half(), audio=small.audio.half())
    assert prepare_features(half, "sel").visual.dtype == torch.float16
    assert prepare_features(small, "sel").visual.dtype == torch.float32


def test_cml_uses_match_splits():
    small = make_avdata(n_videos=60, hw=(3, 3), visual_dim=16, audio_dim=16, seed=5)
    small.splits.update(
        {"train_match": torch.arange(0, 30), "val_match": torch.arange(30, 38), "test_match": torch.arange(38, 60)}
    )
    assert small.task_split("cml", "val") == "val_match"
    assert small.task_split("sel", "val") == "val"
    result = train(small, TrainConfig(model_config(task="cml", name="avdln"), epochs=1, progress=False))
    expected = int(cml_queries(small.event_mask[38:60]).keep.sum())
    assert result.test["n_videos"] == expected
    assert result.val["n_videos"] == int(cml_queries(small.event_mask[30:38]).keep.sum())


def test_train_seeds_mean_and_std():
    small = make_avdata(n_videos=60, hw=(3, 3), visual_dim=16, audio_dim=16, seed=6)
    out = train_seeds(small, TrainConfig(model_config(task="cml", name="avdln"), epochs=2, progress=False), [0, 1, 2])
    assert [r.config.seed for r in out.results] == [0, 1, 2] and out.split == "test"
    a2v = [r.test["a2v"] for r in out.results]
    assert out.mean["a2v"] == pytest.approx(sum(a2v) / 3)
    assert out.std["a2v"] == pytest.approx(math.sqrt(sum((x - sum(a2v) / 3) ** 2 for x in a2v) / 2))


# --- checkpoints -------------------------------------------------------------------------------
CONFIGS = [
    model_config(task="sel", name="dam", num_classes=6, visual_dim=16, audio_dim=16, heads=2),
    model_config(task="sel", name="av_att", num_classes=6, visual_dim=16, audio_dim=16),
    model_config(
        task="sel",
        name="dam",
        num_classes=6,
        visual_dim=16,
        audio_dim=16,
        heads=2,
        warmup=0.3,
        segment_loss=0.5,
        relevance_smoothing=0.1,
        feature_dropout=0.2,
        input_dropout=0.1,
        embedding="avg",
        relevance_fusion="geometric",
    ),
    model_config(task="cml", name="dam", visual_dim=16, audio_dim=16, embedding="bilstm", dim=32),
    model_config(task="cml", name="avdln", visual_dim=16, audio_dim=16),
]


def outputs(model, cfg: ModelConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 10, 16, generator=g)
    if cfg.task == "sel":
        out = model(audio, torch.randn(2, 10, 9, 16, generator=g))
        return out if torch.is_tensor(out) else torch.cat([out.category_logits.flatten(), out.relevance.flatten()])
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 3:6] = True
    out = model(audio, torch.randn(2, 10, 16, generator=g), *([mask] if cfg.name == "dam" else []))
    return out.relevance if cfg.name == "dam" else torch.cat(out)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.task}-{c.name}")
def test_checkpoint_round_trip(tmp_path, cfg):
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    settings = FeatureSettings(visual_model="random", seed=3)
    metrics = {"accuracy": 0.5, "n_videos": 3}
    path = save_checkpoint(tmp_path / "m.safetensors", model, cfg, ["a", "b"], settings, metrics)
    ckpt = load_checkpoint(path, expected_task=cfg.task, feature_settings=settings)
    assert ckpt.model_config == cfg and ckpt.class_names == ["a", "b"]
    assert ckpt.feature_settings == settings and ckpt.metrics == metrics
    assert not ckpt.model.training
    assert torch.equal(outputs(ckpt.model, cfg), outputs(model, cfg))
    # the file is plain safetensors: its metadata is readable JSON
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert json.loads(header["__metadata__"]["avel"])["task"] == cfg.task


def test_checkpoint_wrong_task(tmp_path):
    cfg = CONFIGS[3]
    path = save_checkpoint(tmp_path / "cml.safetensors", build_model(cfg), cfg, [], None, {})
    with pytest.raises(CheckpointError, match="a cml checkpoint, expected sel"):
        load_checkpoint(path, expected_task="sel")


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_checkpoint_refuses_pickles_unexecuted(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    payload = {"state_dict": Payload(str(marker)), "weight": torch.zeros(2)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path, expected_task="sel")
    assert not marker.exists()
    if writer == "pickle":  # the payload is live: unpickling it does create the marker
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_checkpoint_refuses_other_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(CheckpointError, match="without avel metadata"):
        load_checkpoint(plain)
    # avel metadata whose weights do not fit the model it describes
    cfg = CONFIGS[3]
    bad = tmp_path / "bad.safetensors"
    save_file(
        {"w": torch.zeros(3)},
        str(bad),
        metadata={"avel": json.dumps({"format": "avel-checkpoint", "model_config": cfg.to_dict()})},
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(bad)


def test_checkpoint_feature_settings(tmp_path):
    cfg = CONFIGS[3]
    saved = FeatureSettings(visual_model="caffe", precision="fp32")
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(cfg), cfg, [], saved, {})
    with pytest.raises(SettingsMismatch) as err:
        load_checkpoint(path, feature_settings=FeatureSettings(visual_model="random", precision="fp16"))
    assert "visual_model" in str(err.value) and "precision" in str(err.value) and "audio_model" not in str(err.value)
    assert load_checkpoint(path, feature_settings=saved).feature_settings == saved
    # unknown settings on either side cannot be compared: accepted
    assert load_checkpoint(path).feature_settings == saved
    unknown = save_checkpoint(tmp_path / "u.safetensors", build_model(cfg), cfg, [], None, {})
    assert load_checkpoint(unknown, feature_settings=saved).feature_settings is None


def test_checkpoint_header_length_starting_with_0x80_is_accepted(tmp_path):
    # a safetensors header length whose low byte is 0x80 (e.g. 7040 = 0x1B80) must not be
    # mistaken for a pickle's first byte
    import struct

    from avel.pipeline.train.checkpoint import _check_safetensors_header

    header = b"{" + b" " * (0x1B80 - 2) + b"}"
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    _check_safetensors_header(path)
