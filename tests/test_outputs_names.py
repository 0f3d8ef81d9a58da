"""The files `avel localize` and `avel cml` write, for names that break naive writers:
two videos with one stem get one timeline each (not one overwriting the other), and names
that are not UTF-8 (or hold a newline) are written escaped in the JSON, CSV, HTML and PNG
(issue #27 item 3)."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch
from mediagen import tone, write_video

from avel.cli import main
from avel.core.config import FeatureSettings
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.pipeline.apps.save import distinct_names, plot_paths
from avel.pipeline.train.checkpoint import save_checkpoint

SETTINGS = FeatureSettings(
    visual_model="random",
    audio_model="random",
    frames_per_segment=1,
    frame_size=64,
    segments=10,
    visual_weights_sha256=random_weights_tag(0),
    audio_weights_sha256=random_weights_tag(0),
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "videos, names",
    [
        (["a/clip.mp4", "b/clip.mp4", "x/y.mp4"], ["a-clip.mp4", "b-clip.mp4", "y"]),
        (["clip.mp4", "clip.webm"], ["clip.mp4", "clip.webm"]),
        (["/r/a/c/v.mp4", "/r/b/c/v.mp4"], ["a-c-v.mp4", "b-c-v.mp4"]),
        (["v.mp4", "v.mp4"], ["v.mp4-1", "v.mp4-2"]),
        (["one.mp4"], ["one"]),
    ],
)
def test_distinct_names(videos, names):
    assert distinct_names(videos) == names
    assert len(set(plot_paths("tl.png", videos))) == len(videos)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    clip = write_video(d / "clip.mp4", duration_s=3, fps=2, color=lambda t: (200, 30, 30), audio=tone(440))
    for sub in ("a", "b"):
        (d / sub).mkdir()
        shutil.copy(clip, d / sub / "clip.mp4")
    bad = os.path.join(os.fsencode(d), b"bad\xff\nname.mp4")  # not UTF-8, and a newline
    shutil.copy(clip, bad)
    torch.manual_seed(0)
    cfg = model_config("sel", "dam", num_classes=3)
    sel = save_checkpoint(d / "sel.safetensors", build_model(cfg), cfg, ["alpha", "beta"], SETTINGS, {})
    cml_cfg = model_config("cml", "dam")
    cml = save_checkpoint(d / "cml.safetensors", build_model(cml_cfg), cml_cfg, [], SETTINGS, {})
    return {"dir": d, "sel": str(sel), "cml": str(cml), "bad": os.fsdecode(bad)}


def test_two_videos_with_one_stem_get_two_timelines(work):
    d = work["dir"]
    code = main(
        [
            "localize",
            str(d / "a" / "clip.mp4"),
            str(d / "b" / "clip.mp4"),
            "--checkpoint",
            work["sel"],
            "--device",
            "cpu",
            "--plot",
            str(d / "tl.png"),
        ]
    )
    assert code == 0
    for name in ("tl-a-clip.mp4.png", "tl-b-clip.mp4.png"):
        assert (d / name).read_bytes().startswith(PNG_MAGIC)


def test_names_that_are_not_utf8_are_written_escaped(work, capsys):
    d = work["dir"]
    out = d / "out"
    code = main(
        [
            "localize",
            work["bad"],
            "--checkpoint",
            work["sel"],
            "--device",
            "cpu",
            "--json",
            str(out / "r.json"),
            "--csv",
            str(out / "r.csv"),
            "--html",
            str(out / "r.html"),
            "--plot",
            str(out / "r.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "unexpected" not in err
    escaped = "bad\\xff\\nname.mp4"
    [doc] = json.loads((out / "r.json").read_text(encoding="utf-8"))
    assert doc["video"].endswith(escaped)
    with open(out / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["video"].endswith(escaped) for r in rows)
    page = (out / "r.html").read_text(encoding="utf-8")
    assert "bad%FF%0Aname.mp4" in page  # the player's source keeps the file's bytes
    assert (out / "r.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.html", "r.json", "r.png"]  # no temporary left

    code = main(
        [
            "cml",
            "--checkpoint",
            work["cml"],
            "--query",
            work["bad"],
            "--query-start",
            "0",
            "--query-end",
            "1",
            "--target",
            str(d / "clip.mp4"),
            "--device",
            "cpu",
            "--json",
            str(out / "q.json"),
            "--html",
            str(out / "q.html"),
            "--plot",
            str(out / "q.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((out / "q.json").read_text(encoding="utf-8"))["query"].endswith(escaped)
    assert "bad%FF%0Aname.mp4" in (out / "q.html").read_text(encoding="utf-8")
    assert (out / "q.png").read_bytes().startswith(PNG_MAGIC)
