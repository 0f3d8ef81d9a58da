"""Weakly supervised event localization (`avel train wsel`, models/weak.py, pipeline/train/weak.py):
training and model selection see video-level labels only (proved by scrambling the
per-second labels of the training and validation splits: the checkpoint stays bit-identical),
the test split is scored by the SEL protocol, the MIL pooling of AV_att weak is Tian et
al.'s, a weak checkpoint evaluates and localizes like a SEL one, and bad input is one line
with exit 2."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avel.cli import main
from avel.core.annotations import AnnotationRow
from avel.core.config import FeatureSettings
from avel.core.errors import CheckpointError, DataError
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.models.weak import WeakAVAtt, WeakDAM, mil_pool, pseudo_relevance
from avel.pipeline.cache.meta import CacheMeta
from avel.pipeline.cache.parts import VideoFeatures
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.data.ave import read_ave_layout, write_ave_layout
from avel.pipeline.data.dataset import video_labels_from_classes
from avel.pipeline.data.load import load_data
from avel.pipeline.data.synth import (
    FeatureSynthConfig,
    annotation_rows,
    synth_features,
    video_contents,
)
from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from avel.pipeline.train.loop import TrainConfig, prepare_features, train
from avel.pipeline.train.weak import WeakFeatures, whole_video_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = {"att_hidden": 4, "lstm_hidden": 8, "head_hidden": 8, "heads": 2}  # tiny widths: seconds per run
SMALL_AV_ATT = {k: v for k, v in SMALL.items() if k != "heads"}  # AV_att has no self-attention
TINY = {"audio_dim": 32, "visual_dim": 48, "audio_active": 8, "visual_active": 8}


def synth(videos: int = 60, classes: int = 4, **kw) -> tuple[FeatureSynthConfig, AVData]:  # noqa: F821
    cfg = FeatureSynthConfig(videos=videos, classes=classes, seed=3, **kw)
    data = synth_features(cfg)
    data.video_labels = video_labels_from_classes([c.plan.class_index for c in video_contents(cfg)], classes)
    return cfg, data


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -----------------------------------------------------------------------------------------
# the data layer: video labels, never per-second ones
def test_video_labels_from_classes_hand_case():
    got = video_labels_from_classes([2, -1, 0], 3)
    assert got.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    with pytest.raises(ValueError):
        video_labels_from_classes([3], 3)


def test_weak_features_carry_one_label_per_video_and_no_second_labels():
    _, data = synth(**TINY)
    feats = prepare_features(data, "wsel")
    assert isinstance(feats, WeakFeatures)
    assert not any(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in vars(feats).values())
    _, visual, target = feats.batch(torch.tensor([0, 5]), torch.device("cpu"))
    assert visual.shape == (2, 10, 49, 48) and target.shape == (2, 5)
    assert torch.equal(target, data.video_labels[[0, 5]])


def test_whole_video_baseline_is_the_event_share_of_the_seconds():
    _, data = synth(**TINY)
    test = data.labels[data.split("test")]
    assert whole_video_accuracy(data, "test") == pytest.approx((test != data.background).double().mean().item())


def test_ave_layout_gives_mil_labels_and_a_cache_gives_its_rows_categories(tmp_path):
    _, data = synth(videos=8, classes=2, audio_dim=128, visual_dim=512)
    write_ave_layout(tmp_path / "ave", data, annotations=annotation_rows(data))
    back = read_ave_layout(tmp_path / "ave")
    assert torch.equal(back.video_labels, data.video_labels)
    (tmp_path / "ave" / "mil_labels.h5").unlink()
    assert read_ave_layout(tmp_path / "ave").video_labels is None
    # a cache: one category per annotation row; a zero-length row (no event) is background
    rows = [
        AnnotationRow("dog", "a", "good", 0, 3),
        AnnotationRow("cat", "b", "good", 1, 2),
        AnnotationRow("dog", "c", "good", 2, 2),
    ]
    meta = CacheMeta(
        FeatureSettings(visual_model="random", audio_model="random"),
        annotations="".join(r.to_line() + "\n" for r in rows),
    )
    rng = np.random.default_rng(0)
    with FeatureCache.create_or_open(tmp_path / "cache", meta).writer() as w:
        for r in rows:
            w.add(
                VideoFeatures(
                    r.video_id,
                    f"/{r.video_id}.mp4",
                    3.0,
                    rng.random((3, 7, 7, 512), dtype=np.float32),
                    rng.random((3, 128), dtype=np.float32),
                )
            )
    cached = load_data(tmp_path / "cache")
    assert cached.class_names == ["dog", "cat"]
    assert cached.video_labels.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


# -----------------------------------------------------------------------------------------
# models
def test_av_att_weak_pools_segment_scores_by_max_over_time_as_tian():
    scores = torch.tensor([[[1.0, 5.0, 0.0], [3.0, -1.0, 2.0]]])  # (B=1, T=2, C=3)
    assert mil_pool(scores).tolist() == [[3.0, 5.0, 2.0]]
    torch.manual_seed(0)
    model = WeakAVAtt(
        num_classes=3, audio_dim=6, visual_dim=5, **{k: SMALL[k] for k in ("att_hidden", "lstm_hidden", "head_hidden")}
    )
    audio, visual = torch.rand(2, 4, 6), torch.rand(2, 4, 9, 5)
    target = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    seg = model(audio, visual)  # (B, T, C)
    expected = F.multilabel_soft_margin_loss(F.softmax(seg.max(dim=1).values, dim=-1), target)
    assert model.loss(audio, visual, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # MIL: only the best segment of each class gets a gradient
    s = seg.detach().requires_grad_()
    F.multilabel_soft_margin_loss(F.softmax(mil_pool(s), dim=-1), target).backward()
    assert ((s.grad != 0).sum(dim=1) <= 1).all()
    assert model.predict(audio, visual).shape == (2, 4)


def test_dam_weak_pseudo_targets_follow_the_agreement_of_both_modalities():
    torch.manual_seed(0)
    kw = dict(num_classes=3, audio_dim=6, visual_dim=5, **SMALL)
    agreement, fused, none = (WeakDAM(relevance=r, **kw) for r in ("agreement", "fused", "none"))
    assert none.uses_relevance is False and none.audio_segment is None
    audio, visual = torch.rand(2, 4, 6), torch.rand(2, 4, 9, 5)
    target = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    for model in (agreement, fused, none):
        loss = model.loss(audio, visual, target)
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert model.predict(audio, visual).shape == (2, 4)
    # the relevance target of second t: min(P^A_t(c), P^V_t(c)) of the video's class c (agreement),
    # max of the two (fused), divided by its maximum over the video; set the per-second probabilities by hand
    p_a = torch.full((2, 4, 2), 0.5)
    p_v = torch.full((2, 4, 2), 0.5)
    p_a[0, :, 1] = torch.tensor([0.9, 0.9, 0.1, 0.2])  # video 0, class 1
    p_v[0, :, 1] = torch.tensor([0.8, 0.3, 0.9, 0.1])
    p_a[1, :, 0] = torch.tensor([0.6, 0.7, 0.8, 0.9])  # video 1, class 0
    p_v[1, :, 0] = torch.tensor([0.1, 0.7, 0.9, 0.2])
    # ... divided by its maximum over the video's seconds
    expected = {
        "agreement": [[1.0, 0.375, 0.125, 0.125], [0.125, 0.875, 1.0, 0.25]],
        "fused": [[1.0, 1.0, 1.0, 0.2 / 0.9], [0.6 / 0.9, 0.7 / 0.9, 1.0, 1.0]],
    }
    classes = torch.tensor([1, 0])
    for relevance, want_targets in expected.items():
        torch.testing.assert_close(pseudo_relevance(p_a, p_v, classes, relevance), torch.tensor(want_targets))
    assert pseudo_relevance(p_a, p_v, torch.tensor([-1, 0]), "agreement")[0].tolist() == [0.0] * 4  # no event
    # the loss: eq. 8 with those targets (from the per-second classifiers' softmax) + their CE
    for model in (agreement, fused):
        model.eval()  # no dropout: the same relevance twice
        out = model(audio, visual)
        scores = model.segment_scores(audio, visual)
        ce = F.cross_entropy(out.category_logits, classes)
        instances = sum(F.cross_entropy(s.flatten(0, 1), classes.repeat_interleave(4)) for s in scores)
        targets = pseudo_relevance(*(F.softmax(s, dim=-1) for s in scores), classes, model.relevance)
        bce = F.binary_cross_entropy(out.relevance, targets)
        want = 0.5 * ce + 0.5 * bce + instances
        assert model.loss(audio, visual, target).item() == pytest.approx(want.item(), rel=1e-5)
    # "none" is DAM's category CE alone: every second gets the category
    pred = none.predict(audio, visual)
    assert (pred == pred[:, :1]).all()
    with pytest.raises(ValueError, match="weak relevance"):
        WeakDAM(relevance="oracle", **kw)


# -----------------------------------------------------------------------------------------
# training: no per-second label reaches it
def scramble_seconds(labels: torch.Tensor, rows: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Random per-second labels (any class, background included) on `rows`."""
    out = labels.clone()
    g = torch.Generator().manual_seed(7)
    out[rows] = torch.randint(num_classes, out[rows].shape, generator=g)
    return out


def test_scrambled_second_labels_of_train_and_val_give_the_same_model():
    _, data = synth(**TINY)
    rows = torch.cat([data.split("train"), data.split("val")])
    scrambled = dataclasses.replace(data, labels=scramble_seconds(data.labels, rows, data.num_classes))
    assert not torch.equal(scrambled.labels, data.labels)
    for name in ("dam", "av_att"):
        cfg = TrainConfig(
            model_config(task="wsel", name=name, **(SMALL if name == "dam" else SMALL_AV_ATT)),
            epochs=3,
            batch_size=16,
            progress=False,
        )
        a, b = train(data, cfg), train(scrambled, cfg)
        assert a.history == b.history and a.test == b.test and "video_accuracy" in a.val
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the same scramble does change a supervised model: the check can fail
    cfg = TrainConfig(model_config(task="sel", name="dam", **SMALL), epochs=1, batch_size=16, progress=False)
    sa, sb = train(data, cfg).model.state_dict(), train(scrambled, cfg).model.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_checkpoint_is_bit_identical_when_the_ave_folder_second_labels_are_scrambled(tmp_path, capsys):
    _, data = synth(videos=30, classes=3, audio_dim=128, visual_dim=512)
    for name in ("clean", "scrambled"):
        write_ave_layout(tmp_path / name, data, annotations=annotation_rows(data))
    rows = torch.cat([data.split("train"), data.split("val")])
    with h5py.File(tmp_path / "scrambled" / "labels.h5", "r+") as f:
        seconds = scramble_seconds(data.labels, rows, data.num_classes)
        f["avadataset"][...] = F.one_hot(seconds, data.num_classes).numpy()
    args = [
        "--model",
        "dam",
        "--epochs",
        "2",
        "--lstm-hidden",
        "8",
        "--att-hidden",
        "4",
        "--head-hidden",
        "8",
        "--heads",
        "2",
        "--seeds",
        "2",
    ]
    for name in ("clean", "scrambled"):
        assert (
            main(
                [
                    "train",
                    "wsel",
                    "--data",
                    str(tmp_path / name),
                    "--out",
                    str(tmp_path / f"{name}.safetensors"),
                    "--json",
                    str(tmp_path / f"{name}.json"),
                    *args,
                ]
            )
            == 0
        )
    assert sha256(tmp_path / "clean.safetensors") == sha256(tmp_path / "scrambled.safetensors")
    assert sha256(tmp_path / "clean-seed1.safetensors") == sha256(tmp_path / "scrambled-seed1.safetensors")
    report = json.loads((tmp_path / "clean.json").read_text())
    assert report["task"] == "wsel" and len(report["runs"]) == 2 and set(report["std"]) >= {"accuracy"}
    out = capsys.readouterr().out
    assert "test over 2 seeds: accuracy" in out
    # evaluate wsel: the SEL protocol with the full labels of the test split
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "wsel", "--data", str(tmp_path / "clean"), "--checkpoint", str(tmp_path / "clean.safetensors")]
        )
        == 0
    )
    assert f"accuracy {report['runs'][0]['test']['accuracy']:.4f}" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "clean.safetensors", expected_task="wsel")
    assert isinstance(ckpt.model, WeakDAM) and ckpt.model_config.task == "wsel"


# -----------------------------------------------------------------------------------------
# bad input: one line, exit 2
def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys):
    _, data = synth(videos=8, classes=2, audio_dim=128, visual_dim=512)
    write_ave_layout(tmp_path / "ave", data, annotations=annotation_rows(data))
    (tmp_path / "ave" / "mil_labels.h5").unlink()
    err = one_line_error(capsys, ["train", "wsel", "--data", str(tmp_path / "ave"), "--out", str(tmp_path / "w.st")])
    assert "mil_labels.h5" in err and str(tmp_path / "ave") in err
    meta = CacheMeta(FeatureSettings(visual_model="random", audio_model="random"))
    with FeatureCache.create_or_open(tmp_path / "cache", meta).writer() as w:
        w.add(VideoFeatures("a", "/a.mp4", 2.0, np.zeros((2, 7, 7, 512), np.float32), np.zeros((2, 128), np.float32)))
    err = one_line_error(capsys, ["train", "wsel", "--data", str(tmp_path / "cache"), "--out", str(tmp_path / "w.st")])
    assert "no annotations" in err
    cfg = model_config(task="wsel", name="av_att", num_classes=3, **SMALL_AV_ATT)
    weak = save_checkpoint(tmp_path / "weak.safetensors", build_model(cfg), cfg, ["a", "b"], None, {})
    err = one_line_error(capsys, ["evaluate", "sel", "--data", str(tmp_path / "ave"), "--checkpoint", str(weak)])
    assert "a wsel checkpoint, expected sel" in err
    err = one_line_error(capsys, ["cml", "--checkpoint", str(weak), "--query", "x.mp4", "--target", "y.mp4"])
    assert "a wsel checkpoint, expected cml" in err
    with pytest.raises(DataError, match="no video-level labels"):
        prepare_features(dataclasses.replace(data, video_labels=None), "wsel")
    with pytest.raises(CheckpointError, match="expected cml"):
        load_checkpoint(weak, expected_task="cml")


def test_localize_accepts_a_weak_checkpoint(tmp_path):
    from mediagen import tone, write_video

    from avel.pipeline.apps.localize import localize

    settings = FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=1,
        frame_size=64,
        segments=10,
        visual_weights_sha256=random_weights_tag(0),
        audio_weights_sha256=random_weights_tag(0),
    )
    video = write_video(tmp_path / "clip.mp4", duration_s=3, fps=2, color=lambda t: (200, 30, 30), audio=tone(440))
    for name in ("dam", "av_att"):
        cfg = model_config(task="wsel", name=name, num_classes=3)
        torch.manual_seed(0)
        path = save_checkpoint(tmp_path / f"{name}.safetensors", build_model(cfg), cfg, ["a", "b"], settings, {})
        (result,) = localize([video], path, batch_size=16, progress=False, device="cpu")
        assert not result.error and len(result.segments) == 3 and result.model.task == "wsel"
    assert (
        main(
            ["localize", str(video), "--checkpoint", str(path), "--device", "cpu", "--json", str(tmp_path / "out.json")]
        )
        == 0
    )
    assert json.loads((tmp_path / "out.json").read_text())
