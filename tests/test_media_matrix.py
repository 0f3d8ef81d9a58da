"""What browsers play, decoded right (issue #23): containers x codecs x time bases, with the
cases hostile testing found (Matroska's millisecond time stamps, empty packets, start offsets,
audio that starts before or after the video). Every file is generated here with PyAV: tiny
frames, a few seconds, so the whole matrix runs in seconds."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from mediagen import write_video

from avel.core.errors import TooShort
from avel.core.sampling import frame_sample_times, latest_at_or_before
from avel.pipeline.media.decode import DecodeOptions, SegmentReader, decode_video

K = 4  # frames per segment
SMALL = dict(frames_per_segment=K, frame_size=32)


def encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except av.codec.codec.UnknownCodecError:
        return False


def second_color(i: int, t: float) -> tuple[int, int, int]:
    """Frames of second s (of the video's own time): R and G spell s, robust to lossy coding."""
    s = int(np.floor(t + 1e-9))
    return (20 + 20 * (s % 10), 20 + 20 * (s // 10), 128)


def second_of(rgb: np.ndarray) -> int:
    r, g = rgb[..., 0].mean(), rgb[..., 1].mean()
    return int(round((r - 20) / 20)) + 10 * int(round((g - 20) / 20))


def burst(start_s: float, end_s: float, freq_hz: float = 1000.0):
    """A tone during [start_s, end_s) of the file's clock over a quiet hum."""

    def f(t: np.ndarray) -> np.ndarray:
        on = (t >= start_s) & (t < end_s)
        return 0.5 * np.sin(2 * np.pi * freq_hz * t) * on + 0.01 * np.sin(2 * np.pi * 220 * t) * ~on

    return f


def write_media(
    path,
    *,
    fmt: str | None = None,
    vcodec: str = "libx264",
    acodec: str | None = "aac",
    fps: float | Fraction = 24,
    duration_s: float = 3.0,
    size: tuple[int, int] = (32, 32),
    video_start_s: float = 0.0,
    audio_start_s: float = 0.0,
    audio=None,
    audio_rate: int = 48000,
    audio_duration_s: float | None = None,
    color=second_color,
    empty_every: int | None = None,
) -> str:
    """A video of round(duration_s * fps) frames (frame i at video_start_s + i / fps, painted
    color(i, i / fps)), and audio from audio_start_s (audio(t) of the file's clock t). With
    `empty_every`, every so many frames is an empty packet (a repeated frame) instead."""
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    tb = 1 / rate
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast"}
        as_ = None
        channels = 2 if acodec == "vorbis" else 1  # FFmpeg's own Vorbis encoder wants stereo
        if acodec:
            as_ = out.add_stream(acodec, rate=audio_rate, layout="stereo" if channels == 2 else "mono")
            as_.options = {"strict": "experimental"}  # FFmpeg's own Vorbis encoder
            as_.bit_rate = 64000  # wmav2 wants one
        start = int(round(video_start_s * rate))
        for i in range(int(round(duration_s * rate))):
            if empty_every and i % empty_every == empty_every - 1:
                p = av.Packet(b"")
                p.stream, p.time_base = vs, tb
                p.pts = p.dts = start + i
                p.duration = 1
                out.mux(p)
                continue
            img = np.full((size[1], size[0], 3), color(i, float(i * tb)), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = start + i, tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if as_ is not None:
            n = int(round((duration_s if audio_duration_s is None else audio_duration_s) * audio_rate))
            first = int(round(audio_start_s * audio_rate))
            t = (first + np.arange(n)) / audio_rate
            x = (audio or burst(-1, -1))(t).astype(np.float32)
            step = as_.codec_context.frame_size or 1024
            for i in range(0, n, step):
                data = np.ascontiguousarray(np.tile(x[None, i : i + step], (channels, 1)))
                frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=as_.layout.name)
                frame.sample_rate, frame.pts, frame.time_base = audio_rate, first + i, Fraction(1, audio_rate)
                out.mux(as_.encode(frame))
            out.mux(as_.encode(None))
    return str(path)


def seconds_shown(frames: np.ndarray) -> np.ndarray:
    """[T, K, S, S, 3] -> [T, K] the second each chosen frame was painted for."""
    return np.array([[second_of(f) for f in seg] for seg in frames])


def assert_seconds_right(frames: np.ndarray, n: int) -> None:
    # the frame on screen at t + i/K, i >= 1, belongs to second t whatever the rounding of
    # time stamps (at t + 0 it may be the last frame of second t - 1, e.g. 29.97 fps)
    got = seconds_shown(frames)[:, 1:]
    np.testing.assert_array_equal(got, np.repeat(np.arange(n)[:, None], K - 1, axis=1))


# -- 1. Matroska and WebM keep their last second ---------------------------------------------------------
RATES = [Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30, 60]


@pytest.mark.parametrize("fps", RATES, ids=lambda r: f"{float(r):g}fps")
@pytest.mark.parametrize("seconds", [1, 3, 10])
@pytest.mark.parametrize("container", ["mkv", "webm"])
def test_millisecond_time_stamps_keep_the_last_second(tmp_path, container, seconds, fps):
    codecs = dict(vcodec="libx264", acodec="aac") if container == "mkv" else dict(vcodec="libvpx", acodec="libopus")
    path = write_media(
        tmp_path / f"clip.{container}", fps=fps, duration_s=seconds, audio_duration_s=min(seconds, 2), **codecs
    )
    with av.open(path) as c:
        assert c.streams.video[0].time_base == Fraction(1, 1000)  # the case at hand: whole milliseconds
    reader = SegmentReader(path, DecodeOptions(**SMALL))
    segments = list(reader)
    assert reader.num_segments == len(segments) == seconds, reader.duration_s
    assert_seconds_right(np.stack([s.frames for s in segments]), seconds)


@pytest.mark.parametrize("fps", [24, Fraction(30000, 1001)], ids=lambda r: f"{float(r):g}fps")
def test_thirty_second_matroska_gives_thirty_segments(tmp_path, fps):
    path = write_media(tmp_path / "long.mkv", fps=fps, duration_s=30, size=(16, 16), audio_duration_s=1)
    video = decode_video(path, DecodeOptions(frames_per_segment=2, frame_size=16))
    assert video.num_segments == 30, video.duration_s
    assert second_of(video.frames[29, 1]) == 29


def test_forced_count_takes_the_real_tenth_second_of_a_webm(tmp_path):
    """A 10-s WebM measures 9.999 s: with --segments 10 its tenth second is real content,
    not a repeat of the ninth."""
    path = write_media(
        tmp_path / "ave.webm", vcodec="libvpx", acodec="libopus", fps=24, duration_s=10, audio=burst(9.0, 10.0)
    )
    video = decode_video(path, DecodeOptions(segments=10, **SMALL))
    assert video.num_segments == 10
    assert_seconds_right(video.frames, 10)
    rms = np.sqrt((video.audio**2).mean(axis=1))
    assert np.argmax(rms) == 9 and rms[9] > 10 * rms[8]
    short = write_media(tmp_path / "short.webm", vcodec="libvpx", acodec="libopus", fps=24, duration_s=9)
    with pytest.raises(TooShort, match="short.webm"):  # 1 s short, with no shortfall allowed: refused
        decode_video(short, DecodeOptions(segments=10, max_shortfall_s=0.0, **SMALL))
    padded = decode_video(short, DecodeOptions(segments=10, **SMALL))  # the shortfall tolerance still pads
    np.testing.assert_array_equal(padded.frames[9], padded.frames[8])


# -- 2. empty packets (a repeated frame) are not corruption --------------------------------------------
def frame_color(i: int, t: float) -> tuple[int, int, int]:
    return (10 + 10 * (i % 24), 10 + 10 * (i // 24), 128)


def frame_of(rgb: np.ndarray) -> int:
    r, g = rgb[..., 0].mean(), rgb[..., 1].mean()
    return int(round((r - 10) / 10)) + 24 * int(round((g - 10) / 10))


@pytest.mark.parametrize("fmt,vcodec", [("nut", "libvpx"), ("ogg", "libtheora")])
def test_empty_packets_are_repeated_frames(tmp_path, fmt, vcodec):
    if not encoder(vcodec):
        pytest.skip(f"this PyAV build has no {vcodec} encoder")
    fps, n = 24, 72  # every third packet empty, the last one too
    path = write_media(
        tmp_path / f"repeat.{fmt}",
        fmt=fmt,
        vcodec=vcodec,
        fps=fps,
        duration_s=n / fps,
        color=frame_color,
        empty_every=3,
    )
    with av.open(path) as c:
        sizes = [p.size for p in c.demux(video=0) if p.pts is not None]
    if fmt == "ogg" and 0 not in sizes:
        pytest.skip("this FFmpeg's Ogg muxer keeps no empty Theora packet")
    assert sizes.count(0) == n // 3  # the file holds the empty packets the test is about
    reader = SegmentReader(path, DecodeOptions(frames_per_segment=8, frame_size=32))
    segments = list(reader)
    assert len(segments) == 3  # the last frame, repeated by the last (empty) packet, lasts to 3.0 s
    shown = np.array([[frame_of(f) for f in s.frames] for s in segments])
    real = np.array([i for i in range(n) if i % 3 != 2])  # the frames decoded: one per non-empty packet
    expected = real[latest_at_or_before(real / fps, frame_sample_times(3, 8))]
    np.testing.assert_array_equal(shown, expected)


# -- 4. start offsets: judged from each stream's start -----------------------------------------------------
@pytest.mark.parametrize("name", ["offset.mkv", "offset.mp4", "offset.webm"])
def test_start_offset_is_accepted_in_every_container(tmp_path, name):
    codecs = dict(vcodec="libvpx", acodec="libopus") if name.endswith("webm") else {}
    path = write_media(tmp_path / name, video_start_s=2.0, audio_start_s=2.0, duration_s=3, **codecs)
    video = decode_video(path, DecodeOptions(**SMALL))
    assert video.num_segments == 3
    assert_seconds_right(video.frames, 3)
    # video-only, and the mediagen layout (video from 2 s, audio from 0 s)
    silent = (
        write_media(tmp_path / f"silent_{name}", acodec=None, video_start_s=2.0, duration_s=3, **codecs)
        if not name.endswith("webm")
        else None
    )
    if silent:
        assert decode_video(silent, DecodeOptions(on_missing_audio="silence", **SMALL)).num_segments == 3
        mixed = write_video(
            tmp_path / f"mixed_{name}",
            duration_s=3,
            fps=24,
            audio=lambda t: 0.1 * np.sin(t),
            start_offset_s=2.0,
            size=(32, 32),
        )
        assert decode_video(mixed, DecodeOptions(**SMALL)).num_segments == 3


def test_matroska_cut_short_with_a_start_offset_still_is_corrupt(tmp_path):
    from avel.core.errors import CorruptMedia

    whole = write_media(
        tmp_path / "whole.mkv",
        video_start_s=2.0,
        audio_start_s=2.0,
        duration_s=10,
        size=(96, 64),
        color=lambda i, t: (i * 37 % 256, i * 91 % 256, i * 13 % 256),
    )
    data = (tmp_path / "whole.mkv").read_bytes()
    assert whole.endswith("whole.mkv")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMedia, match="cut.mkv: truncated or corrupt"):
        decode_video(cut, DecodeOptions(**SMALL))


# -- 5. audio on the video's time line -----------------------------------------------------------------
@pytest.mark.parametrize(
    "name,vcodec,acodec", [("a.mp4", "libx264", "aac"), ("a.mkv", "libx264", "aac"), ("a.asf", "wmv2", "wmav2")]
)
@pytest.mark.parametrize("video_start_s,audio_start_s", [(0.0, 0.687), (0.7, 0.0), (1.0, 1.5)])
def test_audio_is_aligned_to_the_video_by_start_times(tmp_path, name, vcodec, acodec, video_start_s, audio_start_s):
    """A tone during the video's second 2 (file clock video_start + 2 .. + 3) is segment 2's
    audio, whichever stream starts first; audio that starts late is preceded by silence."""
    v0 = video_start_s
    path = write_media(
        tmp_path / name,
        vcodec=vcodec,
        acodec=acodec,
        video_start_s=v0,
        audio_start_s=audio_start_s,
        duration_s=5,
        audio_duration_s=5,
        audio=burst(v0 + 2, v0 + 3),
        audio_rate=44100,
    )
    video = decode_video(path, DecodeOptions(**SMALL))
    assert video.num_segments == 5
    energy = (video.audio.astype(np.float64) ** 2).sum(axis=1)
    assert energy[2] > 0.95 * energy.sum(), energy / energy.sum()
    late_s = audio_start_s - v0
    if late_s > 0:  # silence until the audio starts (less the codec's own lead-in, a few ms)
        lead = int((late_s - 0.05) * 16000)
        assert not video.audio[0, :lead].any()
        assert np.abs(video.audio[0, int((late_s + 0.05) * 16000) :]).max() > 0.005  # the hum, once it starts


# -- 6. the matrix ---------------------------------------------------------------------------------------------
MATRIX = [  # (extension, muxer, video codec, audio codec)
    ("mp4", None, "libx264", "aac"),
    ("mp4", None, "mpeg4", "aac"),
    ("mkv", None, "libx264", "aac"),
    ("mkv", None, "libvpx-vp9", "libopus"),
    ("mkv", None, "mpeg4", "libmp3lame"),
    ("webm", None, "libvpx", "libopus"),
    ("webm", None, "libvpx-vp9", "vorbis"),
    ("ogv", "ogg", "libtheora", "vorbis"),
    ("ogv", "ogg", "libvpx", "vorbis"),
    ("ogv", "ogg", "libvpx", "libopus"),
    ("avi", None, "mpeg4", "libmp3lame"),
    ("avi", None, "mpeg4", "mp2"),
    ("ts", None, "libx264", "aac"),
    ("ts", None, "mpeg2video", "mp2"),
    ("asf", None, "wmv2", "wmav2"),
]


@pytest.mark.parametrize("fps", [24, Fraction(30000, 1001)], ids=lambda r: f"{float(r):g}fps")
@pytest.mark.parametrize("ext,fmt,vcodec,acodec", MATRIX, ids=[f"{m[0]}-{m[2]}-{m[3]}" for m in MATRIX])
def test_matrix(tmp_path, ext, fmt, vcodec, acodec, fps):
    for codec in (vcodec, acodec):
        if not encoder(codec):
            pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_media(
        tmp_path / f"m.{ext}",
        fmt=fmt,
        vcodec=vcodec,
        acodec=acodec,
        fps=fps,
        duration_s=3,
        audio=burst(1.0, 2.0),
        audio_rate=44100 if acodec in ("libmp3lame", "mp2", "vorbis") else 48000,
    )
    video = decode_video(path, DecodeOptions(**SMALL))
    assert video.num_segments == 3, video.duration_s
    assert_seconds_right(video.frames, 3)
    rms = np.sqrt((video.audio.astype(np.float64) ** 2).mean(axis=1))
    assert np.argmax(rms) == 1 and rms[1] > 5 * max(rms[0], rms[2]), rms
    forced = decode_video(path, DecodeOptions(segments=4, **SMALL))  # one second short: the last one repeated
    assert forced.num_segments == 4
    np.testing.assert_array_equal(forced.frames[3], forced.frames[2])
