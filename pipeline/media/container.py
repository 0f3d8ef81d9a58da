"""Opening media files for the decoder: a path is always a file (never a URL), the video
stream (not a cover picture), each stream's declared duration (a length or an end time, by
format), the frames of a stream less the packets a decoder may skip, truncation and time-
stamp discontinuity checks, and `probe` (open, streams, duration; nothing decoded), so a
bad file costs milliseconds before any model is built."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av

from ...core.errors import CorruptMedia, MediaNotFound, NoAudioStream, NotAMediaFile, NoVideoStream

# A stream that decodes this much shorter than it declares is truncated or corrupt.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.1
# A video time stamp that goes back by more than this many frames is a discontinuity (the
# time line restarts: MPEG-TS files joined with `cat`); so is one that jumps ahead by more
# than that and at least DISCONTINUITY_AHEAD_S in a format that allows discontinuities
# (FFmpeg's AVFMT_TS_DISCONT: MPEG-TS, MPEG-PS, Ogg); elsewhere a gap is a frame held on screen.
DISCONTINUITY_FRAMES = 4
DISCONTINUITY_AHEAD_S = 1.0
TS_DISCONT = int(av.format.Flags.ts_discont.value)


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_media(path: str) -> av.container.InputContainer:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaNotFound(path, "no such file") from None
    except OSError as e:
        raise NotAMediaFile(path, f"cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise NotAMediaFile(path, "is a directory, not a media file")
    for test, what in _NOT_REGULAR:
        if test(mode):  # opening a FIFO for reading would wait for a writer forever
            raise NotAMediaFile(path, f"is {what}, not a regular file")
    try:  # a file, never a URL: FFmpeg reads what comes before a colon as a protocol
        return av.open(file_url(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise NotAMediaFile(path, f"not a media file PyAV can open ({reason_of(e)})") from None


def file_url(path: str) -> str:
    """The path as FFmpeg's `file:` URL of its absolute path: a name such as
    `2024-05-01T12:30:00.mp4`, `file:blue.mp4` or `pipe:0.mp4` is that file, not a protocol
    (the file protocol is FFmpeg's own for plain paths: reading and seeking are unchanged)."""
    return "file:" + os.path.abspath(path)


def reason_of(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


_STILL = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image


def video_stream(container, path: str):
    """The first video stream that is a moving picture; NoVideoStream when there is none,
    naming cover art (an audio file's attached picture) for what it is."""
    videos = container.streams.video
    moving = [s for s in videos if not (s.disposition & _STILL)]
    if moving:
        return moving[0]
    if videos:
        raise NoVideoStream(path, "no video stream, only a still image (cover art: an audio file?)")
    raise NoVideoStream(path, "no video stream")


def declared_s(stream) -> float | None:
    """The stream's own declared duration: its DURATION tag (Matroska's muxer writes one per
    track: the time its last frame ends), else its header's (mp4: the track's length; ASF:
    the time the file ends; FFmpeg fills in the container's where a format declares none),
    else None. A length or an end time, by format: see `short_of`."""
    for key, value in stream.metadata.items():
        if key.upper().startswith("DURATION"):
            try:
                h, m, s = value.split(":")
                return int(h) * 3600 + int(m) * 60 + float(s)
            except ValueError:
                break
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def decoded_frames(container, stream, on_empty: Callable[[av.Packet], None] | None = None) -> Iterator[av.Frame]:
    """The frames of `stream`, as `container.decode(stream)` gives them, less the packets a
    decoder skips without losing content, as browsers do: an empty packet (Theora marks a
    repeated frame so; FFmpeg refuses one with EINVAL) is the previous frame staying on
    screen; `on_empty` is told of each one that has a time stamp."""
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's own flush packet at the end is empty too
            if on_empty is not None and packet.pts is not None:
                on_empty(packet)
            continue
        yield from packet.decode()
    flush = av.Packet()
    flush.stream, flush.time_base = stream, stream.time_base  # the decoded frames' time base
    yield from flush.decode()


def short_of(decoded_s: float, declared_s: float | None, start_s: float | None = 0.0) -> bool:
    """Whether a stream that decoded `decoded_s` seconds from its first time stamp `start_s`
    falls short of its declared duration, a length or an end time: it is whole when either
    its length or its end reaches the declared duration (within the tolerance)."""
    if declared_s is None:
        return False
    reach = max(decoded_s, (start_s or 0.0) + decoded_s)
    return reach < declared_s - max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared_s)


def discontinuity(
    path: str, before_s: float, at_s: float, frame_s: float, ahead_too: bool, stamps: tuple[float, float]
) -> CorruptMedia | None:
    """The error for a jump of the video's time line from `before_s` to `at_s` (seconds from
    the first frame), or None when the step is an ordinary one. Such a file is reported, not
    stitched: its audio is decoded by sample count, and where its second part's sound begins
    relative to its picture is not known to the sample."""
    limit = DISCONTINUITY_FRAMES * frame_s
    jump = at_s - before_s
    if jump >= -limit and not (ahead_too and jump > max(limit, DISCONTINUITY_AHEAD_S)):
        return None
    way = "back" if jump < 0 else "ahead"
    return CorruptMedia(
        path,
        f"the video's time stamps jump {way} by {abs(jump):.2f} s after {before_s:.2f} s of "
        f"video (from {stamps[0]:.2f} s to {stamps[1]:.2f} s): files joined end to end? "
        f"avel reads one time line; join them with FFmpeg's concat demuxer instead",
    )


def truncated(path: str, what: str, decoded_s: float, start_s: float | None, declared_s: float) -> CorruptMedia:
    since = f" from {start_s:.2f} s" if start_s else ""
    return CorruptMedia(
        path, f"truncated or corrupt: decoded {decoded_s:.2f} s of {what}{since}, {declared_s:.2f} s declared"
    )


# -- the pieces: frame times, RGB frames, 16-kHz audio ---------------------------------------------


def no_audio(path: str) -> NoAudioStream:
    return NoAudioStream(path, "no audio stream (use --on-missing-audio silence to extract with silent audio)")


@dataclass(frozen=True)
class Probe:
    """What opening a file tells without decoding it: its container's declared duration
    (None when it declares none) and whether it has an audio stream."""

    path: str
    duration_s: float | None
    has_audio: bool


def probe(path: str | os.PathLike, *, require_audio: bool = True) -> Probe:
    """Open `path` and look at its streams, decoding nothing (milliseconds): the MediaError
    that decoding it would raise first (not found, not a media file, no moving picture, no
    audio stream when `require_audio`), else its Probe. A file that passes can still fail
    later (corrupt data, too short): the probe is the check before any model is built."""
    path = os.fspath(path)
    container = open_media(path)
    try:
        video_stream(container, path)
        has_audio = bool(container.streams.audio)
        if require_audio and not has_audio:
            raise no_audio(path)
        duration = container.duration / av.time_base if container.duration and container.duration > 0 else None
        return Probe(path, duration, has_audio)
    except av.error.FFmpegError as e:
        raise CorruptMedia(path, f"corrupt stream ({reason_of(e)})") from None
    finally:
        container.close()
