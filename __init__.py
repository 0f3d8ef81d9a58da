"""avel: audio-visual event localization (Dual Attention Matching, ICCV 2019), end to end.

This repository's root is the package: `avel.pipeline`, `avel.extractors`, `avel.models`
and `avel.cli` are the folders and the module beside this file (the README's Layout says
why). The public entry points are importable from here, each loaded on first use:

    from . import extract_features, load_data, train, TrainConfig, save_checkpoint, localize

    features = extract_features("clip.mp4")                    # AVE-compatible (needs the weights)
    features.visual.shape, features.audio.shape                 # (T, 7, 7, 512), (T, 128)
    [result] = localize(["clip.mp4"], "sel.safetensors")        # per-second labels and events
    print(result.events)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureSettings": ".core.config",
    "DecodeOptions": ".pipeline.media.decode",
    "decode_video": ".pipeline.media.decode",
    "FeatureExtractor": ".pipeline.extract.local",
    "extract_features": ".pipeline.extract.local",
    "run_extraction": ".pipeline.extract.local",
    "ExtractOptions": ".pipeline.extract.options",
    "annotated_jobs": ".pipeline.extract.local",
    "FeatureCache": ".pipeline.cache.store",
    "merge_caches": ".pipeline.cache.merge",
    "load_data": ".pipeline.data.load",
    "read_ave_layout": ".pipeline.data.ave",
    "write_ave_layout": ".pipeline.data.ave",
    "synthesize": ".pipeline.media.synth",
    "ModelConfig": ".models.registry",
    "model_config": ".models.registry",
    "TrainConfig": ".pipeline.train.loop",
    "train": ".pipeline.train.loop",
    "evaluate": ".pipeline.train.loop",
    "save_checkpoint": ".pipeline.train.checkpoint",
    "load_checkpoint": ".pipeline.train.checkpoint",
    "localize": ".pipeline.apps.localize",
    "live": ".pipeline.apps.live",
    "live_offline": ".pipeline.apps.live",
    "cml_query": ".pipeline.apps.query",
    "plot_timeline": ".pipeline.apps.timeline",
    "write_localization_report": ".pipeline.apps.report",
    "write_query_report": ".pipeline.apps.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'avel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
