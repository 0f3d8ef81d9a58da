"""What `avel train` and `avel evaluate` do, from paths to checkpoints and metrics: the CLI
parses and builds the configs, these functions do the rest (and return what it prints)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...core.config import check_range, resolve_device
from ...core.errors import AvelError
from ...models.registry import SEL_TASKS
from ..data.load import load_data
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import MAX_SEEDS, TrainConfig, check_seeds, evaluate, train_seeds
from .tasks import get_task


def train_to_checkpoints(data_path: Path, out: Path, cfg: TrainConfig, seeds: int) -> dict:
    """Train `seeds` seeds (cfg.seed, cfg.seed + 1, ...) on the data at `data_path`; the first
    seed's checkpoint is `out`, the others' OUT-seed<S>.safetensors. -> the report: {"task",
    "config", "split", "mean", "std", "runs": [{"seed", "checkpoint", "best_epoch", "val",
    "test", "seconds"}]}. Everything is refused before any work (the device, the data)."""
    check_range("seeds", seeds, 1, MAX_SEEDS)  # before list(range(...)): 10**20 seeds would fill the memory
    check_seeds(list(range(cfg.seed, cfg.seed + seeds)))  # the last seed too stays a torch seed
    resolve_device(cfg.device)  # a GPU asked for where there is none fails before the data is read
    av = load_data(data_path, dtype=torch.float16 if cfg.dtype_in_ram == "float16" else torch.float32)
    get_task(cfg.task).check_data(av, str(data_path))
    result = train_seeds(av, cfg, list(range(cfg.seed, cfg.seed + seeds)))
    report = {
        "task": cfg.task,
        "config": cfg.to_dict(),
        "split": result.split,
        "mean": result.mean,
        "std": result.std,
        "runs": [],
    }
    for k, r in enumerate(result.results):
        path = out if k == 0 else out.with_name(f"{out.stem}-seed{r.config.seed}{out.suffix}")
        save_checkpoint(
            path,
            r.model,
            r.model_config,
            av.class_names,
            av.settings,
            {"val": r.val, "test": r.test},
            train_config=r.config,
        )
        report["runs"].append(
            {
                "seed": r.config.seed,
                "checkpoint": str(path),
                "best_epoch": r.best_epoch,
                "val": r.val,
                "test": r.test,
                "seconds": round(r.seconds, 1),
            }
        )
    return report


def evaluate_checkpoint(
    task: str, data_path: Path, checkpoint: Path, split: str = "test", device: str = "auto"
) -> dict:
    """The metrics of the `task` checkpoint on a split of the data at `data_path`, refusing
    features of other settings and (SEL) other classes than the checkpoint's."""
    torch_device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, expected_task=task)
    av = load_data(data_path)
    if av.settings is not None and ckpt.feature_settings is not None:
        load_checkpoint(
            checkpoint, expected_task=task, feature_settings=av.settings
        )  # SettingsMismatch names the fields
    if task in SEL_TASKS and ckpt.class_names and ckpt.class_names != av.class_names:
        raise AvelError(
            f"{checkpoint}: trained on classes {ckpt.class_names[:3]}... which differ from the data's "
            f"{av.class_names[:3]}..."
        )
    return evaluate(ckpt.model.to(torch_device), av, split)
