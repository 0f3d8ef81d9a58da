"""The training loop knows no task and no model by name: a task registered here (a toy one,
with its own model) trains through train(); and the CLI refuses a model option that does not
apply to the chosen model in one line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from avel.cli import main
from avel.core.config import option
from avel.core.errors import ConfigError
from avel.models.protocols import EpochHook
from avel.models.registry import MODELS, ModelConfig, ModelEntry, model_config
from avel.pipeline.data.dataset import AVData
from avel.pipeline.train.loop import TrainConfig, train
from avel.pipeline.train.tasks import TASK_REGISTRY, SELTask


@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    task: ClassVar[str] = "toy"
    name: ClassVar[str] = "linear"
    scale: float = option("toy: output scale", default=1.0)


class ToyModel(EpochHook, nn.Module):
    """Says, per segment, whether it is an event, from the audio alone."""

    task = "toy"

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(cfg.audio_dim, 1)
        self.epochs_started: list[tuple[int, int]] = []

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.epochs_started.append((epoch, epochs))

    def loss(self, audio, visual, target):
        return nn.functional.binary_cross_entropy_with_logits(self.linear(audio).squeeze(-1), target.float())


class ToyTask(SELTask):
    name = "toy"
    evaluated: list[str] = []

    def prepare(self, data, dtype_in_ram=None):
        feats = super().prepare(data, dtype_in_ram)
        feats.task = "toy"  # Features.batch: the event mask as the target
        return feats

    def evaluate(self, model, data, split, *, batch_size=256, features=None):
        self.evaluated.append(split)
        _, idx = self.rows(data, split)
        audio, visual, target = features.batch(idx, torch.device("cpu"))
        with torch.no_grad():
            return {"toy_loss": model.loss(audio, visual, target).item()}

    def selection_score(self, metrics):
        return -metrics["toy_loss"]


def toy_data() -> AVData:
    g = torch.Generator().manual_seed(0)
    V, T = 30, 4
    labels = torch.randint(0, 3, (V, T), generator=g)
    audio = torch.randn(V, T, 5, generator=g) + (labels != 2)[..., None] * 2.0
    visual = torch.randn(V, T, 2, 2, 3, generator=g)
    splits = {"train": torch.arange(0, 20), "val": torch.arange(20, 25), "test": torch.arange(25, 30)}
    return AVData(visual, audio, labels, ["a", "b"], [f"v{i}" for i in range(V)], splits)


def test_a_new_task_and_model_train_through_the_loop(monkeypatch):
    monkeypatch.setitem(MODELS._entries, "toy/linear", ModelEntry(ToyConfig, ToyModel))
    task = ToyTask()
    monkeypatch.setitem(TASK_REGISTRY._entries, "toy", task)
    cfg = TrainConfig(model_config("toy", "linear", scale=2.0), epochs=3, batch_size=4, device="cpu", progress=False)
    assert (cfg.recipe, cfg.epochs, cfg.batch_size) == ("avel", 3, 4)  # the registry entry's recipe, resolved
    result = train(toy_data(), cfg)
    assert result.model_config.audio_dim == 5 and result.model_config.scale == 2.0
    assert result.model.epochs_started == [(1, 3), (2, 3), (3, 3)]
    assert task.evaluated == ["val", "val", "val", "test"]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    best = max(result.history, key=lambda h: -h["toy_loss"])
    assert result.best_epoch == best["epoch"] and set(result.test) == {"toy_loss"}
    with pytest.raises(ConfigError, match="recipe 'tian-avdln': trains on single segment pairs, which only cml/avdln"):
        TrainConfig(model_config("toy", "linear"), recipe="tian-avdln")


def test_train_config_is_resolved_when_made():
    avdln = TrainConfig(model_config("cml", "avdln"))
    assert (avdln.recipe, avdln.epochs, avdln.batch_size) == ("tian-avdln", 20, 8)
    sel = TrainConfig(model_config("sel", "dam"), epochs=5)
    assert (sel.recipe, sel.epochs, sel.batch_size) == ("avel", 5, 64)
    assert TrainConfig.from_dict(sel.to_dict(), sel.model) == sel


@pytest.mark.parametrize(
    "args,message",
    [
        (["sel", "--margin", "3"], "error: --margin 3.0: does not apply to sel/dam (AVDLN: contrastive margin)"),
        (
            ["sel", "--model", "av_att", "--heads", "2"],
            "error: --heads 2: does not apply to sel/av_att (self-attention heads (must divide the width))",
        ),
        (
            ["cml", "--model", "avdln", "--lambda", "0.3"],
            "error: --lambda 0.3: does not apply to cml/avdln (SEL: weight of the category CE in the loss (eq. 8))",
        ),
        (["wsel", "--warmup", "0.3"], "error: --warmup 0.3: needs per-second labels (task sel); wsel has none"),
        (["sel", "--model", "avdln"], "error: --model 'avdln': choose one of: dam, av_att, psp, cmbs"),
    ],
)
def test_cli_refuses_an_option_the_model_lacks_in_one_line(tmp_path, capsys, args, message):
    code = main(
        ["train", args[0], "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x.safetensors"), *args[1:]]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == message + "\n"
    assert not (tmp_path / "x.safetensors").exists()


def test_a_checkpoint_stores_the_train_config_in_force(tmp_path):
    from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint

    cfg = TrainConfig(model_config("cml", "avdln", proj_hidden=4, avdln_dim=3), epochs=2, device="cpu", progress=False)
    result = train(toy_data(), cfg)
    save_checkpoint(
        tmp_path / "c.safetensors",
        result.model,
        result.model_config,
        ["a", "b"],
        None,
        None,
        train_config=result.config,
    )
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    assert ckpt.model_config == result.model_config and ckpt.model_config.audio_dim == 5  # the data's widths
    assert ckpt.train_config == dataclasses.replace(cfg, model=result.model_config)  # the model: the one in force
    assert (ckpt.train_config.recipe, ckpt.train_config.epochs, ckpt.train_config.batch_size) == ("tian-avdln", 2, 8)
