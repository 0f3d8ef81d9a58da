"""Weight files: one loader for all extractors. A weight entry is a value (file name,
URL, hash); `resolve_weights` returns a local path from an explicit file, the cache, or a
download checked against the published hash, and otherwise says exactly what to do."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_path
from .errors import WeightsError


@dataclass(frozen=True)
class WeightsEntry:
    name: str  # what it is, for messages
    file_name: str  # name in the cache directory
    url: str | None  # public release URL
    md5: str | None = None  # full MD5 as published (Keras files)
    sha256_prefix: str | None = None  # hash prefix in the file name (torch hub files)
    option: str = "--weights-file"  # CLI option that takes a local copy


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where downloaded weights live: $AVEL_WEIGHTS_DIR, else torch hub's checkpoints dir."""
    env = os.environ.get("AVEL_WEIGHTS_DIR")
    if env:
        return Path(env)
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_hash(entry: WeightsEntry, path: Path) -> None:
    if entry.md5 and _md5_of(path) != entry.md5:
        raise WeightsError(f"{path}: MD5 does not match the published {entry.md5} of {entry.name}")
    if entry.sha256_prefix and not sha256_of(path).startswith(entry.sha256_prefix):
        raise WeightsError(f"{path}: SHA-256 does not start with the published {entry.sha256_prefix} of {entry.name}")


def _download(entry: WeightsEntry, dst: Path, timeout_s: float = 30.0) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:  # a failed download or a hash mismatch leaves nothing
        with open(tmp, "wb") as out, urllib.request.urlopen(entry.url, timeout=timeout_s) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        check_hash(entry, tmp)


def resolve_weights(entry: WeightsEntry, weights_file: str | os.PathLike | None = None) -> Path:
    """A local path to the weights of `entry`: the explicit file, else the cached copy,
    else a download (unless AVEL_OFFLINE=1) verified against the published hash."""
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsError(f"{path}: no such weight file ({entry.name})")
        return path
    cached = cache_dir() / entry.file_name
    if cached.is_file():
        return cached
    how = (
        f"{entry.name} weights are needed: download {entry.url} on a machine with internet "
        f"and pass it with {entry.option} PATH, or put it at {cached}"
    )
    if entry.url is None or os.environ.get("AVEL_OFFLINE") == "1":
        raise WeightsError(how + (" (AVEL_OFFLINE=1)" if entry.url else ""))
    try:
        _download(entry, cached)
    except WeightsError:
        raise
    except OSError as e:  # URLError, timeouts, refused connections
        raise WeightsError(f"{how} (download failed: {getattr(e, 'reason', e)})") from None
    return cached
