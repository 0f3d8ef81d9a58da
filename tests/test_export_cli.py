"""`avel export` and `avel detect-eval` through the CLI on tiny hand-made inputs (a localize
JSON written by the real writer, an ActivityNet ground truth), against hand-computed
references; `avel localize --min-score` refuses a value out of range in one line."""

from __future__ import annotations

import json
import math

import pytest

from avel.cli import main
from avel.pipeline.apps.outputs import ModelInfo, VideoLocalization, write_json
from avel.pipeline.apps.windows import Event

INFO = ModelInfo(
    task="sel",
    model="dam",
    embedding="lstm",
    matching="dot",
    window=10,
    stride=5,
    checkpoint="/ckpt/sel.safetensors",
    classes=("a", "b"),
    features_from_checkpoint=True,
)


def cli(capfd, *args):
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    assert "Traceback" not in err
    return code, out, err.strip().splitlines()


@pytest.fixture
def results(tmp_path):
    rs = [
        VideoLocalization(
            video="/videos/walk.mp4",
            duration_s=30.0,
            model=INFO,
            events=[Event(2, 5, "a", 0.9), Event(10, 15, "b", 0.8)],
        ),
        VideoLocalization(
            video="/videos/broken.mp4", model=INFO, error="/videos/broken.mp4: not media", error_kind="not_media"
        ),
    ]
    path = tmp_path / "results.json"
    write_json(rs, path)
    return path


def test_export_activitynet(capfd, results, tmp_path):
    code, out, err = cli(capfd, "export", results, "--format", "activitynet", "--out", tmp_path / "det.json")
    assert code == 0, err
    assert json.loads((tmp_path / "det.json").read_text()) == {
        "version": "avel",
        "external_data": {},
        "results": {
            "walk": [
                {"label": "a", "score": 0.9, "segment": [2.0, 5.0]},
                {"label": "b", "score": 0.8, "segment": [10.0, 15.0]},
            ]
        },
    }  # the failed video left out


def test_export_fiftyone_counts_frames(capfd, results, tmp_path):
    code, _, err = cli(capfd, "export", results, "--format", "fiftyone", "--out", tmp_path / "fo", "--frame-rate", 25)
    assert code == 0, err
    labels = json.loads((tmp_path / "fo" / "labels.json").read_text())
    # [2 s, 5 s) at 25 fps: frames 51..125; [10 s, 15 s): 251..375
    assert labels == {
        "classes": None,
        "labels": {
            "walk": [
                {"label": "a", "support": [51, 125], "confidence": 0.9},
                {"label": "b", "support": [251, 375], "confidence": 0.8},
            ]
        },
    }
    assert json.loads((tmp_path / "fo" / "data.json").read_text()) == {"walk": "/videos/walk.mp4"}


def test_export_labelstudio(capfd, results, tmp_path):
    code, _, err = cli(
        capfd, "export", results, "--format", "labelstudio", "--out", tmp_path / "ls.json", "--frame-rate", 10
    )
    assert code == 0, err
    (task,) = json.loads((tmp_path / "ls.json").read_text())
    assert task["data"] == {"video": "/videos/walk.mp4"}
    (pred,) = task["predictions"]
    assert pred["model_version"] == "dam:sel.safetensors" and math.isclose(pred["score"], 0.85)
    assert [(r["value"]["ranges"], r["value"]["timelinelabels"]) for r in pred["result"]] == [
        ([{"start": 21, "end": 50}], ["a"]),
        ([{"start": 101, "end": 150}], ["b"]),
    ]


def ground_truth(path):
    path.write_text(
        json.dumps(
            {
                "version": "t",
                "taxonomy": [],
                "database": {
                    "walk": {
                        "subset": "testing",
                        "duration": 30.0,
                        "annotations": [{"segment": [2.0, 5.0], "label": "a"}, {"segment": [10.0, 20.0], "label": "b"}],
                    },
                    "other": {
                        "subset": "validation",
                        "duration": 10.0,
                        "annotations": [{"segment": [0.0, 4.0], "label": "a"}],
                    },
                },
            }
        )
    )
    return path


def test_detect_eval_by_hand(capfd, results, tmp_path):
    assert cli(capfd, "export", results, "--format", "activitynet", "--out", tmp_path / "det.json")[0] == 0
    gt = ground_truth(tmp_path / "gt.json")
    code, out, err = cli(
        capfd,
        "detect-eval",
        "--ground-truth",
        gt,
        "--results",
        tmp_path / "det.json",
        "--subset",
        "testing",
        "--json",
        tmp_path / "scores.json",
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "scores.json").read_text())
    # a: [2, 5) found exactly (AP 1 at every tIoU); b: [10, 15) against [10, 20): tIoU 0.5, a hit up to 0.5
    assert [round(doc["map"][k], 6) for k in ("0.1", "0.5", "0.6", "0.9")] == [1.0, 1.0, 0.5, 0.5]
    assert math.isclose(doc["average_map"], 7 / 9)
    # seconds: a 3 of 3; b 5 hit, 5 missed -> F1 2/3; the video's mean over its classes: 5/6
    assert math.isclose(doc["segment_f1"]["f1"], 5 / 6) and (doc["segment_f1"]["tp"], doc["segment_f1"]["fn"]) == (8, 5)
    assert doc["event_f1"]["f1"] == 1.0 and doc["videos"] == 1 and doc["subset"] == "testing"
    assert "average mAP 0.1:0.9: 77.8" in out
    # every subset: "other" has an event no one detected -> class a's AP halves
    code, out, err = cli(capfd, "detect-eval", "--ground-truth", gt, "--results", tmp_path / "det.json")
    assert code == 0 and "2 videos, 3 events, 2 detections" in out
    # the localize JSON itself gives the same scores (ids: the files' stems)
    code, _, err = cli(
        capfd,
        "detect-eval",
        "--ground-truth",
        gt,
        "--results",
        results,
        "--subset",
        "testing",
        "--json",
        tmp_path / "direct.json",
    )
    direct = json.loads((tmp_path / "direct.json").read_text())
    assert code == 0 and direct["map"] == doc["map"] and direct["segment_f1"] == doc["segment_f1"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "missing.json", "--format", "activitynet", "--out", "x.json"], "missing.json: no such file"),
        (["export", "{bad}", "--format", "activitynet", "--out", "x.json"], "is not a localization result"),
        (["export", "{gt}", "--format", "activitynet", "--out", "x.json"], "not `avel localize --json` output"),
        (["export", "{results}", "--format", "csv", "--out", "x.json"], "--format"),
        (["detect-eval", "--ground-truth", "missing.json", "--results", "{results}"], "missing.json: no such file"),
        (["detect-eval", "--ground-truth", "{gt}", "--results", "{gt}"], "neither ActivityNet results"),
        (
            ["detect-eval", "--ground-truth", "{results}", "--results", "{results}"],
            "results.json: must be a JSON object",
        ),
        (["localize", "v.mp4", "--checkpoint", "c.safetensors", "--min-score", "1.5"], "--min-score"),
    ],
)
def test_bad_inputs_are_one_line(capfd, results, tmp_path, args, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "v.mp4"}]))
    files = {"{bad}": bad, "{gt}": ground_truth(tmp_path / "gt.json"), "{results}": results}
    code, _, err = cli(capfd, *[files.get(a, a) for a in args])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
