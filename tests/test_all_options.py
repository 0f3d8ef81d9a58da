"""Issue #27 item 4: no option value reaches the CLI's catch-all line (`error: unexpected ...`).

Every option of every command that takes a number is run with huge (99999999999999999999,
1e308), zero, negative (-1) and NaN values, on the command's minimal arguments pointing at
tiny or missing inputs: a value out of the option's range is refused up front (exit 2, one
line naming the option); a value in range (zero, for some) goes on and the command then
fails on the missing input in one line, or does its tiny job. The commands are read from
the real CLI (typer.main.get_command), so an option added later is tested too.

Also: a NUL byte or a newline in the string options that name files or categories, and
`--engine ray` where Ray's data extras (pandas, pyarrow) cannot be imported."""

from __future__ import annotations

import builtins
import dataclasses
import math
import re
import sys
import time
import types
from pathlib import Path

import pytest
import typer

from avel import cli
from avel.cli import main
from avel.models.registry import config_classes

HUGE_INT = "99999999999999999999"
HUGE_FLOAT = "1e308"
VALUES = (HUGE_INT, HUGE_FLOAT, "0", "-1", "nan", "inf")
CATCH_ALL = "unexpected"
# finite values with no upper bound, and why: a huge one is accepted (here the command then fails on its
# missing input in one line); in a real run it makes the float32 loss infinite, which stops training in
# one line naming the epoch (tests/test_nonfinite.py)
UNBOUNDED_ABOVE = {("train", "--segment-loss")}
PROGRESS = re.compile(r"\d+%\||\x1b\[A|\[A\s*$|\?(s|video)/s\]")  # a progress bar's frames on stderr


def base_args(command: str, tmp: Path) -> list[str]:
    """The command's required arguments, pointing at missing or tiny inputs, chosen so that a
    value that is accepted still leads to no heavy work (no weights built, no video decoded)."""
    missing = tmp / "missing"
    afile = tmp / "a-file"
    afile.write_text("not a folder\n")
    return {
        # random networks (no weight file needed); the video is missing: exit 1, "failed: ... no such file"
        "extract": [
            str(missing / "v.mp4"),
            "--out",
            str(tmp / "f.h5"),
            "--visual-model",
            "random",
            "--audio-model",
            "random",
        ],
        "preprocess": [str(missing), "--out", str(tmp / "cache")],
        "merge": [str(missing / "a.h5"), "--out", str(tmp / "m.h5")],
        "export-ave": [str(missing / "c.h5"), "--annotations", str(missing / "A.txt"), "--out", str(tmp / "ave")],
        # two feature-only videos: a fraction of a second when the value is accepted
        "synth": [str(tmp / "synth"), "--features-only", "--videos", "2", "--classes", "2"],
        "train": ["--data", str(missing), "--out", str(tmp / "m.safetensors")],
        "evaluate": ["sel", "--data", str(missing), "--checkpoint", str(missing / "m.safetensors")],
        "localize": [str(missing / "v.mp4"), "--checkpoint", str(missing / "m.safetensors")],
        "cml": [
            "--checkpoint",
            str(missing / "m.safetensors"),
            "--query",
            str(missing / "q.wav"),
            "--target",
            str(missing / "t.mp4"),
        ],
        "export": [str(missing / "r.json"), "--format", "activitynet", "--out", str(tmp / "x.json")],
        "detect-eval": ["--ground-truth", str(missing / "gt.json"), "--results", str(missing / "r.json")],
        "live": [str(missing / "s.ts"), "--checkpoint", str(missing / "m.safetensors")],
        "demo": ["--out", str(afile)],  # not a folder: refused before anything is generated
    }[command]


def numeric_options():
    """(command, flag, field) of every option that takes a number (int or float), from the real CLI."""
    root = typer.main.get_command(cli.app)
    out = []
    for name, command in root.commands.items():
        for p in command.params:
            if type(p).__name__ != "TyperOption":
                continue
            if getattr(p.type_descriptor, "annotation", None) in (int, float):
                out.append((name, p.opts[0], p.name))
    return out


def model_args(field: str) -> list[str]:
    """`train`'s task and --model of the first model whose config has `field` (a model option
    is bounded by its model's config; on another model it would be refused as not applying)."""
    for cls in config_classes():
        if field in {f.name for f in dataclasses.fields(cls)}:
            return [cls.task, "--model", cls.name]
    return ["sel"]  # a TrainConfig option


OPTIONS = numeric_options()


def test_the_walk_finds_the_options_it_should():
    """The walk of the command tree is not empty: the numeric options the issue names are there."""
    found = {(c, f) for c, f, _ in OPTIONS}
    assert model_args("relation_ffn") == ["sel", "--model", "cmbs"] and model_args("epochs") == ["sel"]
    for expected in [
        ("extract", "--batch-size"),
        ("extract", "--frames-per-segment"),
        ("extract", "--workers"),
        ("preprocess", "--segments"),
        ("preprocess", "--decoders"),
        ("preprocess", "--gpus-per-extractor"),
        ("synth", "--videos"),
        ("synth", "--seed"),
        ("synth", "--noise"),
        ("train", "--epochs"),
        ("train", "--seeds"),
        ("train", "--lr"),
        ("localize", "--stride"),
        ("cml", "--query-start"),
        ("demo", "--videos"),
        ("demo", "--seed"),
    ]:
        assert expected in found, expected


def run(capsys, args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def refused(code: int, text: str, flag: str) -> bool:
    """Exit 2 with one error line that names the option."""
    lines = [l for l in text.splitlines() if l.strip()]
    return code == 2 and len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0]


def command_line(command: str, flag: str, field: str, value: str, tmp: Path) -> list[str]:
    tmp.mkdir()
    task = model_args(field) if command == "train" else []
    return [command, *task[:1], *base_args(command, tmp), *task[1:], flag, value]


@pytest.mark.parametrize("command,flag,field", OPTIONS, ids=[f"{c}{f}" for c, f, _ in OPTIONS])
def test_every_numeric_option_is_bounded(command, flag, field, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AVEL_DEBUG", raising=False)
    for i, value in enumerate(VALUES):
        args = command_line(command, flag, field, value, tmp_path / str(i))
        t0 = time.perf_counter()
        code, text = run(capsys, args)
        took = time.perf_counter() - t0
        assert CATCH_ALL not in text and "Traceback" not in text, f"avel {' '.join(args)}: {text}"
        assert took < 20, f"avel {' '.join(args)} ran {took:.0f} s: the value was not checked before the work"
        if value in (HUGE_INT, HUGE_FLOAT) and (command, flag) in UNBOUNDED_ABOVE:
            assert code == 2 and text.startswith("error:") and len(text.strip().splitlines()) == 1, text
        elif value in (HUGE_INT, HUGE_FLOAT, "-1", "nan", "inf"):
            # beyond what the machine or the dtype holds, negative, not a number: refused up front
            assert refused(code, text, flag), f"avel {' '.join(args)} -> {code}: {text}"
        else:  # zero: refused, or accepted and the command ends on its missing input in one line
            assert code in (0, 1, 2), f"avel {' '.join(args)} -> {code}: {text}"
            if code == 2:  # refused, or the missing input named in one line
                assert len(text.strip().splitlines()) == 1 and text.startswith("error:"), (
                    f"avel {' '.join(args)}: {text}"
                )


def test_bounds_accept_the_values_at_their_ends(tmp_path, capsys):
    """The bounds are not off by one: the largest seed a torch seed holds and the largest
    frames per segment reach the missing input (exit 1), not a refusal."""
    for flag, value in (
        ("--seed", str(2**63 - 1)),
        ("--frames-per-segment", "64"),
        ("--batch-size", "4096"),
        ("--workers", "0"),
        ("--segments", "86400"),
    ):
        code, text = run(capsys, command_line("extract", flag, "", value, tmp_path / f"ok{flag}{value}"))
        assert code == 1 and "no such file" in text, (flag, value, text)
    for flag, value in (
        ("--seed", str(2**63)),
        ("--frames-per-segment", "65"),
        ("--batch-size", "4097"),
        ("--workers", "257"),
        ("--segments", "86401"),
    ):
        code, text = run(capsys, command_line("extract", flag, "", value, tmp_path / f"no{flag}{value}"))
        assert refused(code, text, flag), (flag, value, text)


@pytest.mark.parametrize(
    "command,flag",
    [
        ("preprocess", "--annotations"),
        ("export-ave", "--annotations"),
        ("extract", "--out"),
        ("train", "--data"),
        ("localize", "--checkpoint"),
        ("preprocess", "--ray-address"),
        ("preprocess", "--shard"),
        ("export-ave", "--splits"),
    ],
)
@pytest.mark.parametrize("bad", ["a\x00b", "a\nb"])
def test_nul_and_newline_in_string_options(command, flag, bad, tmp_path, capsys, monkeypatch):
    """A NUL byte or a newline in a path or a name: one line (the name escaped), never the catch-all."""
    monkeypatch.delenv("AVEL_DEBUG", raising=False)
    code, text = run(
        capsys,
        [
            command,
            *base_args(command, tmp_path),
            flag,
            str(tmp_path / bad) if flag not in ("--ray-address", "--shard", "--splits") else bad,
        ],
    )
    assert CATCH_ALL not in text and "Traceback" not in text, text
    assert code in (1, 2), text
    lines = [l for l in text.splitlines() if l.strip() and not PROGRESS.search(l)]
    assert lines and all(l.startswith(("error:", "failed:", "  ", "0 extracted")) for l in lines), text


def test_nul_byte_in_a_category_is_refused(tmp_path, capsys):
    """A category holding a NUL byte never reaches HDF5: the annotations are refused in one line."""
    videos = tmp_path / "videos"
    videos.mkdir()
    ann = tmp_path / "Annotations.txt"
    ann.write_bytes(b"Category&VideoID&Quality&StartTime&EndTime\ndo\x00g&v00&good&0&2\n")
    code, text = run(capsys, ["preprocess", str(videos), "--out", str(tmp_path / "c"), "--annotations", str(ann)])
    assert CATCH_ALL not in text and code == 2, text
    assert len(text.strip().splitlines()) == 1 and "Annotations.txt" in text, text


def test_engine_ray_without_its_data_extras(tmp_path, capsys, monkeypatch):
    """Ray installed without pandas/pyarrow (what ray.data needs): the documented install line,
    exit 2, before any folder is read or any cache made."""
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name.split(".")[0] in ("pandas", "pyarrow"):
            raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # Ray itself is there (installed or not here)
    videos = tmp_path / "videos"
    videos.mkdir()
    out = tmp_path / "cache"
    code, text = run(capsys, ["preprocess", str(videos), "--out", str(out), "--engine", "ray"])
    assert code == 2, text
    assert text.strip() == "error: --engine ray needs Ray with its data extras (pandas): pip install 'avel[ray]'", text
    assert not out.exists()


def test_engine_ray_without_ray(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name.split(".")[0] == "ray":
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, text = run(capsys, ["preprocess", str(tmp_path), "--out", str(tmp_path / "c"), "--engine", "ray"])
    assert code == 2 and "pip install 'avel[ray]'" in text and len(text.strip().splitlines()) == 1, text


def test_values_are_finite_in_the_configs():
    """The configs themselves refuse what the CLI would: one ConfigError naming the field."""
    from avel.core.config import FeatureSettings
    from avel.core.errors import ConfigError
    from avel.pipeline.apps.demo import DemoConfig
    from avel.pipeline.data.synth import FeatureSynthConfig
    from avel.pipeline.extract.options import ExtractOptions, NetworkOptions
    from avel.pipeline.extract.ray_engine import RayConfig

    cases = [
        (FeatureSettings, "segments", 86401),
        (FeatureSettings, "frames_per_segment", 65),
        (FeatureSettings, "seed", -1),
        (FeatureSettings, "seed", 2**63),
        (ExtractOptions, "workers", 257),
        (ExtractOptions, "commit_every", 10**9),
        (NetworkOptions, "batch_size", 4097),
        (RayConfig, "decoders", 10**9),
        (RayConfig, "extractors", 10**9),
        (RayConfig, "gpus_per_extractor", math.inf),
        (RayConfig, "gpus_per_extractor", 1e9),
        (FeatureSynthConfig, "videos", 10**6 + 1),
        (FeatureSynthConfig, "seed", -1),
        (FeatureSynthConfig, "noise", 1e308),
        (DemoConfig, "videos", 10**6 + 1),
        (DemoConfig, "seed", -1),
        (DemoConfig, "seed", 2**63),
        (DemoConfig, "classes", 29),
        (DemoConfig, "workers", 0),
    ]
    for cls, name, value in cases:
        with pytest.raises(ConfigError) as e:
            cls(**{name: value})
        assert e.value.field == name, (cls.__name__, name, value)
