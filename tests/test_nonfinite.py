"""NaN and infinity never pass silently (issue #27, items 4-5): a checkpoint with a non-finite
weight is refused when it loads, a non-finite training loss stops training with one line
naming the epoch and the batch, every JSON avel writes is strict JSON (no NaN), localize gives
no events for a model whose scores are NaN, an all-background batch has a finite weak loss,
weak validation refuses a split with no event, and the sizes of the train options are
bounded (one line each, never the CLI's catch-all)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from avel.cli import main
from avel.core import jsonio
from avel.core.config import FeatureSettings
from avel.core.errors import CheckpointError, ConfigError, DataError
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.pipeline.data.ave import write_ave_layout
from avel.pipeline.data.dataset import video_labels_from_classes
from avel.pipeline.data.synth import FeatureSynthConfig, annotation_rows, synth_features, video_contents
from avel.pipeline.train import checkpoint as checkpoint_module
from avel.pipeline.train import tasks as tasks_module
from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from avel.pipeline.train.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = ["--lstm-hidden", "8", "--att-hidden", "4", "--head-hidden", "8", "--heads", "2"]


def strict_json(text: str):
    """Parse as strict JSON: NaN, Infinity and -Infinity are not JSON (RFC 8259)."""

    def refuse(constant):
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "unexpected" not in err, err
    return err


def synth(videos: int = 12, classes: int = 2):
    cfg = FeatureSynthConfig(videos=videos, classes=classes, seed=3)
    data = synth_features(cfg)
    data.video_labels = video_labels_from_classes([c.plan.class_index for c in video_contents(cfg)], classes)
    return data


@pytest.fixture(scope="module")
def ave(tmp_path_factory):
    """A tiny AVE-layout folder (12 videos, 2 classes)."""
    data = synth()
    out = tmp_path_factory.mktemp("ave") / "ave"
    write_ave_layout(out, data, annotations=annotation_rows(data))
    return out


def poke(path, name: str, value: float) -> None:
    """Rewrite the checkpoint `path` with `value` in the first element of tensor `name`
    (the metadata kept as written)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(path), metadata=meta)


# -----------------------------------------------------------------------------------------
# 1. a non-finite weight is refused when the checkpoint loads
@pytest.mark.parametrize("value,kind", [(math.nan, "NaN"), (math.inf, "an infinity"), (-math.inf, "an infinity")])
def test_checkpoint_with_a_non_finite_weight_is_refused_naming_file_and_tensor(tmp_path, value, kind):
    cfg = model_config("sel", "av_att", num_classes=3, att_hidden=4, lstm_hidden=8, head_hidden=8)
    path = save_checkpoint(tmp_path / "sel.safetensors", build_model(cfg), cfg, ["a", "b"], None, {})
    assert load_checkpoint(path).model is not None  # finite: loads
    name = sorted(load_file(str(path)))[-1]
    poke(path, name, value)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: tensor {name} holds {kind} (a model with such weights scores nothing)"


def test_cli_refuses_a_nan_checkpoint_in_one_line(tmp_path, ave, capsys):
    cfg = model_config("sel", "av_att", num_classes=3, att_hidden=4, lstm_hidden=8, head_hidden=8)
    path = save_checkpoint(tmp_path / "nan.safetensors", build_model(cfg), cfg, ["class0", "class1"], None, {})
    poke(
        path,
        "classifier.0.weight" if "classifier.0.weight" in load_file(str(path)) else sorted(load_file(str(path)))[0],
        math.nan,
    )
    err = one_line_error(capsys, ["evaluate", "sel", "--data", str(ave), "--checkpoint", str(path), "--device", "cpu"])
    assert str(path) in err and "holds NaN" in err
    err = one_line_error(capsys, ["localize", str(tmp_path / "clip.mp4"), "--checkpoint", str(path), "--device", "cpu"])
    assert str(path) in err and "holds NaN" in err


# -----------------------------------------------------------------------------------------
# 2. a non-finite loss stops training: one line naming the epoch and the batch
def test_nan_loss_stops_training_naming_epoch_and_batch(tmp_path, ave, capsys, monkeypatch):
    calls = []
    loss = tasks_module.FeatureTask.loss

    def nan_at_epoch_3_batch_2(self, model, feats, idx, device):
        calls.append(model.training)
        value, n = loss(self, model, feats, idx, device)
        return (value * math.nan if len(calls) == 2 * batches + 2 else value), n

    n_train = len(synth().split("train"))
    batches = math.ceil(n_train / 4)
    monkeypatch.setattr(tasks_module.FeatureTask, "loss", nan_at_epoch_3_batch_2)
    out = tmp_path / "x.safetensors"
    err = one_line_error(
        capsys,
        [
            "train",
            "sel",
            "--data",
            str(ave),
            "--out",
            str(out),
            "--model",
            "av_att",
            "--epochs",
            "5",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            *SMALL[:6],
        ],
    )
    assert err == "error: loss is nan at epoch 3, batch 2 (try a lower --lr)\n"
    assert len(calls) == 2 * batches + 2 and not out.exists()


def test_an_infinite_loss_stops_the_real_loop(tmp_path, ave, capsys):
    """No monkeypatch: a segment-loss weight of 1e300 makes the float32 loss infinite."""
    out = tmp_path / "x.safetensors"
    err = one_line_error(
        capsys,
        [
            "train",
            "sel",
            "--data",
            str(ave),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--segment-loss",
            "1e300",
            "--device",
            "cpu",
            *SMALL,
        ],
    )
    assert err.startswith("error: loss is inf at epoch ") and ", batch " in err and not out.exists()


# -----------------------------------------------------------------------------------------
# 3. JSON never holds NaN
def test_jsonio_writes_null_or_refuses_and_never_nan():
    doc = {"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": (2, "x"), "e": None}
    assert jsonio.dumps(doc) == '{"a": null, "b": [1.5, null, {"c": null}], "d": [2, "x"], "e": null}'
    assert jsonio.dumps({"x": 0.1}) == json.dumps({"x": 0.1})  # finite values: as json.dumps writes them
    with pytest.raises(ValueError, match=r"^\$\.b\[2\]\.c: -inf is not a JSON number$"):
        jsonio.dumps({"a": 0.5, "b": [1.5, 2.0, {"c": -math.inf}]}, nonfinite="refuse")
    with pytest.raises(ValueError):
        jsonio.dumps(doc, nonfinite="keep")


def test_checkpoint_metadata_with_a_nan_metric_is_strict_json(tmp_path):
    cfg = model_config("sel", "av_att", num_classes=3, att_hidden=4, lstm_hidden=8, head_hidden=8)
    path = save_checkpoint(
        tmp_path / "m.safetensors", build_model(cfg), cfg, ["a", "b"], None, {"val": {"accuracy": math.nan}}
    )
    with safe_open(str(path), framework="pt") as f:
        meta = strict_json(f.metadata()["avel"])
    assert meta["metrics"] == {"val": {"accuracy": None}}
    assert load_checkpoint(path).metrics == {"val": {"accuracy": None}}


def test_localize_with_nan_scores_gives_an_error_not_events(tmp_path, capsys, monkeypatch):
    """A checkpoint whose NaN weights pass the load check (bypassed here): every second would
    otherwise be an event (NaN >= the relevance threshold is false, the argmax of NaN is 0)."""
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
    cfg = model_config("sel", "av_att", num_classes=3)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "nan.safetensors", build_model(cfg), cfg, ["a", "b"], settings, {})
    poke(path, sorted(load_file(str(path)))[0], math.nan)
    monkeypatch.setattr(checkpoint_module, "nonfinite_tensor", lambda tensors: "")
    (result,) = localize([video], path, batch_size=16, progress=False, device="cpu")
    assert result.error_kind == "non-finite" and not result.events and not result.segments
    assert result.error.startswith(f"{video}: the model's class scores are NaN or infinite (first at second 0)")
    capsys.readouterr()
    out = tmp_path / "out.json"
    assert (
        main(
            [
                "localize",
                str(video),
                "--checkpoint",
                str(path),
                "--device",
                "cpu",
                "--json",
                str(out),
                "--html",
                str(tmp_path / "r.html"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite" in err and "unexpected" not in err
    (doc,) = (
        strict_json(out.read_text()) if out.read_text().lstrip().startswith("[") else [strict_json(out.read_text())]
    )
    assert doc["error_kind"] == "non-finite" and not doc.get("events")


# -----------------------------------------------------------------------------------------
# 4. weak SEL: an all-background batch, an all-background validation split
@pytest.mark.parametrize("relevance", ["agreement", "fused"])
def test_weak_dam_loss_of_an_all_background_batch_is_finite(relevance):
    cfg = model_config(
        "wsel",
        "dam",
        num_classes=4,
        audio_dim=32,
        visual_dim=48,
        att_hidden=4,
        lstm_hidden=8,
        head_hidden=8,
        heads=2,
        weak_relevance=relevance,
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()  # no dropout: the loss is a function of the inputs
    audio, visual = torch.randn(3, 10, 32), torch.randn(3, 10, 49, 48)
    labels = torch.zeros(3, 4)
    labels[:, -1] = 1  # every video background
    loss = model.loss(audio, visual, labels)
    # by hand: no event, so the category CE and the instance CEs are empty (0); the relevance
    # targets are all 0: (1 - lam) * BCE(p_t, 0)
    expected = (1 - cfg.lam) * F.binary_cross_entropy(model(audio, visual).relevance, torch.zeros(3, 10))
    assert torch.isfinite(loss) and torch.allclose(loss, expected, rtol=1e-6, atol=0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_wsel_refuses_a_validation_split_of_background_videos_only():
    data = synth(videos=20)
    val = data.split("val")
    data.video_labels[val] = 0
    data.video_labels[val, -1] = 1  # every validation video: background only
    cfg = TrainConfig(
        model_config("wsel", "dam", att_hidden=4, lstm_hidden=8, head_hidden=8, heads=2),
        epochs=1,
        device="cpu",
        progress=False,
    )
    with pytest.raises(DataError) as e:
        train(data, cfg)
    assert str(e.value).startswith("the data: every video of the 'val' split is background (no event)")


# -----------------------------------------------------------------------------------------
# 5. the sizes of the train options are bounded where they are validated
@pytest.mark.parametrize(
    "field,value,bound",
    [
        ("lstm_hidden", 100000, "must be <= 8192"),
        ("att_hidden", 100000, "must be <= 8192"),
        ("head_hidden", 10**20, "must be <= 8192"),
        ("ffn_mult", 100000, "must be <= 64"),
        ("heads", 1000, "must be <= 256"),
    ],
)
def test_model_sizes_are_bounded(field, value, bound):
    with pytest.raises(ConfigError) as e:
        model_config("sel", "dam", **{field: value})
    assert (e.value.field, e.value.problem) == (field, bound)


def test_ffn_width_is_bounded_with_the_width():
    model_config("sel", "dam", lstm_hidden=8192, ffn_mult=4)  # 4 x 16384 = 65536: allowed
    with pytest.raises(ConfigError, match="x the self-attention width 16384 must be <= 65536"):
        model_config("sel", "dam", lstm_hidden=8192, ffn_mult=5)
    with pytest.raises(ConfigError, match="must be <= 8192"):
        model_config("cml", "dam", dim=100000)
    with pytest.raises(ConfigError, match="must be <= 8192"):
        model_config("cml", "avdln", avdln_dim=100000)


@pytest.mark.parametrize(
    "field,value,problem",
    [
        ("epochs", 10**20, "must be <= 100000"),
        ("batch_size", 10**20, "must be <= 1000000"),
        ("seed", 10**20, f"must be <= {2**63 - 1}"),
        ("seed", -1, "must be >= 0"),
        ("lr", 1e30, "must be <= 10.0"),
        ("lr", math.nan, "must be a finite number"),
    ],
)
def test_train_options_are_bounded(field, value, problem):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    assert (e.value.field, e.value.problem) == (field, problem)


@pytest.mark.parametrize(
    "option,value",
    [
        ("--lstm-hidden", "100000"),
        ("--att-hidden", "100000"),
        ("--ffn-mult", "100000"),
        ("--epochs", "99999999999999999999"),
        ("--seed", "99999999999999999999"),
        ("--seeds", "99999999999999999999"),
        ("--lr", "1e30"),
        ("--seed", "-1"),
    ],
)
def test_cli_train_refuses_out_of_range_options_in_one_line(tmp_path, ave, capsys, option, value):
    err = one_line_error(
        capsys, ["train", "sel", "--data", str(ave), "--out", str(tmp_path / "x.safetensors"), option, value]
    )
    assert err.startswith(f"error: {option} ")


def test_cli_train_refuses_seeds_past_the_largest_seed(tmp_path, ave, capsys):
    err = one_line_error(
        capsys,
        [
            "train",
            "sel",
            "--data",
            str(ave),
            "--out",
            str(tmp_path / "x.safetensors"),
            "--seed",
            str(2**63 - 1),
            "--seeds",
            "2",
        ],
    )
    assert err == f"error: --seeds 2: runs seed {2**63}, which is not an integer in 0..{2**63 - 1}\n"


def test_every_json_the_package_writes_goes_through_jsonio():
    """No json.dump(s) in the package but core/jsonio.py's: a new writer cannot write NaN."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("core", "pipeline", "models", "extractors"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "jsonio.py" and path.parent.name == "core":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in ("dump", "dumps")
                    and getattr(node.value, "id", "") == "json"
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found
