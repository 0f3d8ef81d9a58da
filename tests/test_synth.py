"""`avel synth` (pipeline/media/synth.py): real, decodable mp4s in the AVE annotation format whose
class looks and sounds are really there, second by second, and the same for the same seed."""

from __future__ import annotations

import json
import re

import av
import numpy as np
import pytest

from avel.core.annotations import category_index, read_annotations, split_rows
from avel.pipeline.media.synth import (
    BACKGROUND_KINDS,
    COLOURS,
    MAX_CLASSES,
    SynthConfig,
    class_specs,
    plan_dataset,
    split_plan,
    synthesize,
)

VIDEOS, CLASSES, SEED = 6, 3, 1
OPTIONS = dict(full_event_fraction=0.2)  # mostly partial events: background seconds of every kind


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    rows = synthesize(out, videos=VIDEOS, classes=CLASSES, seed=SEED, progress=False, **OPTIONS)
    return out, rows


def _decode(path):
    """(frames [N, H, W, 3] uint8, frame times, audio [S] float32, sample rate, container seconds)"""
    with av.open(str(path)) as c:
        assert c.streams.video and c.streams.audio != ()
        c.streams.video[0].thread_type = "AUTO"
        seconds = c.duration / av.time_base
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(f.time)
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return np.stack(frames), np.array(times), audio, rate, seconds


def _class_of(category):
    """(colour name, frequency Hz) read back from a class name like 'red circle / 220 Hz'."""
    m = re.fullmatch(r"(\w+) \w+ / (\d+) Hz", category)
    assert m, category
    return m.group(1), int(m.group(2))


def _band_share(x, rate, hz, rel=0.03):
    """Share of the power of x within +-rel of hz, and the peak frequency (1-Hz bins for 1 s)."""
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = (freqs >= hz * (1 - rel)) & (freqs <= hz * (1 + rel))
    return power[band].sum() / power.sum(), freqs[np.argmax(power)]


def _saturated_mean(img, min_chroma=80):
    img = img.reshape(-1, 3).astype(np.float64)
    sat = img[(img.max(1) - img.min(1)) >= min_chroma]
    return sat.mean(0) if len(sat) >= 50 else None


def _nearest_colour(rgb):
    names = [n for n, _ in COLOURS]
    ref = np.array([c for _, c in COLOURS], dtype=np.float64)
    cos = ref @ rgb / (np.linalg.norm(ref, axis=1) * np.linalg.norm(rgb))
    return names[int(np.argmax(cos))]


def test_files_and_annotations(dataset):
    out, rows = dataset
    parsed = read_annotations(out / "Annotations.txt")
    assert parsed == rows and len(rows) == VIDEOS
    assert (out / "Annotations.txt").read_text().splitlines()[0] == "Category&VideoID&Quality&StartTime&EndTime"
    assert category_index(rows) == [s.name for s in class_specs(CLASSES)]
    for row in rows:
        assert row.end_s - row.start_s >= 2 and 0 <= row.start_s < row.end_s <= 10
        assert (out / "videos" / f"{row.video_id}.mp4").is_file()
    parts = [split_rows(rows, read_annotations(out / f"{n}Set.txt")) for n in ("train", "val", "test")]
    assert [len(p) for p in parts] == [4, 1, 1]
    assert sorted(np.concatenate(parts).tolist()) == list(range(VIDEOS))
    for p in parts:
        assert p.tolist() == sorted(p.tolist())  # split files list rows in annotation order
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["config"]["seed"] == SEED and len(manifest["videos"]) == VIDEOS


def test_media_decodes_and_content_is_there(dataset):
    """Each second shows the class look iff it is an event or visual_only second, and plays the
    class tone iff it is an event or audio_only second; the event span as a whole has the class
    frequency as its dominant frequency and the class colour as its saturated colour."""
    out, rows = dataset
    plans = json.loads((out / "synth.json").read_text())["videos"]
    kinds_seen = set()
    for row, plan in zip(rows, plans):
        frames, times, audio, rate, seconds = _decode(out / "videos" / f"{row.video_id}.mp4")
        assert abs(seconds - 10) < 0.1
        assert frames.shape == (160, 96, 128, 3)
        np.testing.assert_allclose(times, np.arange(160) / 16)
        assert rate == 16000 and len(audio) >= 10 * rate and np.abs(audio).max() <= 1.0
        colour, hz = _class_of(row.category)
        span = audio[row.start_s * rate : row.end_s * rate]
        _, peak = _band_share(span, rate, hz)
        assert abs(peak - hz) <= 0.02 * hz, (row, peak)
        event_frame = frames[row.start_s * 16 + 8]
        assert _nearest_colour(_saturated_mean(event_frame)) == colour, row
        for t, kind in enumerate(plan["seconds"]):
            kinds_seen.add(kind)
            assert (kind == "event") == (row.start_s <= t < row.end_s)
            share, _ = _band_share(audio[t * rate : (t + 1) * rate], rate, hz)
            if kind in ("event", "audio_only"):
                assert share > 0.5, (row, t, kind, share)
            else:
                assert share < 0.25, (row, t, kind, share)
            for i in (t * 16, t * 16 + 15):  # first and last frame of the second
                sat = _saturated_mean(frames[i])
                if kind in ("event", "visual_only"):
                    assert sat is not None and _nearest_colour(sat) == colour, (row, i, kind)
                else:
                    assert sat is None, (row, i, kind)
    assert kinds_seen == {"event", *BACKGROUND_KINDS}


def test_deterministic(dataset, tmp_path):
    out, rows = dataset
    again = synthesize(tmp_path, videos=VIDEOS, classes=CLASSES, seed=SEED, progress=False, workers=2, **OPTIONS)
    assert again == rows
    assert (tmp_path / "Annotations.txt").read_bytes() == (out / "Annotations.txt").read_bytes()
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt", "synth.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    vid = rows[2].video_id
    a, b = _decode(out / "videos" / f"{vid}.mp4"), _decode(tmp_path / "videos" / f"{vid}.mp4")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    other = plan_dataset(SynthConfig(videos=VIDEOS, classes=CLASSES, seed=SEED + 1, **OPTIONS))
    assert [(p.start_s, p.end_s, p.seconds) for p in other] != [
        (r.start_s, r.end_s, p["seconds"]) for r, p in zip(rows, json.loads((out / "synth.json").read_text())["videos"])
    ]


def test_plan_statistics():
    """The plan alone (no media): AVE-like spans, balanced classes, every background kind."""
    cfg = SynthConfig(videos=400, classes=7, seed=5)
    plans = plan_dataset(cfg)
    assert [p.class_index for p in plans[:7]] == list(range(7))
    counts = np.bincount([p.class_index for p in plans], minlength=7)
    assert counts.min() >= 400 // 7
    spans = np.array([p.end_s - p.start_s for p in plans])
    assert spans.min() >= 2 and spans.max() == 10
    assert 0.4 < np.mean(spans == 10) < 0.6  # full_event_fraction = 0.5
    kinds = [k for p in plans for k in p.seconds if k != "event"]
    shares = [kinds.count(k) / len(kinds) for k in BACKGROUND_KINDS]
    assert min(shares) > 0.25
    for p in plans:
        assert all((k == "event") == (p.start_s <= t < p.end_s) for t, k in enumerate(p.seconds))
        assert abs(p.frequency_hz / class_specs(7)[p.class_index].frequency_hz - 1) <= 0.01
    split = split_plan(cfg)
    assert [len(split[n]) for n in ("train", "val", "test")] == [320, 40, 40]
    assert sorted(sum(split.values(), [])) == list(range(400))


def test_classes_are_distinct_and_config_is_checked():
    specs = class_specs(MAX_CLASSES)
    assert len({s.name for s in specs}) == MAX_CLASSES
    assert len({(s.colour, s.shape) for s in specs}) == MAX_CLASSES
    freqs = [s.frequency_hz for s in specs]
    assert all(b / a > 1.1 for a, b in zip(freqs, freqs[1:])) and freqs[-1] < 7500
    assert class_specs(3) == specs[:3]  # class k does not depend on how many classes there are
    assert all("&" not in s.name for s in specs)
    for bad in (dict(classes=MAX_CLASSES + 1), dict(videos=0), dict(width=127), dict(min_event_s=11)):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


def test_rendering_is_unchanged():
    """The 10-s generator's pictures and sounds, byte for byte, as recorded before its rendering
    was split into per-second pieces (draw_scene, draw_motion, class_image, class_tone, ...,
    shared with the long generator): the SHA-256 of the raw frames and samples of a small config,
    measured on the code before that change (its mp4s were compared byte for byte too)."""
    import hashlib

    from avel.pipeline.media.synth import render_audio, render_frames

    cfg = SynthConfig(videos=3, classes=4, seed=5, full_event_fraction=0.0, width=64, height=48)
    h = hashlib.sha256()
    for plan in plan_dataset(cfg):
        rng = np.random.default_rng(list(plan.render_seed))
        h.update(render_frames(cfg, plan, rng).tobytes())
        h.update(render_audio(cfg, plan, rng).tobytes())
    assert h.hexdigest() == "7018591818b2b08bebd31dd719a42583389c350ac040a77e95dbb850c1a852b7"
