"""Typed, frozen settings, validated where they are made. Every setting that changes the
features lives in `FeatureSettings`; it is stored in every cache and checkpoint and
compared when they meet. Foundation module: imports nothing of the project but errors and jsonio.

`field_help` metadata on a dataclass field is what the CLI shows for its option; the CLI
builds its options from these dataclasses, so they map one to one."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

from . import jsonio
from .errors import ConfigError

SAMPLE_RATE_HZ = 16000  # VGGish input rate; one segment = SAMPLE_RATE_HZ samples
FRAME_SIZE = 224  # VGG-19 input: direct resize, no crop (AVE's rule)
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32: reproducible; bf16/fp16: autocast
MISSING_AUDIO = ("error", "silence")  # what a video without an audio stream gives
# upper bounds of the options (a value above them would overflow a C integer or allocate until the
# machine runs out of memory, and end in the CLI's catch-all): a seed is a torch seed (signed 64-bit);
# K frames of a segment are decoded and held at once (K x 224 x 224 x 3 bytes each second; 64 is
# beyond any common frame rate); a day of 1-s segments; decoder processes; frames per forward
MAX_SEED = 2**63 - 1
MAX_FRAMES_PER_SEGMENT = 64
MAX_SEGMENTS = 86400
MAX_WORKERS = 256
MAX_BATCH_FRAMES = 4096
CONVERSIONS = ("swscale", "device")  # where the chosen frames become S x S RGB (docs/features.md)


def option(help: str, *, cli: bool = True, flag: str | None = None, choices=None, **kw):
    """A dataclass field with its CLI help and, optionally, its flag name and its choices (a
    sequence, or a function returning one, e.g. a registry's `names`); `cli=False`: not an
    option."""
    return field(metadata={"help": help, "cli": cli, "flag": flag, "choices": choices}, **kw)


# -- validation helpers (each raises ConfigError naming the field) ------------------------------
_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_types(obj) -> None:
    """Every field of the dataclass `obj` has its annotated type (int, float, str, bool,
    optionally `| None`); a bool is not an int and a NaN or an infinity is not a float."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        allowed = tuple(t for k in kinds for t in _SIMPLE_TYPES.get(k, ()))
        if not allowed:
            continue  # a nested or composite type: checked by its own class
        if isinstance(value, bool) and bool not in allowed:
            raise ConfigError(f.name, value, f"must be {' or '.join(kinds)}")
        if not isinstance(value, allowed):
            raise ConfigError(f.name, value, f"must be {' or '.join(kinds)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f.name, value, "must be a finite number")


def check_range(name: str, value, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """lo <= value <= hi (or < for an open end); None bounds are unbounded; NaN is refused."""
    if isinstance(value, float) and value != value:
        raise ConfigError(name, value, "must be a number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(name, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ConfigError(name, value, f"must be {'<' if hi_open else '<='} {hi}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(name, value, f"choose one of: {', '.join(map(str, choices))}")


def from_mapping(cls, d, where: str):
    """A dataclass `cls` from a dict (a JSON object of a cache or checkpoint): unknown keys
    are ignored (written by newer versions), a non-object or a bad value is a ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(where, d, f"must be a JSON object of {cls.__name__} fields")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError as e:  # a nested field of the wrong kind
        raise ConfigError(where, d, str(e)) from None


# -- devices ------------------------------------------------------------------------------------
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_HELP = "auto (cuda when there is a GPU) | cpu | cuda | cuda:N"


def resolve_device(name: str):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch.device that exists on this machine;
    ConfigError otherwise (a GPU asked for where there is none, a typo such as 'gpu')."""
    import torch

    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError("device", name, f"choose {DEVICE_HELP}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", name, "CUDA is not available on this machine (use --device cpu or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", name, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


# -- feature settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSettings:
    visual_model: str = option(
        "VGG-19 weights: caffe (AVE-compatible) | torchvision | random (no weights needed)", default="caffe"
    )
    audio_model: str = option("audio model: vggish | random", default="vggish")
    frames_per_segment: int = option("frames averaged per 1-s segment (AVE: 16)", default=16)
    segments: int | None = option(
        "force N segments (AVE: 10): truncate, or repeat the last when up to 1 s short", default=None
    )
    on_missing_audio: str = option(
        "a video without an audio stream: error | silence", choices=MISSING_AUDIO, default="error"
    )
    audio_pca: bool = option("VGGish PCA + 8-bit quantisation (set by --audio-pca-file)", cli=False, default=False)
    precision: str = option(
        "fp32 (reproducible) | bf16 | fp16 (GPU): autocast of both networks", choices=PRECISIONS, default="fp32"
    )
    seed: int = option("seed of random weights", default=0)
    # features differ from swscale's by more than float tolerance (a few pixel levels): a setting of the cache
    convert: str = option(
        "where the chosen frames become 224x224 RGB: swscale (in the decoder) | device (YUV planes "
        "converted and resized on the model's device; docs/features.md)",
        choices=CONVERSIONS,
        default="swscale",
    )
    frame_size: int = option("VGG-19 input size", cli=False, default=FRAME_SIZE)
    sample_rate_hz: int = option("VGGish input rate", cli=False, default=SAMPLE_RATE_HZ)
    # SHA-256 of each weight file ("random-seed-S" for random weights, "" for none)
    visual_weights_sha256: str = option("", cli=False, default="")
    audio_weights_sha256: str = option("", cli=False, default="")
    audio_pca_sha256: str = option("", cli=False, default="")

    def __post_init__(self) -> None:
        check_types(self)
        check_range("frames_per_segment", self.frames_per_segment, 1, MAX_FRAMES_PER_SEGMENT)
        if self.segments is not None:
            check_range("segments", self.segments, 1, MAX_SEGMENTS)
        check_range("seed", self.seed, 0, MAX_SEED)
        check_choice("on_missing_audio", self.on_missing_audio, MISSING_AUDIO)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("convert", self.convert, CONVERSIONS)
        if self.frame_size < 32 or self.frame_size % 32 or self.frame_size > 4096:
            raise ConfigError(
                "frame_size", self.frame_size, "must be a multiple of 32 (VGG-19's pool5 grid) in 32..4096"
            )
        check_choice("sample_rate_hz", self.sample_rate_hz, (SAMPLE_RATE_HZ,))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return jsonio.dumps(self.to_dict(), nonfinite="refuse", sort_keys=True)  # validated finite

    @classmethod
    def from_dict(cls, d: dict, where: str = "feature_settings") -> FeatureSettings:
        return from_mapping(cls, d, where)

    @classmethod
    def from_json(cls, text: str, where: str = "feature_settings") -> FeatureSettings:
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ConfigError(where, text[:40] if isinstance(text, str) else text, f"not JSON ({e})") from None
        return cls.from_dict(d, where)

    def differences(self, other: FeatureSettings) -> list[str]:
        """Human-readable list of the settings that differ, e.g. ['visual_model: caffe != random']."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
