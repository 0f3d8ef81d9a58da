"""benchmarks/weak_sel.py (issue #15): the localization shares against a model whose predictions
are set by hand, and its smallest run end to end into the table."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from avel.pipeline.data.dataset import AVData

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def ws():
    spec = importlib.util.spec_from_file_location("weak_sel", ROOT / "benchmarks" / "weak_sel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Fixed(torch.nn.Module):
    """A 'model' whose per-second predictions are given: row i of `pred` for video i."""

    def __init__(self, pred):
        super().__init__()
        self.pred = torch.tensor(pred)

    def predict(self, audio, visual):
        return self.pred[: audio.shape[0]]


def test_localization_counts_background_found_events_found_and_exact(ws):
    # 2 classes + background (2); 2 test videos of 4 seconds
    labels = torch.tensor([[0, 0, 2, 2], [2, 1, 1, 1]])
    data = AVData(
        torch.zeros(2, 4, 7, 7, 3),
        torch.zeros(2, 4, 5),
        labels,
        ["a", "b"],
        ["v0", "v1"],
        {"test": torch.tensor([0, 1])},
    )
    pred = [
        [0, 1, 2, 0],  # events: exact, wrong class (still an event); background: found, missed
        [1, 1, 2, 1],
    ]  # background missed; events: exact, missed (said background), exact
    got = ws.localization(Fixed(pred), data, "test")
    assert got["background_seconds"] == 3 and got["event_seconds"] == 5
    assert got["background_as_background"] == pytest.approx(1 / 3)
    assert got["event_as_event"] == pytest.approx(4 / 5)
    assert got["event_exact"] == pytest.approx(3 / 5)


def test_smallest_run_writes_the_figures_and_the_table(ws, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "weak_sel.py",
            "run",
            "--videos",
            "40",
            "--classes",
            "3",
            "--visual-dim",
            "32",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--threads",
            "1",
            "--runs",
            "sel/dam",
            "wsel/dam",
            "--out",
            str(out),
        ],
    )
    ws.main()
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"sel/dam", "wsel/dam"}
    for run in r["runs"].values():
        assert len(run["per_seed"]) == 2 and len(run["localization"]) == 2
        assert run["mean"] == pytest.approx(sum(run["per_seed"]) / 2)
    # the record spells out the config in force: supervised DAM's recipe, weak DAM's eq. 7
    assert r["runs"]["sel/dam"]["model_config"]["relevance_fusion"] == "geometric"
    assert r["runs"]["wsel/dam"]["model_config"]["relevance_fusion"] == "mean"
    monkeypatch.setattr(sys, "argv", ["weak_sel.py", "table", str(out)])
    ws.main()
    table = capsys.readouterr().out.splitlines()[-1]
    assert table.startswith("| noise 1.0 (40 videos, 1 epochs) |")
    assert f"{r['whole_video']:.3f} |" in table and "(bg " in table


def test_run_specs_and_the_side_by_side_runs(ws):
    assert ws.run_spec("sel/psp") == ("sel", "psp", {})
    assert ws.run_spec("wsel/dam:none") == ("wsel", "dam", {"weak_relevance": "none"})
    assert ws.run_spec("sel/psp:propagation=false,psp_threshold=0.05") == (
        "sel",
        "psp",
        {"propagation": False, "psp_threshold": 0.05},
    )
    assert ws.run_spec("sel/cmbs:topk=2") == ("sel", "cmbs", {"topk": 2})
    assert {s.split("/")[1] for s in ws.SIDE_BY_SIDE} == {"dam", "av_att", "psp", "cmbs"}
    assert {s.split("/")[0] for s in ws.SIDE_BY_SIDE} == {"sel", "wsel"} and len(ws.SIDE_BY_SIDE) == 8


def test_modality_noise_names_the_set_and_bad_noise_is_one_line(ws, tmp_path, capsys, monkeypatch):
    assert ws.set_name(1.0, None, None, 0.0) == "noise 1.0"
    assert ws.set_name(1.0, 1.25, 0.75, 0.0) == "audio 1.25, visual 0.75"
    assert ws.set_name(1.0, None, 0.5, 1.0) == "audio 1.0, visual 0.5, distractor 1.0"  # the other is --noise
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["weak_sel.py", "run", "--visual-noise", "-0.5", "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        ws.main()
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: visual_noise -0.5: must be >= 0.0\n" and not out.exists()
