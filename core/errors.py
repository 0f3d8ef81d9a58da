"""Every failure a user can cause has its own exception type, so batch jobs can record
it per video and go on. Messages are one line and name the file (`shown(path)`: a name
holding a newline or bytes that are not UTF-8 is written escaped, so it stays one line)."""

from __future__ import annotations

import os


def shown(path) -> str:
    """A file name as error messages write it: unchanged when printable, else with Python's
    escapes (a newline as \\n, a byte that is not UTF-8 as \\xff), so a message stays
    one line and can always be printed."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode keeps it
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]


class AvelError(Exception):
    """Base class of every error avel reports to a user (one line, no traceback)."""


class ConfigError(AvelError, ValueError):
    """An option or configuration value that cannot be used (out of range, unknown name,
    no such device). Raised where the configuration enters, before any data is read or any
    weight is built. `field` names the setting (the CLI reports it as its option)."""

    def __init__(self, field: str, value, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field} {value!r}: {problem}")


class UnknownName(AvelError, KeyError):
    """A name that no registry holds (an extractor, embedding, model...)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# --- media (stage one) -------------------------------------------------------------
class MediaError(AvelError):
    """A video could not be turned into segments. `kind` is a short stable tag."""

    kind = "media"

    def __init__(self, path, problem: str) -> None:
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        self.problem = problem
        super().__init__(f"{shown(self.path)}: {problem}")


class MediaNotFound(MediaError):
    kind = "not-found"


class NotAMediaFile(MediaError):
    kind = "not-media"


class CorruptMedia(MediaError):
    kind = "corrupt"


class NoVideoStream(MediaError):
    kind = "no-video"


class NoAudioStream(MediaError):
    kind = "no-audio"


class TooShort(MediaError):
    kind = "too-short"


class DecodeFailed(MediaError):
    """Anything else a broken file made the decoder raise: recorded, never fatal."""

    kind = "error"


class DecoderCrashed(MediaError):
    """The decoder process died while it read this file (a crash inside FFmpeg, the
    out-of-memory killer): recorded like any bad input."""

    kind = "crash"


MEDIA_ERRORS = {
    cls.kind: cls
    for cls in (
        MediaError,
        MediaNotFound,
        NotAMediaFile,
        CorruptMedia,
        NoVideoStream,
        NoAudioStream,
        TooShort,
        DecodeFailed,
        DecoderCrashed,
    )
}


class Interrupted(AvelError):
    """A batch job stopped by Ctrl-C or SIGTERM after committing what was finished; the
    same command resumes it. (Not a KeyboardInterrupt: the CLI framework would swallow
    its message.)"""

    exit_status = 130


# --- weights -------------------------------------------------------------------------
class WeightsError(AvelError):
    """A weight file is missing, unreadable, of the wrong format or fails its hash."""


# --- data, caches, checkpoints ---------------------------------------------------------
class SettingsMismatch(AvelError):
    """Features (or a checkpoint) made with other extractor settings."""


class AnnotationError(AvelError):
    """A malformed annotation file (the message names the file and line)."""


class CacheError(AvelError):
    """A feature cache that cannot be read or written."""


class UnstorableVideo(AvelError):
    """A video the cache cannot hold (its id or name); recorded as that video's failure."""

    kind = "unstorable"

    def __init__(self, path, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{shown(path)}: {problem}")


class CacheLocked(CacheError):
    """Another process holds a cache's write lock (one writer per cache)."""


class DataError(AvelError):
    """Labelled data that a task cannot use: a missing or empty split, non-finite features."""


class CheckpointError(AvelError):
    """A checkpoint that cannot be loaded (wrong task, pickled code, bad file)."""


class TrainingDiverged(AvelError):
    """The training loss (or a weight) became NaN or infinite: the run stops at once, naming
    the epoch and the batch, instead of training on (and selecting) garbage."""


class NonFiniteScores(AvelError):
    """A model gave NaN or infinite scores for a video (broken weights, fp16 overflow):
    recorded as that video's failure, never turned into events."""

    kind = "non-finite"
