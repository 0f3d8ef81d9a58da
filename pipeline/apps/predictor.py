"""A checkpoint ready to run on new videos: its model on a device, and the extractors that
make the features it was trained on (`avel localize`, `avel cml`).

  * The checkpoint's feature settings rebuild the extractors (same visual and audio model,
    frames per segment, frame size, PCA, seed of random weights). The SHA-256 of the weight
    files the caller passes must equal the checkpoint's (SettingsMismatch names the fields
    that differ). A checkpoint without feature settings (trained on AVE's released features)
    gets the AVE-compatible defaults (`FeatureSettings()`: Caffe VGG-19 + VGGish, 16 frames)
    and no hash check.
  * The forced segment count is dropped: a video gives floor(duration) 1-s segments.
    Precision and the missing-audio policy may be overridden (neither changes what a
    feature is).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ...core.config import FeatureSettings
from ...core.errors import SettingsMismatch
from ...models.protocols import CMLModel, SELModel
from ..extract.features import FeatureExtractor
from ..train.checkpoint import Checkpoint, load_checkpoint

HASH_FIELDS = ("visual_weights_sha256", "audio_weights_sha256", "audio_pca_sha256")


def extraction_settings(
    checkpoint: Checkpoint, *, precision: str | None = None, on_missing_audio: str | None = None
) -> FeatureSettings:
    """The checkpoint's feature settings (AVE defaults when it has none) for videos of any
    length (no forced segment count), with the overrides that do not change features."""
    base = checkpoint.feature_settings if checkpoint.feature_settings is not None else FeatureSettings()
    return dataclasses.replace(
        base,
        segments=None,
        precision=precision or base.precision,
        on_missing_audio=on_missing_audio or base.on_missing_audio,
    )


def check_weights(
    checkpoint_path: str, saved: FeatureSettings | None, used: FeatureSettings, files: dict[str, str | None]
) -> None:
    """SettingsMismatch when the weights in use are not those of the checkpoint's features.
    `files`: hash field -> the file the caller gave (named in the message)."""
    if saved is None:
        return
    problems = []
    for name in HASH_FIELDS:
        want, got = getattr(saved, name), getattr(used, name)
        if want and want != got:
            given = files.get(name)
            where = f" ({given})" if given else " (the default weights)"
            problems.append(f"{name}: checkpoint {want[:16]!r} != given {got[:16]!r}{where}")
    if problems:
        raise SettingsMismatch(
            f"{checkpoint_path}: the weights given are not the ones its features were made with: {'; '.join(problems)}"
        )


def _opt(p: str | os.PathLike | None) -> str | None:
    return None if p is None else os.fspath(p)


@dataclass
class Predictor:
    path: str  # the checkpoint file
    checkpoint: Checkpoint
    extractor: FeatureExtractor
    model: SELModel | CMLModel  # the checkpoint's model (an nn.Module), in eval mode on the extractor's device

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, task: str, **options) -> Predictor:
        """Load a `task` checkpoint (CheckpointError: no such file, another task...) and
        build its extractors (`build`)."""
        return cls.build(checkpoint, load_checkpoint(os.fspath(checkpoint), expected_task=task), **options)

    @classmethod
    def build(
        cls,
        checkpoint: str | os.PathLike,
        ckpt: Checkpoint,
        *,
        device: str = "auto",
        visual_weights_file: str | os.PathLike | None = None,
        audio_weights_file: str | os.PathLike | None = None,
        audio_pca_file: str | os.PathLike | None = None,
        precision: str | None = None,
        on_missing_audio: str | None = None,
        batch_size: int | None = None,  # the device's default (features.DEVICE_DEFAULTS)
    ) -> Predictor:
        """The extractors of the loaded checkpoint `ckpt` (read from `checkpoint`). Raises
        before any video is read: SettingsMismatch (weights), ConfigError (device, precision)."""
        path = os.fspath(checkpoint)
        files = {
            "visual_weights_sha256": _opt(visual_weights_file),
            "audio_weights_sha256": _opt(audio_weights_file),
            "audio_pca_sha256": _opt(audio_pca_file),
        }
        extractor = FeatureExtractor(
            extraction_settings(ckpt, precision=precision, on_missing_audio=on_missing_audio),
            visual_weights_file=files["visual_weights_sha256"],
            audio_weights_file=files["audio_weights_sha256"],
            audio_pca_file=files["audio_pca_sha256"],
            device=device,
            batch_size=batch_size,
        )
        check_weights(path, ckpt.feature_settings, extractor.settings, files)
        return cls(path, ckpt, extractor, ckpt.model.to(extractor.device).eval())

    @property
    def settings(self) -> FeatureSettings:
        """The feature settings in use (weight hashes included)."""
        return self.extractor.settings
