"""Decoding: segment counts, frame choice by time stamp, audio slicing, odd sources and
every bad input. All media are generated here with PyAV."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pytest
from mediagen import quiet_noise, solid, tone, write_audio_with_cover, write_video

from avel.core.errors import CorruptMedia, MediaNotFound, NoAudioStream, NotAMediaFile, NoVideoStream, TooShort
from avel.core.sampling import frame_sample_times, latest_at_or_before, segment_count
from avel.pipeline.media.decode import DecodeOptions, SegmentReader, decode_audio_file, decode_video

LEVEL = 12  # frame n is painted with R = LEVEL * (n % 20), G = LEVEL * (n // 20): robust to lossy coding


def indexed_color(frame_times: list[float]):
    def color(t: float):
        n = int(np.argmin(np.abs(np.asarray(frame_times) - t)))
        return (LEVEL * (n % 20), LEVEL * (n // 20), 0)

    return color


def frame_index_of(rgb: np.ndarray) -> int:  # rgb [..., 3] of a whole frame
    r, g = rgb[..., 0].mean(), rgb[..., 1].mean()
    return int(round(r / LEVEL)) + 20 * int(round(g / LEVEL))


# -- pure frame sampling ---------------------------------------------------------------
def test_sample_times_equal_ave_index_rule_at_constant_rate():
    for fps in (24, 25, 29.97, 30):
        n_frames = int(10 * fps)
        fi = int(n_frames / 10)
        ts = np.arange(n_frames) / fi  # AVE's rule assumes fi frames a second
        chosen = latest_at_or_before(ts, frame_sample_times(10, 16))
        ave = np.array([[int(t * fi + (i / 16) * fi) for i in range(16)] for t in range(10)])
        np.testing.assert_array_equal(chosen, ave)


def test_latest_at_or_before_brute_force():
    rng = np.random.default_rng(0)
    ts = np.sort(rng.uniform(0.1, 5, 40))
    wanted = rng.uniform(0, 5, 100)
    got = latest_at_or_before(ts, wanted)
    for w, g in zip(wanted, got):
        before = np.nonzero(ts <= w)[0]
        assert g == (before[-1] if len(before) else 0)


def test_segment_count_rules():
    assert segment_count(3.5, None, 1.0) == (3, 3)
    assert segment_count(10.2, 10, 1.0) == (10, 10)
    assert segment_count(12.0, 10, 1.0) == (10, 10)  # truncate
    assert segment_count(9.4, 10, 1.0) == (10, 9)  # repeat the last segment
    with pytest.raises(ValueError, match="shortfall"):
        segment_count(8.5, 10, 1.0)
    with pytest.raises(ValueError, match="shorter than one"):
        segment_count(0.6, None, 1.0)


# -- real decoding ------------------------------------------------------------------------
def test_constant_frame_rate_frames_follow_ave_rule(tmp_path):
    fps = 25
    times = list(np.arange(0, 10, 1 / fps))
    path = write_video(tmp_path / "cfr.mp4", duration_s=10, fps=fps, color=indexed_color(times), audio=tone(440))
    video = decode_video(path, DecodeOptions(segments=10))
    assert video.frames.shape == (10, 16, 224, 224, 3)
    assert video.audio.shape == (10, 16000) and video.audio.dtype == np.float32
    got = np.array([[frame_index_of(video.frames[t, i]) for i in range(16)] for t in range(10)])
    fi = 25
    ave = np.array([[int(t * fi + (i / 16) * fi) for i in range(16)] for t in range(10)])
    np.testing.assert_array_equal(got, ave)


def test_variable_frame_rate_and_start_offset(tmp_path):
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.02, 0.12, 80))
    times = list(np.round(times[times < 4.0] - times[0], 3))
    path = write_video(
        tmp_path / "vfr.mp4",
        frame_times_s=times,
        duration_s=4.0,
        color=indexed_color(times),
        audio=tone(300),
        start_offset_s=0.5,
    )
    reader = SegmentReader(path, DecodeOptions(frames_per_segment=8))
    segments = list(reader)
    expected = latest_at_or_before(np.array(times), frame_sample_times(len(segments), 8))
    got = np.array([[frame_index_of(s.frames[i]) for i in range(8)] for s in segments])
    np.testing.assert_array_equal(got, expected)
    assert len(segments) == int(np.floor(reader.duration_s)) == 3


def test_segment_counts_default_truncate_and_repeat(tmp_path):
    path = write_video(tmp_path / "v.mp4", duration_s=3.5, audio=tone(440))
    assert decode_video(path).num_segments == 3
    assert decode_video(path, DecodeOptions(segments=2)).num_segments == 2
    video = decode_video(path, DecodeOptions(segments=4))  # 0.5 s short: last segment repeated
    assert video.num_segments == 4
    np.testing.assert_array_equal(video.frames[3], video.frames[2])
    np.testing.assert_array_equal(video.audio[3], video.audio[2])
    with pytest.raises(TooShort, match="v.mp4"):
        decode_video(path, DecodeOptions(segments=6))


def test_audio_slices_aligned_and_resampled(tmp_path):
    # a 1 kHz burst during second 3 only, 48 kHz stereo source with unequal channels
    burst = tone(1000, amp=0.5, start_s=3.0, end_s=4.0)
    path = write_video(tmp_path / "burst.mp4", duration_s=6, audio=burst, audio_rate=48000, audio_layout="stereo")
    video = decode_video(path)
    rms = np.sqrt((video.audio**2).mean(axis=1))
    assert np.argmax(rms) == 3
    assert rms[3] > 50 * np.delete(rms, 3).max()
    # mean of the channels (0.5 and 0.25 amplitude) -> 0.375, not libswresample's downmix
    inner = video.audio[3, 2000:14000]
    assert abs(np.abs(inner).max() - 0.375) < 0.02
    spectrum = np.abs(np.fft.rfft(inner))
    assert abs(np.argmax(spectrum) * 16000 / inner.size - 1000) < 5


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stereo_44k_48k_to_16k(tmp_path, rate):
    path = write_video(
        tmp_path / f"s{rate}.mp4", duration_s=2, audio=tone(440, 0.5), audio_rate=rate, audio_layout="stereo"
    )
    x = decode_audio_file(path)
    assert abs(x.shape[0] - 32000) < 1200
    seg = x[4000:20000]
    freq = np.argmax(np.abs(np.fft.rfft(seg))) * 16000 / seg.size
    assert abs(freq - 440) < 2


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("odd.mp4", dict(size=(63, 47), pix_fmt="yuv444p")),
        ("tenbit.mp4", dict(pix_fmt="yuv420p10le")),
        ("gray.mkv", dict(pix_fmt="gray", codec="ffv1")),
        ("mpeg4.mp4", dict(codec="mpeg4")),
    ],
)
def test_odd_sources(tmp_path, name, kwargs):
    path = write_video(tmp_path / name, duration_s=2, color=solid((200, 30, 30)), audio=tone(440), **kwargs)
    video = decode_video(path)
    assert video.frames.shape == (2, 16, 224, 224, 3)
    px = video.frames[0, 0].reshape(-1, 3).mean(axis=0)
    if "gray" in name:
        assert np.allclose(px, 0.299 * 200 + 0.587 * 30 + 0.114 * 30, atol=6)  # luma
    else:
        assert np.allclose(px, (200, 30, 30), atol=8)


def test_rotated_source_is_shown_upright(tmp_path):
    def image(t):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:16, :16] = 255  # a white marker in the top-left corner
        return img

    path = write_video(tmp_path / "rot.mp4", duration_s=2, image=image, rotation=90, audio=tone(440))
    frame = decode_video(path).frames[0, 0].mean(axis=2)  # [224, 224]
    # the display matrix turns the picture 90 degrees counter-clockwise: the marker
    # moves from the top-left to the bottom-left corner
    assert frame[-40:, :40].mean() > 200
    assert frame[:40, :40].mean() < 50


# -- bad input ------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(MediaNotFound, match="nope.mp4: no such file"):
        decode_video(tmp_path / "nope.mp4")


def test_not_a_media_file(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(NotAMediaFile, match="notes.mp4"):
        decode_video(p)


def test_truncated_file(tmp_path):
    path = write_video(tmp_path / "full.mp4", duration_s=10, audio=tone(440), size=(160, 120))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises((CorruptMedia, NotAMediaFile), match="cut.mp4"):
        decode_video(cut)


def test_corrupt_stream(tmp_path):
    path = write_video(tmp_path / "full.mp4", duration_s=10, audio=tone(440), size=(160, 120))
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(0)
    head = len(data) // 10
    data[head:] = rng.integers(0, 256, len(data) - head, dtype=np.uint8).tobytes()
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises((CorruptMedia, NotAMediaFile), match="garbled.mp4"):
        decode_video(bad)


def test_no_video_stream(tmp_path):
    path = write_video(tmp_path / "audio_only.mp4", duration_s=2, audio=tone(440), video=False)
    with pytest.raises(NoVideoStream, match="audio_only.mp4: no video stream"):
        decode_video(path)


def test_no_audio_stream_error_or_silence(tmp_path):
    path = write_video(tmp_path / "silent.mp4", duration_s=2, audio=None)
    with pytest.raises(NoAudioStream, match="silent.mp4: no audio stream"):
        decode_video(path)
    video = decode_video(path, DecodeOptions(on_missing_audio="silence"))
    assert video.num_segments == 2 and not video.has_audio
    assert not video.audio.any()


def test_shorter_than_one_second(tmp_path):
    path = write_video(tmp_path / "blip.mp4", duration_s=0.5, audio=quiet_noise())
    with pytest.raises(TooShort, match="blip.mp4"):
        decode_video(path)


# -- hostile inputs (issue #10) -----------------------------------------------------------------
def test_fifo_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO for reading waits for a writer forever: refuse anything not a regular file."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_raised(lambda: decode_video(fifo))), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=20)
        pytest.fail("decoding a FIFO waited for a writer")
    assert isinstance(outcome[0], NotAMediaFile) and "pipe.mp4: is a FIFO, not a regular file" in str(outcome[0])


def _raised(fn):
    try:
        fn()
    except Exception as e:
        return e
    return None


def test_matroska_whose_audio_outlasts_its_video_is_whole(tmp_path):
    """Matroska declares no per-stream duration in its header; the container's is the longest
    stream's. Judged per stream, audio 2.5 s longer than the video is not truncation."""
    for name in ("long_audio.mkv", "long_audio.mp4"):
        path = write_video(tmp_path / name, duration_s=3, audio=tone(440), audio_duration_s=5.5)
        video = decode_video(path)
        assert video.num_segments == 3 and abs(video.duration_s - 3) < 0.1
        assert np.abs(video.audio[2]).max() > 0.3  # the audio is there, sliced with the video's seconds
    cut = tmp_path / "cut.mkv"  # a Matroska file that really is cut short still is corrupt
    data = open(write_video(tmp_path / "whole.mkv", duration_s=10, audio=tone(440), size=(160, 120)), "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMedia, match="cut.mkv: truncated or corrupt"):
        decode_video(cut)


@pytest.mark.parametrize("name", ["song.mp3", "song.m4a"])
def test_audio_file_with_cover_art_says_what_it_is(tmp_path, name):
    """An mp3 or m4a with cover art has a one-frame 'video' stream (an attached picture)."""
    path = write_audio_with_cover(tmp_path / name, duration_s=3)
    with pytest.raises(NoVideoStream, match=f"{name}: no video stream, only a still image"):
        decode_video(path)
    assert abs(decode_audio_file(path).shape[0] - 48000) < 2000  # its audio is still an audio query's


def test_memory_is_bounded_whatever_the_frame_rate(tmp_path, one_thread):
    """Three frames in a minute (a declared rate of 0.05 fps) make 90 one-second segments of
    the same pictures. Extraction holds a batch of segments at a time, never the video."""
    from avel.core.config import FeatureSettings
    from avel.pipeline.cache.store import FeatureCache
    from avel.pipeline.extract.features import FeatureExtractor
    from avel.pipeline.extract.local import Job, run_extraction
    from avel.pipeline.extract.options import ExtractOptions

    path = write_video(tmp_path / "slow.mp4", frame_times_s=[0.0, 30.0, 60.0], duration_s=60.5, audio=tone(440))
    settings = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2, frame_size=32)
    extractor = FeatureExtractor(settings, device="cpu", batch_size=4)  # 2 segments a batch
    largest = []
    visual_features = extractor.visual_features
    extractor.visual_features = lambda frames: (
        largest.append(frames.shape[0] * frames.shape[1]) or visual_features(frames)
    )
    tracemalloc.start()
    try:
        summary = run_extraction([Job("slow", path)], tmp_path / "cache", extractor, ExtractOptions(progress=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.done == 1, summary
    assert FeatureCache(tmp_path / "cache").entries["slow"].num_segments == 90  # the last frame lasts 30 s
    assert max(largest) <= 4  # frames per call: one batch, not the video's 180
    decoded = 90 * (2 * 32 * 32 * 3 + 16000 * 4)  # the video's segments, frames and audio: 6.3 MB
    assert peak < decoded / 4, f"peak traced memory {peak / 2**20:.2f} MiB"


def test_chosen_frames_are_pyavs_own_conversion(tmp_path):
    """One swscale context for all frames, one decoding thread: the frames are bit for bit
    those of `VideoFrame.to_ndarray(format="rgb24", width=224, height=224)` (a context per
    frame) of the frames chosen by the AVE rule, and the 16-kHz audio is the whole track's."""
    import av

    path = write_video(
        tmp_path / "v.mp4",
        duration_s=3,
        fps=30,
        size=(160, 120),
        audio=tone(440),
        audio_rate=44100,
        audio_layout="stereo",
        color=lambda t: (int(80 * t) % 256, 40, 255 - int(60 * t)),
    )
    with av.open(path) as container:
        frames = list(container.decode(video=0))
    times = np.array([f.time for f in frames]) - frames[0].time
    chosen = latest_at_or_before(times, frame_sample_times(3, 16))  # [3, 16]
    want = np.stack([[frames[i].to_ndarray(format="rgb24", width=224, height=224) for i in row] for row in chosen])
    for threads in (0, 1):
        video = decode_video(path, DecodeOptions(threads=threads))
        np.testing.assert_array_equal(video.frames, want)
        np.testing.assert_array_equal(video.audio.reshape(-1), decode_audio_file(path)[: 3 * 16000])


# -- names FFmpeg would read as URLs (issue #23) --------------------------------------------------------------
def _colored(tmp_path, name: str, rgb) -> str:
    """A video of one color under `name` (written under a plain name: the writer would read it as a URL too)."""
    plain = write_video(
        tmp_path / f"plain-{len(os.listdir(tmp_path))}.mp4", duration_s=2, color=solid(rgb), audio=tone(440)
    )
    os.rename(plain, tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("name", ["2024-05-01T12:30:00.mp4", "file:blue.mp4", "http:x.mp4"])
def test_names_with_a_colon_are_files_not_urls(tmp_path, monkeypatch, name):
    """FFmpeg reads whatever comes before a colon in a relative name as a protocol."""
    _colored(tmp_path, "blue.mp4", (30, 30, 200))  # the decoy `file:blue.mp4` would be read as
    _colored(tmp_path, "x.mp4", (30, 30, 200))
    path = _colored(tmp_path, name, (200, 30, 30))
    monkeypatch.chdir(tmp_path)
    for p in (name, path):  # as given on a command line in its folder, and absolute
        video = decode_video(p, DecodeOptions(frames_per_segment=2, frame_size=32))
        assert np.allclose(video.frames[0, 0].reshape(-1, 3).mean(axis=0), (200, 30, 30), atol=8), name


def test_pipe_name_does_not_read_stdin(tmp_path):
    """`pipe:0.mp4` is a file: decoding it must not wait on standard input (left open, never written)."""
    import subprocess
    import sys

    _colored(tmp_path, "pipe:0.mp4", (200, 30, 30))
    code = (
        "import sys; from avel.pipeline.media.decode import decode_video, DecodeOptions; "
        "v = decode_video(sys.argv[1], DecodeOptions(frames_per_segment=2, frame_size=32)); "
        "print(v.num_segments, int(v.frames[0, 0, ..., 0].mean()))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, "pipe:0.mp4"],
            stdin=subprocess.PIPE,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("decoding pipe:0.mp4 waited on standard input")
    assert out.returncode == 0, out.stderr[-2000:]
    segments, red = out.stdout.split()
    assert segments == "2" and abs(int(red) - 200) < 8
