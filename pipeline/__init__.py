"""avel's pipeline: decoding, feature caches, training and localization.

The public entry points, importable from here (loaded on first use). `train` and
`localize` are also the names of their modules, so they are imported from those:

    from pipeline import FeatureSettings, extract_features, load_checkpoint
    from pipeline.localize import localize
    from pipeline.train import TrainConfig, train

    features = extract_features("clip.mp4")                    # AVE-compatible (needs the weights)
    features.visual.shape, features.audio.shape                 # (T, 7, 7, 512), (T, 128)
    [result] = localize(["clip.mp4"], "sel.safetensors")        # per-second labels and events
    print(result.events)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureSettings": "pipeline.config",
    "DecodeOptions": "pipeline.decode",
    "decode_video": "pipeline.decode",
    "FeatureExtractor": "pipeline.extract",
    "extract_features": "pipeline.extract",
    "run_extraction": "pipeline.extract",
    "FeatureCache": "pipeline.cache",
    "merge_caches": "pipeline.cache",
    "load_data": "pipeline.data",
    "read_ave_layout": "pipeline.ave",
    "write_ave_layout": "pipeline.ave",
    "synthesize": "pipeline.synth",
    "TrainConfig": "pipeline.train",
    "evaluate": "pipeline.train",
    "save_checkpoint": "pipeline.train",
    "load_checkpoint": "pipeline.train",
    "cml_query": "pipeline.query",
    "plot_timeline": "pipeline.timeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
