"""`avel localize` and `avel cml` on generated media: sliding windows over videos of any
length, interval merging, the output formats, the timeline pictures, per-video errors, and
cross-modality queries, including one that must find content planted at a known offset.

Extractors are the seeded random ones, one frame a segment at 64x64 (pool5 2x2), so a second
of video costs milliseconds; SEL models have random weights (the windowing is checked
against the model itself), the CML model that must find the planted content is built by
hand from a catalogue video (see `planted_cml`)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mediagen import tone, write_video

from avel.core.config import FeatureSettings
from avel.core.errors import AvelError, CheckpointError, NoAudioStream, SettingsMismatch
from avel.extractors.registry import random_weights_tag
from avel.models.inference import SegmentScores
from avel.models.registry import build_model, model_config
from avel.pipeline.apps.localize import localize
from avel.pipeline.apps.outputs import CSV_COLUMNS, format_table, write_csv, write_json
from avel.pipeline.apps.query import QueryError, cml_query, format_query, query_segments, score_query, write_query_json
from avel.pipeline.apps.timeline import plot_query, plot_timeline
from avel.pipeline.apps.windows import WindowedScorer, label_seconds, merge_intervals, window_starts
from avel.pipeline.extract.features import FeatureExtractor
from avel.pipeline.extract.stream import FeatureStream
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
CLASSES = ["alpha", "beta", "gamma"]
BATCH = 16  # frames per VGG-19 forward (small: CPU)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def colour_at(t: float) -> tuple[int, int, int]:
    return [(200, 30, 30), (30, 200, 30), (30, 30, 200)][int(t) // 4 % 3]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("localize")
    paths = {}
    for seconds in (3, 10, 60):
        paths[seconds] = write_video(
            d / f"clip{seconds}.mp4", duration_s=seconds, fps=2, color=colour_at, audio=tone(440 + 20 * seconds)
        )
    paths["bad"] = str(d / "not a video.mp4")
    with open(paths["bad"], "w") as f:
        f.write("this is text\n")
    torch.manual_seed(0)
    cfg = model_config(task="sel", name="dam", num_classes=len(CLASSES) + 1)
    model = build_model(cfg)
    paths["sel"] = str(save_checkpoint(d / "sel.safetensors", model, cfg, CLASSES, SETTINGS, {}))
    cml_cfg = model_config(task="cml", name="dam")
    paths["cml"] = str(save_checkpoint(d / "cml.safetensors", build_model(cml_cfg), cml_cfg, [], SETTINGS, {}))
    paths["dir"] = d
    return paths


@pytest.fixture(scope="module")
def results(work):
    videos = [work[3], work[10], work[60], work["bad"], str(work["dir"] / "missing.mp4")]
    return localize(videos, work["sel"], batch_size=BATCH, progress=False, device="cpu")


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(SETTINGS, device="cpu", batch_size=BATCH)


# ---------------------------------------------------------------------------------------
# pure functions
@pytest.mark.parametrize(
    "n, window, stride, expected",
    [
        (0, 10, 5, []),
        (1, 10, 5, [0]),
        (3, 10, 5, [0]),
        (10, 10, 5, [0]),
        (11, 10, 5, [0, 1]),
        (15, 10, 5, [0, 5]),
        (20, 10, 5, [0, 5, 10]),
        (23, 10, 5, [0, 5, 10, 13]),
        (23, 10, 10, [0, 10, 13]),
        (12, 4, 1, list(range(9))),
        (60, 10, 5, list(range(0, 51, 5))),
    ],
)
def test_window_starts_hand_cases(n, window, stride, expected):
    assert window_starts(n, window, stride) == expected


def test_window_starts_cover_every_second_and_end_at_the_end():
    for n in range(1, 45):
        for window in range(1, 13):
            for stride in range(1, window + 1):
                starts = window_starts(n, window, stride)
                covered = np.zeros(n, dtype=int)
                for s in starts:
                    covered[s : s + window] += 1
                assert covered.min() >= 1 and starts == sorted(set(starts))
                assert min(starts[-1] + window, n) == n and all(s + min(window, n) <= n for s in starts)


def test_merge_intervals_hand_cases():
    bg = "background"
    assert merge_intervals([], []) == []
    assert merge_intervals([bg, bg], [0.1, 0.2]) == []
    events = merge_intervals(["dog", "dog", bg, "dog", "cat", "cat", "cat"], [0.2, 0.4, 0.9, 0.5, 0.1, 0.2, 0.6])
    assert [(e.start_s, e.end_s, e.label) for e in events] == [(0, 2, "dog"), (3, 4, "dog"), (4, 7, "cat")]
    assert [round(e.score, 6) for e in events] == [0.3, 0.5, 0.3]
    (only,) = merge_intervals([bg, "x", "x", "x"], [1, 1, 0.5, 0])
    assert (only.start_s, only.end_s, only.score) == (1, 4, 0.5)
    with pytest.raises(ValueError):
        merge_intervals(["x"], [])


def test_label_seconds_follows_the_dam_rule():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    labels, prob = label_seconds(probs, np.array([0.49, 0.5, 0.9]), CLASSES)
    assert labels == ["background", "gamma", "beta"] and np.allclose(prob, [0.7, 0.6, 0.5])
    # without relevance (AV_att): argmax over the classes, background the last column
    labels, _ = label_seconds(np.array([[0.1, 0.1, 0.1, 0.7], [0.5, 0.2, 0.2, 0.1]]), None, CLASSES)
    assert labels == ["background", "alpha"]


class StubModel:
    """Window outputs computed from the features alone, so the averages can be predicted:
    probability of class 0 = the segment's audio[0], relevance = audio[1], parts audio[2], audio[3]."""

    has_relevance = True

    def __init__(self):
        self.calls = []

    def __call__(self, audio, visual):
        self.calls.append(audio.shape[:2])
        p0 = audio[..., 0]
        probs = np.stack([p0, 1 - p0], axis=-1)
        return SegmentScores(probs, audio[..., 1], audio[..., 2], audio[..., 3])


def expected_means(feature_rows, n, window, stride, column):
    total, count = np.zeros(n), np.zeros(n)
    for s in window_starts(n, window, stride):
        total[s : s + window] += feature_rows[s : s + window, column]
        count[s : s + window] += 1
    return total / count


@pytest.mark.parametrize("n, window, stride, batch", [(23, 10, 5, 2), (3, 10, 5, 16), (10, 10, 5, 16), (37, 6, 4, 3)])
def test_windowed_scorer_averages_over_the_covering_windows(n, window, stride, batch):
    rng = np.random.default_rng(n)
    rows = rng.uniform(size=(n, 4))
    stub = StubModel()
    scorer = WindowedScorer(stub, window, stride, batch=batch)
    for t in range(n):
        scorer.push(rows[t], np.zeros((4, 3)))
        assert len(scorer._buffer) <= window and len(scorer._pending) < batch  # bounded memory
    per = scorer.finish()
    assert per.starts == window_starts(n, window, stride)
    assert np.allclose(per.probs[:, 0], expected_means(rows, n, window, stride, 0))
    assert np.allclose(per.relevance, expected_means(rows, n, window, stride, 1))
    assert np.allclose(per.visual_relevance, expected_means(rows, n, window, stride, 3))
    assert all(w == min(window, n) for _, w in stub.calls)


# ---------------------------------------------------------------------------------------
# localize
def test_localize_scores_every_second_of_short_medium_and_long_videos(results, work):
    short, medium, long_, bad, missing = results
    for r, seconds in ((short, 3), (medium, 10), (long_, 60)):
        assert r.ok and r.error_kind is None
        assert len(r.segments) == seconds and math.isclose(r.duration_s, seconds, abs_tol=0.01)
        assert [s.start_s for s in r.segments] == list(range(seconds))
        for s in r.segments:
            assert s.label in CLASSES + ["background"] and 0 <= s.probability <= 1
            assert 0 <= s.relevance <= 1 and (s.label == "background") == (s.relevance < 0.5)
        labels = [s.label for s in r.segments]
        confidence = [s.relevance * s.probability for s in r.segments]
        assert r.events == merge_intervals(labels, confidence)
        assert r.model.window == 10 and r.model.stride == 5 and r.model.classes == tuple(CLASSES)
        assert r.features["visual_model"] == "random" and r.features["segments"] is None
        assert r.features["visual_weights_sha256"] == random_weights_tag(0)


def test_one_window_equals_the_model_itself(results, work, extractor):
    """A 10-s video is one window: labels and relevance are exactly the model's."""
    from avel.pipeline.train.checkpoint import load_checkpoint

    model = load_checkpoint(work["sel"]).model
    audio, visual = [], []
    for a, v in FeatureStream(work[10], extractor):
        audio.append(a)
        visual.append(v.reshape(-1, v.shape[-1]))
    a = torch.from_numpy(np.stack(audio))[None]  # (1, 10, 128)
    v = torch.from_numpy(np.stack(visual))[None]  # (1, 10, 4, 512)
    with torch.no_grad():
        pred = model.predict(a, v)[0].tolist()
        out = model(a, v)
    names = CLASSES + ["background"]
    r = results[1]
    assert [s.label for s in r.segments] == [names[i] for i in pred]
    assert np.allclose([s.relevance for s in r.segments], out.relevance[0].numpy(), atol=1e-5)
    assert np.allclose([s.audio_relevance for s in r.segments], out.dam.audio_relevance[0].numpy(), atol=1e-5)
    probs = torch.softmax(out.category_logits[0], -1)
    assert np.allclose([s.probability for s in r.segments], float(probs.max()), atol=1e-5)


def test_a_video_that_fails_gives_a_one_line_error_naming_it(results, work):
    bad, missing = results[3], results[4]
    for r, path, kind in ((bad, work["bad"], "not-media"), (missing, str(work["dir"] / "missing.mp4"), "not-found")):
        assert not r.ok and r.error_kind == kind and r.segments == [] and r.events == []
        assert path in r.error and "\n" not in r.error
        assert format_table(r).count("\n") == 0 and path in format_table(r)
    assert all(r.ok for r in results[:3])  # the others went on


def test_json_schema_csv_rows_and_table(results, tmp_path):
    write_json(results, tmp_path / "all.json")
    doc = json.loads((tmp_path / "all.json").read_text())
    assert isinstance(doc, list) and len(doc) == 5
    top = {"video", "duration_s", "error", "error_kind", "segments", "events", "summary", "model", "features"}
    assert all(set(d) == top for d in doc)
    seg_keys = {"start_s", "end_s", "label", "probability", "relevance", "audio_relevance", "visual_relevance"}
    assert all(set(s) == seg_keys for s in doc[2]["segments"]) and len(doc[2]["segments"]) == 60
    assert all(set(e) == {"start_s", "end_s", "label", "score"} for d in doc for e in d["events"])
    assert set(doc[0]["model"]) == {
        "task",
        "model",
        "embedding",
        "matching",
        "window",
        "stride",
        "checkpoint",
        "classes",
        "features_from_checkpoint",
        "threshold",
    }
    summary = doc[2]["summary"]
    assert set(summary) == {"num_events", "event_seconds", "top_label"} and doc[3]["summary"] is None
    assert summary["num_events"] == len(doc[2]["events"])
    assert summary["event_seconds"] == sum(e["end_s"] - e["start_s"] for e in doc[2]["events"])
    assert summary["event_seconds"] == sum(s["label"] != "background" for s in doc[2]["segments"])
    assert FeatureSettings.from_dict(doc[0]["features"]).frames_per_segment == 1
    assert doc[3]["error"] and doc[3]["segments"] == []
    # the documented schema (docs/localization.md, the one place it is written) names exactly these keys
    readme = (Path(__file__).resolve().parents[1] / "docs" / "localization.md").read_text()
    block = readme[readme.index("`--json` has this schema:") :]
    block = block[block.index("```") + 3 : block.index("```", block.index("```") + 3)]
    documented = set(re.findall(r'"(\w+)":', block))
    written = top | seg_keys | {"start_s", "end_s", "label", "score"} | set(doc[0]["model"]) | set(summary)
    assert documented == written

    write_json(results[0], tmp_path / "one.json")
    assert json.loads((tmp_path / "one.json").read_text())["video"] == results[0].video

    write_csv(results, tmp_path / "all.csv")
    with open(tmp_path / "all.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 + 10 + 60  # one per second of the decoded videos
    assert [int(r["start_s"]) for r in rows if r["video"] == results[2].video] == list(range(60))

    table = format_table(results[2])
    assert results[2].video in table and "0:59" in table and len(table.splitlines()) > 60
    assert len(format_table(results[2], seconds=False).splitlines()) < 20


def test_timeline_png_for_short_and_long_videos(results, tmp_path):
    for r in results[:3]:
        path = tmp_path / f"{len(r.segments)}.png"
        plot_timeline(r, path)
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_timeline(results[3], tmp_path / "bad.png")


def test_wrong_task_checkpoints_are_refused(work):
    with pytest.raises(CheckpointError, match="a cml checkpoint, expected sel"):
        localize([work[3]], work["cml"], progress=False)
    with pytest.raises(CheckpointError, match="a sel checkpoint, expected cml"):
        cml_query(work["sel"], work[3], work[10])


def test_weights_that_differ_from_the_checkpoint_are_refused(work, tmp_path):
    other = FeatureSettings(**{**SETTINGS.to_dict(), "visual_weights_sha256": "ab" * 32})
    cfg = model_config(task="sel", name="dam", num_classes=4)
    path = save_checkpoint(tmp_path / "other.safetensors", build_model(cfg), cfg, CLASSES, other, {})
    with pytest.raises(SettingsMismatch, match="visual_weights_sha256") as e:
        localize([work[3]], path, progress=False)
    assert "audio_weights_sha256" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("stride", [0, 11])
def test_stride_must_fit_the_window(work, stride):
    with pytest.raises(AvelError, match="stride"):
        localize([work[3]], work["sel"], stride_s=stride, progress=False)


# ---------------------------------------------------------------------------------------
# CML queries: a catalogue of four audio-visual "classes", each a pattern and a tone
W_PX, H_PX = 64, 48
_yy, _xx = np.mgrid[0:H_PX, 0:W_PX]
PATTERNS = {
    "A": ((_yy // 6) % 2 == 0, (230, 40, 40), (20, 20, 20)),
    "Q": ((_xx // 8 + _yy // 8) % 2 == 0, (40, 220, 60), (240, 240, 240)),
    "B": ((_xx // 5) % 2 == 0, (40, 60, 230), (200, 200, 40)),
    "C": (((_xx + _yy) // 7) % 2 == 0, (200, 40, 200), (40, 200, 200)),
}
TONES_HZ = {"A": 300.0, "Q": 1000.0, "B": 2500.0, "C": 600.0}
KINDS = "AQBC"


def plan_video(path, plan: str, *, video: bool = True, audio: bool = True) -> str:
    """One second per letter: that class's pattern on screen and its tone in the audio."""

    def image(t):
        mask, on, off = PATTERNS[plan[min(int(t), len(plan) - 1)]]
        return np.where(mask[..., None], np.array(on, np.uint8), np.array(off, np.uint8))

    def sound(t):
        freq = np.array([TONES_HZ[plan[i]] for i in np.minimum(t.astype(int), len(plan) - 1)])
        return 0.4 * np.sin(2 * np.pi * freq * t)

    return write_video(
        path,
        duration_s=len(plan),
        fps=4,
        image=image if video else None,
        video=video,
        audio=sound if audio else None,
        size=(W_PX, H_PX),
    )


def fit_linear(x: np.ndarray, y: np.ndarray, ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affine map x [n, D] -> y [n, d] (ridge relative to the feature scale)."""
    mu, nu = x.mean(0), y.mean(0)
    xc = x - mu
    gram = xc @ xc.T
    coef = xc.T @ np.linalg.solve(gram + ridge * np.trace(gram) / len(x) * np.eye(len(x)), y - nu)  # (D, d)
    return torch.tensor(coef.T, dtype=torch.float32), torch.tensor(nu - mu @ coef, dtype=torch.float32)


@pytest.fixture(scope="module")
def planted(work, extractor):
    """A target whose seconds 4-6 show and sound class Q, queries of class Q, and a CML DAM
    checkpoint built by hand: its audio and visual projections send each class's catalogue
    features to the same code (3 x one-hot), the embedding is the mean, so the scaled match
    sigma(g . f_t / sqrt(4)) is ~0.99 where the target shows the query's class and 0.5
    elsewhere."""
    d = work["dir"]
    catalogue = plan_video(d / "catalogue.mp4", KINDS)
    audio, visual = [], []
    for a, v in FeatureStream(catalogue, extractor):
        audio.append(a)
        visual.append(v.mean(axis=(0, 1)))
    codes = 3.0 * np.eye(len(KINDS))
    cfg = model_config(task="cml", name="dam", embedding="avg", proj_hidden=0, dim=len(KINDS), scaled_matching=True)
    model = build_model(cfg)
    with torch.no_grad():
        for proj, x in ((model.dam.audio_proj, np.stack(audio)), (model.dam.visual_proj, np.stack(visual))):
            proj.weight[:], proj.bias[:] = fit_linear(x.astype(np.float64), codes)
    return {
        "ckpt": str(save_checkpoint(d / "planted.safetensors", model, cfg, [], SETTINGS, {})),
        "target": plan_video(d / "target.mp4", "AAAAQQQBBB"),
        "query_audio": plan_video(d / "query.m4a", "QQQ", video=False),
        "query_video": plan_video(d / "query.mp4", "CCQQQC"),
        "silent_video": plan_video(d / "silent.mp4", "QQQ", audio=False),
        "long_audio": plan_video(d / "long.m4a", "Q" * 12, video=False),
    }


def test_a2v_query_from_an_audio_file_finds_the_planted_seconds(planted, tmp_path):
    r = cml_query(planted["ckpt"], planted["query_audio"], planted["target"], device="cpu")
    assert (r.direction, r.query_modality, r.target_modality) == ("a2v", "audio", "visual")
    assert (r.query_start_s, r.query_end_s, r.query_length_s) == (0, 3, 3)
    assert (r.best.start_s, r.best.end_s) == (4, 7) and r.best.end_s - r.best.start_s == r.query_length_s
    scores = np.array([s.score for s in r.seconds])
    assert len(scores) == 10 and scores[4:7].min() > 0.9 and np.delete(scores, [4, 5, 6]).max() < 0.6
    assert len(r.window_scores) == 10 - 3 + 1 and r.score_kind == "relevance" and r.higher_is_better
    write_query_json(r, tmp_path / "q.json")
    doc = json.loads((tmp_path / "q.json").read_text())
    assert doc["best"] == {"start_s": 4, "end_s": 7, "score": round(r.best.score, 6)} and len(doc["seconds"]) == 10
    assert {
        "query",
        "target",
        "direction",
        "query_start_s",
        "query_end_s",
        "query_length_s",
        "window_scores",
        "score_kind",
        "higher_is_better",
        "model",
        "features",
        "target_duration_s",
    } <= set(doc)
    plot_query(r, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes().startswith(PNG_MAGIC)
    assert "4-7 s" in format_query(r)


def test_v2a_query_from_a_video_range_finds_the_planted_seconds(planted):
    r = cml_query(
        planted["ckpt"], planted["query_video"], planted["target"], query_start_s=2, query_end_s=5, device="cpu"
    )
    assert (r.direction, r.query_start_s, r.query_end_s) == ("v2a", 2, 5)
    assert (r.best.start_s, r.best.end_s) == (4, 7)
    # the same video's sound as the query (A2V) finds the same place
    r = cml_query(
        planted["ckpt"],
        planted["query_video"],
        planted["target"],
        query_start_s=2.0,
        query_end_s=4.5,
        query_modality="audio",
        device="cpu",
    )
    assert (r.direction, r.query_length_s) == ("a2v", 3) and (r.best.start_s, r.best.end_s) == (4, 7)


def test_query_errors_are_one_line_and_name_the_file(planted):
    ckpt, target = planted["ckpt"], planted["target"]
    with pytest.raises(QueryError, match="longer than the target") as e:
        cml_query(ckpt, planted["long_audio"], target)
    assert planted["long_audio"] in str(e.value) and target in str(e.value)
    with pytest.raises(QueryError, match="outside") as e:
        cml_query(ckpt, planted["query_video"], target, query_start_s=4, query_end_s=12)
    assert planted["query_video"] in str(e.value) and "12" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(QueryError, match="before"):
        cml_query(ckpt, planted["query_video"], target, query_start_s=3, query_end_s=3)
    with pytest.raises(NoAudioStream, match="no audio") as e:
        cml_query(ckpt, planted["silent_video"], target, query_modality="audio")
    assert planted["silent_video"] in str(e.value)
    with pytest.raises(QueryError, match="choose audio or visual"):
        cml_query(ckpt, planted["query_video"], target, query_modality="smell")


def test_query_segments_rule():
    assert query_segments(None, None, 10, 10.4, "q") == (0, 10)
    assert query_segments(2, 5, 10, 10.0, "q") == (2, 5)
    assert query_segments(2.5, 4.2, 10, 10.0, "q") == (2, 5)  # the segments overlapping the range
    for start, end in ((0, 11), (10, None), (-1, 3), (5, 5), (6, 2)):
        with pytest.raises(QueryError):
            query_segments(start, end, 10, 10.0, "q")


@pytest.mark.parametrize("matching, model_name", [("cross", "dam"), ("self", "dam"), (None, "avdln")])
def test_score_query_agrees_with_the_models_own_cml_inference(matching, model_name):
    """A query cut from the same video must give the start the model's `localize` gives."""
    torch.manual_seed(1)
    kw = {"matching": matching} if matching else {}
    model = build_model(model_config(task="cml", name=model_name, **kw)).eval()
    T, l = 10, 3
    audio, visual = torch.randn(T, 128), torch.randn(T, 512)
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, 2:5] = True
    for direction, q, t, modality in (("a2v", audio[2:5], visual, "audio"), ("v2a", visual[2:5], audio, "visual")):
        scores = score_query(model, q, t, modality)
        expected = int(model.localize(audio[None], visual[None], mask, direction)[0])
        assert scores.best == expected and len(scores.windows) == T - l + 1 and len(scores.per_second) == T
        best = np.argmax(scores.windows) if scores.higher_is_better else np.argmin(scores.windows)
        assert best == scores.best
        if matching == "cross":
            assert np.allclose(
                scores.per_second,
                model.query_scores(audio[None], visual[None], mask, direction)[0].detach().numpy(),
                atol=1e-6,
            )


def test_av_att_windows_have_no_relevance_and_match_its_own_prediction():
    """AV_att predicts background itself (E + 1 classes): relevance is null, the label the argmax."""
    from avel.pipeline.apps.localize import segment_scorer

    torch.manual_seed(2)
    model = build_model(model_config(task="sel", name="av_att", num_classes=len(CLASSES) + 1, visual_dim=32)).eval()
    audio, visual = (
        np.random.default_rng(0).standard_normal((2, 10, 128)).astype(np.float32),
        np.random.default_rng(1).standard_normal((10, 4, 32)).astype(np.float32),
    )
    scorer = WindowedScorer(segment_scorer(model, torch.device("cpu")), 10, 5)
    for t in range(10):
        scorer.push(audio[0, t], visual[t])
    per = scorer.finish()
    assert per.relevance is None and per.probs.shape == (10, len(CLASSES) + 1)
    labels, _ = label_seconds(per.probs, per.relevance, CLASSES)
    expected = model.predict(torch.from_numpy(audio[:1]), torch.from_numpy(visual[None]))[0].tolist()
    assert labels == [(CLASSES + ["background"])[i] for i in expected]
