"""Models: shapes, masks, the DAM formulas on hand-set numbers, the SEL decision rule, the
baselines' formulas, and the registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avel.core.errors import ConfigError
from avel.models.baselines import AVDLN, AudioGuidedAttention, AVAtt
from avel.models.cml import CMLDAM
from avel.models.dam import DAM, fuse, relevance_loss
from avel.models.embeddings import SEQUENCE_EMBEDDINGS, build_embedding
from avel.models.protocols import CMLModel, SELModel, Trainable
from avel.models.registry import MODELS, ModelConfig, build_model, model_config, model_names
from avel.models.sel import SELDAM, combine_predictions, video_category
from avel.pipeline.train.checkpoint import upgrade


def sigma(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


EMBEDDINGS = ["avg", "max", "rnn", "lstm", "gru", "bilstm", "self-att"]
# row 0: non-contiguous, row 1: contiguous, row 2: empty, row 3: full
MASK = torch.tensor(
    [
        [1, 0, 1, 1, 0, 1],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
    ],
    dtype=torch.bool,
)


# --- sequence embeddings --------------------------------------------------------------------
def test_registry_has_every_embedding():
    assert sorted(SEQUENCE_EMBEDDINGS.names()) == sorted(EMBEDDINGS)


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_embedding_shape_and_mask(name):
    torch.manual_seed(0)
    emb = build_embedding(name, dim=8, heads=2, dropout=0.0).eval()
    x = torch.randn(4, 6, 8)
    g = emb(x, MASK)
    assert g.shape == (4, 8)
    assert torch.isfinite(g).all()
    # segments outside the mask do not change the global feature
    x2 = x.clone()
    x2[~MASK] = 100 * torch.randn(int((~MASK).sum()), 8)
    torch.testing.assert_close(emb(x2, MASK), g, rtol=0, atol=1e-6)
    # an empty mask gives zeros
    assert torch.equal(g[2], torch.zeros(8))
    # each row equals the embedding of its masked segments alone (in temporal order)
    for b in (0, 1, 3):
        alone = x[b, MASK[b]].unsqueeze(0)  # (1, e, 8)
        ref = emb(alone, torch.ones(alone.shape[:2], dtype=torch.bool))
        torch.testing.assert_close(g[b], ref[0], rtol=1e-5, atol=1e-5)


def test_parameter_free_poolings_by_hand():
    x = torch.tensor([[[1.0, -2.0], [5.0, 0.0], [3.0, 4.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, False, True]])
    assert build_embedding("avg", dim=2)(x, mask).tolist() == [[2.0, 1.0]]
    assert build_embedding("max", dim=2)(x, mask).tolist() == [[3.0, 4.0]]


def test_self_attention_mixes_segments():
    # unlike an MLP per segment then mean, self-attention makes each output depend on the others
    torch.manual_seed(0)
    emb = build_embedding("self-att", dim=8, heads=2, dropout=0.0).eval()
    x = torch.randn(1, 3, 8)
    every = torch.ones(1, 3, dtype=torch.bool)
    h1 = emb.attend(x, every)[0, 0]
    x2 = x.clone()
    x2[0, 2] += 1.0
    assert not torch.allclose(emb.attend(x2, every)[0, 0], h1)


def test_self_attention_checks_heads():
    with pytest.raises(ValueError):
        build_embedding("self-att", dim=10, heads=4)
    with pytest.raises(ValueError):
        build_embedding("bilstm", dim=7)
    with pytest.raises(KeyError):
        build_embedding("transformer-xl", dim=8)


# --- DAM ----------------------------------------------------------------------------------------
# identity projections (widths equal, no hidden layer) and average pooling: every number
# below follows from the paper's eq. 3-7 by hand.
AUDIO = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]]])  # (1, 3, 2)
VISUAL = torch.tensor([[[0.0, 1.0], [4.0, 0.0], [-1.0, 2.0]]])  # (1, 3, 2)
EVENTS = torch.tensor([[True, True, False]])
# g_A = mean(a0, a1) = (1, 0.5);  g_V = mean(v0, v1) = (2, 0.5)


def test_dam_cross_matching_by_hand():
    dam = DAM(audio_dim=2, visual_dim=2, dim=2, embedding="avg", matching="cross", scaled=False)  # the literal eq. 5-6
    out = dam(AUDIO, VISUAL, EVENTS)
    # p^A_t = sigma(g_V . a_t): 4, 0.5, 1.5;  p^V_t = sigma(g_A . v_t): 0.5, 4, 0
    p_a = [sigma(4), sigma(0.5), sigma(1.5)]
    p_v = [sigma(0.5), sigma(4), sigma(0)]
    torch.testing.assert_close(out.audio_relevance[0], torch.tensor(p_a))
    torch.testing.assert_close(out.visual_relevance[0], torch.tensor(p_v))
    torch.testing.assert_close(out.relevance[0], torch.tensor([(a + v) / 2 for a, v in zip(p_a, p_v)]))
    # BCE against the event mask
    p = [(a + v) / 2 for a, v in zip(p_a, p_v)]
    bce = -(math.log(p[0]) + math.log(p[1]) + math.log(1 - p[2])) / 3
    assert relevance_loss(out.relevance, EVENTS).item() == pytest.approx(bce, rel=1e-5)


def test_dam_scaled_matching_by_hand():
    dam = DAM(audio_dim=2, visual_dim=2, dim=2, embedding="avg", matching="cross")  # default: / sqrt(d)
    out = dam(AUDIO, VISUAL, EVENTS)
    r = math.sqrt(2)
    torch.testing.assert_close(out.audio_relevance[0], torch.tensor([sigma(4 / r), sigma(0.5 / r), sigma(1.5 / r)]))
    torch.testing.assert_close(out.visual_relevance[0], torch.tensor([sigma(0.5 / r), sigma(4 / r), sigma(0)]))


def test_dam_self_matching_by_hand():
    dam = DAM(audio_dim=2, visual_dim=2, dim=2, embedding="avg", matching="self", scaled=False)
    out = dam(AUDIO, VISUAL, EVENTS)
    # p^A_t = sigma(g_A . a_t): 2, 0.5, 0.5;  p^V_t = sigma(g_V . v_t): 0.5, 8, -1
    torch.testing.assert_close(out.audio_relevance[0], torch.tensor([sigma(2), sigma(0.5), sigma(0.5)]))
    torch.testing.assert_close(out.visual_relevance[0], torch.tensor([sigma(0.5), sigma(8), sigma(-1)]))


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_dam_shapes_with_every_embedding(name):
    torch.manual_seed(0)
    dam = DAM(audio_dim=128, visual_dim=512, dim=16, proj_hidden=32, embedding=name, heads=2).eval()
    audio, visual = torch.randn(3, 10, 128), torch.randn(3, 10, 512)
    mask = torch.rand(3, 10) > 0.4
    out = dam(audio, visual, mask)
    assert out.relevance.shape == out.audio_relevance.shape == out.visual_relevance.shape == (3, 10)
    assert out.audio_global.shape == out.visual_global.shape == (3, 16)
    assert ((out.relevance > 0) & (out.relevance < 1)).all()
    torch.testing.assert_close(out.relevance, (out.audio_relevance + out.visual_relevance) / 2)


def test_dam_projections():
    assert isinstance(DAM(audio_dim=8, visual_dim=8, dim=8).audio_proj, nn.Identity)
    assert isinstance(DAM(audio_dim=8, visual_dim=16, dim=8).visual_proj, nn.Linear)
    mlp = DAM(audio_dim=128, visual_dim=512, dim=128, proj_hidden=128).visual_proj
    assert [type(m) for m in mlp] == [nn.Linear, nn.LeakyReLU, nn.Linear]
    assert mlp[0].in_features == 512 and mlp[0].out_features == 128 and mlp[1].negative_slope == 0.3
    with pytest.raises(ValueError):
        DAM(audio_dim=8, visual_dim=8, dim=8, matching="none")


# --- CML ----------------------------------------------------------------------------------------
def test_cml_dam_a2v_by_hand():
    model = CMLDAM(audio_dim=2, visual_dim=2, dim=2, proj_hidden=None, embedding="avg", scaled_matching=False).eval()
    audio = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [1.0, 0.0], [9.0, 9.0]]])  # query = segments 1, 2
    visual = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [2.0, 0.0]]])
    query = torch.tensor([[False, True, True, False]])
    # g_A = (1, 0) from the query alone; scores sigma(g_A . v_t) = sigma(0), sigma(0), sigma(3), sigma(2)
    scores = model.query_scores(audio, visual, query, "a2v")
    torch.testing.assert_close(scores[0], torch.tensor([0.5, 0.5, sigma(3), sigma(2)]))
    # windows of 2: 1.0, 0.5 + sigma(3), sigma(3) + sigma(2) -> start 2
    assert model.localize(audio, visual, query, "a2v").tolist() == [2]


@pytest.mark.parametrize("model", ["dam-cross", "dam-self", "avdln"])
def test_cml_localize_uses_only_the_query_segments(model):
    torch.manual_seed(0)
    if model == "avdln":
        m = AVDLN().eval()
    else:
        m = CMLDAM(dim=16, proj_hidden=32, heads=2, matching=model.split("-")[1]).eval()
    audio, visual = torch.randn(4, 10, 128), torch.randn(4, 10, 512)
    t = torch.arange(10)
    starts, lengths = torch.tensor([0, 2, 5, 3]), torch.tensor([3, 2, 5, 6])
    query = (t >= starts[:, None]) & (t < (starts + lengths)[:, None])
    a2v = m.localize(audio, visual, query, "a2v")
    v2a = m.localize(audio, visual, query, "v2a")
    assert a2v.shape == v2a.shape == (4,)
    assert ((a2v >= 0) & (a2v <= 10 - lengths)).all() and ((v2a >= 0) & (v2a <= 10 - lengths)).all()
    audio2, visual2 = audio.clone(), visual.clone()
    audio2[~query] = 50 * torch.randn(int((~query).sum()), 128)  # the query modality outside the query
    visual2[~query] = 50 * torch.randn(int((~query).sum()), 512)
    assert torch.equal(m.localize(audio2, visual, query, "a2v"), a2v)
    assert torch.equal(m.localize(audio, visual2, query, "v2a"), v2a)
    with pytest.raises(ValueError):
        m.localize(audio, visual, query, "sideways")


def test_avdln_contrastive_loss_by_hand():
    m = AVDLN(audio_dim=2, visual_dim=2, hidden=2, dim=2, margin=2.0)
    with torch.no_grad():  # identity branches (inputs are positive, LeakyReLU passes them)
        for branch in (m.audio_branch, m.visual_branch):
            for i in (0, 2):
                branch[i].weight.copy_(torch.eye(2))
                branch[i].bias.zero_()
    audio = torch.tensor([[[1.0, 1.0], [3.0, 1.0]]])
    visual = torch.tensor([[[1.0, 2.0], [3.0, 1.5]]])  # distances 1 and 0.5
    # y = (1, 0): (1^2 + (2 - 0.5)^2) / 2 = 1.625;  y = (0, 1): ((2 - 1)^2 + 0.5^2) / 2 = 0.625
    assert m.loss(audio, visual, torch.tensor([[True, False]])).item() == pytest.approx(1.625)
    assert m.loss(audio, visual, torch.tensor([[False, True]])).item() == pytest.approx(0.625)
    # A2V: query = audio segment 1 (3, 1) against visual (1, 2), (3, 1.5) -> start 1
    assert m.localize(audio, visual, torch.tensor([[False, True]]), "a2v").tolist() == [1]


# --- SEL ----------------------------------------------------------------------------------------
def test_background_decision_rule():
    category = torch.tensor([3, 1])
    relevance = torch.tensor([[0.49, 0.5, 0.51, 0.0], [1.0, 0.4999, 0.5, 0.2]])
    pred = combine_predictions(category, relevance, background=28)
    assert pred.tolist() == [[28, 3, 3, 28], [1, 28, 1, 28]]
    assert combine_predictions(category, None, background=28, T=3).tolist() == [[3, 3, 3], [1, 1, 1]]


def test_video_category():
    bg = 4
    labels = torch.tensor([[bg, 2, 2, bg], [bg, bg, bg, bg], [1, 1, 3, bg], [0, 0, 0, 0]])
    assert video_category(labels, bg).tolist() == [2, -1, 1, 0]


@pytest.mark.parametrize("matching", ["cross", "self", "none"])
def test_sel_dam_shapes_and_loss(matching):
    torch.manual_seed(0)
    model = SELDAM(num_classes=29, matching=matching, heads=4).eval()
    audio, visual = torch.randn(2, 10, 128), torch.randn(2, 10, 49, 512)  # real AVE shapes
    labels = torch.full((2, 10), 28)
    labels[0, 3:7] = 5
    labels[1] = 11
    out = model(audio, visual)
    assert out.category_logits.shape == (2, 28)
    pred = model.predict(audio, visual)
    assert pred.shape == (2, 10) and pred.dtype == torch.long
    loss = model.loss(audio, visual, labels)
    ce = torch.nn.functional.cross_entropy(out.category_logits, torch.tensor([5, 11]))
    if matching == "none":
        assert out.relevance is None
        assert (pred != 28).all()  # no matching: nothing can be called background
        torch.testing.assert_close(loss, ce)
    else:
        assert out.relevance.shape == (2, 10)
        expected = combine_predictions(out.category_logits.argmax(-1), out.relevance, 28)
        assert torch.equal(pred, expected)
        bce = torch.nn.functional.binary_cross_entropy(out.relevance, (labels != 28).float())
        torch.testing.assert_close(loss, 0.5 * ce + 0.5 * bce)


def test_sel_dam_lambda_one_is_without_matching():
    model = SELDAM(num_classes=5, lam=1.0, visual_dim=16, audio_dim=8, lstm_hidden=8, heads=2)
    assert not model.uses_relevance
    assert model(torch.randn(1, 4, 8), torch.randn(1, 4, 9, 16)).relevance is None


def test_sel_dam_all_background_batch_has_a_finite_loss():
    model = SELDAM(num_classes=5, visual_dim=16, audio_dim=8, lstm_hidden=8, heads=2)
    loss = model.loss(torch.randn(2, 4, 8), torch.randn(2, 4, 9, 16), torch.full((2, 4), 4))
    assert torch.isfinite(loss)
    loss.backward()


def test_audio_guided_attention():
    torch.manual_seed(0)
    att = AudioGuidedAttention()
    audio, visual = torch.randn(2, 3, 128), torch.randn(2, 3, 49, 512)
    out, alpha = att(audio, visual)
    assert out.shape == (2, 3, 512) and alpha.shape == (2, 3, 49)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3))
    # a weighted sum of the raw cells
    torch.testing.assert_close(out, torch.einsum("btn,btnd->btd", alpha, visual))
    # the weights depend on the audio
    _, alpha2 = att(audio + 1.0, visual)
    assert not torch.allclose(alpha, alpha2)
    # identical cells -> that cell, whatever the weights
    same = torch.randn(2, 3, 1, 512).expand(2, 3, 49, 512)
    torch.testing.assert_close(att(audio, same)[0], same[:, :, 0])


# --- registry -----------------------------------------------------------------------------------
def test_model_registry():
    assert model_names("sel") == ["dam", "av_att", "psp", "cmbs"]
    assert model_names("cml") == ["dam", "avdln"]
    with pytest.raises(ConfigError, match="name 'transformer': choose one of: dam, av_att, psp, cmbs"):
        model_config(task="sel", name="transformer")
    with pytest.raises(ValueError):
        model_config(task="cml", matching="none")
    with pytest.raises(ValueError):
        model_config(embedding="conv")
    with pytest.raises(ValueError):
        model_config(lam=1.5)
    cfg = model_config(task="cml", name="dam", embedding="gru", dim=64)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("key", MODELS.names())
def test_every_registered_model_on_ave_shapes(key):
    task, name = key.split("/")
    assert len(MODELS.names()) == 10  # sel, wsel: dam, av_att, psp, cmbs; cml: dam, avdln
    torch.manual_seed(0)
    model = build_model(model_config(task=task, name=name)).eval()
    assert isinstance(model, SELModel if task in ("sel", "wsel") else CMLModel) and isinstance(model, Trainable)
    assert model.task == ("sel" if task == "wsel" else task)  # a weak model is an SEL model at test time
    audio = torch.randn(2, 10, 128)
    if task in ("sel", "wsel"):
        visual = torch.randn(2, 10, 49, 512)
        labels = torch.randint(0, 29, (2, 10))
        if task == "wsel":  # trained on video labels [B, C]
            labels = torch.nn.functional.one_hot(labels[:, 0], 29).float()
        assert model.predict(audio, visual).shape == (2, 10)
        assert model.predict(audio, visual).max() <= 28
        assert model.score_segments(audio, visual).probs.shape[:2] == (2, 10)
        assert torch.isfinite(model.loss(audio, visual, labels))
    else:
        visual = torch.randn(2, 10, 512)
        mask = torch.zeros(2, 10, dtype=torch.bool)
        mask[0, 2:5] = True
        mask[1, 6:8] = True
        assert torch.isfinite(model.loss(audio, visual, mask))
        assert model.localize(audio, visual, mask, "a2v").shape == (2,)


def test_a_field_the_model_lacks_is_refused_naming_the_model():
    with pytest.raises(ConfigError, match=r"^margin 3.0: does not apply to sel/dam \(AVDLN: contrastive margin\)$"):
        model_config("sel", "dam", margin=3.0)
    with pytest.raises(ConfigError, match="lam 0.3: does not apply to cml/avdln"):
        model_config("cml", "avdln", lam=0.3)
    with pytest.raises(ConfigError, match="weak_relevance 'fused': does not apply to sel/dam"):
        model_config("sel", "dam", weak_relevance="fused")
    with pytest.raises(ConfigError, match="bogus 1: not a model config field"):
        model_config("sel", "av_att", bogus=1)
    with pytest.raises(ConfigError, match="warmup 0.3: needs per-second labels"):
        model_config("wsel", "dam", warmup=0.3)
    with pytest.raises(TypeError, match="base class"):
        ModelConfig()
    assert model_config("cml", "avdln", margin=3.0).margin == 3.0
    # every config carries its task and name, and stores them
    for key in MODELS.names():
        cfg = model_config(*key.split("/"))
        assert f"{cfg.task}/{cfg.name}" == key and cfg.to_dict()["task"] == cfg.task
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# --- fidelity to Tian et al.'s public code (issue #10, item 10) -------------------------------------
def xavier_bound(layer: nn.Linear) -> float:
    return math.sqrt(6 / (layer.in_features + layer.out_features))


def test_audio_guided_attention_follows_the_reference_by_hand():
    # Tian et al.'s att_Net: affine_video / affine_audio (with bias) + ReLU; affine_v, affine_g
    # (-> 49) and affine_h (-> 1) WITHOUT bias; xavier-uniform weights
    torch.manual_seed(0)
    att = AudioGuidedAttention(audio_dim=6, visual_dim=8, att_hidden=5)
    for layer in (att.visual_att, att.audio_att, att.score):
        assert layer.bias is None
    for layer in (att.visual_embed, att.audio_embed):
        assert layer.bias is not None
    audio, visual = torch.randn(2, 3, 6), torch.randn(2, 3, 4, 8)
    with torch.no_grad():
        for layer in (att.visual_embed, att.audio_embed):
            layer.bias.uniform_(-1, 1)  # non-zero biases where the reference has them
    v_h = torch.relu(visual @ att.visual_embed.weight.T + att.visual_embed.bias)
    a_h = torch.relu(audio @ att.audio_embed.weight.T + att.audio_embed.bias)
    z = torch.tanh(v_h @ att.visual_att.weight.T + (a_h @ att.audio_att.weight.T).unsqueeze(2))
    alpha = torch.softmax((z @ att.score.weight.T).squeeze(-1), dim=-1)
    out, weights = att(audio, visual)
    torch.testing.assert_close(weights, alpha)
    torch.testing.assert_close(out, torch.einsum("btn,btnd->btd", alpha, visual))


def test_reference_initialisation():
    # xavier-uniform weights (Tian et al. call init.xavier_uniform on every affine layer and the
    # head): |w| <= sqrt(6 / (fan_in + fan_out)), which exceeds torch's default bound
    # 1/sqrt(fan_in) for every one of these shapes, and a default-initialised layer never
    # goes past its bound
    torch.manual_seed(0)
    model = AVAtt(num_classes=29)
    att = model.encoder.attention
    linears = [att.visual_embed, att.audio_embed, att.visual_att, att.audio_att, att.score]
    linears += [m for m in model.head if isinstance(m, nn.Linear)]
    for layer in linears:
        w = layer.weight.detach().abs().max().item()
        assert 1 / math.sqrt(layer.in_features) < w <= xavier_bound(layer), (layer, w, xavier_bound(layer))


def test_av_att_head_has_the_reference_relu_on_the_concatenated_lstm_outputs():
    # reference: out = L2(ReLU(L1(ReLU(cat(lstm_audio, lstm_video))))), per segment
    torch.manual_seed(0)
    model = AVAtt(num_classes=5, audio_dim=6, visual_dim=8, att_hidden=5, lstm_hidden=4, head_hidden=3).eval()
    audio, visual = torch.randn(2, 3, 6), torch.randn(2, 3, 4, 8)
    f_a, f_v = model.encoder(audio, visual)
    cat = torch.cat([f_a, f_v], dim=-1)
    assert (cat < 0).any()  # Bi-LSTM outputs are tanh-bounded: the ReLU changes them
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(16, 3), (3, 5)]
    expected = linears[1](torch.relu(linears[0](torch.relu(cat))))
    torch.testing.assert_close(model(audio, visual), expected)


def test_avdln_and_cml_dam_low_level_mlp_follow_the_reference_keras_layers():
    # Tian et al.'s cmm_train.py: Dense(128) -> LeakyReLU(0.3) -> Dense(64), Keras defaults
    # (glorot-uniform kernels, zero biases); CML DAM keeps that low-level structure
    torch.manual_seed(0)
    for branch in (AVDLN().visual_branch, AVDLN().audio_branch, CMLDAM().dam.visual_proj):
        linears = [m for m in branch if isinstance(m, nn.Linear)]
        for layer in linears:
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
            w = layer.weight.detach().abs().max().item()
            assert 1 / math.sqrt(layer.in_features) < w <= xavier_bound(layer)


# --- SEL DAM regularisation (issue #11) ----------------------------------------------------------
def test_sel_dam_relevance_smoothing_by_hand():
    torch.manual_seed(0)
    kw = {"num_classes": 5, "visual_dim": 16, "audio_dim": 8, "lstm_hidden": 8, "heads": 2, "lam": 0.3}
    model = SELDAM(relevance_smoothing=0.2, **kw).eval()
    audio, visual = torch.randn(2, 4, 8), torch.randn(2, 4, 9, 16)
    labels = torch.tensor([[4, 1, 1, 4], [2, 2, 2, 2]])
    out = model(audio, visual)
    ce = torch.nn.functional.cross_entropy(out.category_logits, torch.tensor([1, 2]))
    target = torch.tensor([[0.2, 0.8, 0.8, 0.2], [0.8, 0.8, 0.8, 0.8]])  # 1 -> 0.8, 0 -> 0.2
    p = out.relevance
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(model.loss(audio, visual, labels), 0.3 * ce + 0.7 * bce)
    # no smoothing: the plain BCE against the 0/1 mask (the paper's eq. 8)
    plain = SELDAM(**kw).eval()
    plain.load_state_dict(model.state_dict())
    mask = (labels != 4).float()
    bce0 = -(mask * p.log() + (1 - mask) * (1 - p).log()).mean()
    torch.testing.assert_close(plain.loss(audio, visual, labels), 0.3 * ce + 0.7 * bce0)


def test_geometric_fusion_is_the_square_root_of_the_product_and_an_and():
    torch.manual_seed(0)
    kw = {"num_classes": 5, "visual_dim": 16, "audio_dim": 8, "lstm_hidden": 8, "heads": 2}
    mean, geo = SELDAM(**kw).eval(), SELDAM(relevance_fusion="geometric", **kw).eval()
    geo.load_state_dict(mean.state_dict())  # no parameter of its own
    audio, visual = torch.randn(2, 4, 8), torch.randn(2, 4, 9, 16)
    a, b = mean(audio, visual), geo(audio, visual)
    torch.testing.assert_close(a.relevance, (a.dam.audio_relevance + a.dam.visual_relevance) / 2)  # eq. 7
    torch.testing.assert_close(b.relevance, (a.dam.audio_relevance * a.dam.visual_relevance).sqrt())
    torch.testing.assert_close(b.category_logits, a.category_logits)
    # one modality high, the other low: the mean calls it relevant, the geometric mean does not
    p_hi, p_lo = torch.tensor([[0.95]]), torch.tensor([[0.1]])
    assert fuse(p_hi, p_lo, "mean").item() > 0.5 > fuse(p_hi, p_lo, "geometric").item()
    assert fuse(torch.tensor([[0.0]]), p_hi, "geometric").item() < 1e-5  # finite at 0
    labels = torch.tensor([[4, 1, 1, 4], [2, 2, 2, 2]])
    loss = geo.loss(audio, visual, labels)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in geo.parameters() if p.grad is not None)
    with pytest.raises(ConfigError, match="relevance_fusion"):
        model_config(relevance_fusion="max")


def test_model_dependent_defaults_resolve_when_the_config_is_made():
    """SEL DAM's recipe (geometric fusion, input dropout 0.2, warm-up 0.6); AV_att and wsel DAM
    keep the published mean / no input dropout; explicit values win; the config stores the
    values in force, and a stored config from before these fields loads as it was trained."""

    def fields(cfg):
        return getattr(cfg, "relevance_fusion", None), cfg.input_dropout  # AV_att has no relevance

    assert fields(model_config()) == ("geometric", 0.2) and model_config().warmup == 0.6
    assert fields(model_config(name="av_att")) == (None, 0.0)
    assert fields(model_config(task="wsel")) == ("mean", 0.0) and model_config(task="wsel").warmup == 0.0
    assert fields(model_config(task="wsel", name="av_att")) == (None, 0.0)
    assert fields(model_config(relevance_fusion="mean", input_dropout=0.0)) == ("mean", 0.0)
    assert fields(model_config(name="av_att", input_dropout=0.3)) == (None, 0.3)
    stored = model_config().to_dict()
    assert (stored["relevance_fusion"], stored["input_dropout"]) == ("geometric", 0.2)
    assert ModelConfig.from_dict(stored) == model_config()
    legacy = {k: v for k, v in stored.items() if k not in ("relevance_fusion", "input_dropout")}
    old = upgrade({"format": "avel-checkpoint", "version": 1, "model_config": legacy})["model_config"]
    assert fields(ModelConfig.from_dict(old)) == ("mean", 0.0)
    built = build_model(model_config(num_classes=5, visual_dim=16, audio_dim=8, lstm_hidden=8, heads=2))
    assert built.dam.fusion == "geometric" and built.encoder.input_dropout.p == 0.2
    assert build_model(model_config(name="av_att", num_classes=5)).encoder.input_dropout.p == 0.0
    with pytest.raises(ConfigError, match="input_dropout"):
        model_config(input_dropout=1.0)


def test_sel_dam_feature_dropout_only_in_training():
    torch.manual_seed(0)
    kw = {"num_classes": 5, "visual_dim": 16, "audio_dim": 8, "lstm_hidden": 8, "heads": 2, "dropout": 0.0}
    model = SELDAM(feature_dropout=0.5, **kw)
    plain = SELDAM(**kw)
    plain.load_state_dict(model.state_dict())
    audio, visual = torch.randn(2, 4, 8), torch.randn(2, 4, 9, 16)
    model.eval(), plain.eval()
    torch.testing.assert_close(model(audio, visual).category_logits, plain(audio, visual).category_logits)
    model.train(), plain.train()
    assert not torch.allclose(model(audio, visual).relevance, plain(audio, visual).relevance)
    with pytest.raises(ConfigError):
        model_config(feature_dropout=1.0)
    with pytest.raises(ConfigError):
        model_config(relevance_smoothing=0.5)


def test_sel_dam_warmup_trains_the_encoder_as_av_att_then_the_dam_loss():
    torch.manual_seed(0)
    kw = {"num_classes": 5, "visual_dim": 16, "audio_dim": 8, "lstm_hidden": 8, "heads": 2, "dropout": 0.0}
    model = SELDAM(warmup=0.5, **kw).eval()  # of 4 epochs: epochs 1-2
    audio, visual = torch.randn(2, 4, 8), torch.randn(2, 4, 9, 16)
    labels = torch.tensor([[4, 1, 1, 4], [2, 2, 2, 2]])
    f_a, f_v = model.encoder(audio, visual)
    # AV_att's loss by hand: its head on concat(f^A, f^V), CE over every segment, background included
    seg_logits = model.segment_head(torch.cat([f_a, f_v], -1))  # (2, 4, 5)
    seg_ce = -torch.log_softmax(seg_logits, -1).gather(-1, labels[..., None]).mean()
    for epoch in (1, 2):
        model.start_epoch(epoch, 4)
        loss = model.loss(audio, visual, labels)
        torch.testing.assert_close(loss, seg_ce)
    model.zero_grad()
    model.start_epoch(1, 4)
    model.loss(audio, visual, labels).backward()
    assert model.classifier[1].weight.grad is None  # the DAM branches do not train during the warm-up
    assert model.encoder.audio_lstm.weight_ih_l0.grad.abs().sum() > 0
    model.start_epoch(3, 4)  # after it: eq. 8 exactly as without warm-up
    plain = SELDAM(**kw).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("segment_head")})
    torch.testing.assert_close(model.loss(audio, visual, labels), plain.loss(audio, visual, labels))
    # segment_loss adds AV_att's CE with its weight
    both = SELDAM(warmup=0.5, segment_loss=0.5, **kw).eval()
    both.load_state_dict(model.state_dict())
    both.start_epoch(3, 4)
    torch.testing.assert_close(both.loss(audio, visual, labels), plain.loss(audio, visual, labels) + 0.5 * seg_ce)
    assert SELDAM(**kw).segment_head is None  # the paper's model has no extra parameters
    with pytest.raises(ConfigError):
        model_config(warmup=1.0)
    with pytest.raises(ConfigError):
        model_config(segment_loss=-0.1)
