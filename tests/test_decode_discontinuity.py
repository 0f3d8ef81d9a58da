"""Time lines that restart or jump (issue 27, item 7): MPEG-TS files joined with `cat` used to
lose their second half without a word (the restarted time stamps were skipped as
non-increasing). The decoder reports such a file in one line naming it and the time where
the jump happens; files whose time line is whole decode as before. The media are generated
here with PyAV, their colours and times chosen by hand."""

from __future__ import annotations

import numpy as np
import pytest
from mediagen import solid, tone, write_video

from avel.core.errors import CorruptMedia
from avel.pipeline.media.decode import DecodeOptions, decode_video

RED, BLUE = (200, 30, 30), (30, 30, 200)
OPTIONS = DecodeOptions(frames_per_segment=2, frame_size=32)


def colours(video) -> np.ndarray:
    """[T, 3]: the mean RGB of each segment's frames."""
    return video.frames.reshape(video.num_segments, -1, 3).mean(axis=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    red = write_video(root / "red.ts", duration_s=3, fps=10, color=solid(RED), audio=tone(440, 0.3))
    blue = write_video(root / "blue.ts", duration_s=3, fps=10, color=solid(BLUE), audio=tone(300, 0.3))
    joined = root / "joined.ts"
    joined.write_bytes((root / "red.ts").read_bytes() + (root / "blue.ts").read_bytes())  # `cat red.ts blue.ts`
    return {"root": root, "red": red, "blue": blue, "joined": str(joined)}


def test_each_part_alone_is_three_seconds_of_its_colour(clips):
    for name, rgb in (("red", RED), ("blue", BLUE)):
        video = decode_video(clips[name], OPTIONS)
        assert video.num_segments == 3 and video.has_audio
        np.testing.assert_allclose(colours(video), [rgb] * 3, atol=4)


def test_ts_files_joined_end_to_end_are_reported_in_one_line(clips):
    """Both parts start at the same time stamp: the time line goes back 3 s after 3 s of video."""
    with pytest.raises(CorruptMedia) as e:
        decode_video(clips["joined"], OPTIONS)
    message = str(e.value)
    assert message.startswith(f"{clips['joined']}: the video's time stamps jump back by 2.90 s after 2.90 s of video")
    assert "\n" not in message and e.value.kind == "corrupt"
    # a forced count reaching into the second part meets the jump too (AVE's 10 segments)
    with pytest.raises(CorruptMedia, match="jump back"):
        decode_video(clips["joined"], DecodeOptions(frames_per_segment=2, frame_size=32, segments=5))


def test_a_jump_ahead_is_a_discontinuity_in_mpeg_ts_and_a_held_frame_in_mp4(clips):
    """Frames at 0-2.9 s, then from 6 s: MPEG-TS may carry discontinuities (FFmpeg's
    AVFMT_TS_DISCONT), so its jump is reported; an mp4's gap is the last frame held on
    screen, as before (variable frame rate)."""
    times = [i / 10 for i in range(30)] + [6 + i / 10 for i in range(20)]
    colour = lambda t: RED if t < 3 else BLUE  # noqa: E731
    ts = write_video(clips["root"] / "gap.ts", frame_times_s=times, color=colour, duration_s=8, audio=tone(440, 0.3))
    with pytest.raises(CorruptMedia, match=r"jump ahead by 3\.10 s after 2\.90 s of video"):
        decode_video(ts, OPTIONS)
    mp4 = write_video(clips["root"] / "gap.mp4", frame_times_s=times, color=colour, duration_s=8, audio=tone(440, 0.3))
    video = decode_video(mp4, OPTIONS)
    assert video.num_segments == 8
    np.testing.assert_allclose(colours(video), [RED] * 6 + [BLUE] * 2, atol=4)  # red held from 2.9 s to 6 s


def test_a_step_back_of_a_frame_is_still_an_earlier_frame_kept(clips):
    """A second part that starts a frame before the first one ends (red 0-2.9 s, then blue from
    2.8 s: back 0.1 s) is not a restart: the frames that do not move time on are skipped, as
    before, and the blue ones from 3 s on follow."""
    blue = write_video(
        clips["root"] / "overlap.ts",
        duration_s=3.2,
        fps=10,
        color=solid(BLUE),
        start_offset_s=2.8,
        audio=tone(300, 0.3),
    )
    joined = clips["root"] / "overlapping.ts"
    joined.write_bytes((clips["root"] / "red.ts").read_bytes() + (clips["root"] / "overlap.ts").read_bytes())
    video = decode_video(joined, OPTIONS)
    assert video.num_segments == 6 and blue
    np.testing.assert_allclose(colours(video), [RED] * 3 + [BLUE] * 3, atol=4)
