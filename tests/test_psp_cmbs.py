"""PSP and CMBS (issue #26, models/psp.py and models/cmbs.py): their maths by hand on small
tensors, the checkpoint round trip, `avel train` and `avel localize` through the CLI, and the
options of one model refused for another."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mediagen import tone, write_video

from avel.cli import main
from avel.core.config import FeatureSettings
from avel.core.errors import ConfigError
from avel.extractors.registry import random_weights_tag
from avel.models.cmbs import CMBS, WeakCMBS, cross_gate, topk_mean
from avel.models.psp import PositiveSamplePropagation, WeakPSP, pair_similarity_loss, prune_affinity
from avel.models.registry import build_model, model_config, model_names
from avel.pipeline.apps.localize import localize
from avel.pipeline.data.synth import FeatureSynthConfig, write_features
from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
NEW = [("sel", "psp"), ("wsel", "psp"), ("sel", "cmbs"), ("wsel", "cmbs")]
SMALL = {"num_classes": 4, "audio_dim": 6, "visual_dim": 8, "att_hidden": 5, "lstm_hidden": 4}


def identity_(layer: torch.nn.Linear) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.eye(layer.out_features, layer.in_features))


# --- PSP ------------------------------------------------------------------------------------
def test_prune_affinity_by_hand():
    beta = torch.tensor([[[6.0, 3.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    # rows L1-normalised: [.6 .3 .1 0], [.25 .25 .25 .25], zeros
    torch.testing.assert_close(prune_affinity(beta, 0.0), torch.tensor([[[0.6, 0.3, 0.1, 0.0], [0.25] * 4, [0.0] * 4]]))
    # 0.099 (the paper's) keeps 0.1; 0.15 prunes it and renormalises [.6 .3] -> [2/3 1/3]
    torch.testing.assert_close(prune_affinity(beta, 0.099)[0, 0], torch.tensor([0.6, 0.3, 0.1, 0.0]))
    torch.testing.assert_close(prune_affinity(beta, 0.15)[0, 0], torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    # an entry equal to tau is pruned (<= tau), and a row pruned entirely stays zero
    torch.testing.assert_close(prune_affinity(beta, 0.25)[0, 1], torch.zeros(4))
    assert prune_affinity(beta, 0.7).abs().sum() == 0


def propagation_module(threshold: float, propagate: bool = True) -> PositiveSamplePropagation:
    psp = PositiveSamplePropagation(2, threshold=threshold, dropout=0.0, propagate=propagate).eval()
    for layer in (psp.audio_key, psp.audio_value, psp.visual_key, psp.visual_value, psp.audio_out, psp.visual_out):
        identity_(layer)
    return psp


def test_positive_sample_propagation_by_hand():
    f_a = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, T=3, d=2), non-negative: the ReLUs pass them
    f_v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]])
    psp = propagation_module(threshold=0.25)
    # v_i . a_j = [[1 0 1], [0 1 1], [2 1 3]] (1/sqrt(d) cancels in the normalisation); rows
    # normalised: [.5 0 .5], [0 .5 .5], [1/3 1/6 1/2] -> 1/6 <= 0.25 pruned -> [.4 0 .6]
    beta_va, beta_av = psp.affinities(f_a, f_v)
    torch.testing.assert_close(beta_va[0], torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.4, 0.0, 0.6]]))
    # the transpose: a_j . v_i = [[1 0 2], [0 1 1], [1 1 3]] -> [1/3 0 2/3], [0 .5 .5], [.2 .2 .6] -> [0 0 1]
    torch.testing.assert_close(beta_av[0], torch.tensor([[1 / 3, 0.0, 2 / 3], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]))
    # v' = f^V + beta_va f^A,  a' = f^A + beta_av f^V
    v_hand = torch.tensor([[[2.0, 0.5], [0.5, 2.0], [3.0, 1.6]]])
    a_hand = torch.tensor([[[8 / 3, 2 / 3], [1.0, 2.0], [3.0, 2.0]]])
    fused, v, a = psp(f_a, f_v)
    torch.testing.assert_close(v, F.layer_norm(v_hand, (2,), eps=1e-6))
    torch.testing.assert_close(a, F.layer_norm(a_hand, (2,), eps=1e-6))
    torch.testing.assert_close(fused, (v + a) / 2)
    # --no-propagation: each modality keeps its own features
    _, v0, a0 = propagation_module(threshold=0.25, propagate=False)(f_a, f_v)
    torch.testing.assert_close(v0, F.layer_norm(f_v, (2,), eps=1e-6))
    torch.testing.assert_close(a0, F.layer_norm(f_a, (2,), eps=1e-6))


def test_pair_similarity_loss_by_hand():
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    a = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])  # cosines 1, 0, -1 -> ReLU -> / sum: [1 0 0]
    mask = torch.tensor([[True, True, False]])  # target [.5 .5 0]
    torch.testing.assert_close(pair_similarity_loss(v, a, mask), torch.tensor((0.25 + 0.25 + 0.0) / 3))
    # an all-background video: target zeros
    torch.testing.assert_close(pair_similarity_loss(v, a, torch.zeros(1, 3, dtype=torch.bool)), torch.tensor(1 / 3))


def test_psp_loss_is_ce_plus_weighted_avps():
    torch.manual_seed(0)
    cfg = model_config("sel", "psp", avps_weight=7.0, psp_dropout=0.0, **SMALL)
    model = build_model(cfg).eval()
    audio, visual = torch.randn(2, 5, 6), torch.randn(2, 5, 3, 8)
    labels = torch.tensor([[0, 0, 3, 3, 3], [3, 1, 1, 3, 3]])
    fused, v, a = model.features(audio, visual)
    ce = F.cross_entropy(model.head(fused).flatten(0, 1), labels.flatten())
    torch.testing.assert_close(model.loss(audio, visual, labels), ce + 7.0 * pair_similarity_loss(v, a, labels != 3))
    assert model.predict(audio, visual).tolist() == model(audio, visual).argmax(-1).tolist()


def test_weak_psp_temporal_weighting_and_video_loss_by_hand():
    torch.manual_seed(0)
    model = build_model(model_config("wsel", "psp", psp_dropout=0.0, **SMALL)).eval()
    assert isinstance(model, WeakPSP) and model.psp.threshold == 0.095  # the weak script's default
    audio, visual = torch.randn(2, 5, 6), torch.randn(2, 5, 3, 8)
    scores = model.head(model.features(audio, visual)[0])  # (B, T, C)
    w = torch.sigmoid(torch.relu(scores @ model.temporal.weight.T))  # (B, T, 1)
    torch.testing.assert_close(model(audio, visual), scores * w)
    labels = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    p = torch.softmax((scores * w).mean(1), -1)
    target = labels / labels.sum(-1, keepdim=True)  # [0 .5 0 .5], [0 0 1 0]
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(model.loss(audio, visual, labels), expected)
    plain = build_model(model_config("wsel", "psp", temporal_weighting=False, **SMALL))
    assert plain.temporal is None


# --- CMBS -----------------------------------------------------------------------------------
def test_topk_mean_and_cross_gate_by_hand():
    scores = torch.tensor([[[1.0, -1.0], [4.0, 0.0], [2.0, 5.0], [3.0, 2.0]]])  # (1, T=4, K=2)
    torch.testing.assert_close(topk_mean(scores, 2), torch.tensor([[3.5, 3.5]]))  # (4+3)/2, (5+2)/2
    torch.testing.assert_close(topk_mean(scores, 9), torch.tensor([[2.5, 1.5]]))  # k capped at T: the mean
    q_a, q_v = torch.tensor([[[1.0, 2.0], [2.0, 2.0]]]), torch.tensor([[[4.0, 0.0], [1.0, 1.0]]])
    g_a, g_v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.2]])
    a, v = cross_gate(q_a, q_v, g_a, g_v, alpha=0.1)  # each modality scaled by the OTHER's gate
    torch.testing.assert_close(a, torch.tensor([[[1.05, 2.1], [2.04, 2.04]]]))
    torch.testing.assert_close(v, torch.tensor([[[4.4, 0.0], [1.0, 1.0]]]))


def set_linear(layer: torch.nn.Linear, bias) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


CMBS_SMALL = {**SMALL, "relation_heads": 2, "relation_ffn": 8, "relation_layers": 1, "relation_dropout": 0.0}


def test_cmbs_background_suppression_with_hand_set_scores():
    torch.manual_seed(0)
    model = build_model(model_config("sel", "cmbs", suppression_gamma=0.3, **CMBS_SMALL)).eval()
    assert isinstance(model, CMBS) and model.num_events == 3
    audio, visual = torch.randn(2, 5, 6), torch.randn(2, 5, 3, 8)
    set_linear(model.audio_gate, [math.log(3)])  # sigmoid -> 0.75
    set_linear(model.visual_gate, [0.0])  # 0.5
    set_linear(model.audio_cas, [1.0, 0.0, -1.0])
    set_linear(model.visual_cas, [3.0, 0.0, 1.0])  # s^av = ([1 0 -1] + [3 0 1]) / 2 = [2 0 0]
    set_linear(model.category, [0.0, 0.5, 0.2])
    set_linear(model.is_event, [0.0])
    is_event, logits, out = model(audio, visual)
    torch.testing.assert_close(out.gate, torch.full((2, 5), 0.375))
    # event level: the category logits + gamma s^av = [0 .5 .2] + .3 [2 0 0] = [.6 .5 .2]: class 0 wins
    torch.testing.assert_close(logits, torch.tensor([[0.6, 0.5, 0.2]] * 2))
    # is-event logit 0 -> sigma 0.5 -> an event second (DAM's rule: background iff < 0.5)
    assert model.predict(audio, visual).tolist() == [[0] * 5] * 2
    set_linear(model.is_event, [-0.1])
    assert model.predict(audio, visual).tolist() == [[3] * 5] * 2  # all background
    # without the event level the category alone decides: class 1
    model.event_suppression = False
    set_linear(model.is_event, [0.1])
    assert model.predict(audio, visual).tolist() == [[1] * 5] * 2
    scores = model.score_segments(audio, visual)
    assert scores.probs.shape == (2, 5, 3) and np.allclose(scores.relevance, 1 / (1 + math.exp(-0.1)))
    assert np.allclose(scores.audio_relevance, 0.75) and np.allclose(scores.visual_relevance, 0.5)


def test_cmbs_loss_terms_by_hand():
    torch.manual_seed(0)
    model = build_model(model_config("sel", "cmbs", **CMBS_SMALL)).eval()
    audio, visual = torch.randn(2, 5, 6), torch.randn(2, 5, 3, 8)
    labels = torch.tensor([[3, 1, 1, 1, 3], [3, 3, 3, 3, 3]])  # the second video has no event
    is_event, logits, out = model(audio, visual)
    mask = (labels != 3).float()
    s_av = (topk_mean(out.audio_cas, 4) + topk_mean(out.visual_cas, 4)) / 2
    expected = (
        F.binary_cross_entropy_with_logits(is_event, mask)
        + F.cross_entropy(logits[:1], torch.tensor([1]))
        + F.binary_cross_entropy(out.gate, mask)
        + F.cross_entropy(s_av[:1], torch.tensor([1]))
    )
    torch.testing.assert_close(model.loss(audio, visual, labels), expected)
    off = build_model(model_config("sel", "cmbs", temporal_suppression=False, event_suppression=False, **CMBS_SMALL))
    off.load_state_dict(model.state_dict())
    off.eval()
    is_event, logits, _ = off(audio, visual)
    expected = F.binary_cross_entropy_with_logits(is_event, mask) + F.cross_entropy(logits[:1], torch.tensor([1]))
    torch.testing.assert_close(off.loss(audio, visual, labels), expected)


def test_weak_cmbs_gates_and_pools_by_hand():
    torch.manual_seed(0)
    model = build_model(model_config("wsel", "cmbs", suppression_gamma=0.5, topk=2, **CMBS_SMALL)).eval()
    assert isinstance(model, WeakCMBS) and model.category.out_features == 4 and model.is_event is None
    audio, visual = torch.randn(1, 5, 6), torch.randn(1, 5, 3, 8)
    set_linear(model.audio_gate, [0.0])
    set_linear(model.visual_gate, [0.0])  # gate 0.25 every second
    set_linear(model.category, [4.0, 0.0, -4.0, 8.0])
    set_linear(model.audio_cas, [0.0, 2.0, 0.0, 0.0])
    set_linear(model.visual_cas, [0.0, 2.0, 0.0, 0.0])
    scores, out = model(audio, visual)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, -1.0, 2.0]).expand(1, 5, 4))
    # video logits: top-2 mean [1 0 -1 2] + 0.5 s^av [0 2 0 0] = [1 1 -1 2]
    torch.testing.assert_close(model.video_logits(scores, out), torch.tensor([[1.0, 1.0, -1.0, 2.0]]))
    assert model.predict(audio, visual).tolist() == [[3] * 5]  # background (last) wins every second
    labels = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    p = torch.softmax(torch.tensor([[1.0, 1.0, -1.0, 2.0]]), -1)
    q = torch.softmax(torch.tensor([[0.0, 2.0, 0.0, 0.0]]), -1)
    expected = F.multilabel_soft_margin_loss(p, labels) + F.multilabel_soft_margin_loss(q, labels)
    torch.testing.assert_close(model.loss(audio, visual, labels), expected)


# --- registry, options, checkpoints --------------------------------------------------------------
def test_registered_for_sel_and_wsel_with_the_papers_defaults():
    assert model_names("sel") == ["dam", "av_att", "psp", "cmbs"]
    assert model_names("wsel") == ["dam", "av_att", "psp", "cmbs"]
    psp = model_config("sel", "psp")
    assert (psp.psp_threshold, psp.avps_weight, psp.propagation, psp.psp_dropout) == (0.099, 100.0, True, 0.1)
    assert model_config("wsel", "psp").psp_threshold == 0.095
    cmbs = model_config("sel", "cmbs")
    assert (cmbs.suppression_alpha, cmbs.suppression_gamma, cmbs.topk, cmbs.relation_heads) == (0.1, 0.3, 4, 4)


@pytest.mark.parametrize(
    "task,name,field,value,message",
    [
        (
            "sel",
            "dam",
            "psp_threshold",
            0.1,
            r"^psp_threshold 0.1: does not apply to sel/dam \(PSP: similarity threshold",
        ),
        ("sel", "av_att", "propagation", False, "propagation False: does not apply to sel/av_att"),
        ("wsel", "psp", "avps_weight", 1.0, "avps_weight 1.0: does not apply to wsel/psp"),
        ("sel", "psp", "temporal_suppression", False, "does not apply to sel/psp"),
        ("sel", "cmbs", "lam", 0.3, "lam 0.3: does not apply to sel/cmbs"),
        ("sel", "psp", "psp_threshold", 1.0, "psp_threshold 1.0: must be < 1.0"),
        ("sel", "cmbs", "relation_heads", 3, "relation_heads 3: must divide the feature width"),
        ("sel", "cmbs", "head_hidden", 32, "head_hidden 32: does not apply to sel/cmbs"),
    ],
)
def test_options_a_model_lacks_or_bad_values_are_refused(task, name, field, value, message):
    with pytest.raises(ConfigError, match=message):
        model_config(task, name, **{field: value})


@pytest.mark.parametrize("task,name", NEW)
def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path, task, name):
    torch.manual_seed(0)
    extra = {"relation_ffn": 16, "relation_layers": 1} if name == "cmbs" else {}
    cfg = model_config(task, name, **SMALL, **extra)
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, cfg, ["a", "b", "c"], None, {"accuracy": 0.5})
    back = load_checkpoint(path, expected_task=("sel", "wsel"))
    assert back.model_config == cfg and type(back.model) is type(model)
    audio, visual = torch.randn(3, 7, 6), torch.randn(3, 7, 4, 8)
    assert torch.equal(back.model.predict(audio, visual), model.predict(audio, visual))
    np.testing.assert_array_equal(
        back.model.score_segments(audio, visual).probs, model.score_segments(audio, visual).probs
    )


# --- through the CLI -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def features(tmp_path_factory):
    out = tmp_path_factory.mktemp("feats")
    write_features(out, FeatureSynthConfig(videos=24, classes=3, seed=1), progress=False)
    return out


@pytest.mark.parametrize(
    "task,name,flags",
    [
        ("sel", "psp", ["--no-propagation"]),
        ("sel", "psp", ["--psp-threshold", "0.05"]),
        ("sel", "cmbs", ["--relation-layers", "1", "--no-event-suppression"]),
        ("wsel", "psp", []),
        ("wsel", "cmbs", ["--relation-layers", "1"]),
    ],
)
def test_avel_train_end_to_end(features, tmp_path, capsys, task, name, flags):
    out = tmp_path / "m.safetensors"
    code = main(
        [
            "train",
            task,
            "--model",
            name,
            "--data",
            str(features),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            *flags,
        ]
    )
    assert code == 0, capsys.readouterr().err
    ckpt = load_checkpoint(out)
    assert (ckpt.model_config.task, ckpt.model_config.name) == (task, name)
    assert ckpt.train_config.epochs == 2 and 0.0 <= ckpt.metrics["test"]["accuracy"] <= 1.0
    if "--no-propagation" in flags:
        assert ckpt.model_config.propagation is False and ckpt.model.psp.propagate is False
    if "--psp-threshold" in flags:
        assert ckpt.model.psp.threshold == 0.05


def test_cli_refuses_a_psp_option_given_to_dam(tmp_path, capsys):
    code = main(
        [
            "train",
            "sel",
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "x.safetensors"),
            "--psp-threshold",
            "0.2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --psp-threshold 0.2: does not apply to sel/dam (PSP: similarity")
    assert err.count("\n") == 1 and not (tmp_path / "x.safetensors").exists()


def test_localize_with_a_psp_checkpoint(tmp_path):
    settings = FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=1,
        frame_size=64,
        segments=10,
        visual_weights_sha256=random_weights_tag(0),
        audio_weights_sha256=random_weights_tag(0),
    )
    video = write_video(tmp_path / "clip.mp4", duration_s=12, fps=2, color=lambda t: (200, 30, 30), audio=tone(440))
    classes = ["alpha", "beta", "gamma"]
    for name in ("psp", "cmbs"):
        torch.manual_seed(0)
        extra = {"relation_layers": 1} if name == "cmbs" else {}
        cfg = model_config("sel", name, num_classes=4, **extra)
        ckpt = save_checkpoint(tmp_path / f"{name}.safetensors", build_model(cfg), cfg, classes, settings, {})
        (result,) = localize([video], ckpt, batch_size=16, progress=False, device="cpu")
        assert result.ok and len(result.segments) == 12
        for s in result.segments:
            assert s.label in classes + ["background"] and 0 <= s.probability <= 1
            if name == "psp":  # PSP predicts background itself: no relevance
                assert s.relevance is None
            else:  # CMBS: DAM's rule on sigma(is-event)
                assert (s.label == "background") == (s.relevance < 0.5)
    code = main(
        [
            "localize",
            str(video),
            "--checkpoint",
            str(tmp_path / "psp.safetensors"),
            "--json",
            str(tmp_path / "out.json"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and (tmp_path / "out.json").exists()
