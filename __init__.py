"""avel: audio-visual event localization (Dual Attention Matching, ICCV 2019), end to end.

This repository's root is the package: `avel.pipeline`, `avel.extractors`, `avel.models`
and `avel.cli` are the folders and the module beside this file (the README's Layout says
why). The public entry points are importable from here, each loaded on first use:

    from avel import extract_features, load_data, train, TrainConfig, save_checkpoint, localize

    features = extract_features("clip.mp4")                    # AVE-compatible (needs the weights)
    features.visual.shape, features.audio.shape                 # (T, 7, 7, 512), (T, 128)
    [result] = localize(["clip.mp4"], "sel.safetensors")        # per-second labels and events
    print(result.events)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureSettings": "avel.pipeline.config",
    "DecodeOptions": "avel.pipeline.decode",
    "decode_video": "avel.pipeline.decode",
    "FeatureExtractor": "avel.pipeline.extract",
    "extract_features": "avel.pipeline.extract",
    "run_extraction": "avel.pipeline.extract",
    "annotated_jobs": "avel.pipeline.extract",
    "FeatureCache": "avel.pipeline.cache",
    "merge_caches": "avel.pipeline.cache",
    "load_data": "avel.pipeline.data",
    "read_ave_layout": "avel.pipeline.ave",
    "write_ave_layout": "avel.pipeline.ave",
    "synthesize": "avel.pipeline.synth",
    "ModelConfig": "avel.models.registry",
    "TrainConfig": "avel.pipeline.train",
    "train": "avel.pipeline.train",
    "evaluate": "avel.pipeline.train",
    "save_checkpoint": "avel.pipeline.checkpoint",
    "load_checkpoint": "avel.pipeline.checkpoint",
    "localize": "avel.pipeline.localize",
    "cml_query": "avel.pipeline.query",
    "plot_timeline": "avel.pipeline.timeline",
    "write_localization_report": "avel.pipeline.report",
    "write_query_report": "avel.pipeline.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'avel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
