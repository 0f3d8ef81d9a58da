"""The Ray engine (`avel preprocess --engine ray`) against the local engine: bitwise the same
export, failures recorded, two nodes both writing parts, and real SIGKILLs of the driver and
of a worker.

Every test runs in a private network namespace where loopback is the only interface
(`unshare -n`, `ip link set lo up`; CI runs as root), and a private pid namespace, so that
Ray falls back to 127.0.0.1 (checked: every `ray.nodes()` address), no request can leave the
machine, and whatever the test started dies with it even when it fails (`ray stop --force`
sees only the namespace's processes). The local engine's reference run is made once, outside."""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_cache import FAST, avel
from test_cache_safety import groups  # every stored id over all parts (twice when stored twice); each part opens

from avel.core.annotations import read_annotations, write_annotations
from avel.pipeline.cache.store import FeatureCache
from avel.pipeline.media.synth import synthesize

INSIDE = os.environ.get("AVEL_TEST_NETNS") == "1"
DATA_ENV = "AVEL_TEST_RAY_DATA"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter
ACTOR = "MapWorker(MapBatches(_Extractor))"  # an extraction actor's process title


def isolated(test):
    """Run `test` again in its own network and pid namespaces (the body runs there only)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        if INSIDE:
            return test(*args, **kwargs)
        if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
            why = "the Ray tests run in a private network namespace: they need root, unshare and ip"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{why} (CI runs as root; .ci/run installs unshare and ip)")
            pytest.skip(why)
        node = f"{Path(__file__).resolve()}::{test.__name__}"
        cmd = [
            "unshare",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            node,
        ]
        # Ray's token authentication with a token of the test's own (never ~/.ray/auth_token, which others share)
        env = {**os.environ, "AVEL_TEST_NETNS": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"in the namespace:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"

    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Generated AVE-style videos (64x48, 10 s), one of them corrupt, and the local engine's
    cache of them (the reference). Made outside the namespace, once; found there by name."""
    if INSIDE:
        return Path(os.environ[DATA_ENV])
    root = tmp_path_factory.mktemp("raydata")
    rows = synthesize(root, videos=4, classes=2, seed=5, width=64, height=48, progress=False)
    bad = rows[-1].video_id
    video = root / "videos" / f"{bad}.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # truncated: corrupt
    write_annotations(root / "good.txt", rows[:-1])
    (root / "good").mkdir()
    for r in rows[:-1]:
        (root / "good" / f"{r.video_id}.mp4").symlink_to(root / "videos" / f"{r.video_id}.mp4")
    proc = avel(
        "preprocess",
        root / "videos",
        "--annotations",
        root / "Annotations.txt",
        "--out",
        root / "local",
        "--workers",
        "0",
        *FAST,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # the corrupt video
    os.environ[DATA_ENV] = str(root)
    return root


# -- helpers, inside the namespace -------------------------------------------------------------------
def assert_loopback() -> None:
    import ray

    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    assert addresses == {"127.0.0.1"}, f"a Ray node outside loopback: {addresses}"


class Cluster:
    """`ray start` nodes on one machine (a head, then workers), stopped by `stop`."""

    def __init__(self, port: int = 6380) -> None:
        self.address = f"127.0.0.1:{port}"
        self.temp = tempfile.mkdtemp(prefix="avel-ray-")  # short: Ray's socket paths must fit
        self.port = port

    def start(self, *, cpus: int, head: bool) -> None:
        args = (
            ["--head", "--port", str(self.port), "--temp-dir", self.temp, "--include-dashboard", "false"]
            if head
            else ["--address", self.address]
        )
        proc = subprocess.run(
            [*RAY, "start", "--num-cpus", str(cpus), "--disable-usage-stats", *args], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"ray start {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"

    def nodes(self) -> set[str]:
        import ray

        ray.init(address=self.address, logging_level="ERROR")
        try:
            assert_loopback()
            return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()

    def stop(self) -> None:
        subprocess.run([*RAY, "stop", "--force"], capture_output=True)  # the namespace's Ray processes only
        shutil.rmtree(self.temp, ignore_errors=True)


def assert_same_features(cache: Path, reference: Path) -> None:
    a, b = FeatureCache(cache), FeatureCache(reference)
    assert sorted(a.ids()) == sorted(b.ids())
    for vid in b.ids():
        for x, y in zip(a.read(vid), b.read(vid)):
            assert x.dtype == y.dtype and np.array_equal(x, y), vid


def ray_preprocess(data: Path, out: Path, *extra, source: str = "videos", popen: bool = False):
    args = [
        sys.executable,
        "-m",
        "avel.cli",
        "preprocess",
        str(data / source),
        "--out",
        str(out),
        "--engine",
        "ray",
        *FAST,
        *map(str, extra),
    ]
    if source == "videos":
        args += ["--annotations", str(data / "Annotations.txt")]
    else:
        args += ["--segments", "10"]
    if popen:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, capture_output=True, text=True)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def processes(title: str) -> list[int]:
    """Pids of the namespace's processes whose command line holds `title`."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if title in (p / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def committed(cache: Path) -> int:
    return len(list((cache / "parts").glob("part-*.h5"))) if (cache / "parts").is_dir() else 0


# -- the tests -----------------------------------------------------------------------------------------
@isolated
def test_ray_engine_equals_local_export_bitwise(data, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="avel-ray-"), logging_level="ERROR")
    try:
        assert_loopback()
        address = ray.get_runtime_context().gcs_address
        proc = ray_preprocess(data, tmp_path / "ray", "--ray-address", address)
    finally:
        ray.shutdown()
    assert proc.returncode == 1, proc.stderr  # a video failed: exit 1, as the local engine
    assert "3 extracted, 0 already done, 1 failed" in proc.stderr
    bad = read_annotations(data / "Annotations.txt")[-1].video_id
    local, remote = FeatureCache(data / "local"), FeatureCache(tmp_path / "ray")
    assert set(remote.failures) == {bad} and remote.failures[bad].kind == local.failures[bad].kind
    assert remote.failures[bad].error == local.failures[bad].error
    for part in remote.parts:
        with h5py.File(part, "r") as f:
            assert f.attrs["provenance.engine"] == "ray" and f.attrs["provenance.node_id"]
    for name, cache in (("local", data / "local"), ("ray", tmp_path / "ray")):
        avel("export-ave", cache, "--annotations", data / "good.txt", "--out", tmp_path / f"ave-{name}")
    files = sorted(p.name for p in (tmp_path / "ave-local").glob("*.h5"))
    assert "visual_feature.h5" in files and files == sorted(p.name for p in (tmp_path / "ave-ray").glob("*.h5"))
    for name in files:
        with h5py.File(tmp_path / "ave-local" / name, "r") as a, h5py.File(tmp_path / "ave-ray" / name, "r") as b:
            assert list(a) == list(b)
            for key in a:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key][()], b[key][()]), (name, key)


@isolated
def test_two_nodes_both_actors_write_parts(data, tmp_path):
    cluster = Cluster()
    try:
        cluster.start(cpus=1, head=True)
        cluster.start(cpus=1, head=False)
        wait_for(lambda: len(cluster.nodes()) == 2, 90, "the second node")
        nodes = cluster.nodes()
        proc = ray_preprocess(
            data,
            tmp_path / "ray",
            "--ray-address",
            cluster.address,
            "--extractors",
            "2",
            "--commit-every",
            "1",
            source="good",
        )
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stderr
    writers, actors = set(), set()
    for part in sorted((tmp_path / "ray" / "parts").glob("part-*.h5")):
        with h5py.File(part, "r") as f:
            writers.add(f.attrs["provenance.node_id"])
            actors.add((f.attrs["provenance.node_id"], f.attrs["provenance.pid"]))
    assert writers <= nodes and len(nodes) == 2
    # both actors did work (3 one-video calls: Ray Data's actor locality once sent every call to the actor beside
    # the driver). Which node each actor lands on is Ray's "SPREAD", best effort for actors that reserve no CPU:
    # both on one node in 7 runs of 9 here (README, Known limits), so the nodes are not asserted.
    assert len(actors) == 2
    assert_same_features(tmp_path / "ray", data / "local")


def run_until_first_part(cluster: Cluster, data: Path, out: Path) -> subprocess.Popen:
    """A one-node, two-CPU cluster and a run on it, a part at a video, caught after its first part."""
    cluster.start(cpus=2, head=True)
    cluster.nodes()
    driver = ray_preprocess(
        data, out, "--ray-address", cluster.address, "--commit-every", "1", source="good", popen=True
    )
    wait_for(lambda: committed(out) >= 1 or driver.poll() is not None, 120, "a first committed part")
    assert driver.poll() is None, "the run ended before it could be killed"
    return driver


@isolated
def test_driver_killed_then_rerun_equals_uninterrupted(data, tmp_path):
    cluster = Cluster()
    out = tmp_path / "ray"
    try:
        driver = run_until_first_part(cluster, data, out)
        driver.kill()  # SIGKILL
        driver.wait()
        assert committed(out) < 3
        wait_for(lambda: not processes(ACTOR), 60, "the killed job's actors to go")
        proc = ray_preprocess(data, out, "--ray-address", cluster.address, source="good")
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stderr
    done, skipped = map(int, re.search(r"(\d+) extracted, (\d+) already done, 0 failed", proc.stderr).groups())
    assert skipped >= 1 and done + skipped == 3  # what was committed before the kill is skipped, not redone
    ids = groups(out)
    assert len(ids) == len(set(ids)) == 3  # no duplicate id, every part readable
    assert not list((out / "parts").glob(".tmp-*"))  # the killed writers' temporary files are gone
    assert_same_features(out, data / "local")


@isolated
def test_worker_killed_job_finishes_every_video_once(data, tmp_path):
    cluster = Cluster()
    out = tmp_path / "ray"
    try:
        driver = run_until_first_part(cluster, data, out)
        actors = processes(ACTOR)
        assert len(actors) == 1
        os.kill(actors[0], signal.SIGKILL)
        _, stderr = driver.communicate(timeout=180)
    finally:
        cluster.stop()
    assert driver.returncode == 0, stderr
    ids = groups(out)
    assert sorted(ids) == sorted(FeatureCache(data / "local").ids())  # every video, exactly once
    assert_same_features(out, data / "local")
