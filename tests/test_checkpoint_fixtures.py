"""Checkpoints written by an older avel still load: tests/fixtures/checkpoints/ holds one
checkpoint per registered model written by main before the per-model configs (checkpoint
version 1, one ModelConfig of every model's fields), and the old code's outputs on a fixed
input (tests/fixtures/make_checkpoints.py wrote both, running the old code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avel.models.registry import MODELS
from avel.pipeline.train.checkpoint import CHECKPOINT_VERSION, load_checkpoint, upgrade

HERE = Path(__file__).resolve().parent / "fixtures"
FIXTURES = HERE / "checkpoints"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.safetensors"))
# registered after checkpoint version 2: no old checkpoint of theirs exists (their round trip:
# tests/test_psp_cmbs.py)
NEWER = {"sel/psp", "wsel/psp", "sel/cmbs", "wsel/cmbs"}


def load_maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_checkpoints", HERE / "make_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_fixture_per_registered_model():
    assert sorted(n.replace("-", "/") for n in NAMES) == sorted(set(MODELS.names()) - NEWER)
    assert NEWER <= set(MODELS.names())


@pytest.mark.parametrize("name", NAMES)
def test_old_checkpoint_loads_with_its_values_and_predicts_as_the_old_code(name):
    ref = json.loads((FIXTURES / f"{name}.json").read_text())
    old = ref["model_config"]
    ckpt = load_checkpoint(FIXTURES / f"{name}.safetensors")
    cfg = ckpt.model_config
    assert (cfg.task, cfg.name) == (old["task"], old["name"])
    stored = cfg.to_dict()
    assert set(stored) < set(old)  # the other models' fields are gone
    assert stored == {k: old[k] for k in stored}  # every value in force is the old one
    assert ckpt.train_config is None and ckpt.class_names == ["a", "b"] and ckpt.metrics == {"val": {"x": 1.0}}
    maker = load_maker()
    got = maker.outputs(ckpt.model, cfg.task, maker.fixed_input())
    want = ref["outputs"]
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]), rtol=1e-5, atol=1e-6)


def test_upgrade_is_the_one_place_for_old_metadata():
    v1 = {
        "format": "avel-checkpoint",
        "version": 1,
        "task": "sel",
        "model_config": {"task": "sel", "model": "dam", "margin": 2.0, "warmup": 0.6},
    }
    new = upgrade(v1)
    assert new["version"] == CHECKPOINT_VERSION == 2 and new["train_config"] is None
    # "model" -> "name"; fields written before they existed -> the published form; AVDLN's margin dropped
    assert new["model_config"] == {
        "task": "sel",
        "name": "dam",
        "relevance_fusion": "mean",
        "input_dropout": 0.0,
        "warmup": 0.6,
    }
    assert v1["model_config"]["model"] == "dam"  # the input is not changed
    assert upgrade(new) == new
    with pytest.raises(ValueError, match="version 3"):
        upgrade({**new, "version": 3})
