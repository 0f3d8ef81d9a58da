"""Issue #27 items 1-2 and issue #23 item 9: a cache that knows what it holds. A re-run of
preprocess with other annotations or splits applies them (one line, features untouched); a
merge of caches that share an id refuses or resolves it explicitly and merges the labels;
every stored chunk carries a checksum, so a damaged part is one line naming the part and the
video, and `preprocess --verify` extracts the damaged videos again.

The CLI runs in-process through `avel.cli.main` (what the console script calls)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from test_cache import FAST, fake, make_videos

from avel.cli import main
from avel.core.annotations import HEADER
from avel.core.config import FeatureSettings
from avel.core.errors import CacheError
from avel.pipeline.cache.merge import merge_caches
from avel.pipeline.cache.meta import CacheMeta
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.data.load import load_data

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

T = 2  # segments a video (2-s videos)
ROWS = ["dog&v00&good&0&1", "cat&v01&good&1&2", "dog&v02&good&0&2", "cat&v03&good&0&1"]


def cli(capfd, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    _, err = capfd.readouterr()
    assert "Traceback" not in err
    return code, [line for line in err.replace("\r", "\n").strip().splitlines() if line]


def write_labels(folder: Path, rows: list[str], splits: dict[str, list[int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Annotations.txt").write_text("".join(line + "\n" for line in [HEADER, *rows]))
    for name, idx in splits.items():
        (folder / f"{name}Set.txt").write_text("".join(rows[i] + "\n" for i in idx))
    return folder / "Annotations.txt"


def stored_features(cache: Path) -> dict[str, bytes]:
    with FeatureCache(cache) as c:
        return {vid: b"".join(x.tobytes() for x in c.read(vid)) for vid in c.ids()}


# -- item 1: re-running preprocess with corrected annotations ---------------------------------------
def test_a_rerun_with_corrected_annotations_applies_them_and_says_so(tmp_path, capfd):
    videos = tmp_path / "videos"
    make_videos(videos, 5)
    splits = {"train": [0, 1], "val": [2], "test": [3]}
    a = write_labels(tmp_path / "a", ROWS, splits)
    args = [videos, "--out", tmp_path / "c", "--segments", T, "--workers", 0, *FAST]
    code, lines = cli(capfd, "preprocess", *args, "--annotations", a)
    assert code == 0, lines
    before = stored_features(tmp_path / "c")
    parts = sorted((tmp_path / "c" / "parts").iterdir())

    code, lines = cli(capfd, "preprocess", *args, "--annotations", a)  # the same labels: nothing said
    assert code == 0 and not any("annotations" in line or "splits" in line for line in lines), lines

    corrected = ["dog&v00&good&0&1", "dog&v01&good&0&2", *ROWS[2:]]  # v01: cat -> dog, other seconds
    b = write_labels(tmp_path / "b", corrected, {"train": [0], "val": [2], "test": [3, 1]})
    code, lines = cli(capfd, "preprocess", *args, "--annotations", b)
    assert code == 0, lines
    said = [line for line in lines if "annotations" in line]
    expected = (
        f"{tmp_path / 'c'}: annotations changed: 1 row relabelled; splits: test changed, train changed -> stored "
        "(the features are unchanged)"
    )
    assert said == [expected], lines
    assert (tmp_path / "c" / "annotations.txt").read_text() == b.read_text()
    assert (tmp_path / "c" / "splits" / "test.txt").read_text() == (tmp_path / "b" / "testSet.txt").read_text()
    assert sorted((tmp_path / "c" / "parts").iterdir()) == parts and stored_features(tmp_path / "c") == before
    data = load_data(tmp_path / "c")
    assert data.class_names == ["dog", "cat"]
    assert data.labels[1].tolist() == [0, 0]  # v01 is a dog in both seconds now (was: background, cat)
    assert data.splits["test"].tolist() == [1, 3] and data.splits["train"].tolist() == [0]

    # a row for a video not extracted yet: extracted as usual, and the new row stored
    c2 = write_labels(tmp_path / "c2", [*corrected, "cat&v04&good&0&1"], {"train": [0, 4], "val": [2], "test": [3, 1]})
    code, lines = cli(capfd, "preprocess", *args, "--annotations", c2)
    assert code == 0, lines
    assert any("1 extracted" in line for line in lines), lines
    assert any("annotations changed: 1 row added; splits: train changed -> stored" in line for line in lines), lines
    data = load_data(tmp_path / "c")
    assert data.video_ids == ["v00", "v01", "v02", "v03", "v04"] and data.splits["train"].tolist() == [0, 4]

    # a training run sees the labels stored last
    code, lines = cli(
        capfd, "train", "sel", "--data", tmp_path / "c", "--out", tmp_path / "m", "--epochs", 1, "--device", "cpu"
    )
    assert code == 0, lines


def test_a_rerun_without_split_files_removes_the_stored_ones(tmp_path, capfd):
    videos = tmp_path / "videos"
    make_videos(videos, 4)
    args = [videos, "--out", tmp_path / "c", "--segments", T, "--workers", 0, *FAST]
    assert cli(capfd, "preprocess", *args, "--annotations", write_labels(tmp_path / "a", ROWS, {"val": [2]}))[0] == 0
    code, lines = cli(capfd, "preprocess", *args, "--annotations", write_labels(tmp_path / "b", ROWS, {}))
    assert code == 0 and any(
        line.endswith("splits: val removed -> stored (the features are unchanged)") for line in lines
    ), lines
    assert not list((tmp_path / "c" / "splits").glob("*.txt"))


# -- item 2: merging caches that share an id ---------------------------------------------------------
SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1, segments=3)


def shard(path: Path, videos: list, rows: list[str] | None = None, splits: dict[str, list[str]] | None = None) -> Path:
    text = None if rows is None else "".join(line + "\n" for line in [HEADER, *rows])
    splits = {name: "".join(line + "\n" for line in lines) for name, lines in (splits or {}).items()}
    with FeatureCache.create_or_open(path, CacheMeta(SETTINGS, annotations=text, splits=splits)) as c, c.writer() as w:
        for v in videos:
            w.add(v)
    return path


def visual_of(path: Path, vid: str) -> np.ndarray:
    with FeatureCache(path) as c:
        return c.read(vid)[0]


def test_merging_an_id_with_different_features_is_refused_or_resolved(tmp_path, capfd):
    a, b = fake("x", seed=1), fake("x", seed=2)  # one id, other features
    s0 = shard(tmp_path / "s0", [a, fake("y", seed=3)])
    s1 = shard(tmp_path / "s1", [b, fake("z", seed=4)])
    code, lines = cli(capfd, "merge", s0, s1, "--out", tmp_path / "m.h5")
    refusal = f"error: merge: video 'x' has different features in {s0} and {s1}; keep one with --on-conflict first|last"
    assert code == 2 and lines == [refusal], lines
    assert not (tmp_path / "m.h5").exists()
    for choice, expected in (("first", a), ("last", b)):
        code, lines = cli(capfd, "merge", s0, s1, "--out", tmp_path / f"{choice}.h5", "--on-conflict", choice)
        assert code == 0 and lines == [f"3 videos, 0 recorded failures -> {tmp_path / f'{choice}.h5'}"], lines
        assert np.array_equal(visual_of(tmp_path / f"{choice}.h5", "x"), expected.visual)
        assert np.array_equal(visual_of(tmp_path / f"{choice}.h5", "y"), fake("y", seed=3).visual)
    code, lines = cli(capfd, "merge", s0, s1, "--out", tmp_path / "bad.h5", "--on-conflict", "any")
    assert code == 2 and len(lines) == 1 and "--on-conflict" in lines[0], lines


def test_identical_duplicates_merge_as_one_and_labels_are_merged(tmp_path):
    x = fake("x", seed=1)
    s0 = shard(
        tmp_path / "s0",
        [x, fake("y", seed=3)],
        ["dog&x&good&0&1", "cat&y&good&1&3"],
        {"train": ["dog&x&good&0&1"], "test": ["cat&y&good&1&3"]},
    )
    s1 = shard(
        tmp_path / "s1",
        [x, fake("z", seed=4)],
        ["dog&x&good&0&1", "dog&z&good&0&3"],
        {"train": ["dog&x&good&0&1", "dog&z&good&0&3"]},
    )
    assert merge_caches([s0, s1], tmp_path / "m.h5") == (3, 0)
    with FeatureCache(tmp_path / "m.h5") as m:
        assert sorted(m.ids()) == ["x", "y", "z"]
        assert m.meta.annotations == f"{HEADER}\ndog&x&good&0&1\ncat&y&good&1&3\ndog&z&good&0&3\n"
        assert m.meta.splits == {"train": "dog&x&good&0&1\ndog&z&good&0&3\n", "test": "cat&y&good&1&3\n"}
    data = load_data(tmp_path / "m.h5")
    assert data.video_ids == ["x", "y", "z"] and data.splits["train"].tolist() == [0, 2]


def test_merging_caches_whose_annotations_disagree_on_an_id_is_refused(tmp_path, capfd):
    s0 = shard(tmp_path / "s0", [fake("x", seed=1)], ["dog&x&good&0&1"])
    s1 = shard(tmp_path / "s1", [fake("z", seed=4)], ["cat&x&good&0&1", "dog&z&good&0&3"])
    code, lines = cli(capfd, "merge", s0, s1, "--out", tmp_path / "m.h5")
    assert code == 2 and len(lines) == 1, lines
    assert "video 'x' has other annotation rows in" in lines[0] and str(s0) in lines[0] and str(s1) in lines[0], lines
    assert not (tmp_path / "m.h5").exists()


# -- issue #23 item 9: checksums on every stored chunk ------------------------------------------------
def damage(cache: Path, vid: str) -> Path:
    """Overwrite 2 KiB inside the first chunk of `vid`'s visual features with plausible float32
    values (what a bad disk or a stray write leaves); the part file."""
    for part in sorted((cache / "parts").glob("part-*.h5")):
        with h5py.File(part, "r") as f:
            if vid not in f["videos"]:
                continue
            ds = f["videos"][vid]["visual"]
            assert ds.fletcher32 and ds.chunks is not None
            offset = ds.id.get_chunk_info(0).byte_offset
        noise = np.random.default_rng(0).random(512, dtype=np.float32).tobytes()
        assert len(noise) == 2048
        with open(part, "r+b") as fh:
            fh.seek(offset + 4096)
            fh.write(noise)
        return part
    raise AssertionError(f"no part holds {vid}")


def test_a_damaged_chunk_is_one_line_everywhere_and_verify_extracts_it_again(tmp_path, capfd):
    videos = tmp_path / "videos"
    make_videos(videos, 4)
    a = write_labels(tmp_path / "a", ROWS, {"train": [0, 1], "val": [2], "test": [3]})
    args = ["preprocess", videos, "--out", tmp_path / "c", "--segments", T, "--workers", 0, "--annotations", a, *FAST]
    assert cli(capfd, *args)[0] == 0
    before = stored_features(tmp_path / "c")
    part = damage(tmp_path / "c", "v02")

    with pytest.raises(CacheError) as e:
        load_data(tmp_path / "c")
    assert str(e.value).startswith(f"{part}: the stored features of video 'v02' are damaged") and "\n" not in str(
        e.value
    )
    for command in (
        ["export-ave", tmp_path / "c", "--annotations", a, "--out", tmp_path / "ave"],
        ["train", "sel", "--data", tmp_path / "c", "--out", tmp_path / "m", "--epochs", 1, "--device", "cpu"],
    ):
        code, lines = cli(capfd, *command)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: {part}: the stored features of video 'v02' are damaged"), lines
    assert not (tmp_path / "ave").exists() and not (tmp_path / "m").exists()

    code, lines = cli(capfd, *args)  # a resume reads attributes only: it does not see the damage
    assert code == 0 and any("0 extracted, 4 already done" in line for line in lines), lines
    code, lines = cli(capfd, *args, "--verify")
    assert code == 0, lines
    assert any(line.startswith(f"{part}: 1 damaged video ('v02') taken out") for line in lines), lines
    assert any("1 extracted, 3 already done" in line for line in lines), lines
    assert not part.exists() and part.with_name("damaged-" + part.name).exists()
    assert stored_features(tmp_path / "c") == before  # whole again, bit-identical
    assert load_data(tmp_path / "c").video_ids == ["v00", "v01", "v02", "v03"]
    code, lines = cli(capfd, *args, "--verify")  # nothing damaged: nothing said, nothing done
    assert code == 0 and not any("damaged video" in line for line in lines), lines


def test_parts_written_without_checksums_stay_readable(tmp_path):
    """A part of an older avel (no fletcher32 filter) reads as before: there is no checksum to verify."""
    v = fake("old", seed=5)
    with FeatureCache.create_or_open(tmp_path / "c", CacheMeta(SETTINGS)) as c, c.writer() as w:
        w.add(v)
    part = next((tmp_path / "c" / "parts").glob("part-*.h5"))
    with h5py.File(part, "r+") as f:
        g = f["videos"]["old"]
        for name in ("visual", "audio"):
            data = g[name][()]
            del g[name]
            g.create_dataset(name, data=data, chunks=True)  # no filter
        assert not g["visual"].fletcher32
    with FeatureCache(tmp_path / "c") as c:
        visual, audio = c.read("old")
        assert np.array_equal(visual, v.visual) and np.array_equal(audio, v.audio)
        assert c.damaged() == {}


def test_checksums_leave_the_stored_features_bit_identical(tmp_path):
    v = fake("x", seed=6)
    with FeatureCache.create_or_open(tmp_path / "c", CacheMeta(SETTINGS)) as c, c.writer() as w:
        w.add(v)
    part = next((tmp_path / "c" / "parts").glob("part-*.h5"))
    with h5py.File(part, "r") as f:
        ds = f["videos"]["x"]["visual"]
        assert ds.fletcher32 and ds.compression is None and ds.dtype == np.float32
        assert ds[()].tobytes() == v.visual.tobytes()
