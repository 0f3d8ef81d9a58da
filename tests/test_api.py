"""The installed namespace and the README's Python API, tried as a new user would: from a
working directory that holds folders named `pipeline/`, `models/`, `extractors/` and `cli/`
(each a package that fails when imported), avel still works, because it installs one
top-level name, `avel`."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mediagen import solid, tone, write_video

ROOT = Path(__file__).resolve().parents[1]
SHADOWS = ("pipeline", "models", "extractors", "core", "cli")


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def shadowed_workdir(path: Path) -> Path:
    for name in SHADOWS:
        (path / name).mkdir(parents=True)
        (path / name / "__init__.py").write_text(
            f"raise ImportError('the working directory\\'s {name}/ was imported')\n"
        )
    return path


def run(args, cwd, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_one_top_level_name_and_the_console_script():
    dist = importlib.metadata.distribution("avel")
    assert dist.read_text("top_level.txt").split() == ["avel"]
    [script] = [e for e in dist.entry_points if e.group == "console_scripts"]
    assert (script.name, script.value) == ("avel", "avel.cli:main")


def test_the_wheel_installs_only_avel(tmp_path):
    """What `pip install .` puts into site-packages: the wheel's top-level entries."""
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        cwd=tmp_path,
    )
    [wheel] = tmp_path.glob("avel-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"avel"}
    names = zipfile.ZipFile(wheel).namelist()
    assert {
        "avel/__init__.py",
        "avel/cli.py",
        "avel/pipeline/media/decode.py",
        "avel/models/dam.py",
        "avel/extractors/vgg19.py",
        "avel/pipeline/apps/report.py",
        "avel/core/errors.py",
        "avel/pipeline/apps/report_assets/page.html",
        "avel/pipeline/apps/report_assets/report.css",
        "avel/pipeline/apps/report_assets/report.js",
    } <= set(names)
    assert not any(n.startswith(("avel/tests/", "avel/benchmarks/")) for n in names)


def test_cli_works_beside_folders_with_avel_like_names(tmp_path):
    cwd = shadowed_workdir(tmp_path)
    avel = shutil.which("avel", path=str(Path(sys.executable).parent)) or "avel"
    assert "localize" in run([avel, "--help"], cwd).stdout
    assert "localize" in run([sys.executable, "-m", "avel.cli", "--help"], cwd).stdout


def test_readme_python_api_beside_folders_with_avel_like_names(tmp_path):
    """The README's Python API block, run as written (2 epochs instead of 60) from a
    shadowed working directory, on a generated clip and a generated cache."""
    from avel import FeatureExtractor, FeatureSettings, annotated_jobs, run_extraction, synthesize
    from avel.pipeline.extract.options import ExtractOptions

    cwd = shadowed_workdir(tmp_path / "work")
    write_video(cwd / "clip.mp4", duration_s=3, color=solid((10, 200, 10)), audio=tone(300))
    synthesize(tmp_path / "synth", videos=12, classes=2, seed=1, progress=False)
    jobs, text, splits = annotated_jobs(tmp_path / "synth" / "videos", tmp_path / "synth" / "Annotations.txt")
    extractor = FeatureExtractor(
        FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1, segments=10), device="cpu"
    )
    run_extraction(jobs, cwd / "cache", extractor, ExtractOptions(progress=False), annotations=text, splits=splits)

    block = readme_python_block()
    assert "epochs=60" in block and "from avel import" in block
    code = (
        block.replace("epochs=60", "epochs=2")
        + "\nassert loc.error is None and len(loc.segments) == 3, loc\nprint('OK')\n"
    )
    out = run([sys.executable, "-"], cwd, input=code, timeout=600)
    assert out.stdout.strip().endswith("OK")
    assert (cwd / "sel.safetensors").is_file()


@pytest.mark.parametrize(
    "name",
    [
        "FeatureSettings",
        "extract_features",
        "load_data",
        "train",
        "TrainConfig",
        "ModelConfig",
        "save_checkpoint",
        "load_checkpoint",
        "localize",
        "cml_query",
    ],
)
def test_public_names(name):
    import avel

    assert callable(getattr(avel, name)) and name in dir(avel)
