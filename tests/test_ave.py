"""The AVE annotation format (core/annotations.py) and the AVE release layout
(pipeline/data/ave.py), pinned against REFERENCE.md section 1."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from avel.core.annotations import (
    HEADER,
    AnnotationRow,
    category_index,
    labels_for,
    read_annotations,
    split_rows,
    write_annotations,
)
from avel.core.config import FeatureSettings
from avel.core.errors import AnnotationError, AvelError, CacheError
from avel.pipeline.data import ave
from avel.pipeline.data.ave import read_ave_layout, write_ave_layout
from avel.pipeline.data.dataset import AVData

# a hand-written file: an id twice with different categories (like AVE's 45), the zero-length
# row, a full 0-10 row; first-appearance order is Bark, Cat, Church bell
LINES = [
    "Bark&dupID_abc1&good&2&6",
    "Cat&vid0000002&good&0&10",
    "Bark&vid0000003&good&0&0",
    "Cat&dupID_abc1&good&3&9",
    "Church bell&vid0000005&bad&1&3",
    "Bark&vid0000006&good&0&10",
    "Church bell&vid0000007&good&4&10",
]
NAMES = ["Bark", "Cat", "Church bell"]


def _write(path, lines, *, header=False, bom=False, newline="\n"):
    text = newline.join(([HEADER] if header else []) + lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# --- annotations ----------------------------------------------------------------------
@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("bom", [False, True])
def test_read_header_bom_blank_lines(tmp_path, header, bom):
    path = _write(tmp_path / "Annotations.txt", LINES[:3] + [""] + LINES[3:], header=header, bom=bom, newline="\r\n")
    rows = read_annotations(path)
    assert [r.to_line() for r in rows] == LINES
    assert rows[0] == AnnotationRow("Bark", "dupID_abc1", "good", 2, 6)
    assert rows[4].category == "Church bell" and rows[4].quality == "bad"


def test_duplicates_zero_length_and_category_index(tmp_path):
    rows = read_annotations(_write(tmp_path / "a.txt", LINES, header=True))
    assert len(rows) == 7  # rows, not files: dupID_abc1 twice
    dup = [r for r in rows if r.video_id == "dupID_abc1"]
    assert [r.category for r in dup] == ["Bark", "Cat"]
    assert category_index(rows) == NAMES
    zero = rows[2]
    assert (zero.start_s, zero.end_s) == (0, 0)
    assert not zero.event_mask().any()
    np.testing.assert_array_equal(labels_for(zero, NAMES), np.full(10, 3))
    lab = labels_for(rows[0], NAMES)
    assert lab.dtype == np.int64 and lab.shape == (10,)
    np.testing.assert_array_equal(lab, [3, 3, 0, 0, 0, 0, 3, 3, 3, 3])
    np.testing.assert_array_equal(rows[3].event_mask(), [t >= 3 and t < 9 for t in range(10)])
    np.testing.assert_array_equal(labels_for(rows[1], NAMES), np.ones(10))
    with pytest.raises(AnnotationError, match="Dog"):
        labels_for(AnnotationRow("Dog", "x", "good", 0, 1), NAMES)


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("Bark&vid&good&2", "fields"),
        ("Bark&vid&good&2&6&extra", "fields"),
        ("Bark&vid&good&two&6", "integer"),
        ("Bark&vid&good&2&6.5", "integer"),
        ("Bark&vid&good&-1&6", "integer"),
        ("Bark&vid&good&7&6", "after"),
        ("Bark&vid&good&2&11", "beyond"),
        ("&vid&good&2&6", "category"),
        (HEADER, "integer"),  # a header is only a header on the first line
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, problem):
    path = _write(tmp_path / "bad.txt", LINES[:2] + ["", bad] + LINES[2:], header=True)
    with pytest.raises(AnnotationError, match=problem) as info:
        read_annotations(path)
    assert str(info.value).startswith(f"{path}:5: ")  # header, 2 rows, blank, then the bad one
    assert isinstance(info.value, AvelError)


def test_sanity_bound_and_unreadable(tmp_path):
    path = _write(tmp_path / "long.txt", ["Bark&vid&good&2&20"])
    with pytest.raises(AnnotationError, match=":1: "):
        read_annotations(path)
    assert read_annotations(path, max_seconds=30)[0].end_s == 20
    with pytest.raises(AnnotationError, match="no such"):
        read_annotations(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("Bark&vid\xe9&good&0&1\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match="UTF-8"):
        read_annotations(tmp_path / "latin1.txt")


def test_write_round_trip(tmp_path):
    rows = read_annotations(_write(tmp_path / "a.txt", LINES))
    write_annotations(tmp_path / "b.txt", rows)
    text = (tmp_path / "b.txt").read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER and text.splitlines()[1:] == LINES
    write_annotations(tmp_path / "c.txt", rows, header=False)
    assert read_annotations(tmp_path / "c.txt") == rows
    with pytest.raises(AnnotationError, match="cannot be written"):
        write_annotations(tmp_path / "d.txt", [AnnotationRow("A&B", "v", "good", 0, 1)])


def test_split_rows_with_duplicate_ids(tmp_path):
    rows = read_annotations(_write(tmp_path / "a.txt", LINES, header=True))
    split = read_annotations(_write(tmp_path / "s.txt", [LINES[3], LINES[6], LINES[0]]))
    idx = split_rows(rows, split)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [3, 6, 0])  # dupID_abc1 as Cat -> 3, as Bark -> 0
    # exact duplicate rows take the annotation's occurrences in order, never the same row twice
    twice = rows + [rows[5]]
    np.testing.assert_array_equal(split_rows(twice, [rows[5], rows[5]]), [5, 7])
    with pytest.raises(AnnotationError, match="more often"):
        split_rows(rows, [rows[5], rows[5]])
    with pytest.raises(AnnotationError, match="not in"):
        split_rows(rows, [AnnotationRow("Bark", "dupID_abc1", "good", 3, 9)])  # wrong category


# --- the AVE release layout -------------------------------------------------------------
def _data(rows, *, seed=0, settings=None):
    g = torch.Generator().manual_seed(seed)
    V = len(rows)
    names = category_index(rows)
    labels = torch.from_numpy(np.stack([labels_for(r, names) for r in rows]))
    return AVData(
        visual=torch.rand(V, 10, 7, 7, 512, generator=g) * 5,
        audio=torch.rand(V, 10, 128, generator=g) * 4.5,
        labels=labels,
        class_names=names,
        video_ids=[r.video_id for r in rows],
        splits={
            "train": torch.tensor([5, 0, 1, 3]),  # written sorted: annotation order
            "val": torch.tensor([2, 4]),
            "test": torch.tensor([6]),
            "train_match": torch.tensor([0, 3, 4]),
            "test_match": torch.tensor([6, 2]),
        },
        settings=settings,
    )


@pytest.fixture
def rows(tmp_path):
    return read_annotations(_write(tmp_path / "source_annotations.txt", LINES, header=True))


# REFERENCE.md section 1, with V videos and K + 1 classes
def _expected(V, K1, dtype):
    return {
        "visual_feature.h5": ("avadataset", (V, 10, 7, 7, 512), dtype),
        "audio_feature.h5": ("avadataset", (V, 10, 128), dtype),
        "labels.h5": ("avadataset", (V, 10, K1), dtype),
        "labels_closs.h5": ("avadataset", (V, 10), np.float32),
        "mil_labels.h5": ("avadataset", (V, K1), np.float32),
        "visual_feature_vec.h5": ("avadataset", (V, 10, 512), dtype),
        "train_order.h5": ("order", (4,), np.int64),
        "val_order.h5": ("order", (2,), np.int64),
        "test_order.h5": ("order", (1,), np.int64),
        "train_order_match.h5": ("order", (3,), np.int64),
        "test_order_match.h5": ("order", (2,), np.int64),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_matches_reference_table(tmp_path, rows, dtype):
    data = _data(rows, settings=FeatureSettings(visual_model="random", seed=3))
    out = tmp_path / "ave"
    written = write_ave_layout(out, data, dtype=dtype, annotations=rows)
    V, K1 = 7, 4
    expected = _expected(V, K1, np.dtype(dtype))
    assert {p.name for p in written} == set(expected) | {"Annotations.txt", "avel_settings.json"}
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary files left
    arrays = {}
    for name, (key, shape, dt) in expected.items():
        with h5py.File(out / name, "r") as f:
            assert list(f.keys()) == [key], name
            ds = f[key]
            assert ds.shape == shape and ds.dtype == dt, name
            assert ds.chunks is None and ds.compression is None, name  # plain contiguous
            arrays[name] = ds[...]
    onehot = arrays["labels.h5"]
    assert np.all(onehot.sum(-1) == 1) and set(np.unique(onehot)) == {0, 1}
    np.testing.assert_array_equal(onehot.argmax(-1), data.labels.numpy())
    assert onehot[2, :, K1 - 1].all()  # the zero-length row: background (index K) everywhere
    assert onehot[1, :, 1].all()  # Cat 0-10
    np.testing.assert_array_equal(arrays["labels_closs.h5"], (onehot.argmax(-1) != K1 - 1).astype(np.float32))
    mil = arrays["mil_labels.h5"]
    np.testing.assert_array_equal(mil.argmax(-1), [0, 1, 3, 1, 2, 0, 2])  # zero-length row -> background
    assert np.all(mil.sum(-1) == 1)
    np.testing.assert_allclose(arrays["visual_feature_vec.h5"], data.visual.double().mean((2, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrays["audio_feature.h5"], data.audio.numpy(), rtol=0)
    np.testing.assert_array_equal(arrays["train_order.h5"], [0, 1, 3, 5])  # row order, sorted
    np.testing.assert_array_equal(arrays["test_order_match.h5"], [2, 6])
    assert read_annotations(out / "Annotations.txt") == rows


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, rows, dtype, monkeypatch):
    monkeypatch.setattr(ave, "CHUNK_BYTES", 3 * 10 * 49 * 512 * 4)  # several row chunks per file
    settings = FeatureSettings(visual_model="random", seed=3)
    data = _data(rows, settings=settings)
    write_ave_layout(tmp_path, data, dtype=dtype, annotations=rows)
    back = read_ave_layout(tmp_path)
    assert back.visual.dtype == torch.float32 and back.visual.shape == data.visual.shape
    assert torch.equal(back.visual, data.visual) and torch.equal(back.audio, data.audio)
    assert back.labels.dtype == torch.int64 and torch.equal(back.labels, data.labels)
    assert back.class_names == NAMES and back.background == 3
    assert back.video_ids == data.video_ids
    assert set(back.splits) == set(data.splits)
    for name, idx in data.splits.items():
        assert back.splits[name].dtype == torch.int64
        assert back.splits[name].tolist() == sorted(idx.tolist())
    assert back.settings == settings
    half = read_ave_layout(tmp_path, dtype=torch.float16)
    assert half.visual.dtype == torch.float16 and torch.equal(half.visual, data.visual.half())
    assert torch.equal(half.audio, data.audio.half())


def test_released_style_layout(tmp_path, rows):
    """float64 files written by hand as in the release: no sidecar, no Annotations.txt."""
    data = _data(rows)
    V = len(rows)
    onehot = np.eye(4)[data.labels.numpy()]  # float64
    for name, key, arr in [
        ("visual_feature.h5", "avadataset", data.visual.double().numpy()),
        ("audio_feature.h5", "avadataset", data.audio.double().numpy()),
        ("labels.h5", "avadataset", onehot),
        ("train_order.h5", "order", np.arange(5, dtype=np.int64)),
        ("test_order.h5", "order", np.array([5, 6], dtype=np.int64)),
    ]:
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset(key, data=arr)
    back = read_ave_layout(tmp_path)
    assert back.settings is None
    assert back.class_names == ["class_0", "class_1", "class_2"]
    assert len(back.video_ids) == V and set(back.splits) == {"train", "test"}
    assert torch.equal(back.visual, data.visual) and torch.equal(back.labels, data.labels)
    # class names and ids from annotations given as a path or as rows
    _write(tmp_path / "elsewhere.txt", LINES)
    for given in (tmp_path / "elsewhere.txt", rows):
        named = read_ave_layout(tmp_path, annotations=given)
        assert named.class_names == NAMES and named.video_ids == [r.video_id for r in rows]
    with pytest.raises(AnnotationError, match="rows"):
        read_ave_layout(tmp_path, annotations=rows[:-1])


def test_export_without_annotations(tmp_path, rows):
    data = _data(rows)
    data.labels[2, 3:5] = 0  # the zero-length row no longer all background
    write_ave_layout(tmp_path / "a", data)  # rows derived from the labels
    assert [r.key for r in read_annotations(tmp_path / "a" / "Annotations.txt")][:2] == [r.key for r in rows[:2]]
    assert read_ave_layout(tmp_path / "a").class_names == NAMES
    write_ave_layout(tmp_path / "b", _data(rows))  # an all-background video: no Annotations.txt
    assert not (tmp_path / "b" / "Annotations.txt").exists()
    assert not (tmp_path / "b" / "avel_settings.json").exists()
    assert read_ave_layout(tmp_path / "b").class_names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize("name", ["visual_feature.h5", "audio_feature.h5", "labels.h5"])
def test_missing_file_is_a_cache_error(tmp_path, rows, name):
    write_ave_layout(tmp_path, _data(rows), annotations=rows)
    (tmp_path / name).unlink()
    with pytest.raises(CacheError, match=name):
        read_ave_layout(tmp_path)


def test_bad_files(tmp_path, rows):
    write_ave_layout(tmp_path, _data(rows), annotations=rows)
    with h5py.File(tmp_path / "audio_feature.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((7, 10, 128)))
    with pytest.raises(CacheError, match="avadataset"):
        read_ave_layout(tmp_path)
    with h5py.File(tmp_path / "audio_feature.h5", "w") as f:
        f.create_dataset("avadataset", data=np.zeros((6, 10, 128)))
    with pytest.raises(CacheError, match="6 videos"):
        read_ave_layout(tmp_path)
    (tmp_path / "audio_feature.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="HDF5"):
        read_ave_layout(tmp_path)
    with pytest.raises(CacheError, match="not a directory"):
        read_ave_layout(tmp_path / "nowhere")
    with pytest.raises(AnnotationError, match="disagrees"):
        bad = list(rows)
        bad[0] = AnnotationRow("Bark", "dupID_abc1", "good", 2, 7)
        write_ave_layout(tmp_path / "x", _data(rows), annotations=bad)
