"""`avel live` latency and memory: a generated clip with known events (10 s, looped) is
encoded live as MPEG-TS and played at 1x into (a) a pipe and (b) a loopback UDP endpoint
(udp://127.0.0.1:PORT, nothing leaves the machine); `avel.live` localizes it with a
random-weight SEL checkpoint. Printed per transport: seconds decided and dropped, the delay
between each second's end in the stream and its decision (median, 95th percentile, max),
and the process's RSS at the start and the end (and each minute, for a soak).

    python benchmarks/live_latency.py --seconds 30 --frames-per-segment 4            # CPU
    python benchmarks/live_latency.py --seconds 30 --device cuda --precision bf16    # GPU
    python benchmarks/live_latency.py --minutes 60 --transport pipe                  # 1-hour memory soak

The delay includes the writer's own muxing (h264 zerolatency + AAC in MPEG-TS: the video
packets of a second reach the pipe ~0.5 s after its audio), decoding, both extractors and
the model. Goal (issue #25): p95 <= 2.0 s on 2 CPU cores, <= 1.0 s on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import threading
import time

import numpy as np
import torch

from avel.core.config import FeatureSettings
from avel.extractors.registry import random_weights_tag
from avel.models.registry import build_model, model_config
from avel.pipeline.apps.live import live
from avel.pipeline.media.paced import event_clip, play
from avel.pipeline.train.checkpoint import save_checkpoint


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint(folder: str, frames_per_segment: int, frame_size: int) -> str:
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
    cfg = model_config(task="sel", name="dam", num_classes=4)
    return str(
        save_checkpoint(os.path.join(folder, "sel.safetensors"), build_model(cfg), cfg, ["a", "b", "c"], settings, {})
    )


def run_one(transport: str, ckpt: str, clip, seconds: float, args) -> dict:
    stop = threading.Event()
    if transport == "pipe":
        r, w = os.pipe()
        source, target = os.fdopen(r, "rb"), os.fdopen(w, "wb")
        on_stall = "wait"
    else:
        port = free_udp_port()
        source = f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=1000000"
        target = f"udp://127.0.0.1:{port}?pkt_size=1316"
        on_stall = "end"  # UDP has no end of stream: the silence after the last packet ends the run
    run = live(
        source,
        ckpt,
        device=args.device,
        precision=args.precision,
        on_stall=on_stall,
        stall_s=3.0,
        frames_per_segment=args.frames_per_segment,
        batch_size=args.frames_per_segment,
    )

    def write() -> None:
        time.sleep(1.0)  # the reader is listening (UDP)
        try:
            play(target, clip, seconds=seconds, stop=stop)
        except (BrokenPipeError, OSError):
            pass
        finally:
            if transport == "pipe":
                try:
                    target.close()
                except OSError:
                    pass

    rss = {"start": round(rss_mib(), 1)}
    per_minute = []
    th = threading.Thread(target=write, daemon=True)
    th.start()
    started = time.monotonic()
    kinds: dict[str, int] = {}
    try:
        for rec in run:
            kinds[rec["type"]] = kinds.get(rec["type"], 0) + 1
            if rec["type"] == "second" and rec["t"] % 60 == 59:
                per_minute.append(round(rss_mib(), 1))
    finally:
        stop.set()
        run.close()
    rss["end"] = round(rss_mib(), 1)
    summary = run.summary()
    delays = np.asarray(run.delays)
    return {
        "transport": transport,
        "stream_s": seconds,
        "wall_s": round(time.monotonic() - started, 1),
        "decided": summary["seconds"],
        "dropped": summary["dropped"],
        "stalls": summary["stalls"],
        "delay_s": summary["delay_s"],
        "compute_s": summary["compute_s"],
        "delay_mean_s": round(float(delays.mean()), 4) if len(delays) else None,
        "events": len(summary["events"]),
        "records": kinds,
        "rss_mib": rss,
        "rss_each_minute_mib": per_minute,
        "ended": summary["ended"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="stream length per transport")
    p.add_argument("--minutes", type=float, default=None, help="stream length in minutes (a memory soak: --minutes 60)")
    p.add_argument("--transport", choices=("pipe", "udp", "both"), default="both")
    p.add_argument("--frames-per-segment", type=int, default=4)
    p.add_argument("--frame-size", type=int, default=224)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None, help="fp32 | bf16 | fp16 (default: the checkpoint's, fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.minutes * 60 if args.minutes else args.seconds
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"settings: device {args.device}, precision {args.precision or 'fp32'}, {args.frames_per_segment} frames a "
        f"second at {args.frame_size}x{args.frame_size}, random-weight VGG-19 + VGGish + DAM, context 10 s"
    )
    clip = event_clip(10, fps=16, width=320, height=240)
    print(
        f"stream: a generated 10-s clip looped ({clip.plan.seconds.count('event')} event seconds each loop), "
        f"320x240 16 fps h264 + AAC in MPEG-TS, played at 1x for {seconds:g} s per transport"
    )
    results = []
    with tempfile.TemporaryDirectory() as d:
        ckpt = checkpoint(d, args.frames_per_segment, args.frame_size)
        for transport in ("pipe", "udp") if args.transport == "both" else (args.transport,):
            res = run_one(transport, ckpt, clip, seconds, args)
            results.append(res)
            dl = res["delay_s"]
            print(
                f"{transport:>5}: {res['decided']} seconds decided, {res['dropped']} dropped, "
                f"delay median {dl['median']} s, p95 {dl['p95']} s, max {dl['max']} s; features + model "
                f"{res['compute_s']['median']} s a second (median); "
                f"RSS {res['rss_mib']['start']} -> {res['rss_mib']['end']} MiB; {res['events']} events; "
                f"{res['stalls']} stalls; {res['ended']}"
            )
            if res["rss_each_minute_mib"]:
                print(f"       RSS each minute (MiB): {res['rss_each_minute_mib']}")
    for res in results:
        print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load_average": load, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
