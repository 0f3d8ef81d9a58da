"""--convert device (pipeline/extract/yuv.py) against swscale's own path (the decoder's
`RgbConverter`), the reference: the same generated frame converted both ways, for BT.601
and BT.709, limited and full range; and whole videos extracted both ways.

Tolerances (stated in docs/features.md, measured by benchmarks/convert.py on AVE-like video):
a picture shrunk to 224 (AVE's 640 x 360 and most video) within PIXEL_MEAN levels on average
and PIXEL_MAX at worst of swscale's (its 14-bit fixed-point filters round differently; fine
grain is where they differ most); a picture enlarged to 224 within UPSCALE_MEAN / UPSCALE_MAX
(swscale's enlarged chroma sits about a level higher); pool5 features of a video with
cosine >= FEATURE_COSINE to swscale's."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import VideoReformatter
from mediagen import tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import ConfigError
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.extract.features import FeatureExtractor
from avel.pipeline.extract.local import Job, run_extraction
from avel.pipeline.extract.options import ExtractOptions
from avel.pipeline.extract.stream import FeatureStream
from avel.pipeline.extract.yuv import planes_to_rgb
from avel.pipeline.media.decode import PLANE_BYTES, BatchReader, DecodeOptions, PlaneConverter, RgbConverter

PIXEL_MEAN, PIXEL_MAX = 0.75, 16  # levels of 255
UPSCALE_MEAN, UPSCALE_MAX = 1.5, 6
FEATURE_COSINE = 0.999
MATRICES = {"bt601": ("ITU601", 5), "bt709": ("ITU709", 1)}  # swscale's name, AVColorSpace
RANGES = {"limited": ("MPEG", 1), "full": ("JPEG", 2)}  # swscale's name, AVColorRange


def picture(width: int = 640, height: int = 360, seed: int = 0) -> np.ndarray:
    """A colourful picture with edges and some grain (what the resize and the chroma see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / (17 + 6 * c) + c) * np.cos(yy / (13 + 4 * c) - c) for c in range(3)], -1)
    img[(xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (height / 4) ** 2] = (230, 40, 60)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def yuv_frame(matrix: str, range_: str, pix_fmt: str = "yuv420p", **size) -> av.VideoFrame:
    """The picture as a `pix_fmt` frame, encoded with and tagged as `matrix` / `range_`."""
    name, code = MATRICES[matrix]
    rname, rcode = RANGES[range_]
    rgb = av.VideoFrame.from_ndarray(picture(**size), format="rgb24")
    frame = VideoReformatter().reformat(rgb, format=pix_fmt, dst_colorspace=name, dst_color_range=rname)
    frame.colorspace, frame.color_range = code, rcode
    return frame


def device_rgb(frame: av.VideoFrame, size: int = 224) -> np.ndarray:
    convert = PlaneConverter(threads=1)
    planes = convert(frame)
    return planes_to_rgb(torch.from_numpy(planes)[None], convert.format, size)[0].numpy()


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("range_", list(RANGES))
def test_planes_to_rgb_matches_swscale(matrix, range_):
    frame = yuv_frame(matrix, range_)
    want = RgbConverter(224, threads=1)(frame)
    got = device_rgb(frame)
    d = difference(got, want)
    assert got.shape == want.shape == (224, 224, 3) and got.dtype == np.uint8
    assert d.mean() <= PIXEL_MEAN and d.max() <= PIXEL_MAX, (d.mean(), d.max())


@pytest.mark.parametrize("matrix, other", [("bt601", "bt709"), ("bt709", "bt601")])
def test_the_frames_matrix_is_the_one_used(matrix, other):
    """Read with the other matrix, the same planes land far outside the tolerance."""
    frame = yuv_frame(matrix, "limited")
    frame.colorspace = MATRICES[other][1]
    assert (
        difference(device_rgb(frame), RgbConverter(224, threads=1)(yuv_frame(matrix, "limited"))).mean()
        > 2 * PIXEL_MEAN
    )


def test_the_frames_range_is_the_one_used():
    frame = yuv_frame("bt601", "full")
    frame.color_range = RANGES["limited"][1]
    assert (
        difference(device_rgb(frame), RgbConverter(224, threads=1)(yuv_frame("bt601", "full"))).mean() > 4 * PIXEL_MEAN
    )


@pytest.mark.parametrize("range_", list(RANGES))
@pytest.mark.parametrize(
    "size, mean, worst",
    [
        ((224, 224), PIXEL_MEAN, 3),
        ((401, 301), PIXEL_MEAN, PIXEL_MAX),
        ((320, 180), UPSCALE_MEAN, UPSCALE_MAX),
        ((160, 120), UPSCALE_MEAN, UPSCALE_MAX),
        ((99, 75), UPSCALE_MEAN, UPSCALE_MAX),
    ],
)
def test_other_sizes_match_swscale(size, mean, worst, range_):
    """Already 224 x 224 (no resize), odd sizes (chroma rounded up), and pictures whose
    chroma is enlarged to 224 rows (320 x 180 and smaller)."""
    frame = yuv_frame("bt601", range_, width=size[0], height=size[1])
    d = difference(device_rgb(frame), RgbConverter(224, threads=1)(frame))
    assert d.mean() <= mean and d.max() <= worst, (d.mean(), d.max())


def test_other_pixel_formats_become_yuv420p_at_their_size():
    """A yuv444p frame is converted to yuv420p by swscale, not resized: its planes are
    swscale's yuv420p of the frame, byte for byte, and keep the frame's matrix and range."""
    frame = yuv_frame("bt709", "full", pix_fmt="yuv444p")
    convert = PlaneConverter(threads=1)
    planes = convert(frame)
    fmt = convert.format
    assert (fmt.width, fmt.height, fmt.kr, fmt.full_range) == (640, 360, 0.2126, True)
    want = VideoReformatter().reformat(frame, format="yuv420p", dst_color_range="JPEG")
    packed = [
        np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:, :w].ravel() for p, w in zip(want.planes, (640, 320, 320))
    ]
    np.testing.assert_array_equal(planes, np.concatenate(packed))


def test_a_frame_over_the_largest_size_is_shrunk_to_fit():
    frame = av.VideoFrame.from_ndarray(np.zeros((1440, 2560, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
    convert = PlaneConverter(threads=1)
    planes = convert(frame)
    fmt = convert.format
    assert planes.size == fmt.nbytes <= PLANE_BYTES and abs(fmt.width / fmt.height - 16 / 9) < 0.01


def test_convert_is_a_feature_setting():
    assert FeatureSettings().convert == "swscale"
    assert FeatureSettings.from_dict({"seed": 1}).convert == "swscale"  # caches written before the option
    with pytest.raises(ConfigError, match="convert"):
        FeatureSettings(convert="gpu")
    assert DecodeOptions.from_settings(FeatureSettings(convert="device")).convert == "device"


# -- whole videos --------------------------------------------------------------------------------------
SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=2)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    frames = {t: picture(320, 180, seed=t) for t in range(4)}
    return write_video(
        tmp_path_factory.mktemp("convert") / "v.mp4",
        duration_s=3,
        fps=8,
        size=(320, 180),
        image=lambda t: frames[int(t)],
        audio=tone(600),
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_decoder_sends_planes_of_the_decoded_size(video):
    batches = list(BatchReader(video, DecodeOptions(frames_per_segment=2, convert="device"), 2))
    assert [len(b) for b in batches] == [2, 1]
    fmt = batches[0].planes
    assert (fmt.width, fmt.height, fmt.full_range, fmt.chroma_left) == (320, 180, False, True)  # h264: left-sited
    want = [b.frames for b in BatchReader(video, DecodeOptions(frames_per_segment=2), 2)]
    for b, rgb in zip(batches, want):
        got = planes_to_rgb(torch.from_numpy(b.frames.reshape(-1, PLANE_BYTES)), fmt, 224).numpy().reshape(rgb.shape)
        d = difference(got, rgb)
        assert d.mean() <= UPSCALE_MEAN and d.max() <= UPSCALE_MAX, (d.mean(), d.max())  # chroma 90 -> 224 rows


def test_features_with_convert_device_match_swscales(video):
    feats = {}
    for convert in ("swscale", "device"):
        extractor = FeatureExtractor(
            FeatureSettings(**{**SETTINGS.to_dict(), "convert": convert}), device="cpu", batch_size=4
        )
        feats[convert] = np.concatenate([v for _, v in FeatureStream(video, extractor, audio=False).batches()])
    assert feats["device"].shape == feats["swscale"].shape == (3, 7, 7, 512)
    assert cosine(feats["device"], feats["swscale"]) >= FEATURE_COSINE
    assert not np.array_equal(feats["device"], feats["swscale"])  # really the other path


def test_batch_job_with_decoder_processes(video, tmp_path):
    """Through the decoder pool's shared memory (planes in fixed-size rows, their format in
    each batch's message): the thread's features exactly, and swscale's within tolerance."""
    device = FeatureSettings(**{**SETTINGS.to_dict(), "convert": "device"})
    for name, settings, workers in (("pool", device, 1), ("thread", device, 0), ("swscale", SETTINGS, 1)):
        extractor = FeatureExtractor(settings, device="cpu", batch_size=4)
        summary = run_extraction(
            [Job("v", video)], tmp_path / name, extractor, ExtractOptions(workers=workers, progress=False)
        )
        assert summary.done == 1
    pool, thread, swscale = (FeatureCache(tmp_path / n).read("v") for n in ("pool", "thread", "swscale"))
    np.testing.assert_array_equal(pool[0], thread[0])
    np.testing.assert_array_equal(pool[1], thread[1])
    assert cosine(pool[0], swscale[0]) >= FEATURE_COSINE
    assert FeatureCache(tmp_path / "pool").settings.convert == "device"
