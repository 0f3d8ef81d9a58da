"""The CPU-side parts of the benchmark and of benchmarks/gpu_check.sh: the summary states
every figure beside its goal and calls a ratio above 1.0 a defect; the one-shot GPU check
runs through all its steps on the CPU (tiny settings), so that on a GPU machine only the
device differs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import summary_lines  # noqa: E402


def gpu_results(e2e_segments_per_s: float) -> dict:
    best = {"batch_size": 160, "memory_format": "channels_last", "frames_per_s": 3000.0}
    return {
        "config": {"precision": "bf16", "workers": 16},
        "machine": "GPU NVIDIA H100 80GB HBM3, 16 CPU cores, torch 2.14",
        "ceiling": {
            "ceiling_segments_per_s": 180.0,
            "ceiling_frames_per_s": 2880.0,
            "best": best,
            "cuda_peak_mib": 3000.0,
        },
        "decode": {"project": {"frames_per_s": 5200.0, "workers": 16}},
        "e2e": {
            "segments_per_s": e2e_segments_per_s,
            "frames_per_s": 16 * e2e_segments_per_s,
            "batch_size": 160,
            "cuda_peak_mib": 4100.0,
        },
        "localize": {"warm_s": 0.42, "cold_s": 3.1, "cuda_peak_mib": 900.0},
    }


def test_summary_gives_every_figure_beside_its_goal():
    text = "\n".join(summary_lines(gpu_results(170.0)))
    assert "card: GPU NVIDIA H100 80GB HBM3" in text
    assert "end-to-end / ceiling: 0.944 (goal >= 0.90)" in text
    assert (
        "ceiling 2880.0" in text
        and "decode 5200 source frames/s (16 processes)" in text
        and "end to end 2720.0" in text
    )
    assert "GPU memory peak: ceiling 3000 MiB, end to end 4100 MiB, localize 900 MiB" in text
    assert "avel localize, 10-s video: 0.42 s warm (goal < 1 s), 3.10 s cold" in text
    assert (
        "AVE (4143 videos) projected: 4.1 min at the end-to-end rate (goal <= 90 s on one GPU machine" in text
    )  # 41430 / 170 s
    # 10,000 segments / 170 per s = 59 s a 1,000 videos; 1M videos: 58,824 s = 16.34 h, 2.04 h on 8 machines
    assert (
        "59 GPU-seconds and 0 CPU-core-seconds per 1,000 videos" in text and "16.34 h on 1 machine, 2.04 h on 8" in text
    )


def test_a_ratio_above_one_is_a_defect_not_a_success():
    assert any("BENCHMARK DEFECT" in line for line in summary_lines(gpu_results(200.0)))


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        AVEL_GPU_CHECK_DEVICE="cpu",
        AVEL_GPU_CHECK_PRECISION="fp32",
        AVEL_GPU_CHECK_VIDEOS="1",
        AVEL_GPU_CHECK_OUT=str(tmp_path / "out"),
        AVEL_GPU_CHECK_ARGS="--quick --frames-per-segment 1 --size 128x96 --fps 16",
        AVEL_GPU_CHECK_STAGES="ceiling,feed,decode,e2e,localize",
    )  # compile: minutes of inductor on a CPU
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for step in ("== 1. the card", "== 2. the CUDA tests", "== 3. the benchmark", "== 4. done"):
        assert step in out, step
    [pytest_txt] = (tmp_path / "out").glob("*_pytest.txt")  # dated names: runs side by side in results/gpu/
    assert "SKIPPED" in pytest_txt.read_text()  # no CUDA here: the CUDA tests skip, they run
    for figure in (
        "1. model-only ceiling",
        "1b. feeding the model",
        "2. decoding",
        "3. end to end",
        "6. avel localize",
        "summary:",
        "end-to-end / ceiling:",
        "avel localize, 10-s video:",
        "AVE (4143 videos) projected:",
        "costs at scale",
    ):
        assert figure in out, figure
    assert len(list((tmp_path / "out").glob("*_bench.json"))) == 1
