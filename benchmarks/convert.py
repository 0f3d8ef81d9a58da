"""--convert device against swscale (issue #22, item 3), on generated AVE-like videos:

  pixels    max / mean abs difference of the 224x224 RGB frames (the device conversion run on
            the CPU here, the same op as on a GPU)
  features  cosine of pool5 features (seeded random VGG-19 weights, the same for both paths)
  decoder   the decoder's CPU seconds per video on each path (one decoding thread, FFmpeg
            threads 1: what one decoder process costs; the least of --repeats runs after a
            warm-up, whose first-touch page faults cost a 640x360 path 4x), and the device
            conversion's own time (on a CPU device: the cost the decoder no longer has, and more)

    PYTHONPATH=<dir holding avel> python benchmarks/convert.py [--videos 3] [--seconds 10] [--device cpu] [--json out]

The videos come from benchmarks/media.py (640x360, 30 fps, h264 + AAC, film grain)."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from media import write_ave_like  # noqa: E402

from avel.core.config import FeatureSettings  # noqa: E402
from avel.pipeline.extract.features import FeatureExtractor  # noqa: E402
from avel.pipeline.extract.yuv import planes_to_rgb  # noqa: E402
from avel.pipeline.media.decode import BatchReader, DecodeOptions  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_THREAD if hasattr(resource, "RUSAGE_THREAD") else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def decode(path: str, convert: str, segments_per_batch: int) -> tuple[list, float]:
    """All batches of one video (copied out), and the CPU seconds the decoding took."""
    options = DecodeOptions(frames_per_segment=16, convert=convert, threads=1)
    start = cpu_s()
    batches = [(b.frames, b.planes) for b in BatchReader(path, options, segments_per_batch)]
    spent = cpu_s() - start
    return [(f if p is None else f[..., : p.nbytes].copy(), p) for f, p in batches], spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--repeats", type=int, default=3, help="decoder CPU: the least of this many runs (after one warm-up)"
    )
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = FeatureSettings(visual_model="random", audio_model="random", frames_per_segment=16)
    extractor = FeatureExtractor(settings, device=args.device, batch_size=16)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.videos):
            path = write_ave_like(Path(tmp) / f"v{i}.mp4", seed=i, seconds=args.seconds)
            runs = {c: [decode(path, c, 1) for _ in range(args.repeats + 1)][1:] for c in ("swscale", "device")}
            (sws, sws_cpu), (dev, dev_cpu) = (min(runs[c], key=lambda r: r[1]) for c in ("swscale", "device"))
            diffs, convert_s, cosines = [], 0.0, []
            for (rgb, _), (planes, fmt) in zip(sws, dev):
                flat = torch.from_numpy(planes.reshape(-1, planes.shape[-1])[:, : fmt.nbytes]).to(extractor.device)
                t0 = time.perf_counter()
                got = planes_to_rgb(flat, fmt, 224)
                if got.is_cuda:
                    torch.cuda.synchronize()
                convert_s += time.perf_counter() - t0
                diffs.append(np.abs(got.cpu().numpy().reshape(rgb.shape).astype(np.int16) - rgb.astype(np.int16)))
                a = extractor.visual_features(rgb).reshape(len(rgb), -1)
                b = extractor.visual_features(planes, fmt).reshape(len(rgb), -1)
                cosines += list((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
            d = np.concatenate([x.ravel() for x in diffs])
            rows.append(
                {
                    "video": i,
                    "size": [dev[0][1].width, dev[0][1].height],
                    "segments": len(sws),
                    "pixel_max": int(d.max()),
                    "pixel_mean": float(d.mean()),
                    "pixel_p999": float(np.percentile(d, 99.9)),
                    "cosine_min": float(min(cosines)),
                    "cosine_mean": float(np.mean(cosines)),
                    "decoder_cpu_s": {"swscale": sws_cpu, "device": dev_cpu},
                    "device_convert_s": convert_s,
                }
            )
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "device": str(extractor.device),
        "torch": torch.__version__,
        "loadavg": load,
        "videos": rows,
        "decoder_cpu_s_per_video": {
            k: float(np.mean([r["decoder_cpu_s"][k] for r in rows])) for k in ("swscale", "device")
        },
    }
    s, d = summary["decoder_cpu_s_per_video"]["swscale"], summary["decoder_cpu_s_per_video"]["device"]
    print(
        f"convert: {args.videos} AVE-like videos ({args.seconds:g} s, 640x360 h264), device {extractor.device}, "
        f"load {' '.join(load)}"
    )
    for r in rows:
        print(
            f"  video {r['video']}: pixels max {r['pixel_max']} mean {r['pixel_mean']:.3f} p99.9 {r['pixel_p999']:.0f}; "
            f"pool5 cosine min {r['cosine_min']:.5f} mean {r['cosine_mean']:.5f}; decoder CPU swscale "
            f"{r['decoder_cpu_s']['swscale']:.3f} s, device {r['decoder_cpu_s']['device']:.3f} s; "
            f"device conversion {r['device_convert_s'] * 1000:.1f} ms"
        )
    print(f"  decoder CPU per video: swscale {s:.3f} s, device {d:.3f} s ({d / s:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
