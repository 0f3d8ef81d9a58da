"""A cache's metadata: `CacheMeta` (the feature settings, the storage dtype, and the AVE
annotation and split rows the job had), read from a part's root attributes (`read_meta`),
written there (`write_root`) or read from a directory cache's cache.json, annotations.txt and
splits/*.txt (`read_cache_json`); `check_compatible` refuses features made with other settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ...core.annotations import split_key
from ...core.config import FeatureSettings, check_choice
from ...core.errors import CacheError, ConfigError, SettingsMismatch, shown

FORMAT = "avel-features/1"
STORAGE_DTYPES = ("float32", "float16")


@dataclass
class CacheMeta:
    settings: FeatureSettings
    storage_dtype: str = "float32"
    annotations: str | None = None  # AVE-format text
    splits: dict[str, str] = field(default_factory=dict)  # split name -> AVE-format rows (trainSet.txt...)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, FeatureSettings):
            raise ConfigError("feature_settings", self.settings, "must be a FeatureSettings")
        check_choice("storage_dtype", self.storage_dtype, STORAGE_DTYPES)

    def check_compatible(self, other: CacheMeta, where: str) -> None:
        diffs = self.settings.differences(other.settings)
        if self.storage_dtype != other.storage_dtype:
            diffs.append(f"storage_dtype: {self.storage_dtype!r} != {other.storage_dtype!r}")
        if diffs:
            raise SettingsMismatch(f"{where}: features made with other settings ({'; '.join(diffs)})")


def _meta_from(where, settings, storage_dtype, annotations=None, splits=None) -> CacheMeta:
    """CacheMeta of values read from a file; a bad value is a CacheError naming the file."""
    try:
        if isinstance(settings, (str, bytes)):
            settings = FeatureSettings.from_json(settings)
        else:
            settings = FeatureSettings.from_dict(settings)
        return CacheMeta(settings, storage_dtype, annotations, dict(splits or {}))
    except ConfigError as e:
        raise CacheError(f"{shown(where)}: {e}") from None


def read_meta(h5: h5py.File, where: str) -> CacheMeta:
    if h5.attrs.get("avel_format") != FORMAT:
        raise CacheError(f"{shown(where)}: not an avel feature file (no avel_format={FORMAT} attribute)")
    if "feature_settings" not in h5.attrs:
        raise CacheError(f"{shown(where)}: no feature_settings attribute")
    ann = h5.attrs.get("annotations")
    splits = {k[len("split.") :]: str(v) for k, v in h5.attrs.items() if k.startswith("split.")}
    return _meta_from(
        where,
        h5.attrs["feature_settings"],
        str(h5.attrs.get("storage_dtype", "float32")),
        None if ann is None else str(ann),
        splits,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CacheError(f"{shown(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CacheError(f"{shown(path)}: cannot be read ({e.strerror or e})") from None


def read_cache_json(path: Path) -> CacheMeta:
    """The CacheMeta of a directory cache (cache.json, annotations.txt, splits/*.txt)."""
    meta_file = path / "cache.json"
    try:
        d = json.loads(_read_text(meta_file))
    except ValueError as e:
        raise CacheError(
            f"{shown(meta_file)}: not valid JSON ({e}); a cache.json is written once, atomically: "
            "was it edited by hand?"
        ) from None
    if not isinstance(d, dict):
        raise CacheError(f"{shown(meta_file)}: a JSON {type(d).__name__}, expected an object with the cache's settings")
    if d.get("format", FORMAT) != FORMAT:
        raise CacheError(f"{shown(meta_file)}: format {d.get('format')!r}, expected {FORMAT!r}")
    if "settings" not in d:
        raise CacheError(f'{shown(meta_file)}: no "settings" (the FeatureSettings of the cache)')
    ann = path / "annotations.txt"
    splits = {split_key(p.name): _read_text(p) for p in sorted((path / "splits").glob("*.txt"))}
    return _meta_from(
        meta_file, d["settings"], d.get("storage_dtype", "float32"), _read_text(ann) if ann.is_file() else None, splits
    )


def write_root(f: h5py.File, meta: CacheMeta) -> None:
    f.attrs["avel_format"] = FORMAT
    f.attrs["feature_settings"] = meta.settings.to_json()
    f.attrs["storage_dtype"] = meta.storage_dtype
    for k, v in meta.settings.to_dict().items():
        f.attrs[f"setting.{k}"] = "" if v is None else v
    if meta.annotations is not None:
        f.attrs["annotations"] = meta.annotations
    for name, text in meta.splits.items():
        f.attrs[f"split.{name}"] = text
    f.require_group("videos")
    f.require_group("failures")
