"""Generated videos -> `avel preprocess` -> cache -> `avel export-ave` -> read back, with an
id annotated twice (rows, not files, are the unit) as in AVE."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from test_cache import FAST, avel

from avel.core.annotations import read_annotations, write_annotations
from avel.core.errors import CacheError
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.data.ave import read_ave_layout
from avel.pipeline.data.load import load_data
from avel.pipeline.media.synth import synthesize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    # seed 4: the val and test videos have partial events, so the CML protocol can evaluate them
    # (a split without one is an error, not a NaN accuracy)
    rows = synthesize(root / "synth", videos=6, classes=3, seed=4, progress=False)
    # AVE has ids annotated twice with different categories: add such a row
    dup = rows[0]
    other = next(r.category for r in rows if r.category != dup.category)
    rows = rows + [type(dup)(other, dup.video_id, dup.quality, 0, 10)]
    write_annotations(root / "synth" / "Annotations.txt", rows)
    avel(
        "preprocess",
        root / "synth" / "videos",
        "--annotations",
        root / "synth" / "Annotations.txt",
        "--out",
        root / "cache",
        "--workers",
        "1",
        *FAST,
    )
    return root, rows


def test_rows_are_the_unit(dataset):
    root, rows = dataset
    cache = FeatureCache(root / "cache")
    assert len(cache) == 6  # six files for seven rows
    data = load_data(root / "cache")
    assert data.visual.shape == (7, 10, 7, 7, 512) and data.audio.shape == (7, 10, 128)
    assert data.video_ids == [r.video_id for r in rows]
    assert torch.equal(data.visual[0], data.visual[6])  # the same file, two rows
    assert data.labels[6].tolist() == [data.class_names.index(rows[6].category)] * 10
    assert set(data.splits) == {"train", "val", "test"}  # trainSet/valSet/testSet.txt were stored


def test_export_layout_and_read_back(dataset, tmp_path):
    root, rows = dataset
    synth_dir = root / "synth"
    avel(
        "export-ave",
        root / "cache",
        "--annotations",
        synth_dir / "Annotations.txt",
        "--out",
        tmp_path / "ave",
        "--splits",
        f"{synth_dir / 'trainSet.txt'},{synth_dir / 'valSet.txt'},{synth_dir / 'testSet.txt'}",
        "--dtype",
        "float64",
    )
    V, K1 = 7, 4
    expected = {
        "visual_feature.h5": ("avadataset", (V, 10, 7, 7, 512), np.float64),
        "audio_feature.h5": ("avadataset", (V, 10, 128), np.float64),
        "labels.h5": ("avadataset", (V, 10, K1), None),
        "labels_closs.h5": ("avadataset", (V, 10), np.float32),
        "mil_labels.h5": ("avadataset", (V, K1), np.float32),
        "visual_feature_vec.h5": ("avadataset", (V, 10, 512), None),
    }
    for name, (key, shape, dtype) in expected.items():
        with h5py.File(tmp_path / "ave" / name, "r") as f:
            assert list(f.keys()) == [key], name
            assert f[key].shape == shape, name
            if dtype is not None:
                assert f[key].dtype == dtype, name
    for split in ("train", "val", "test"):
        with h5py.File(tmp_path / "ave" / f"{split}_order.h5", "r") as f:
            assert list(f.keys()) == ["order"] and f["order"].dtype == np.int64
            order = f["order"][()]
            assert np.all(np.diff(order) > 0)  # rows in annotation order
    original = load_data(root / "cache")
    back = read_ave_layout(tmp_path / "ave")
    torch.testing.assert_close(back.visual, original.visual)
    torch.testing.assert_close(back.audio, original.audio)
    assert torch.equal(back.labels, original.labels)
    assert back.class_names == original.class_names
    train_rows = read_annotations(synth_dir / "trainSet.txt")
    assert len(back.splits["train"]) == len(train_rows)
    # the stage-three data interface reads the export the same way
    assert torch.equal(load_data(tmp_path / "ave").labels, original.labels)


def test_streaming_dataset_equals_ram(dataset):
    from avel.pipeline.data.load import CacheDataset

    root, rows = dataset
    ram = load_data(root / "cache", dtype=torch.float16)
    stream = CacheDataset(root / "cache")
    assert len(stream) == len(rows) and ram.visual.dtype == torch.float16
    for i in (0, 6):
        visual, audio, labels = stream[i]
        torch.testing.assert_close(visual.half(), ram.visual[i])
        assert torch.equal(labels, ram.labels[i])


def test_train_and_evaluate_cli_on_cache_and_ave_layout(dataset, tmp_path):
    root, rows = dataset
    synth_dir = root / "synth"
    avel(
        "export-ave",
        root / "cache",
        "--annotations",
        synth_dir / "Annotations.txt",
        "--out",
        tmp_path / "ave",
        "--splits",
        f"{synth_dir / 'trainSet.txt'},{synth_dir / 'valSet.txt'},{synth_dir / 'testSet.txt'}",
    )
    runs = [
        (root / "cache", "sel", "dam"),
        (root / "cache", "cml", "avdln"),
        (tmp_path / "ave", "sel", "av_att"),
        (tmp_path / "ave", "cml", "dam"),
    ]
    for data, task, model in runs:
        ckpt = tmp_path / f"{data.name}-{task}-{model}.safetensors"
        avel("train", task, "--data", data, "--out", ckpt, "--model", model, "--epochs", "1", "--device", "cpu")
        proc = avel("evaluate", task, "--data", data, "--checkpoint", ckpt, "--json", tmp_path / "m.json")
        assert proc.stdout.startswith(f"{task} test:")
        assert ("accuracy" if task == "sel" else "a2v") in proc.stdout


def test_export_lists_missing_videos(dataset, tmp_path):
    root, rows = dataset
    extra = rows + [type(rows[0])(rows[0].category, "not-extracted", "good", 0, 10)]
    write_annotations(tmp_path / "Annotations.txt", extra)
    proc = avel(
        "export-ave",
        root / "cache",
        "--annotations",
        tmp_path / "Annotations.txt",
        "--out",
        tmp_path / "ave",
        check=False,
    )
    assert proc.returncode == 2 and "not-extracted" in proc.stderr
    with pytest.raises(CacheError, match="not-extracted"):
        from avel.pipeline.data.load import load_cache

        load_cache(root / "cache", rows=extra)
