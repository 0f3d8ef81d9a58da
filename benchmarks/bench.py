"""Throughput of stage one (decoding + VGG-19 pool5 + VGGish) against its model-bound
ceiling, plus SEL training and `avel localize` latency, on one device and precision.

    python benchmarks/bench.py --device cpu --precision fp32 [--videos 4] [--workers 2] [--quick]

Stages (each in its own subprocess, so that each peak memory figure is that stage's own):
  ceiling    VGG-19 and VGGish forwards on tensors already on the device, at the
             pipeline's batch sizes (160 frames; one video's 10 segments of audio)
  decode     pipeline.extract.decoded (the project's decoder, W workers) on generated 10-s mp4s
  e2e        run_extraction into a temporary cache, what `avel preprocess` runs
  precision  cosine similarity of pool5 / VGGish features, fp32 vs --precision (not fp32 only)
  sel        one SEL training epoch (pipeline.train) on AVE-sized random float16 features
  localize   `avel localize` on one 10-s video, when pipeline/localize.py exists

Weights are the seeded `random` models: the same architectures, so the same FLOPs as the
real ones. Videos come from pipeline.synth (default 128x96 at 16 fps; --size/--fps make
AVE-like ones). Beside every figure: the load average, and the cores the stage and all
other processes used meanwhile (/proc/stat): a figure taken while other processes ran is
slower than the machine can do, and says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# the repository root, so that `python benchmarks/bench.py` finds the project's packages.
# Top-level imports stay light: decoder worker processes (spawn) re-import this module.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ("ceiling", "decode", "e2e", "precision", "sel", "localize")
AVE_VIDEOS = 4143  # raw AVE dataset (Annotations.txt rows)
AVE_FRAMES_PER_VIDEO = 160  # 10 segments x 16 frames
AVE_SPLITS = {"train": 3339, "val": 402}  # SEL train / val sizes (test is not needed for an epoch)
AVE_CLASSES = 28
SEGMENTS = 10  # generated videos are 10 s, AVE rows label 10 segments
TARGETS = {"cpu": 0.85, "cuda": 0.90}  # end-to-end / ceiling
BUSY_CORES = 0.1  # other processes using more than this during a stage spoil its ratio


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"  # cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only)
    videos: int = 4  # generated 10-s videos for the decode and end-to-end stages
    workers: int = 2  # decoder processes (0: one decoding thread), as `avel preprocess --workers`
    batch_size: int = 160  # frames per VGG-19 forward (FeatureExtractor's default)
    frames_per_segment: int = 16  # AVE: 16
    quick: bool = False  # fewer repetitions; SEL on a fraction of an epoch, extrapolated
    threads: int | None = None  # torch intra-op threads in the model process (None: torch's default)
    width: int = 128  # generated videos (pipeline.synth's defaults; AVE's are larger, e.g. 640x360 at 30 fps)
    height: int = 96
    fps: int = 16
    seed: int = 0


# -- measuring helpers --------------------------------------------------------------------------
def load() -> str:
    """The 1/5/15-min load averages, e.g. '1.98 2.60 2.61'."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default) now, MiB; 0 where unknown (Linux only)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


class ProcessTreeMemory:
    """Samples the RSS of this process's descendants (decoder workers) every `period_s` in
    a thread: `peak_mib` is the largest sum seen. (ru_maxrss of RUSAGE_CHILDREN is no use
    here: a fork+exec'd child inherits its parent's high-water mark.)"""

    def __init__(self, period_s: float = 0.2) -> None:
        import threading

        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)
        self._thread.start()

    def _run(self, period_s: float) -> None:
        me = os.getpid()
        while not self._stop.wait(period_s):
            self.peak_mib = max(self.peak_mib, sum(rss_mib(p) for p in _descendants(me)))


TREE: ProcessTreeMemory | None = None  # started by run_stage


def peak_memory(device) -> dict:
    """Peaks of this stage process: its own RSS (exact high-water mark), the sampled sum of
    its descendants' RSS (decoder workers), CUDA allocations."""
    out = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_peak_rss_mib": TREE.peak_mib if TREE is not None else 0.0,
    }
    if device.type == "cuda":
        import torch

        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def cpu_seconds(who: str = "all") -> float:
    """CPU time (user + system) of this process ("self"), its reaped children ("children")
    or both ("all")."""
    total = 0.0
    for w, kind in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN)):
        if who in (w, "all"):
            r = resource.getrusage(kind)
            total += r.ru_utime + r.ru_stime
    return total


def machine_busy_s() -> float | None:
    """CPU-seconds all processes of the machine have run since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Window:
    """A measured interval: wall time, the cores this stage's processes used, and the cores
    every other process of the machine used meanwhile (the interference in the figure)."""

    def __init__(self) -> None:
        self.load_before = load()
        self._busy, self._ours, self._t = machine_busy_s(), cpu_seconds(), time.perf_counter()

    def close(self) -> dict:
        wall = time.perf_counter() - self._t
        ours = cpu_seconds() - self._ours
        busy = machine_busy_s()
        others = None if busy is None or self._busy is None else max(0.0, (busy - self._busy - ours) / wall)
        return {"load_before": self.load_before, "cores_ours": ours / wall, "cores_others": others}


def sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def settings_for(cfg: BenchConfig, precision: str | None = None):
    from avel.pipeline.config import FeatureSettings

    return FeatureSettings(
        visual_model="random", audio_model="random", frames_per_segment=cfg.frames_per_segment,
        segments=SEGMENTS, precision=precision or cfg.precision, seed=cfg.seed,
    )


def extractor_for(cfg: BenchConfig, precision: str | None = None):
    from avel.pipeline.features import FeatureExtractor

    return FeatureExtractor(settings_for(cfg, precision), device=cfg.device, batch_size=cfg.batch_size)


def autocast_for(device, precision: str):
    import contextlib

    import torch

    from avel.pipeline.extract import PRECISIONS

    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def video_paths(work: Path) -> list[str]:
    return sorted(str(p) for p in (work / "synth" / "videos").glob("*.mp4"))


# -- stages (each runs in its own process) ------------------------------------------------------
def stage_ceiling(cfg: BenchConfig, work: Path) -> dict:
    """Forward passes only, inputs already on the device, at the pipeline's batch shapes."""
    import torch

    fe = extractor_for(cfg)
    device = fe.device
    g = torch.Generator().manual_seed(cfg.seed)
    frames = torch.randint(0, 256, (cfg.batch_size, 224, 224, 3), dtype=torch.uint8, generator=g).to(device)
    audio = (torch.rand(SEGMENTS, 16000, generator=g) * 2 - 1).to(device)  # one video's segments
    rss_before = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cuda = device.type == "cuda"
    visual_reps = (3 if cfg.quick else 10) if cuda else (1 if cfg.quick else 2)
    audio_reps = 20 if cfg.quick else 50

    def timed(fn, reps: int) -> list[float]:
        out = []
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t)
        return out

    with torch.inference_mode():
        def visual(x=frames):
            with autocast_for(device, cfg.precision):
                fe.visual(x)

        def vggish():
            with autocast_for(device, cfg.precision):
                fe.audio(audio)

        # warm-up: oneDNN / cuDNN set-up and allocator growth (a small batch on the CPU,
        # where a full one costs half a minute; the full batch on a GPU)
        warm = frames if cuda else frames[: min(8, cfg.batch_size)]
        timed(lambda: visual(warm), 2 if cuda else 1)
        timed(vggish, 3)
        window = Window()
        cpu0 = cpu_seconds("self")
        v = timed(visual, visual_reps)
        cpu_visual = cpu_seconds("self") - cpu0
        cpu0 = cpu_seconds("self")
        a = timed(vggish, audio_reps)
        cpu_audio = cpu_seconds("self") - cpu0
        measured = window.close()
    # a ceiling: the fastest repetition (the mean would let one slow repetition lower it)
    visual_fps = cfg.batch_size / min(v)
    vggish_sps = SEGMENTS / min(a)
    seconds_per_segment = cfg.frames_per_segment / visual_fps + 1 / vggish_sps
    return {
        "visual_frames_per_s": visual_fps,
        "visual_batch_s": v,
        "vggish_segments_per_s": vggish_sps,
        "vggish_batch_s_mean": sum(a) / len(a),
        "vggish_batch_s_min": min(a),
        "ceiling_segments_per_s": 1 / seconds_per_segment,
        "ceiling_frames_per_s": cfg.frames_per_segment / seconds_per_segment,
        "cpu_s_per_segment": cpu_visual / (visual_reps * cfg.batch_size) * cfg.frames_per_segment
        + cpu_audio / (audio_reps * SEGMENTS),
        "threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        **measured,
        **peak_memory(device),
    }


def stage_decode(cfg: BenchConfig, work: Path) -> dict:
    """pipeline.extract.decoded over the generated videos (repeated to at least 8 jobs)."""
    import torch

    from avel.pipeline.decode import DecodeOptions
    from avel.pipeline.extract import Job, decoded

    paths = video_paths(work)
    n_jobs = max(len(paths), 8 if cfg.quick else 16)
    jobs = [Job(f"v{i}", paths[i % len(paths)]) for i in range(n_jobs)]
    options = DecodeOptions.from_settings(settings_for(cfg))
    rss_before = rss_mib()
    window = Window()
    cpu0, self0 = cpu_seconds(), cpu_seconds("self")
    t0 = time.perf_counter()
    first = None
    segments = 0
    for job, video, error in decoded(jobs, options, cfg.workers):
        if error is not None:
            raise RuntimeError(f"{job.path}: {error}")
        if first is None:
            first = time.perf_counter() - t0
        segments += video.num_segments
    wall = time.perf_counter() - t0
    cpu, consumer = cpu_seconds() - cpu0, cpu_seconds("self") - self0
    measured = window.close()
    steady = (segments - SEGMENTS) / (wall - first) if n_jobs > 1 and wall > first else float("nan")
    return {
        "jobs": n_jobs,
        "distinct_files": len(paths),
        "segments": segments,
        "wall_s": wall,
        "segments_per_s": segments / wall,
        "first_video_s": first,
        "steady_segments_per_s": steady,
        "cpu_s_per_video": cpu / n_jobs,
        "consumer_cpu_s_per_video": consumer / n_jobs,
        "rss_before_mib": rss_before,
        **measured,
        **peak_memory(torch.device("cpu")),
    }


def stage_e2e(cfg: BenchConfig, work: Path) -> dict:
    """run_extraction (what `avel preprocess` runs) into a temporary directory cache."""
    import torch

    from avel.pipeline.cache import FeatureCache
    from avel.pipeline.extract import jobs_from_paths, run_extraction

    t = time.perf_counter()
    fe = extractor_for(cfg)
    build_s = time.perf_counter() - t
    jobs = jobs_from_paths(video_paths(work))
    cache_dir = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    os.rmdir(cache_dir)  # run_extraction creates it
    if fe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(fe.device)
    rss_before = rss_mib()
    window = Window()
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    summary = run_extraction(jobs, cache_dir, fe, workers=cfg.workers, pooled=True, progress=False)
    sync(fe.device)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    measured = window.close()
    if summary.failed or summary.done != len(jobs):
        raise RuntimeError(f"extraction failed: {summary}")
    with FeatureCache(cache_dir) as cache:
        segments = sum(e.num_segments for e in cache.entries.values())
    return {
        "videos": len(jobs),
        "segments": segments,
        "wall_s": wall,
        "extractor_build_s": build_s,
        "segments_per_s": segments / wall,
        "frames_per_s": segments * cfg.frames_per_segment / wall,
        "cpu_s": cpu,
        "cpu_s_per_segment": cpu / segments,
        "threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        **measured,
        **peak_memory(fe.device),
    }


def cosine_rows(a, b):
    """Cosine similarity of matching rows of two [N, D] arrays -> [N]."""
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def stage_precision(cfg: BenchConfig, work: Path) -> dict:
    """fp32 vs --precision features of (up to) two decoded generated videos, 2 frames per segment."""
    from avel.pipeline.decode import DecodeOptions, decode_video

    import numpy as np

    videos = [decode_video(p, DecodeOptions(frames_per_segment=2, segments=SEGMENTS)) for p in video_paths(work)[:2]]
    frames = np.concatenate([v.frames for v in videos])  # [T, 2, 224, 224, 3]
    audio = np.concatenate([v.audio for v in videos])  # [T, 16000]
    feats = {}
    for precision in ("fp32", cfg.precision):
        fe = extractor_for(cfg, precision)
        feats[precision] = (fe.visual_features(frames), fe.audio_features(audio))
    (v32, a32), (vlo, alo) = feats["fp32"], feats[cfg.precision]
    cv = cosine_rows(v32.reshape(len(v32), -1), vlo.reshape(len(vlo), -1))  # per segment, 7x7x512 flattened
    ca = cosine_rows(a32, alo)
    rel = float(np.linalg.norm(vlo - v32) / np.linalg.norm(v32))
    return {
        "pool5_cosine_min": float(cv.min()), "pool5_cosine_mean": float(cv.mean()),
        "pool5_relative_l2": rel,
        "vggish_cosine_min": float(ca.min()), "vggish_cosine_mean": float(ca.mean()),
        "segments": len(cv),
    }


def sel_data(cfg: BenchConfig):
    """AVE-sized SEL data: 3339 train + 402 val videos x 10 segments, pool5 7x7x512 and
    VGGish 128 in float16 (random values: the cost does not depend on them)."""
    import torch

    from avel.pipeline.dataset import AVData

    n = sum(AVE_SPLITS.values())
    g = torch.Generator().manual_seed(cfg.seed)
    visual = torch.empty(n, SEGMENTS, 7, 7, 512, dtype=torch.float16)  # (V, T, 7, 7, 512)
    for i in range(0, n, 256):  # chunked: never a float32 copy of the whole set
        visual[i : i + 256] = torch.rand(visual[i : i + 256].shape, generator=g)
    audio = torch.rand(n, SEGMENTS, 128, generator=g).to(torch.float16)  # (V, T, 128)
    labels = torch.randint(0, AVE_CLASSES + 1, (n, SEGMENTS), generator=g)  # (V, T), 28 = background
    order = torch.randperm(n, generator=g)
    splits = {"train": order[: AVE_SPLITS["train"]].sort().values, "val": order[AVE_SPLITS["train"]:].sort().values}
    names = [f"class{i}" for i in range(AVE_CLASSES)]
    return AVData(visual, audio, labels, names, [f"v{i}" for i in range(n)], splits)


def stage_sel(cfg: BenchConfig, work: Path) -> dict:
    """Seconds per SEL training epoch (train pass + validation), pipeline.train's code path."""
    import torch

    from avel.models.registry import build_model
    from avel.models.registry import ModelConfig
    from avel.pipeline.config import resolve_device
    from avel.pipeline.train import TrainConfig, evaluate, prepare_features, train

    t = time.perf_counter()
    data = sel_data(cfg)
    data_s = time.perf_counter() - t
    device = resolve_device(cfg.device)
    tcfg = TrainConfig(ModelConfig(task="sel", name="dam"), epochs=1, device=cfg.device, dtype_in_ram="float16", progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mib()
    window = Window()
    batches = math.ceil(AVE_SPLITS["train"] / tcfg.resolved.batch_size)
    if not cfg.quick:
        t = time.perf_counter()
        result = train(data, tcfg)
        sync(device)
        epoch_s = time.perf_counter() - t
        how = f"train(epochs=1): {batches} batches of {tcfg.resolved.batch_size} + validation on {AVE_SPLITS['val']} videos, measured whole"
        return {"epoch_s": epoch_s, "how": how, "data_s": data_s, "data_gib": data.visual.nbytes / 2**30,
                "rss_before_mib": rss_before, "loss": result.history[0]["loss"], **window.close(),
                **peak_memory(device)}
    # a fraction of the epoch, the same steps as train(): prepare_features, the model, Adam,
    # feats.batch -> loss -> backward -> step; then evaluate() on part of validation
    torch.manual_seed(tcfg.seed)
    feats = prepare_features(data, "sel", tcfg.dtype_in_ram)
    model = build_model(tcfg.model_config(data)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    order = data.split("train")[torch.randperm(AVE_SPLITS["train"], generator=torch.Generator().manual_seed(0))]
    measured = 4
    times = []
    for k in range(measured + 1):  # the first batch is a warm-up, not counted
        sync(device)
        t = time.perf_counter()
        audio, visual, target = feats.batch(order[k * tcfg.resolved.batch_size : (k + 1) * tcfg.resolved.batch_size], device)
        loss = model.loss(audio, visual, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        times.append(time.perf_counter() - t)
    per_batch = sum(times[1:]) / measured
    val_part = data.split("val")[: tcfg.eval_batch_size]
    part = dataclasses.replace(data, splits={"val": val_part})
    t = time.perf_counter()
    evaluate(model, part, "val", batch_size=tcfg.eval_batch_size, features=feats)
    sync(device)
    val_s = (time.perf_counter() - t) * AVE_SPLITS["val"] / len(val_part)
    how = (f"extrapolated: {measured} timed batches of {tcfg.resolved.batch_size} (x{batches}) + evaluate() on "
           f"{len(val_part)} of {AVE_SPLITS['val']} val videos (scaled)")
    return {"epoch_s": per_batch * batches + val_s, "how": how, "data_s": data_s,
            "data_gib": data.visual.nbytes / 2**30, "rss_before_mib": rss_before, **window.close(),
            **peak_memory(device)}


def stage_localize(cfg: BenchConfig, work: Path) -> dict:
    """`localize([video], checkpoint, ...)` from pipeline/localize.py, if it exists yet."""
    import importlib
    import importlib.util
    import inspect

    import torch

    if importlib.util.find_spec("avel.pipeline.localize") is None:
        return {"available": False, "why": "pipeline/localize.py does not exist"}
    mod = importlib.import_module("avel.pipeline.localize")
    fn = getattr(mod, "localize", None)
    if fn is None:
        return {"available": False, "why": "pipeline.localize has no localize()"}
    from avel.models.registry import ModelConfig, build_model
    from avel.pipeline.checkpoint import save_checkpoint

    torch.manual_seed(cfg.seed)
    model_config = ModelConfig(task="sel", name="dam", num_classes=AVE_CLASSES + 1)
    ckpt = save_checkpoint(work / "sel.safetensors", build_model(model_config), model_config,
                           [f"class{i}" for i in range(AVE_CLASSES)], settings_for(cfg), {})
    params = inspect.signature(fn).parameters
    wanted = {"device": cfg.device, "precision": cfg.precision, "batch_size": cfg.batch_size, "progress": False}
    kwargs = {k: v for k, v in wanted.items() if k in params}
    video = video_paths(work)[0]
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mib()
    window = Window()
    t = time.perf_counter()
    try:
        results = fn([video], str(ckpt), **kwargs)
    except Exception as e:  # an API still being written: say so, never guess a figure
        return {"available": False, "why": f"localize() raised {type(e).__name__}: {str(e)[:200]}"}
    sync(device)
    error = getattr(results[0], "error", None) if results else "no result"
    if error:
        return {"available": False, "why": f"localize() gave an error: {error}"}
    latency = time.perf_counter() - t
    return {"available": True, "latency_s": latency, "kwargs": sorted(kwargs), "rss_before_mib": rss_before,
            **window.close(), **peak_memory(device)}


STAGE_FUNCTIONS = {
    "ceiling": stage_ceiling, "decode": stage_decode, "e2e": stage_e2e,
    "precision": stage_precision, "sel": stage_sel, "localize": stage_localize,
}


def run_stage(name: str, cfg: BenchConfig, work: Path) -> None:
    """Child side: run one stage, write its result as JSON."""
    import torch

    global TREE
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    TREE = ProcessTreeMemory()
    result = STAGE_FUNCTIONS[name](cfg, work)
    result["load_after"] = load()
    (work / f"{name}.json").write_text(json.dumps(result))


# -- the parent: set-up, one subprocess per stage, the report ----------------------------------
def machine_line(cfg: BenchConfig) -> str:
    import torch

    if cfg.device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(cfg.device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()})")


def mem(r: dict) -> str:
    parts = [f"peak RSS {r['peak_rss_mib']:.0f} MiB (before work {r['rss_before_mib']:.0f})"]
    if r.get("workers_peak_rss_mib"):
        parts.append(f"decoder workers together {r['workers_peak_rss_mib']:.0f} MiB (sampled peak)")
    if "cuda_peak_mib" in r:
        parts.append(f"CUDA peak {r['cuda_peak_mib']:.0f} MiB")
    return ", ".join(parts)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report(name: str, r: dict, cfg: BenchConfig, results: dict) -> None:
    K = cfg.frames_per_segment
    at = f"[load {r.get('load_before', '?')} -> {r.get('load_after', '?')}"
    if r.get("cores_ours") is not None:
        at += f"; cores used: this stage {r['cores_ours']:.2f}"
        if r.get("cores_others") is not None:
            at += f", other processes {r['cores_others']:.2f}"
    at += "]"
    if name == "ceiling":
        print(f"1. model-only ceiling {at}")
        print(f"   VGG-19 pool5, batch {cfg.batch_size}:  {r['visual_frames_per_s']:.2f} frames/s "
              f"(= {r['visual_frames_per_s'] / K:.3f} segments/s at {K} frames/segment; fastest of "
              f"batch times {', '.join(f'{x:.2f}' for x in r['visual_batch_s'])} s)")
        print(f"   VGGish, batch {SEGMENTS} segments:     {r['vggish_segments_per_s']:.1f} segments/s "
              f"(fastest; mean batch {r['vggish_batch_s_mean'] * 1000:.0f} ms)")
        print(f"   both (one segment = {K} frames + 1 s of audio): {r['ceiling_segments_per_s']:.3f} segments/s"
              f" = {r['ceiling_frames_per_s']:.2f} frames/s, {r['threads']} torch threads; "
              f"{r['cpu_s_per_segment']:.2f} CPU-s per segment")
        print(f"   memory: {mem(r)}")
    elif name == "decode":
        print(f"2. decode only, pipeline.extract.decoded, workers={cfg.workers} {at}")
        print(f"   {r['jobs']} videos ({r['distinct_files']} files), {r['segments']} segments x {K} frames "
              f"in {r['wall_s']:.2f} s: {r['segments_per_s']:.1f} segments/s "
              f"(after the first video: {r['steady_segments_per_s']:.1f}; first video at {r['first_video_s']:.2f} s)")
        print(f"   CPU time per video: {r['cpu_s_per_video']:.3f} s in all (decoder start-up included), "
              f"{r['consumer_cpu_s_per_video']:.3f} s of it in the consuming process")
        print(f"   memory: {mem(r)}")
    elif name == "e2e":
        print(f"3. end to end, run_extraction (avel preprocess), workers={cfg.workers} {at}")
        print(f"   {r['videos']} videos, {r['segments']} segments in {r['wall_s']:.1f} s: "
              f"{r['segments_per_s']:.3f} segments/s = {r['frames_per_s']:.2f} frames/s "
              f"(extractor built in {r['extractor_build_s']:.1f} s, not counted)")
        ceiling = results.get("ceiling")
        if ceiling:
            ratio = r["segments_per_s"] / ceiling["ceiling_segments_per_s"]
            target = TARGETS["cuda" if cfg.device.startswith("cuda") else "cpu"]
            others = max(r.get("cores_others") or 0.0, ceiling.get("cores_others") or 0.0)
            if others > BUSY_CORES:
                verdict = (f"not a valid ratio: other processes used up to {others:.2f} cores meanwhile; "
                           "rerun on a quiet machine")
            else:
                verdict = f"{'meets' if ratio >= target else 'BELOW'} the {target:.2f}x target"
            print(f"   end-to-end / ceiling = {ratio:.3f}  ({verdict})")
            print(f"   CPU-s per segment: {r['cpu_s_per_segment']:.2f} end to end (decoders included) vs "
                  f"{ceiling['cpu_s_per_segment']:.2f} model only: ratio {ceiling['cpu_s_per_segment'] / r['cpu_s_per_segment']:.3f}")
        print(f"   memory: {mem(r)}")
    elif name == "precision":
        print(f"   features {cfg.precision} vs fp32 on decoded generated videos ({r['segments']} segments x 2 frames): "
              f"pool5 cosine min {r['pool5_cosine_min']:.5f} mean {r['pool5_cosine_mean']:.5f} "
              f"(relative L2 {r['pool5_relative_l2']:.4f}); VGGish cosine min {r['vggish_cosine_min']:.5f} "
              f"mean {r['vggish_cosine_mean']:.5f}")
    elif name == "sel":
        print(f"4. SEL training (DAM), AVE-sized float16 features in RAM ({r['data_gib']:.2f} GiB, "
              f"made in {r['data_s']:.1f} s) {at}")
        print(f"   {r['epoch_s']:.1f} s per epoch  ({r['how']})")
        print(f"   memory: {mem(r)}")
    elif name == "localize":
        if r.get("available"):
            print(f"5. avel localize, one 10-s video: {r['latency_s']:.2f} s (one call, extractor build included) {at}")
            print(f"   memory: {mem(r)}")
        else:
            print(f"5. avel localize, one 10-s video: not available ({r['why']})")
    sys.stdout.flush()


def projection(cfg: BenchConfig, results: dict) -> None:
    frames = AVE_VIDEOS * AVE_FRAMES_PER_VIDEO
    e2e, ceiling = results.get("e2e"), results.get("ceiling")
    what = machine_line(cfg).split(",")[0]
    if e2e:
        print(f"6. raw AVE ({AVE_VIDEOS} videos x {AVE_FRAMES_PER_VIDEO} frames = {frames} frames) on {what}: "
              f"{hours(frames / e2e['frames_per_s'])} at the measured end-to-end rate"
              + (f", {hours(frames / ceiling['ceiling_frames_per_s'])} at the ceiling" if ceiling else ""))
        print("   (generated 128x96 videos decode faster than AVE's; decoding real videos costs more CPU per frame)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--videos", type=int, default=4, help="generated 10-s videos (decode and end-to-end stages)")
    p.add_argument("--workers", type=int, default=2, help="decoder processes, 0 = one thread (avel preprocess: 2)")
    p.add_argument("--batch-size", type=int, default=160, help="frames per VGG-19 forward")
    p.add_argument("--frames-per-segment", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the model process (default: torch's)")
    p.add_argument("--size", default="128x96", help="WxH of the generated videos (AVE-like: 640x360)")
    p.add_argument("--fps", type=int, default=16, help="frame rate of the generated videos (AVE-like: 30)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions; SEL epoch extrapolated from a few batches")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    p.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        width, height = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {a.size}: expected WxH, e.g. 640x360")
    cfg = BenchConfig(device=a.device, precision=a.precision, videos=a.videos, workers=a.workers,
                      batch_size=a.batch_size, frames_per_segment=a.frames_per_segment, quick=a.quick,
                      threads=a.threads, width=width, height=height, fps=a.fps)
    if a.stage:
        run_stage(a.stage, cfg, a.work)
        return 0

    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if cfg.precision == "fp16" and not cfg.device.startswith("cuda"):
        p.error("--precision fp16 needs --device cuda (use bf16 on the CPU)")
    if cfg.precision == "fp32":
        stages = [s for s in stages if s != "precision"]
    import torch

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")

    print(f"avel benchmark: device {cfg.device}, precision {cfg.precision}, {cfg.videos} videos, "
          f"workers {cfg.workers}, batch {cfg.batch_size}, {cfg.frames_per_segment} frames/segment"
          f"{', quick' if cfg.quick else ''}")
    print(f"   {machine_line(cfg)}; load {load()}")
    results: dict = {"config": dataclasses.asdict(cfg), "machine": machine_line(cfg)}
    with tempfile.TemporaryDirectory(prefix="avel-bench-") as tmp:
        work = Path(tmp)
        if {"decode", "e2e", "precision", "localize"} & set(stages):
            from avel.pipeline.synth import synthesize

            t = time.perf_counter()
            synthesize(work / "synth", videos=cfg.videos, classes=min(cfg.videos, 10), seed=cfg.seed,
                       workers=min(cfg.videos, os.cpu_count() or 1), progress=False,
                       width=cfg.width, height=cfg.height, fps=cfg.fps)
            print(f"   generated {cfg.videos} 10-s videos (pipeline.synth, {cfg.width}x{cfg.height}, {cfg.fps} fps, "
                  f"h264 + AAC) in {time.perf_counter() - t:.1f} s")
        for name in stages:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--work", str(work),
                   "--device", cfg.device, "--precision", cfg.precision, "--videos", str(cfg.videos),
                   "--workers", str(cfg.workers), "--batch-size", str(cfg.batch_size),
                   "--frames-per-segment", str(cfg.frames_per_segment), "--size", f"{cfg.width}x{cfg.height}",
                   "--fps", str(cfg.fps)]
            cmd += ["--quick"] if cfg.quick else []
            cmd += ["--threads", str(cfg.threads)] if cfg.threads is not None else []
            proc = subprocess.run(cmd, cwd=ROOT)
            out = work / f"{name}.json"
            if proc.returncode != 0 or not out.is_file():
                print(f"{name}: FAILED (exit {proc.returncode}; its error is above)")
                results[name] = {"failed": proc.returncode}
                continue
            results[name] = json.loads(out.read_text())
            report(name, results[name], cfg, results)
        projection(cfg, results)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
