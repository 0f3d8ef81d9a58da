"""Issue #10: bad input gives one line, never a traceback. Every CLI command with malformed
options (exit 2, one line on stderr, before any work); the issue's list of tracebacks
(damaged caches and checkpoints, missing splits, ...); NaN features, empty splits and a
resume of a failed batch (item 9); the CML split under AVE's file names (item 8).

The CLI runs in-process through `avel.cli.main` (what the console script calls), so the
many cases cost no interpreter start-up each."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mediagen import tone, write_video
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cache import fake

from avel.cli import main
from avel.core.annotations import HEADER, parse_annotations
from avel.core.config import FeatureSettings
from avel.core.errors import AvelError
from avel.models.registry import model_config
from avel.pipeline.cache.meta import CacheMeta
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.data.load import load_data
from avel.pipeline.train.checkpoint import save_checkpoint
from avel.pipeline.train.loop import TrainConfig, evaluate, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

T = 4  # segments a video
SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1, segments=T)
SEL_SPLITS = {"train": range(0, 8), "val": range(8, 10), "test": range(10, 12)}
CML_SPLITS = {"train_order_match": range(0, 3), "val_order_match": range(3, 9), "test_order_match": range(9, 12)}


# random networks, one frame a second, one decoding thread on the CPU: a batch job in seconds
RANDOM_CPU = [
    "--visual-model",
    "random",
    "--audio-model",
    "random",
    "--frames-per-segment",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]


def rows_text(n: int = 12) -> list[str]:
    """Two classes; video i has a partial event (1 or 2 segments long) that starts at i % 2,
    except videos 6 and 7 whose event covers all T segments (CML skips those)."""
    lines = []
    for i in range(n):
        start, end = (0, T) if i in (6, 7) else (i % 2, i % 2 + 1 + i % 3 // 2)
        lines.append(f"{('dog', 'cat')[i % 2]}&v{i:02d}&good&{start}&{end}")
    return lines


def make_cache(path: Path, *, nan_in: str | None = None, splits: dict | None = None) -> Path:
    lines = rows_text()
    splits = SEL_SPLITS if splits is None else splits
    meta = CacheMeta(SETTINGS, annotations="\n".join([HEADER, *lines]) + "\n")
    cache = FeatureCache.create_or_open(path, meta)
    with cache.writer() as w:
        for i in range(12):
            v = fake(f"v{i:02d}", T, seed=i)
            if v.id == nan_in:
                v.audio[1, 3] = np.nan
            w.add(v)
    cache.close()
    (path / "splits").mkdir(exist_ok=True)
    for name, rows in splits.items():
        (path / "splits" / f"{name}.txt").write_text("".join(lines[i] + "\n" for i in rows))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A cache, SEL and CML checkpoints trained on it, an AVE-layout export, and paths."""
    root = tmp_path_factory.mktemp("bad-input")
    make_cache(root / "cache")
    data = load_data(root / "cache")
    for task in ("sel", "cml"):
        result = train(data, TrainConfig(model_config(task=task), epochs=1, device="cpu", progress=False))
        save_checkpoint(
            root / f"{task}.safetensors",
            result.model,
            result.model_config,
            data.class_names,
            data.settings,
            result.test,
        )
    (root / "Annotations.txt").write_text("\n".join([HEADER, *rows_text()]) + "\n")
    assert (
        main(
            [
                "export-ave",
                str(root / "cache"),
                "--annotations",
                str(root / "Annotations.txt"),
                "--out",
                str(root / "ave"),
            ]
        )
        == 0
    )
    (root / "clip.mp4").write_bytes(b"not opened: every case fails before reading it")
    return root


def cli(capfd, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    _, err = capfd.readouterr()
    assert "Traceback" not in err
    return code, err.replace("\r", "\n").strip().splitlines()


def assert_one_line(code: int, lines: list[str], *needles: str) -> str:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "unexpected" not in lines[0], lines[0]  # main()'s last resort for a bug
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- every command with malformed options ---------------------------------------------------------
def malformed_cases(w: Path) -> list[tuple[list, str]]:
    V, C, K, Q = w / "clip.mp4", w / "cache", w / "sel.safetensors", w / "cml.safetensors"
    out, new = w / "never-written", w / "never-written.h5"
    fast = ["--visual-model", "random", "--audio-model", "random"]
    cases = [
        (["extract", V, "--out", new, *fast, "--workers", "-1"], "--workers"),
        (["extract", V, "--out", new, *fast, "--frames-per-segment", "0"], "--frames-per-segment"),
        (["extract", V, "--out", new, *fast, "--segments", "0"], "--segments"),
        (["extract", V, "--out", new, *fast, "--precision", "fp8"], "--precision"),
        (["extract", V, "--out", new, *fast, "--storage-dtype", "int8"], "--storage-dtype"),
        (["extract", V, "--out", new, *fast, "--batch-size", "0"], "--batch-size"),
        (["extract", V, "--out", new, *fast, "--device", "gpu"], "--device"),
        (["extract", V, "--out", new, "--visual-model", "vgg16"], "--visual-model"),
        (["extract", "--out", new], "Missing argument"),
        (["extract", V, "--no-such-option"], "--no-such-option"),
        (["preprocess", V, "--out", out, *fast, "--commit-every", "0"], "--commit-every"),
        (["preprocess", V, "--out", out, *fast, "--shard", "2/2"], "--shard"),
        (["preprocess", V, "--out", out, *fast, "--shard", "x"], "--shard"),
        (["preprocess", V, "--out", out, *fast, "--on-missing-audio", "bogus"], "--on-missing-audio"),
        (["preprocess", V, "--out", out, *fast, "--storage-dtype", "bogus"], "--storage-dtype"),
        (["preprocess", V, "--out", out, *fast, "--storage-dtype", "uint8"], "--storage-dtype"),
        (["preprocess", V, "--out", out, *fast, "--workers", "x"], "--workers"),
        (["preprocess", V, "--out", out, *fast, "--device", "cuda:x"], "--device"),
        (["preprocess", V], "--out"),
        # the Ray engine's options are refused before any Ray starts
        (["preprocess", V, "--out", out, *fast, "--engine", "spark"], "--engine"),
        (["preprocess", V, "--out", out, *fast, "--engine", "ray", "--extractors", "0"], "--extractors"),
        (["preprocess", V, "--out", out, *fast, "--engine", "ray", "--decoders", "0"], "--decoders"),
        (
            ["preprocess", V, "--out", out, *fast, "--engine", "ray", "--gpus-per-extractor", "-1"],
            "--gpus-per-extractor",
        ),
        (["preprocess", V, "--out", out, *fast, "--engine", "ray", "--ray-address", "nowhere"], "--ray-address"),
        (["preprocess", V, "--out", out, *fast, "--extractors", "2"], "--engine ray"),
        (["merge"], "Missing argument"),
        (["merge", C], "--out"),
        (["merge", C, "--out"], "--out"),
        (["export-ave", C, "--annotations", w / "Annotations.txt", "--out", out, "--dtype", "float16"], "--dtype"),
        (["export-ave", C, "--out", out], "--annotations"),
        (["synth", out, "--videos", "0"], "--videos"),
        (["synth", out, "--classes", "29"], "--classes"),
        (["synth", out, "--seed", "x"], "--seed"),
        (["synth", out, "--workers", "0"], "--workers"),
        (["synth"], "Missing argument"),
        (["train", "bogus", "--data", C, "--out", out], "bogus"),
        (["train", "sel", "--data", C], "--out"),
        (["evaluate", "sel", "--data", C, "--checkpoint", K, "--device", "gpu"], "--device"),
        (["evaluate", "sel", "--data", C], "--checkpoint"),
        (["evaluate", "sel", "--data", C, "--checkpoint", K, "--split", "bogus"], "'bogus' split"),
        (["localize", V, "--checkpoint", K, "--stride", "0"], "--stride"),
        (["localize", V, "--checkpoint", K, "--stride", "x"], "--stride"),
        (["localize", V, "--checkpoint", K, "--device", "gpu"], "--device"),
        (["localize", "--checkpoint", K], "Missing argument"),
        (["cml", "--checkpoint", Q, "--query", V, "--target", V, "--query-start", "nan"], "--query-start"),
        (["cml", "--checkpoint", Q, "--query", V, "--target", V, "--query-end", "inf"], "--query-end"),
        (["cml", "--checkpoint", Q, "--query", V, "--target", V, "--query-start", "-1"], "--query-start"),
        (
            ["cml", "--checkpoint", Q, "--query", V, "--target", V, "--query-start", "4", "--query-end", "2"],
            "--query-start",
        ),
        (["cml", "--checkpoint", Q, "--query", V, "--target", V, "--query-modality", "smell"], "--query-modality"),
        (["cml", "--checkpoint", Q, "--query", V, "--target", V, "--device", "gpu"], "--device"),
        (["cml", "--query", V, "--target", V], "--checkpoint"),
        (["demo", "--out", out, "--videos", "5"], "--videos"),
        (["demo", "--out", out, "--classes", "1"], "--classes"),
        (["demo", "--out", out, "--device", "gpu"], "--device"),
        (["no-such-command"], "no-such-command"),
    ]
    train_options = [
        ("--embedding", "bogus"),
        ("--matching", "bogus"),
        ("--device", "gpu"),
        ("--dtype-in-ram", "bogus"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--dropout", "2"),
        ("--heads", "3"),
        ("--weight-decay", "-1"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--seeds", "0"),
        ("--lambda", "2"),
        ("--model", "vgg"),
    ]
    if not torch.cuda.is_available():
        train_options.append(("--device", "cuda"))
    for task in ("sel", "cml"):
        cases += [(["train", task, "--data", C, "--out", out, flag, value], flag) for flag, value in train_options]
    return cases


COMMANDS = ("extract", "preprocess", "merge", "export-ave", "synth", "train", "evaluate", "localize", "cml", "demo")


def test_every_command_refuses_malformed_options_in_one_line(work, capfd):
    cases = malformed_cases(work)
    assert {args[0] for args, _ in cases} >= set(COMMANDS)  # every command is covered
    failures = []
    for args, needle in cases:
        code, lines = cli(capfd, *args)
        try:
            assert_one_line(code, lines, needle)
        except AssertionError as e:
            failures.append(f"avel {' '.join(map(str, args))}: {e}")
    assert not failures, "\n".join(failures)
    assert not (work / "never-written").exists() and not (work / "never-written.h5").exists()  # no work was done


# -- the list of tracebacks --------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "{bad",
        "[1, 2]",
        '{"format": "avel-features/1"}',
        '"a string"',
        '{"settings": [1]}',
        '{"settings": {"frames_per_segment": 0}}',
    ],
)
def test_a_damaged_cache_json_is_one_line(work, tmp_path, capfd, text):
    shutil.copytree(work / "cache", tmp_path / "c")
    (tmp_path / "c" / "cache.json").write_text(text)
    for args in (
        ["train", "sel", "--data", tmp_path / "c", "--out", tmp_path / "x.safetensors", "--device", "cpu"],
        ["merge", tmp_path / "c", "--out", tmp_path / "m.h5"],
    ):
        assert_one_line(*cli(capfd, *args), "cache.json")


def test_garbage_in_a_part_is_a_clear_error_or_harmless(work, tmp_path):
    """200 bytes of garbage at offsets across a part (its HDF5 metadata included): reading
    either works or raises one AvelError naming the file, never another exception."""
    src = work / "cache"
    [part] = (src / "parts").glob("part-*.h5")
    size = part.stat().st_size
    offsets = sorted({*range(0, 16384, 512), *range(size - 8192, size - 200, 1024), *(size * i // 9 for i in range(9))})
    outcomes = {}
    for offset in offsets:
        shutil.rmtree(tmp_path / "c", ignore_errors=True)
        shutil.copytree(src, tmp_path / "c")
        with open(tmp_path / "c" / "parts" / part.name, "r+b") as f:
            f.seek(offset)
            f.write(random.Random(offset).randbytes(200))
        try:
            load_data(tmp_path / "c")
            outcomes[offset] = "ok"
        except AvelError as e:
            assert "\n" not in str(e)
            assert part.name in str(e) or "tmp" in str(e), e
            outcomes[offset] = type(e).__name__
    assert set(outcomes.values()) - {"ok"}, outcomes  # some offsets hit what matters


def test_missing_and_unknown_splits_are_one_line(work, tmp_path, capfd):
    shutil.copytree(work / "cache", tmp_path / "c")
    (tmp_path / "c" / "splits" / "val.txt").unlink()
    assert_one_line(
        *cli(capfd, "train", "sel", "--data", tmp_path / "c", "--out", tmp_path / "x", "--device", "cpu"),
        "'val' split",
        str(tmp_path / "c"),
    )
    assert_one_line(
        *cli(
            capfd,
            "evaluate",
            "sel",
            "--data",
            work / "cache",
            "--checkpoint",
            work / "sel.safetensors",
            "--split",
            "bogus",
            "--device",
            "cpu",
        ),
        "'bogus' split",
    )


def _edited_checkpoint(src: Path, dst: Path, edit) -> Path:
    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["avel"])
    tensors = load_file(str(src))
    meta = edit(meta)
    save_file(tensors, str(dst), metadata={"avel": json.dumps(meta)})
    return dst


def _set(path: str, value):
    def edit(meta):
        *parents, last = path.split(".")
        d = meta
        for p in parents:
            d = d[p]
        d[last] = value
        return meta

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _set("model_config.heads", 0),
        _set("model_config", None),
        _set("class_names", None),
        _set("model_config.num_classes", "abc"),
        _set("feature_settings", [1]),
        lambda meta: [meta],
        _set("metrics", [1]),
        _set("class_names", [1, 2]),
        _set("model_config.embedding", "transformer"),
    ],
    ids=[
        "heads-0",
        "model_config-null",
        "class_names-null",
        "num_classes-abc",
        "feature_settings-list",
        "metadata-list",
        "metrics-list",
        "class_names-ints",
        "embedding-unknown",
    ],
)
def test_hand_edited_checkpoint_metadata_is_one_line(work, tmp_path, capfd, edit):
    ckpt = _edited_checkpoint(work / "sel.safetensors", tmp_path / "edited.safetensors", edit)
    line = assert_one_line(
        *cli(capfd, "evaluate", "sel", "--data", work / "cache", "--checkpoint", ckpt, "--device", "cpu"),
        "edited.safetensors",
        "malformed avel metadata",
    )
    assert len(line) < 300, line


def test_weights_that_do_not_fit_are_one_short_line(work, tmp_path, capfd):
    ckpt = _edited_checkpoint(
        work / "sel.safetensors", tmp_path / "other.safetensors", _set("model_config.lstm_hidden", 64)
    )
    line = assert_one_line(
        *cli(capfd, "evaluate", "sel", "--data", work / "cache", "--checkpoint", ckpt, "--device", "cpu"),
        "other.safetensors",
        "weights do not fit",
        "of another shape",
    )
    assert len(line) < 300, line


def test_ave_layout_settings_that_are_not_an_object(work, tmp_path, capfd):
    shutil.copytree(work / "ave", tmp_path / "ave")
    (tmp_path / "ave" / "avel_settings.json").write_text("[1, 2]")
    assert_one_line(
        *cli(capfd, "train", "sel", "--data", tmp_path / "ave", "--out", tmp_path / "x", "--device", "cpu"),
        "avel_settings.json",
    )


def test_a_read_only_cache_is_refused_before_any_work(work, tmp_path, capfd, monkeypatch):
    """(The real read-only mount is in test_cache_safety's tmpfs test.)"""
    shutil.copytree(work / "cache", tmp_path / "c")
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "c")) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "v.mp4").write_bytes(b"never decoded")
    line = assert_one_line(
        *cli(
            capfd,
            "preprocess",
            tmp_path / "src",
            "--out",
            tmp_path / "c",
            "--visual-model",
            "random",
            "--audio-model",
            "random",
            "--frames-per-segment",
            "1",
            "--segments",
            str(T),
            "--device",
            "cpu",
        ),
        "cannot write into this cache",
        "Read-only file system",
    )
    assert str(tmp_path / "c") in line


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path, capfd):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad\nname.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    code, lines = cli(
        capfd,
        "preprocess",
        tmp_path / "src",
        "--out",
        tmp_path / "c",
        *RANDOM_CPU,
    )
    assert code == 1
    failures = [line for line in lines if "bad\\nname.mp4" in line and not line.startswith("bad\\nname.mp4: 0s [")]
    assert failures and all(line.startswith(("failed: ", "  ")) for line in failures), lines
    assert not any(line.startswith("name.mp4") for line in lines), lines  # the video's progress bar is escaped too


# -- item 9: NaN features, empty splits, a failed batch resumed ------------------------------------
def test_nan_features_in_a_cache_are_one_line_naming_the_video(tmp_path, capfd):
    make_cache(tmp_path / "c", nan_in="v03")
    with pytest.raises(AvelError, match="audio features of video 'v03' hold NaN"):
        load_data(tmp_path / "c")
    assert_one_line(
        *cli(capfd, "train", "cml", "--data", tmp_path / "c", "--out", tmp_path / "x", "--device", "cpu"),
        "'v03'",
        "NaN",
    )


def test_inf_features_in_the_ave_layout_name_the_row(work, tmp_path):
    import h5py

    shutil.copytree(work / "ave", tmp_path / "ave")
    with h5py.File(tmp_path / "ave" / "visual_feature.h5", "r+") as f:
        f["avadataset"][5, 2, 3, 3, 7] = np.inf
    with pytest.raises(AvelError, match=r"visual_feature.h5: row 5 .*NaN or infinity"):
        load_data(tmp_path / "ave")


@pytest.mark.parametrize("empty", ["train", "val", "test"])
def test_an_empty_split_is_an_error_not_nan(work, tmp_path, capfd, empty):
    data = load_data(work / "cache")
    data.splits[empty] = data.splits[empty][:0]
    with pytest.raises(AvelError, match=f"'{empty}' split is empty"):
        train(data, TrainConfig(model_config(task="sel"), epochs=1, device="cpu", progress=False))
    shutil.copytree(work / "cache", tmp_path / "c")
    (tmp_path / "c" / "splits" / f"{empty}.txt").write_text("")
    assert_one_line(
        *cli(capfd, "train", "sel", "--data", tmp_path / "c", "--out", tmp_path / "x", "--device", "cpu"),
        f"'{empty}' split is empty",
    )


def test_evaluating_an_empty_split_or_one_cml_cannot_score_is_an_error(work):
    from avel.pipeline.train.checkpoint import load_checkpoint

    data = load_data(work / "cache")
    cml = load_checkpoint(work / "cml.safetensors").model
    data.splits["test"] = torch.tensor([6, 7])  # full-length events only: the CML protocol skips both
    with pytest.raises(AvelError, match="no video of the 'test' split has an event that is partial"):
        evaluate(cml, data, "test")
    data.splits["test"] = data.splits["test"][:0]
    with pytest.raises(AvelError, match="'test' split is empty"):
        evaluate(load_checkpoint(work / "sel.safetensors").model, data, "test")


def test_a_batch_whose_every_video_failed_exits_1_on_resume(tmp_path, capfd):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    args = [
        "preprocess",
        tmp_path / "src",
        "--out",
        tmp_path / "c",
        *RANDOM_CPU,
    ]
    code, lines = cli(capfd, *args)
    assert code == 1 and any("0 extracted" in line and "1 failed" in line for line in lines), lines
    code, lines = cli(capfd, *args)  # nothing opens: no model built, nothing written, the failure listed again
    assert code == 1, lines
    assert any("0 extracted" in line and "1 failed" in line for line in lines), lines
    assert any("broken.mp4" in line for line in lines), lines
    write_video(tmp_path / "src" / "good.mp4", duration_s=2, audio=tone(300))
    code, lines = cli(capfd, *args)  # with a video that opens, the broken one is recorded as failed
    assert code == 1 and any(ln.startswith("1 extracted, 0 already done, 1 failed") for ln in lines), lines
    code, lines = cli(capfd, *args)  # nothing to do: the video is recorded as failed
    assert code == 1, lines
    assert any("1 failed in an earlier run (--retry-failed tries them again)" in line for line in lines), lines
    assert any("broken.mp4" in line for line in lines), lines


# -- item 8: the CML split under AVE's file names ------------------------------------------------
def test_cml_trains_and_evaluates_on_the_ave_cml_split_files(tmp_path):
    """A cache whose split files are AVE's CML names (val_order_match.txt ...) trains CML on
    them, not on the SEL splits, and an export keeps them as *_order_match.h5."""
    make_cache(tmp_path / "c", splits={**SEL_SPLITS, **CML_SPLITS})
    data = load_data(tmp_path / "c")
    assert {"val_match", "test_match", "train_match"} <= set(data.splits)
    result = train(data, TrainConfig(model_config(task="cml"), epochs=1, device="cpu", progress=False))
    partial = [i for i in CML_SPLITS["val_order_match"] if i not in (6, 7)]  # the protocol's videos of val_match
    assert result.val["n_videos"] == len(partial) == 4  # SEL's val split has 2
    assert result.test["n_videos"] == len(CML_SPLITS["test_order_match"])
    rows = parse_annotations("\n".join(rows_text()))
    from avel.pipeline.data.ave import read_ave_layout, write_ave_layout

    write_ave_layout(tmp_path / "ave", data, annotations=rows)
    assert (tmp_path / "ave" / "val_order_match.h5").is_file()
    back = read_ave_layout(tmp_path / "ave")
    assert torch.equal(back.splits["val_match"], data.splits["val_match"])


def test_preprocess_keeps_the_cml_split_files_beside_the_annotations(tmp_path):
    from avel.pipeline.extract.local import annotated_jobs

    lines = rows_text()
    (tmp_path / "Annotations.txt").write_text("\n".join([HEADER, *lines]) + "\n")
    for name, rows in {**SEL_SPLITS, **CML_SPLITS}.items():
        file = f"{name}Set.txt" if name in SEL_SPLITS else f"{name}.txt"
        (tmp_path / file).write_text("".join(lines[i] + "\n" for i in rows))
    jobs, _, splits = annotated_jobs(tmp_path, tmp_path / "Annotations.txt")
    assert set(splits) == {"train", "val", "test", "train_match", "val_match", "test_match"}
    assert splits["val_match"] == "".join(lines[i] + "\n" for i in CML_SPLITS["val_order_match"])
