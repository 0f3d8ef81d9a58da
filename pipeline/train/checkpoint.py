"""Checkpoints: one safetensors file, the weights plus one JSON document in the safetensors
metadata (key "avel") with the model config, class names, feature settings and metrics.
Loading parses that JSON and the tensors; it never unpickles anything (a pickle or
`torch.save` zip is refused before any parser sees it).

    save_checkpoint("sel.safetensors", model, model_config, class_names, settings, metrics, train_config=cfg)
    ckpt = load_checkpoint("sel.safetensors", expected_task="sel")   # ckpt.model, in eval mode

Versions: 1 held one ModelConfig with every model's fields (those of the other models too);
2 holds the model's own config (models/registry.py) and the TrainConfig it was trained with
(its model apart). Older metadata is brought to the current version in one place, `upgrade`;
tests/fixtures/checkpoints/ holds checkpoints written by version 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ...core import jsonio
from ...core.atomic import atomic_path
from ...core.config import FeatureSettings
from ...core.errors import CheckpointError, ConfigError, SettingsMismatch, shown
from ...models.registry import MODELS, PUBLISHED_DEFAULTS, ModelConfig, build_model, model_config_from_dict
from .loop import TrainConfig

CHECKPOINT_FORMAT = "avel-checkpoint"
CHECKPOINT_VERSION = 2


@dataclass
class Checkpoint:
    model: nn.Module  # in eval mode, on CPU
    model_config: ModelConfig
    class_names: list[str]
    feature_settings: FeatureSettings | None
    metrics: dict
    train_config: TrainConfig | None = None  # None: written before version 2 or without one


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: ModelConfig,
    class_names: list[str],
    feature_settings: FeatureSettings | None,
    metrics: dict | None,
    train_config: TrainConfig | None = None,
) -> Path:
    """Write the weights of `model` and its metadata; `train_config`: the TrainConfig it was
    trained with (stored without its model, which is `model_config`)."""
    path = Path(path)
    train = None
    if train_config is not None:
        train = {k: v for k, v in train_config.to_dict().items() if k != "model"}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "task": model_config.task,
        "model_config": model_config.to_dict(),
        "class_names": list(class_names),
        "feature_settings": feature_settings.to_dict() if feature_settings is not None else None,
        "metrics": metrics or {},
        "train_config": train,
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"avel": jsonio.dumps(meta)})  # a NaN metric: null
    return path


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser sees it: a
    safetensors file starts with an 8-byte little-endian header length and a JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return  # the safetensors signature (checked first: a header length may start with 0x80)
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{path}: a zip (torch.save) file, not an avel safetensors checkpoint; avel never unpickles files"
        )
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path}: a pickle file, not an avel safetensors checkpoint; avel never unpickles files")
    raise CheckpointError(f"{path}: not a safetensors file")


def load_checkpoint(
    path: str | os.PathLike,
    expected_task: str | tuple[str, ...] | None = None,
    feature_settings: FeatureSettings | None = None,
) -> Checkpoint:
    """Rebuild the model of a checkpoint written by `save_checkpoint`.

    CheckpointError: no such file, not a safetensors file (pickles are refused unread),
    no avel metadata, a NaN or an infinity in a tensor, another task than `expected_task`
    (one or a tuple of tasks), weights that do not fit.
    SettingsMismatch: `feature_settings` differ from the checkpoint's (compared only when
    both are known; a checkpoint trained on features of unknown settings, e.g. the AVE
    release, accepts any)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{shown(path)}: no such checkpoint")
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("avel")
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{shown(path)}: unreadable safetensors file ({e})") from None
    if raw is None:
        raise CheckpointError(f"{shown(path)}: a safetensors file without avel metadata (not an avel checkpoint)")
    meta = _read_metadata(path, raw)
    bad = nonfinite_tensor(tensors)
    if bad:
        raise CheckpointError(f"{shown(path)}: tensor {bad} (a model with such weights scores nothing)")
    model_config: ModelConfig = meta["model_config"]
    expected = (expected_task,) if isinstance(expected_task, str) else expected_task
    if expected is not None and model_config.task not in expected:
        raise CheckpointError(f"{shown(path)}: a {model_config.task} checkpoint, expected {' or '.join(expected)}")
    saved_settings: FeatureSettings | None = meta["feature_settings"]
    if feature_settings is not None and saved_settings is not None:
        diff = feature_settings.differences(saved_settings)
        if diff:
            raise SettingsMismatch(
                f"{shown(path)}: features made with other settings than the checkpoint's (features != checkpoint): {'; '.join(diff)}"
            )

    try:
        model = build_model(model_config)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{shown(path)}: its model_config does not build a model ({e})") from None
    mismatch = weights_mismatch(model.state_dict(), tensors)
    if mismatch:
        raise CheckpointError(
            f"{shown(path)}: weights do not fit the {model_config.task}/{model_config.name} model of its "
            f"model_config ({mismatch})"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{shown(path)}: weights do not load ({' '.join(str(e).split())[:300]})") from None
    model.eval()
    return Checkpoint(model, model_config, meta["class_names"], saved_settings, meta["metrics"], meta["train_config"])


def _read_metadata(path: Path, raw: str) -> dict:
    """The checkpoint's avel metadata, every field checked: CheckpointError naming the file
    and the field (a hand-edited or foreign file), never a traceback."""

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{shown(path)}: malformed avel metadata ({problem})")

    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise bad(f"not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, expected an object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise bad(f"format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    if "model_config" not in meta:
        raise bad("no model_config")
    try:
        meta = upgrade(meta)
    except ValueError as e:
        raise bad(str(e)) from None
    class_names = meta.get("class_names", [])
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise bad(f"class_names {class_names!r:.60}: must be a list of strings")
    metrics = meta.get("metrics", {})
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        raise bad(f"metrics {metrics!r:.60}: must be an object")
    try:
        model_config = model_config_from_dict(meta["model_config"])
        saved = meta.get("feature_settings")
        settings = FeatureSettings.from_dict(saved) if saved is not None else None
        train = meta.get("train_config")
        train_config = TrainConfig.from_dict(train, model_config) if train is not None else None
    except ConfigError as e:
        raise bad(str(e)) from None
    return {
        "model_config": model_config,
        "class_names": class_names,
        "feature_settings": settings,
        "metrics": metrics,
        "train_config": train_config,
    }


def upgrade(meta: dict) -> dict:
    """Checkpoint metadata of any earlier version -> the current version's (a new dict), one
    version step at a time; ValueError for a version this code does not know.

    1 -> 2: the model config was one ModelConfig of every model's fields. Its "model" key is
    "name" since before version 1 was final, and "relevance_fusion" / "input_dropout" are
    missing in files written before those fields existed (they then had the published form,
    PUBLISHED_DEFAULTS); the fields of other models are dropped (their values did nothing).
    No TrainConfig was stored."""
    version = meta.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CHECKPOINT_VERSION:
        raise ValueError(
            f"version {version!r}: this avel reads versions 1 to {CHECKPOINT_VERSION} (a newer avel wrote it?)"
        )
    meta = dict(meta)
    if version == 1:
        cfg = meta["model_config"]
        if isinstance(cfg, dict):
            if "model" in cfg and "name" not in cfg:
                cfg = {**cfg, "name": cfg["model"]}
            cfg = {**PUBLISHED_DEFAULTS, **cfg}
            cfg = _own_fields(cfg)
        meta.update(model_config=cfg, train_config=None, version=2)
    return meta


def _own_fields(cfg: dict) -> dict:
    """A version-1 model config -> the fields of its model's config class (and task, name)."""
    key = f"{cfg.get('task', 'sel')}/{cfg.get('name', 'dam')}"
    if key not in MODELS:
        return cfg  # refused by model_config_from_dict, naming the task or the name
    names = {f.name for f in dataclasses.fields(MODELS.get(key).config)} | {"task", "name"}
    return {k: v for k, v in cfg.items() if k in names}


def nonfinite_tensor(tensors: dict[str, torch.Tensor]) -> str:
    """'' when every floating-point tensor is finite, else '<name> holds NaN' (or 'an
    infinity') for the first that is not."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "an infinity"
            return f"{name} holds {kind}"
    return ""


def weights_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """'' when `given` has exactly the names and shapes of `expected` (a state dict), else one
    short line: how many names are missing, unexpected or of another shape, with an example."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if reshaped:
        k = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape, e.g. {k}: {list(given[k].shape)} in the file, "
            f"{list(expected[k].shape)} in the model"
        )
    return "; ".join(problems)
