"""Exports of localization results (pipeline/apps/exports.py) read back by their receivers:
the ActivityNet results by avel's evaluator (pipeline/train/detection.py), the FiftyOne
folder by FiftyOne's own FiftyOneTemporalDetectionDataset importer (and into a dataset
where FiftyOne's database can run), the Label Studio tasks by label-studio-sdk's labeling
config validator and its prediction model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from avel.core.errors import ConfigError
from avel.pipeline.apps import exports
from avel.pipeline.apps.outputs import VideoLocalization
from avel.pipeline.apps.windows import Event
from avel.pipeline.data.activitynet import Segment, read_results
from avel.pipeline.train.detection import detection_map


def results(tmp_path):
    return [
        VideoLocalization(
            str(tmp_path / "clip_a.mp4"), 20.0, events=[Event(2, 5, "dog", 0.9), Event(5, 8, "car", 0.4)]
        ),
        VideoLocalization(str(tmp_path / "broken.mp4"), error="broken.mp4: not a media file", error_kind="not-media"),
        VideoLocalization(str(tmp_path / "quiet.mp4"), 6.0, events=[]),
    ]


def test_frame_support():
    assert exports.frame_support(2, 5, 25) == (51, 125)  # frames showing [2 s, 5 s): (n-1)/25 in [2, 5)
    assert exports.frame_support(0, 1, 30) == (1, 30)
    assert exports.frame_support(0.5, 1.0, 29.97) == (15, 30)  # 0.5 x 29.97 = 14.985 -> frame 15 shows it
    assert exports.frame_support(3, 3.01, 10) == (31, 31)


def test_activitynet_results_read_back_by_the_evaluator(tmp_path):
    """Truth: clip_a dog [2,5], car [5,7]. Exported: dog [2,5] 0.9 (tIoU 1), car [5,8] 0.4
    (tIoU 2/3: a hit up to threshold 0.6). mAP = (1 + car's AP) / 2 = 1 at 0.1..0.6, 0.5 at
    0.7..0.9; the average is (6 + 1.5) / 9."""
    path = exports.write_activitynet(results(tmp_path), tmp_path / "res.json")
    doc = json.loads(path.read_text())
    assert set(doc) == {"version", "results", "external_data"} and set(doc["results"]) == {"clip_a", "quiet"}
    assert doc["results"]["clip_a"][0] == {"label": "dog", "score": 0.9, "segment": [2.0, 5.0]}
    truth = [Segment("clip_a", 2, 5, "dog"), Segment("clip_a", 5, 7, "car")]
    s = detection_map(truth, read_results(path))
    np.testing.assert_allclose(s.map, [1] * 6 + [0.5] * 3)
    assert s.average_map == pytest.approx(7.5 / 9) and s.map_at(0.5) == 1.0


def test_refusals(tmp_path):
    nan = [VideoLocalization("x.mp4", 5.0, events=[Event(0, 1, "dog", math.nan)])]
    with pytest.raises(ConfigError, match="x.mp4.*finite"):
        exports.write_activitynet(nan, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()
    twins = [VideoLocalization("a/v.mp4", 5.0), VideoLocalization("b/v.mkv", 5.0)]
    with pytest.raises(ConfigError, match="same video id"):
        exports.activitynet_results(twins)
    assert set(exports.activitynet_results(twins, video_ids={"b/v.mkv": "v2"})["results"]) == {"v", "v2"}
    with pytest.raises(ConfigError, match="frame rate"):
        exports.labelstudio_tasks(twins[:1], frame_rate={"other.mp4": 25})
    with pytest.raises(ConfigError, match="frame rate"):
        exports.fiftyone_dataset(twins[:1], frame_rate=0)


def test_fiftyone_folder_read_by_fiftyones_importer(tmp_path):
    foud = pytest.importorskip("fiftyone.utils.data", reason="fiftyone is not installed (pip install fiftyone)")
    out = exports.write_fiftyone(
        results(tmp_path),
        tmp_path / "fo",
        frame_rate={str(tmp_path / "clip_a.mp4"): 25, str(tmp_path / "quiet.mp4"): 30},
    )
    importer = foud.FiftyOneTemporalDetectionDatasetImporter(dataset_dir=str(out), data_path="data.json")
    with importer:
        samples = {path: label for path, _, label, _ in importer}
    assert set(samples) == {str(tmp_path / "clip_a.mp4"), str(tmp_path / "quiet.mp4")}
    dets = samples[str(tmp_path / "clip_a.mp4")].detections
    assert [(d.label, list(d.support), d.confidence) for d in dets] == [
        ("dog", [51, 125], 0.9),
        ("car", [126, 200], 0.4),
    ]
    assert type(samples[str(tmp_path / "clip_a.mp4")]).__name__ == "TemporalDetections"


FIFTYONE_DATASET = textwrap.dedent("""
    import sys
    import fiftyone as fo
    ds = fo.Dataset.from_dir(dataset_dir=sys.argv[1], data_path="data.json",
                             dataset_type=fo.types.FiftyOneTemporalDetectionDataset, label_field="events")
    print(ds.media_type, sorted((d.label, tuple(d.support)) for s in ds for d in s.events.detections))
    ds.delete()
""")


def test_fiftyone_dataset_with_its_database(tmp_path):
    """The export loaded into a FiftyOne dataset: FiftyOne starts its own database (mongod,
    bound to 127.0.0.1, in a folder of this test) in a child process and stops it when that
    exits. Skipped where FiftyOne has no mongod: fiftyone-db fetches it at run time, which a
    machine without internet access cannot do."""
    pytest.importorskip("fiftyone", reason="fiftyone is not installed (pip install fiftyone)")
    import importlib.util

    db = importlib.util.find_spec("fiftyone.db")
    bins = os.path.join(os.path.dirname(db.origin), "bin") if db and db.origin else ""
    if not os.path.exists(os.path.join(bins, "mongod")):
        pytest.skip(
            "FiftyOne's database (mongod) is not installed: fiftyone-db downloads it when first used, "
            "and this machine cannot reach the download; the importer test reads the same folder"
        )
    out = exports.write_fiftyone(results(tmp_path)[:1], tmp_path / "fo", frame_rate=25)
    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(tmp_path / "db"), FIFTYONE_DO_NOT_TRACK="true")
    run = subprocess.run(
        [sys.executable, "-c", FIFTYONE_DATASET, str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "video [('car', (126, 200)), ('dog', (51, 125))]" in run.stdout


def test_labelstudio_tasks_validate_with_the_sdk(tmp_path):
    li = pytest.importorskip("label_studio_sdk.label_interface", reason="label-studio-sdk is not installed")
    types = pytest.importorskip("label_studio_sdk.types")
    path = exports.write_labelstudio(results(tmp_path), tmp_path / "tasks.json", frame_rate=25, model_version="dam")
    tasks = json.loads(path.read_text())
    assert [t["data"]["video"] for t in tasks] == [str(tmp_path / "clip_a.mp4"), str(tmp_path / "quiet.mp4")]
    config = li.LabelInterface(exports.labelstudio_config(["dog", "car"], 25))
    for t in tasks:
        (pred,) = t["predictions"]
        assert config.validate_prediction(pred, return_errors=True) == []
        types.PredictionRequest(task=1, **pred)  # the API's prediction model; the task id is given on import
    value = tasks[0]["predictions"][0]["result"][1]["value"]
    assert value == {"ranges": [{"start": 126, "end": 200}], "timelinelabels": ["car"]}
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(0.65)
    other = li.LabelInterface(exports.labelstudio_config(["cat"], 25))  # the validator does reject: a label it lacks
    assert other.validate_prediction(tasks[0]["predictions"][0], return_errors=True)
