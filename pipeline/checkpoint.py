"""Checkpoints: one safetensors file, the weights plus one JSON document in the safetensors
metadata (key "avel") with the model config, class names, feature settings and metrics.
Loading parses that JSON and the tensors; it never unpickles anything (a pickle or
`torch.save` zip is refused before any parser sees it).

    save_checkpoint("sel.safetensors", model, model_config, class_names, settings, metrics)
    ckpt = load_checkpoint("sel.safetensors", expected_task="sel")   # ckpt.model, in eval mode
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from avel.models.registry import ModelConfig, build_model
from avel.pipeline.config import FeatureSettings
from avel.pipeline.errors import CheckpointError, SettingsMismatch

CHECKPOINT_FORMAT = "avel-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    model: nn.Module  # in eval mode, on CPU
    model_config: ModelConfig
    class_names: list[str]
    feature_settings: FeatureSettings | None
    metrics: dict


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: ModelConfig,
    class_names: list[str],
    feature_settings: FeatureSettings | None,
    metrics: dict | None,
) -> Path:
    path = Path(path)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "task": model_config.task,
        "model_config": model_config.to_dict(),
        "class_names": list(class_names),
        "feature_settings": feature_settings.to_dict() if feature_settings is not None else None,
        "metrics": metrics or {},
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        save_file(tensors, str(tmp), metadata={"avel": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
        raise CheckpointError(f"{path}: a zip (torch.save) file, not an avel safetensors checkpoint; avel never unpickles files")
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
    no avel metadata, another task than `expected_task` (one or a tuple of tasks), weights
    that do not fit.
    SettingsMismatch: `feature_settings` differ from the checkpoint's (compared only when
    both are known; a checkpoint trained on features of unknown settings, e.g. the AVE
    release, accepts any)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("avel")
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without avel metadata (not an avel checkpoint)")
    try:
        meta = json.loads(raw)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        model_config = ModelConfig.from_dict(meta["model_config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed avel metadata ({e})") from None

    expected = (expected_task,) if isinstance(expected_task, str) else expected_task
    if expected is not None and model_config.task not in expected:
        raise CheckpointError(f"{path}: a {model_config.task} checkpoint, expected {' or '.join(expected)}")
    saved = meta.get("feature_settings")
    saved_settings = FeatureSettings.from_dict(saved) if saved is not None else None
    if feature_settings is not None and saved_settings is not None:
        diff = feature_settings.differences(saved_settings)
        if diff:
            raise SettingsMismatch(f"{path}: features made with other settings than the checkpoint's (features != checkpoint): {'; '.join(diff)}")

    try:
        model = build_model(model_config)
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit a {model_config.task}/{model_config.name} model ({e})") from None
    model.eval()
    return Checkpoint(model, model_config, list(meta.get("class_names", [])), saved_settings, meta.get("metrics", {}))
