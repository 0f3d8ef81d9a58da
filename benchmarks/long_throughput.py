"""Throughput and memory of `avel localize` on long videos (issue #24 item 6): generated long
videos (pipeline/data/synth_long_media.py: h264 + AAC, many events) of 1, 10 and 60 minutes
are localized by the real command, `avel localize VIDEO --checkpoint SEL --json OUT`, each in
its own child process, with a random-weight SEL DAM checkpoint (random-weight VGG-19 and
VGGish: the same cost as the real networks). Printed per length: wall time of the command,
seconds of video per second of wall time, and the PEAK RSS of the child (os.wait4's
ru_maxrss: that process alone), then peak(longest) / peak(shortest): flat in length is the
claim (the decoder holds two segments, the windows the last window, the scores 1 s each).

    python benchmarks/long_throughput.py --out benchmarks/results/long_throughput/cpu              # CPU: 1 frame/s
    python benchmarks/long_throughput.py --device cuda --frames-per-segment 16 --out DIR           # GPU: AVE's 16

The feature settings live in the checkpoint: on a CPU, 60 minutes at 16 frames a second
through VGG-19 is hours, so the CPU run uses a checkpoint at --frames-per-segment 1 (said in
the output). `--extrapolate K` also localizes the shortest video with a checkpoint at K frames
per segment, in the same run, and states what the longest would cost at K frames a second
from the measured cost per extra frame (labelled as an extrapolation, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from avel.core.config import FeatureSettings
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.pipeline.data.synth_long import LongSynthConfig, long_plans
from avel.pipeline.data.synth_long_media import render_long_video
from avel.pipeline.media.synth import SynthConfig
from avel.pipeline.train.checkpoint import save_checkpoint

CLASSES = 10


def checkpoint(path: Path, frames_per_segment: int, frame_size: int) -> str:
    """A random-weight SEL DAM checkpoint whose features are random VGG-19 (frame_size x frame_size
    input) / VGGish at K frames a second."""
    settings = FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=frames_per_segment,
        frame_size=frame_size,
        segments=10,
        visual_weights_sha256=random_weights_tag(0),
        audio_weights_sha256=random_weights_tag(0),
    )
    torch.manual_seed(0)
    cfg = model_config(task="sel", name="dam", num_classes=CLASSES + 1)
    names = [f"synthetic class {k:02d}" for k in range(CLASSES)]
    return str(save_checkpoint(str(path), build_model(cfg), cfg, names, settings, {}))


def avel_command() -> list[str]:
    script = Path(sys.executable).with_name("avel")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "avel.cli"]


def localize_child(video: str, ckpt: str, out_json: Path, device: str) -> dict:
    """Run `avel localize` in a child process: wall time, exit status, peak RSS (MiB)."""
    args = [*avel_command(), "localize", video, "--checkpoint", ckpt, "--json", str(out_json), "--device", device]
    t = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"avel localize exited {code}: {err.strip()[-500:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "command": " ".join(args)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[60, 600, 3600], help="video lengths (s)")
    ap.add_argument("--frames-per-segment", type=int, default=1, help="the checkpoint's frames a second")
    ap.add_argument("--extrapolate", type=int, default=16, help="also measure K frames/s on the shortest (0: no)")
    ap.add_argument("--frame-size", type=int, default=224, help="the checkpoint's VGG-19 input side (AVE: 224)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="folder for the raw output (results.json)")
    ap.add_argument("--work", type=Path, default=None, help="where the videos go (default: a temporary folder)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="avel-long-"))
    work.mkdir(parents=True, exist_ok=True)
    media = SynthConfig(fps=args.fps, width=args.width, height=args.height)
    lengths = sorted(args.lengths)
    print(
        f"# avel localize on long generated videos ({args.width}x{args.height}, {args.fps} fps, h264 + AAC), "
        f"device {args.device}, checkpoint at frames_per_segment={args.frames_per_segment}, "
        f"frame_size={args.frame_size}"
        + (" (CPU budget: not AVE's 16 x 224; see the extrapolation below)" if args.frames_per_segment < 16 else ""),
        flush=True,
    )
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    ckpt = checkpoint(work / f"sel-k{args.frames_per_segment}.safetensors", args.frames_per_segment, args.frame_size)
    rows = []
    for L in lengths:
        cfg = LongSynthConfig(videos=1, classes=CLASSES, seed=args.seed, min_duration_s=L, max_duration_s=L)
        plan = long_plans(cfg)[0]
        video = work / f"{plan.video_id}-{L}s.mp4"
        t = time.perf_counter()
        render_long_video(cfg, plan, video, media)
        gen = time.perf_counter() - t
        load_before = os.getloadavg()[0]
        r = localize_child(str(video), ckpt, work / f"loc-{L}.json", args.device)
        load_after = os.getloadavg()[0]
        found = json.loads((work / f"loc-{L}.json").read_text())
        row = {
            "length_s": L,
            "events_planned": len(plan.events),
            "video_mib": video.stat().st_size / 2**20,
            "generate_s": gen,
            **r,
            "video_s_per_s": L / r["wall_s"],
            "results_json_bytes": len(json.dumps(found)),
            "load_average_1min": [load_before, load_after],
        }
        rows.append(row)
        print(
            f"{L:6d} s video: localize {r['wall_s']:8.1f} s wall, {row['video_s_per_s']:6.2f} s of video/s, "
            f"peak RSS {r['peak_rss_mib']:7.1f} MiB  (generated in {gen:.1f} s, {row['video_mib']:.1f} MiB, "
            f"{len(plan.events)} events planned; load average {load_before:.1f} before, {load_after:.1f} after)",
            flush=True,
        )
        if L != lengths[-1]:
            video.unlink()
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS {lengths[-1]} s / {lengths[0]} s: {ratio:.3f} (flat in length is the claim)")
    summary = {"rows": rows, "peak_ratio_longest_over_shortest": ratio}
    if args.extrapolate and args.extrapolate != args.frames_per_segment:
        K = args.extrapolate
        ck = checkpoint(work / f"sel-k{K}.safetensors", K, args.frame_size)
        L = lengths[0]
        cfg = LongSynthConfig(videos=1, classes=CLASSES, seed=args.seed, min_duration_s=L, max_duration_s=L)
        plan = long_plans(cfg)[0]
        video = work / f"{plan.video_id}-{L}s.mp4"
        render_long_video(cfg, plan, video, media)
        # the two settings back to back on the same video, so that both see the same machine (the
        # shortest row above may have run under another load)
        base = localize_child(
            str(video), str(ckpt), work / f"loc-{L}-k{args.frames_per_segment}-again.json", args.device
        )
        r = localize_child(str(video), ck, work / f"loc-{L}-k{K}.json", args.device)
        per_frame = (r["wall_s"] - base["wall_s"]) / (L * (K - args.frames_per_segment))
        longest = rows[-1]
        print(
            f"{L:6d} s video, back to back: frames_per_segment={args.frames_per_segment} {base['wall_s']:.1f} s, "
            f"frames_per_segment={K} {r['wall_s']:.1f} s wall (measured, frame_size {args.frame_size}), "
            f"peak RSS {r['peak_rss_mib']:.1f} MiB; cost per extra frame {per_frame * 1000:.1f} ms"
        )
        summary["extrapolation"] = {
            "frames_per_segment": K,
            "measured_on_length_s": L,
            "measured_base": base,
            "measured": r,
            "per_extra_frame_s": per_frame,
        }
        if per_frame <= 0:
            print(
                "BENCHMARK DEFECT: more frames cost no more time: the two runs were not comparable (load changed); "
                "no extrapolation"
            )
        else:
            estimate = longest["wall_s"] + per_frame * longest["length_s"] * (K - args.frames_per_segment)
            print(
                f"EXTRAPOLATION (not measured): {longest['length_s']} s at frames_per_segment={K} would take "
                f"~{estimate:.0f} s ({longest['length_s'] / estimate:.2f} s of video/s) on this machine, "
                f"frame_size {args.frame_size}"
            )
            summary["extrapolation"]["estimated_wall_s_longest"] = estimate
    summary["args"] = {k: str(v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
