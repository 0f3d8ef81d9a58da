"""Training and evaluation of the SEL and CML models, nanoGPT-style: a config, the data held
in RAM as tensors, the model, the optimiser, `evaluate()`, one loop. Model selection on the
validation split; the test split is evaluated once, for the selected model.

    cfg = TrainConfig(task="sel", model="dam")
    result = train(data, cfg)              # result.val, result.test, result.model
    save_checkpoint("sel.safetensors", result.model, result.model_config, data.class_names,
                    data.settings, result.test)

Splits: SEL uses "train" / "val" / "test"; CML uses "train_match" / "val_match" /
"test_match" when the data has them (AVE's CML split), else the SEL names.

Checkpoints are single safetensors files: the weights, plus one JSON document in the
safetensors metadata (key "avel") with the model config, class names, feature settings and
metrics. Loading parses that JSON and the tensors; it never unpickles anything.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from models.registry import ModelConfig, build_model
from pipeline.config import FeatureSettings
from pipeline.dataset import AVData
from pipeline.errors import CheckpointError, SettingsMismatch
from pipeline.metrics import cml_accuracy, cml_queries, sel_accuracy

CHECKPOINT_FORMAT = "avel-checkpoint"
CHECKPOINT_VERSION = 1
RAM_DTYPES = {"float32": torch.float32, "float16": torch.float16}


# -----------------------------------------------------------------------------------------
# config
@dataclass(frozen=True)
class TrainConfig:
    """Training options. Defaults: Adam, lr 1e-3, batch 64, no weight decay: AV_att's published
    recipe (Tian et al.); DAM's optimiser is not published, so it gets the same one, which
    also keeps the comparison fair. 60 epochs with a constant learning rate; the best epoch
    on validation is kept."""

    task: str = "sel"  # sel | cml
    model: str = "dam"  # sel: dam | av_att;  cml: dam | avdln
    embedding: str = "self-att"  # DAM sequence embedding
    matching: str = "cross"  # cross | self | none (sel only)
    lam: float = 0.5  # SEL: weight of the category CE (eq. 8)
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype_in_ram: str = "float32"  # float32 | float16: how the features are held in RAM
    eval_batch_size: int = 256
    heads: int = 4  # self-attention heads
    dropout: float = 0.1  # self-attention dropout
    scaled_matching: bool = True  # DAM matching sigma(g . f / sqrt(d)); False: the literal sigma(g . f)
    progress: bool | None = None  # tqdm bar: None = only on a terminal

    def model_config(self, data: AVData) -> ModelConfig:
        return ModelConfig(
            task=self.task, model=self.model, num_classes=data.num_classes, audio_dim=data.audio.shape[-1],
            visual_dim=data.visual.shape[-1], embedding=self.embedding, matching=self.matching, lam=self.lam,
            heads=self.heads, dropout=self.dropout, scaled_matching=self.scaled_matching,
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_name(task: str, data: AVData, name: str) -> str:
    """The split used for `name` ("train" | "val" | "test"): CML prefers "<name>_match"."""
    if task == "cml" and f"{name}_match" in data.splits:
        return f"{name}_match"
    return name


# -----------------------------------------------------------------------------------------
# data: every feature in RAM once; a batch is an index slice converted to float32 on device
@dataclass
class Features:
    task: str
    audio: torch.Tensor  # [V, T, Da]
    visual: torch.Tensor  # sel: [V, T, N, Dv] cells (N = 7x7);  cml: [V, T, Dv] pooled
    labels: torch.Tensor  # [V, T] int64
    background: int

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> audio, visual (float32 on device), target (sel: labels [B, T]; cml: event mask [B, T] bool)."""
        audio = self.audio[idx].to(device).float()
        visual = self.visual[idx].to(device).float()
        labels = self.labels[idx].to(device)
        return audio, visual, (labels if self.task == "sel" else labels != self.background)


def pooled_visual(visual: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """pool5 [V, T, 7, 7, Dv] -> the mean over the cells [V, T, Dv] (AVE's visual_feature_vec),
    computed in float32 a chunk of videos at a time; [V, T, Dv] input is returned as is."""
    if visual.dim() == 3:
        return visual
    parts = [visual[i : i + chunk].float().mean(dim=(2, 3)) for i in range(0, visual.shape[0], chunk)]
    return torch.cat(parts).to(visual.dtype)


def prepare_features(data: AVData, task: str, dtype_in_ram: str | None = None) -> Features:
    """The features of `data` as the task consumes them, held as `dtype_in_ram` (None: as
    stored when float16 or float32, else float32). A conversion copies the features; hand
    over float16 data to hold AVE-sized pool5 maps (1.7 GB) only once."""
    if dtype_in_ram is None:
        dtype = data.visual.dtype if data.visual.dtype in (torch.float16, torch.float32) else torch.float32
    elif dtype_in_ram in RAM_DTYPES:
        dtype = RAM_DTYPES[dtype_in_ram]
    else:
        raise ValueError(f"dtype_in_ram must be one of {', '.join(RAM_DTYPES)}, got {dtype_in_ram!r}")
    if task == "sel":
        if data.visual.dim() != 5:
            raise ValueError(f"SEL needs pool5 maps [V, T, H, W, C], got visual {tuple(data.visual.shape)}")
        visual = data.visual.to(dtype).flatten(2, 3)  # (V, T, N, Dv), a view when no conversion
    else:
        visual = pooled_visual(data.visual).to(dtype)  # (V, T, Dv)
    return Features(task, data.audio.to(dtype), visual, data.labels.long(), data.background)


# -----------------------------------------------------------------------------------------
# evaluation
@torch.no_grad()
def evaluate(model: nn.Module, data: AVData, split: str, *, batch_size: int = 256, features: Features | None = None) -> dict:
    """Metrics of `model` on a split of `data`. SEL: {"accuracy"}. CML: {"a2v", "v2a",
    "average", "n_videos"} under the CML protocol (pipeline.metrics). For CML, "train" /
    "val" / "test" mean the *_match splits when the data has them."""
    task = model.task
    feats = features if features is not None else prepare_features(data, task)
    idx = data.split(split_name(task, data, split))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if task == "sel":
            preds = [model.predict(*feats.batch(idx[i : i + batch_size], device)[:2]).cpu() for i in range(0, len(idx), batch_size)]
            pred = torch.cat(preds) if preds else torch.empty(0, data.labels.shape[1], dtype=torch.long)
            return {"accuracy": sel_accuracy(pred, feats.labels[idx])}
        event_mask = feats.labels[idx] != feats.background  # (V, T)
        queries = cml_queries(event_mask)
        query_mask = queries.mask(event_mask.shape[1])  # (V, T)
        pred = {"a2v": torch.zeros(len(idx), dtype=torch.long), "v2a": torch.zeros(len(idx), dtype=torch.long)}
        kept = torch.nonzero(queries.keep).squeeze(1)  # positions within the split
        for i in range(0, len(kept), batch_size):
            pos = kept[i : i + batch_size]
            audio, visual, _ = feats.batch(idx[pos], device)
            for direction in ("a2v", "v2a"):
                pred[direction][pos] = model.localize(audio, visual, query_mask[pos].to(device), direction).cpu()
        metrics = cml_accuracy(pred["a2v"], pred["v2a"], event_mask)
        metrics["average"] = (metrics["a2v"] + metrics["v2a"]) / 2
        return metrics
    finally:
        model.train(was_training)


def selection_score(task: str, metrics: dict) -> float:
    """What model selection maximises: SEL accuracy, CML mean of A2V and V2A."""
    score = metrics["accuracy"] if task == "sel" else metrics["average"]
    return -math.inf if math.isnan(score) else score


# -----------------------------------------------------------------------------------------
# training
@dataclass
class TrainResult:
    model: nn.Module  # the selected model (best validation epoch), in eval mode
    model_config: ModelConfig
    config: TrainConfig
    best_epoch: int  # 1-based
    val: dict  # metrics of the selected model on validation
    test: dict | None  # metrics of the selected model on test (None: the data has no test split)
    history: list[dict] = field(default_factory=list)  # per epoch: loss and validation metrics
    seconds: float = 0.0


def train(data: AVData, cfg: TrainConfig) -> TrainResult:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    # CPU kernels used here are deterministic already; on CUDA ask for deterministic ones
    # (warn_only: an op without one warns instead of failing)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA start)
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(cfg.seed)  # weights and dropout
        shuffle = torch.Generator().manual_seed(cfg.seed)  # batch order

        # data
        feats = prepare_features(data, cfg.task, cfg.dtype_in_ram)
        train_idx = data.split(split_name(cfg.task, data, "train"))
        val_split = split_name(cfg.task, data, "val")
        test_split = split_name(cfg.task, data, "test")
        data.split(val_split)  # fail early when there is none

        # model and optimiser
        model_config = cfg.model_config(data)
        model = build_model(model_config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        # loop
        best_score, best_epoch, best_state, best_val = -math.inf, 0, None, {}
        history = []
        bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.task}/{cfg.model}", disable=None if cfg.progress is None else not cfg.progress)
        for epoch in bar:
            model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=shuffle)]
            total, count = 0.0, 0
            for i in range(0, len(order), cfg.batch_size):
                audio, visual, target = feats.batch(order[i : i + cfg.batch_size], device)
                loss = model.loss(audio, visual, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(audio), count + len(audio)
            val = evaluate(model, data, val_split, batch_size=cfg.eval_batch_size, features=feats)
            score = selection_score(cfg.task, val)
            history.append({"epoch": epoch, "loss": total / max(count, 1), **val})
            if score > best_score or best_state is None:
                best_score, best_epoch, best_val = score, epoch, val
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", val=f"{score:.3f}", best=f"{best_score:.3f}")

        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        test = evaluate(model, data, test_split, batch_size=cfg.eval_batch_size, features=feats) if test_split in data.splits else None
        return TrainResult(model, model_config, cfg, best_epoch, best_val, test, history, time.perf_counter() - t0)
    finally:
        if device.type == "cuda":
            torch.use_deterministic_algorithms(deterministic_before)


@dataclass
class SeedsResult:
    results: list[TrainResult]
    split: str  # "test", or "val" when the data has no test split
    mean: dict  # metric -> mean over seeds
    std: dict  # metric -> sample standard deviation over seeds (0 for one seed)


def train_seeds(data: AVData, cfg: TrainConfig, seeds: list[int]) -> SeedsResult:
    """One run per seed; mean and std of the selected models' test metrics (the paper reports
    mean +- std over 3 runs)."""
    results = [train(data, dataclasses.replace(cfg, seed=s)) for s in seeds]
    split = "test" if all(r.test is not None for r in results) else "val"
    per_run = [r.test if split == "test" else r.val for r in results]
    keys = [k for k, v in per_run[0].items() if isinstance(v, (int, float))]
    mean = {k: statistics.fmean(m[k] for m in per_run) for k in keys}
    std = {k: statistics.stdev([m[k] for m in per_run]) if len(per_run) > 1 else 0.0 for k in keys}
    return SeedsResult(results, split, mean, std)


# -----------------------------------------------------------------------------------------
# checkpoints: one safetensors file, weights + JSON metadata, never pickle
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
    expected_task: str | None = None,
    feature_settings: FeatureSettings | None = None,
) -> Checkpoint:
    """Rebuild the model of a checkpoint written by `save_checkpoint`.

    CheckpointError: no such file, not a safetensors file (pickles are refused unread),
    no avel metadata, another task than `expected_task`, weights that do not fit.
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

    if expected_task is not None and model_config.task != expected_task:
        raise CheckpointError(f"{path}: a {model_config.task} checkpoint, expected {expected_task}")
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
        raise CheckpointError(f"{path}: weights do not fit a {model_config.task}/{model_config.model} model ({e})") from None
    model.eval()
    return Checkpoint(model, model_config, list(meta.get("class_names", [])), saved_settings, meta.get("metrics", {}))
