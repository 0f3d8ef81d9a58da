"""Typed, frozen settings. Every setting that changes the features lives in
`FeatureSettings`; it is stored in every cache and checkpoint and compared when they meet."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

SAMPLE_RATE_HZ = 16000  # VGGish input rate; one segment = SAMPLE_RATE_HZ samples
FRAME_SIZE = 224  # VGG-19 input: direct resize, no crop (AVE's rule)


@dataclass(frozen=True)
class FeatureSettings:
    visual_model: str = "caffe"
    audio_model: str = "vggish"
    frames_per_segment: int = 16
    segments: int | None = None  # None: floor(duration) segments; N: force N (AVE: 10)
    on_missing_audio: str = "error"  # error | silence
    audio_pca: bool = False
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seed: int = 0  # seed of `random` weights
    frame_size: int = FRAME_SIZE
    sample_rate_hz: int = SAMPLE_RATE_HZ
    # SHA-256 of each weight file ("random-seed-S" for random weights, "" for none)
    visual_weights_sha256: str = ""
    audio_weights_sha256: str = ""
    audio_pca_sha256: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, text: str) -> "FeatureSettings":
        return cls.from_dict(json.loads(text))

    def differences(self, other: "FeatureSettings") -> list[str]:
        """Human-readable list of the settings that differ, e.g. ['visual_model: caffe != random']."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class ExtractConfig:
    """`avel extract` options, one to one."""

    videos: tuple[str, ...] = ()
    out: str = "features.h5"
    features: FeatureSettings = field(default_factory=FeatureSettings)
    visual_weights_file: str | None = None
    audio_weights_file: str | None = None
    audio_pca_file: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 160  # frames per VGG-19 forward
    pooled: bool = False  # also store the 512-d global-average-pooled visual vector
