"""Which files a run takes and under which ids, and what it costs to refuse them (issue #23):
every video of a folder, whatever its container's extension, under an id of its own that
is the same on every machine; files that are not videos listed as skipped with their
reason; a run whose files cannot be opened, or whose cache another run is writing, refused
before any model is built; Ctrl-C while starting one line and exit 130."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mediagen import solid, tone, write_video

from avel.cli import main
from avel.core.config import FeatureSettings
from avel.core.errors import CacheLocked
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.extract import features
from avel.pipeline.extract.batch import extract_videos, preprocess
from avel.pipeline.extract.local import Job, jobs_from_paths, source_jobs
from avel.pipeline.extract.options import ExtractOptions, NetworkOptions

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--visual-model", "random", "--audio-model", "random", "--frames-per-segment", "1", "--device", "cpu"]
SETTINGS = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=1)
CPU = NetworkOptions(device="cpu")
QUIET = ExtractOptions(progress=False)


# -- ids ----------------------------------------------------------------------------------------------
def test_ids_of_files_that_share_a_stem():
    """The stem where it is unique (today's ids, so older caches keep theirs); else the path
    from the common parent without the extension, with it where that still clashes."""
    ids = [j.id for j in jobs_from_paths(["d/talk.mp4", "d/talk.webm", "d/a/clip.mp4", "d/b/clip.mp4", "d/solo.mkv"])]
    assert ids == ["talk.mp4", "talk.webm", "a/clip", "b/clip", "solo"]
    # a stem that equals another file's longer id moves on too; nothing is dropped
    ids = [j.id for j in jobs_from_paths(["d/talk.mp4", "d/talk.webm", "d/talk.mp4.avi"])]
    assert ids == ["talk.mp4", "talk.webm", "talk.mp4.avi"]
    # the same file twice is one job (its first spelling kept); distinct files are never merged
    assert jobs_from_paths(["d/x.mp4", "d/./x.mp4", "e/x.mp4"]) == [Job("d/x", "d/x.mp4"), Job("e/x", "e/x.mp4")]


def test_ids_do_not_depend_on_where_the_folder_is(tmp_path):
    for name in ("talk.mp4", "talk.webm", "a/clip.mp4", "b/clip.mp4", "b/deeper/solo.mp4"):
        (tmp_path / "one" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "one" / name).write_bytes(b"")
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    here = [j.id for j in source_jobs(tmp_path / "one")]
    there = [j.id for j in source_jobs(tmp_path / "elsewhere" / "two")]
    assert here == there == ["a/clip", "b/clip", "solo", "talk.mp4", "talk.webm"]
    # as `avel extract` lists them: relative to the files' common parent, here or from inside the folder
    files = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*.mp4"))
    os.chdir(tmp_path / "one")
    assert sorted(j.id for j in jobs_from_paths(files)) == ["a/clip", "b/clip", "solo", "talk"]
    assert sorted(j.id for j in jobs_from_paths([tmp_path / "elsewhere" / "two" / f for f in files])) == [
        "a/clip",
        "b/clip",
        "solo",
        "talk",
    ]


# -- a folder of every kind of file ---------------------------------------------------------------------
def _media(folder: Path) -> dict[str, str]:
    """Videos in containers PyAV writes, some under extensions only a probe recognises; the
    id each must get."""

    def clip(name: str, rename: str | None = None, **kw) -> None:
        target = folder / (rename or name)
        target.parent.mkdir(parents=True, exist_ok=True)
        made = write_video(folder / name, duration_s=2, color=solid((40, 160, 90)), audio=tone(440), **kw)
        if rename:
            os.rename(made, target)

    clip("talk.mp4")
    clip("talk.webm", codec="libvpx", audio_codec="libopus", audio_rate=48000)
    clip("a/clip.mp4")
    clip("b/clip.mp4")
    clip("x.ogg", "x.ogv", codec="libvpx", audio_codec="libopus", audio_rate=48000)
    clip("y.ts", "y.mts")
    clip("z.asf", codec="wmv2", audio_codec="mp2", audio_rate=48000)
    clip("w.ts", "w.m2ts")
    clip("cam.ts", "cam.dat")  # an extension nothing knows: probed
    clip("bare.mp4", "bare")  # no extension: probed
    return {
        "talk.mp4": "talk.mp4",
        "talk.webm": "talk.webm",
        "a/clip.mp4": "a/clip",
        "b/clip.mp4": "b/clip",
        "x.ogv": "x",
        "y.mts": "y",
        "z.asf": "z",
        "w.m2ts": "w",
        "cam.dat": "cam",
        "bare": "bare",
    }


def test_preprocess_takes_every_video_and_lists_what_it_skips(tmp_path, capfd):
    src = tmp_path / "src"
    expected = _media(src)
    write_video(src / "song.ogg", video=False, audio=tone(300), audio_codec="flac")  # audio only: probed, skipped
    (src / "notes.txt").write_text("not a video\n")
    (src / "meta.json").write_text("{}")
    os.mkfifo(src / "pipe.mp4")
    os.symlink(src / "gone.mp4", src / "link.mp4")
    code = main(["preprocess", str(src), "--out", str(tmp_path / "cache"), "--workers", "0", *FAST])
    err = capfd.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "/10 [" not in ln]
    assert code == 0, err
    assert lines[0].startswith("10 extracted, 0 already done, 0 failed"), lines
    assert lines[1] == (
        "skipped 5 files: 1 dangling symlink (link.mp4), 2 not media (meta.json, notes.txt), "
        "1 FIFO (pipe.mp4), 1 no video stream (song.ogg)"
    ), lines
    cache = FeatureCache(tmp_path / "cache")
    assert sorted(cache.ids()) == sorted(expected.values())
    for name, vid in expected.items():
        visual, audio = cache.read(vid)
        assert cache.entries[vid].source_path == str(src / name) and len(visual) == len(audio) >= 1, name


# -- refused before the models --------------------------------------------------------------------------
@pytest.fixture
def no_models(monkeypatch):
    """Building the models fails the test: what is refused must be refused before."""
    built = []

    def refuse(self, *args, **kwargs):
        built.append(1)
        raise AssertionError("the models were built")

    monkeypatch.setattr(features.FeatureExtractor, "__init__", refuse)
    return built


def _garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize("out", ["features.h5", "cache"])
def test_extract_of_a_file_that_does_not_open_builds_no_model(tmp_path, no_models, out):
    bad = _garbage(tmp_path / "bad.mp4")
    summary = extract_videos([bad, tmp_path / "missing.mp4"], tmp_path / out, SETTINGS, CPU, QUIET)
    assert [(f.id, f.kind) for f in summary.failed] == [("bad", "not-media"), ("missing", "not-found")]
    assert summary.done == 0 and not no_models
    assert sorted(os.listdir(tmp_path)) == ["bad.mp4"]  # nothing written, no side directory left


def test_preprocess_where_nothing_opens_builds_no_model(tmp_path, no_models, capfd):
    _garbage(tmp_path / "src" / "broken.mp4")  # (makes the folder)
    write_video(tmp_path / "src" / "silent.mp4", duration_s=2)  # no audio stream: refused by --on-missing-audio error
    args = ["preprocess", tmp_path / "src", "--out", tmp_path / "cache", "--workers", "0", *FAST]
    assert main([str(a) for a in args]) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines[0] == f"0 extracted, 0 already done, 2 failed -> {tmp_path / 'cache'}", lines
    assert lines[1].startswith("  not-media: ") and "broken.mp4" in lines[1], lines
    assert lines[2].startswith("  no-audio: ") and "silent.mp4" in lines[2], lines
    assert not no_models and not (tmp_path / "cache").exists()


def test_a_second_writer_is_refused_before_the_models(tmp_path, no_models):
    (tmp_path / "src").mkdir()
    (tmp_path / "cache").mkdir()
    write_video(tmp_path / "src" / "v.mp4", duration_s=2, audio=tone(300))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from avel.pipeline.cache.lock import WriteLock; "
            "lock = WriteLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "cache"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(CacheLocked, match="another avel run is writing this cache"):
            preprocess(tmp_path / "src", tmp_path / "cache", SETTINGS, CPU, QUIET)
        with pytest.raises(CacheLocked):
            extract_videos([tmp_path / "src" / "v.mp4"], tmp_path / "cache", SETTINGS, CPU, QUIET)
    finally:
        holder.kill()
        holder.wait()
    assert not no_models


# -- Ctrl-C while starting ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("start") / "src"
    src.mkdir()
    for i in range(4):
        write_video(src / f"v{i}.mp4", duration_s=3, color=solid((50 * i, 90, 30)), audio=tone(300 + 50 * i))
    return src


@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.5])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, folder, after_s):
    """SIGINT to the process group (a terminal's Ctrl-C) while the modules load, the models
    are built or the decoder processes start."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avel.cli",
            "preprocess",
            str(folder),
            "--out",
            str(tmp_path / "c"),
            "--workers",
            "2",
            *FAST,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        time.sleep(after_s)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    err = b"".join(chunks).decode(errors="replace")
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "/4 [" not in ln]
    assert "Traceback" not in err, err
    assert rc == 130 and len(lines) == 1 and lines[0].startswith("interrupted: SIGINT"), (rc, err)
