"""Throughput of stage one (decoding + VGG-19 pool5 + VGGish) against honest limits, its
memory, plus SEL training and `avel localize` latency, on one device and precision.

    python benchmarks/bench.py --device cpu --precision fp32 [--videos 4] [--workers 2] [--quick]

Stages (each in its own subprocess, so that each peak memory figure is that stage's own):
  ceiling    VGG-19 and VGGish on tensors already on the device, at every setting the
             pipeline could use (batch sizes x memory formats, at --precision): the fastest
             is the ceiling, and the pipeline's default for the device is compared with it
  decode     the decoder limit (raw PyAV decoding of every frame, nothing else, the same
             files), the project's decoder processes against it per core, a profile of
             where the difference goes, and the cost of moving frames to the model process
  e2e        run_extraction (what `avel preprocess` runs) with the pipeline's defaults, and
             its ratio to the ceiling (above 1.0 is a benchmark defect, never a success)
  memory     peak RSS of `avel extract` on a short and a long video (7,040 chosen frames,
             1 GiB of them): the long run must not need a tenth of them more
  precision  cosine similarity of pool5 / VGGish features, fp32 vs --precision (not fp32 only)
  sel        one SEL training epoch (pipeline.train) on AVE-sized random float16 features
  localize   `avel localize` on one 10-s video: cold (extractor build included) and warm

Weights are the seeded `random` models: the same architectures, so the same FLOPs as the
real ones. Videos are AVE-like by default (benchmarks/media.py: 640x360, 30 fps, h264 +
AAC 44.1 kHz stereo, 10 s). Beside every figure: the load average, and the cores the stage
and all other processes used meanwhile (/proc/stat): a figure taken while other processes
ran is slower than the machine can do, and says so. Ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# the repository root, so that `python benchmarks/bench.py` finds the project's packages.
# Top-level imports stay light: worker processes of the decode stage re-import this module.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("ceiling", "compile", "feed", "decode", "e2e", "memory", "precision", "sel", "localize", "ray")
FEED_TARGET_MS = 1.0  # the model process's own CPU per segment with a null model (>= 1,000 segments/s)
BUSY_TARGET = 0.9  # the decoder pool's cores busy with a null consumer
COMPILE_COSINE = 0.999  # compiled features against eager
DENSE_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}  # FLOP/s, no sparsity
VIDEOS_AT_SCALE = 1_000_000
RAY_TARGET = 0.8  # --engine ray / --engine local throughput on the same machine
NETNS = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
AVE_VIDEOS = 4143  # raw AVE dataset (Annotations.txt rows)
AVE_SEGMENTS = AVE_VIDEOS * 10
AVE_SPLITS = {"train": 3339, "val": 402}  # SEL train / val sizes (test is not needed for an epoch)
AVE_CLASSES = 28
SEGMENTS = 10  # generated videos are 10 s, AVE rows label 10 segments
TARGETS = {"cpu": 0.85, "cuda": 0.90}  # end-to-end / ceiling
DECODE_TARGET = 0.85  # project decoder / decode limit, per core
BUSY_CORES = 0.1  # other processes using more than this during a stage spoil its ratio
LONG_FRAMES = 7040  # the memory stage's long video: 440 s x 16 frames, 1.06 GB of 224x224 frames


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"  # cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only)
    videos: int = 4  # generated 10-s videos for the decode and end-to-end stages
    workers: int = 2  # decoder processes (0: one decoding thread), as `avel preprocess --workers`
    batch_size: int | None = None  # frames per VGG-19 forward (None: the device's default)
    frames_per_segment: int = 16  # AVE: 16
    quick: bool = False  # fewer repetitions and settings; a shorter long video; SEL extrapolated
    threads: int | None = None  # torch intra-op threads in the model process (None: torch's default)
    width: int = 640  # generated videos: AVE-like by default
    height: int = 360
    fps: int = 30
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


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) a live process has used (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
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
    """Samples the RSS of this process's descendants (decoder processes) every `period_s` in
    a thread: `peak_mib` is the largest sum seen. (ru_maxrss of RUSAGE_CHILDREN is no use
    here: a fork+exec'd child inherits its parent's high-water mark.) Shared memory is
    counted in every process that maps it."""

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
    its descendants' RSS (decoder processes), CUDA allocations."""
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
    every other process of the machine used meanwhile (the interference in the figure).
    `extra_cpu()` adds CPU time of processes the stage ran but has not reaped."""

    def __init__(self, extra_cpu=lambda: 0.0) -> None:
        self.load_before = load()
        self._extra = extra_cpu
        self._busy, self._ours, self._t = machine_busy_s(), cpu_seconds() + extra_cpu(), time.perf_counter()

    def close(self) -> dict:
        wall = time.perf_counter() - self._t
        ours = cpu_seconds() + self._extra() - self._ours
        busy = machine_busy_s()
        others = None if busy is None or self._busy is None else max(0.0, (busy - self._busy - ours) / wall)
        return {
            "load_before": self.load_before,
            "load_after": load(),
            "cores_ours": ours / wall,
            "cores_others": others,
        }


def sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def settings_for(cfg: BenchConfig, precision: str | None = None, segments: int | None = SEGMENTS):
    from avel.core.config import FeatureSettings

    return FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=cfg.frames_per_segment,
        segments=segments,
        precision=precision or cfg.precision,
        seed=cfg.seed,
    )


def extractor_for(cfg: BenchConfig, precision: str | None = None, setting=None):
    """The pipeline's extractor: the device's default setting unless told otherwise."""
    from avel.pipeline.extract.features import FeatureExtractor

    batch = setting.batch_size if setting is not None else cfg.batch_size
    memory_format = setting.memory_format if setting is not None else None
    return FeatureExtractor(
        settings_for(cfg, precision), device=cfg.device, batch_size=batch, memory_format=memory_format
    )


def video_paths(work: Path) -> list[str]:
    return sorted(str(p) for p in (work / "videos").glob("*.mp4"))


def timed(fn, reps: int, device) -> list[float]:
    out = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


# -- 1. the ceiling ------------------------------------------------------------------------------------
def stage_ceiling(cfg: BenchConfig, work: Path) -> dict:
    """Forward passes only, inputs already on the device, at every candidate setting."""
    import torch

    from avel.pipeline.extract.features import CANDIDATES, DEVICE_DEFAULTS, VisualSetting

    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    default = DEVICE_DEFAULTS[device.type]
    if cfg.batch_size is not None:
        default = VisualSetting(cfg.batch_size, default.memory_format)
    candidates = list(CANDIDATES[device.type])
    if cfg.quick:
        candidates = [c for c in candidates if c.batch_size <= 64 or cuda][: 4 if not cuda else 6]
    if default not in candidates:
        candidates.append(default)
    g = torch.Generator().manual_seed(cfg.seed)
    rss_before = rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    window = Window()
    fe = extractor_for(cfg)
    frames = torch.randint(
        0, 256, (max(c.batch_size for c in candidates), 224, 224, 3), dtype=torch.uint8, generator=g
    ).to(device)

    def visual(n: int):
        with torch.inference_mode(), fe.autocast():
            fe.visual(frames[:n])

    # repetitions go round the candidates (not candidate after candidate), so that a change of
    # the machine's load touches all of them alike; the first round is a warm-up on the GPU,
    # and on the CPU the fastest round counts (min() drops the set-up of each new shape)
    rounds = [] if not cuda else [("warm-up", 2)]
    rounds.append(("measured", (3 if cfg.quick else 10) if cuda else (1 if cfg.quick else 2)))
    times: dict = {c: [] for c in candidates}
    cpu: dict = {c: 0.0 for c in candidates}
    for what, reps in rounds:
        for _ in range(reps):
            for setting in candidates:
                fe.set_visual_setting(setting)
                cpu0 = cpu_seconds("self")
                [t] = timed(lambda s=setting: visual(s.batch_size), 1, device)
                if what == "measured":
                    times[setting].append(t)
                    cpu[setting] += cpu_seconds("self") - cpu0
    fe.set_visual_setting(default)
    tried = [
        {
            "batch_size": c.batch_size,
            "memory_format": c.memory_format,
            "frames_per_s": c.batch_size / min(times[c]),
            "batch_s": times[c],
            "cpu_s_per_frame": cpu[c] / (len(times[c]) * c.batch_size),
        }
        for c in candidates
    ]
    audio_tried = []
    for n in sorted({max(1, default.batch_size // cfg.frames_per_segment), SEGMENTS}):
        audio = (torch.rand(n, 16000, generator=g) * 2 - 1).to(device)

        def vggish(audio=audio):
            with torch.inference_mode(), fe.autocast():
                fe.audio(audio)

        timed(vggish, 3, device)
        audio_times = timed(vggish, 20 if cfg.quick else 50, device)
        audio_tried.append({"segments": n, "segments_per_s": n / min(audio_times)})
    measured = window.close()
    best = max(tried, key=lambda r: r["frames_per_s"])
    mine = next(
        r for r in tried if (r["batch_size"], r["memory_format"]) == (default.batch_size, default.memory_format)
    )
    audio_best = max(audio_tried, key=lambda r: r["segments_per_s"])
    seconds_per_segment = cfg.frames_per_segment / best["frames_per_s"] + 1 / audio_best["segments_per_s"]
    return {
        "tried": tried,
        "audio_tried": audio_tried,
        "best": best,
        "default": mine,
        "visual_frames_per_s": best["frames_per_s"],
        "vggish_segments_per_s": audio_best["segments_per_s"],
        "ceiling_segments_per_s": 1 / seconds_per_segment,
        "ceiling_frames_per_s": cfg.frames_per_segment / seconds_per_segment,
        "cpu_s_per_segment": best["cpu_s_per_frame"] * cfg.frames_per_segment,
        "threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        **measured,
        **peak_memory(device),
    }


# -- 2. decoding -------------------------------------------------------------------------------------------
def raw_decode(args: tuple[list[str], int]) -> tuple[int, float]:
    """Decode every video frame of the files (no conversion): (frames, CPU seconds of this
    process). threads 0: FFmpeg's automatic threading, else that many threads."""
    import av

    paths, threads = args
    cpu0 = cpu_seconds("self")
    frames = 0
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if threads == 0:
                stream.thread_type = "AUTO"
            else:
                stream.thread_count, stream.thread_type = threads, ("AUTO" if threads > 1 else "NONE")
            frames += sum(1 for _ in container.decode(stream))
    return frames, cpu_seconds("self") - cpu0


def decode_limit(jobs: list[str], processes: int, threads: int) -> dict:
    """Raw decoding of `jobs` spread over `processes` processes (started before the clock)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(raw_decode, [([], threads)] * processes))  # start-up, not timed
        spent = [0.0]  # the pool's CPU time, known when its results are in
        window = Window(lambda: spent[0])
        t = time.perf_counter()
        results = list(pool.map(raw_decode, [(jobs[i::processes], threads) for i in range(processes)]))
        wall = time.perf_counter() - t
        spent[0] = sum(r[1] for r in results)
        measured = window.close()
    frames = sum(r[0] for r in results)
    cpu = sum(r[1] for r in results)
    return {
        "processes": processes,
        "threads": threads,
        "frames": frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "frames_per_s": frames / wall,
        "frames_per_cpu_s": frames / cpu,
        **measured,
    }


def project_decode(jobs: list[str], workers: int, options, segments_per_batch: int = 1) -> dict:
    """The project's decoders (pipeline.decoders, as run_extraction uses them), every batch
    consumed and handed back; CPU time of the decoder processes read from /proc."""
    from avel.pipeline.media.pool import open_decoders

    def consume(paths: list[str]) -> int:
        segments = 0
        for source in decoders.videos(paths):
            for batch in source:
                segments += len(batch)
                if batch.release is not None:
                    batch.release()
        return segments

    with open_decoders(workers, options, segments_per_batch=segments_per_batch) as decoders:
        pids = list(getattr(decoders, "pids", []))
        consume(jobs[:workers])  # start-up (Python, imports) and a first video each: not timed
        before = {p: process_cpu_s(p) for p in pids}
        window = Window(lambda: sum(process_cpu_s(p) for p in pids))
        self0 = cpu_seconds("self")
        t = time.perf_counter()
        segments = consume(jobs)
        wall = time.perf_counter() - t
        consumer = cpu_seconds("self") - self0
        workers_cpu = sum(process_cpu_s(p) - before[p] for p in pids)
        measured = window.close()
    return {
        "workers": workers,
        "threads": options.threads,
        "segments": segments,
        "wall_s": wall,
        "cpu_s": consumer + workers_cpu,
        "consumer_cpu_s": consumer,
        "workers_cpu_s": workers_cpu,
        **measured,
    }


def decode_profile(paths: list[str], options, reps: int) -> dict:
    """Where one video's decoding time goes, one core, one thread (ms per video, the
    fastest of `reps`): the floor (open, demux, decode every frame), the conversion of the
    chosen frames, the audio (its own open and demux included; `open_ms` is one open), and
    the project's decoder in all; the rest is Python and copies."""
    import av
    import numpy as np

    from avel.core.sampling import frame_sample_times, latest_at_or_before
    from avel.pipeline.media.audio import AudioTrack
    from avel.pipeline.media.decode import BatchReader, RgbConverter

    def best_ms(fn) -> float:
        out = []
        for _ in range(reps):
            t = time.process_time()
            fn()
            out.append(time.process_time() - t)
        return 1000 * min(out) / len(paths)

    decoded = {}
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            s.thread_count, s.thread_type = 1, "NONE"
            frames = list(c.decode(s))
        times = np.array([f.time - frames[0].time for f in frames])
        chosen = np.unique(latest_at_or_before(times, frame_sample_times(SEGMENTS, options.frames_per_segment)))
        decoded[p] = [frames[i] for i in chosen]

    def convert():
        rgb = RgbConverter(options.frame_size, 1)
        dst = np.empty((options.frame_size, options.frame_size, 3), np.uint8)
        for p in paths:
            for f in decoded[p]:
                dst[...] = rgb(f)

    def audio():
        for p in paths:
            a = AudioTrack(p)
            a.rest()
            a.close()

    def opens():
        for p in paths:
            av.open(p, metadata_errors="ignore").close()

    def project():
        for p in paths:
            for _ in BatchReader(p, options, 1):
                pass

    figures = {
        "decode_ms": best_ms(lambda: raw_decode((paths, 1))),
        "convert_ms": best_ms(convert),
        "audio_ms": best_ms(audio),
        "open_ms": best_ms(opens),
        "project_ms": best_ms(project),
        "chosen_frames": sum(len(v) for v in decoded.values()) / len(paths),
    }
    figures["other_ms"] = figures["project_ms"] - figures["decode_ms"] - figures["convert_ms"] - figures["audio_ms"]
    decoded.clear()  # the frames (the closures hold the dict)
    return figures


def transfer_cost(options, reps: int) -> dict:
    """Moving one 10-s video's chosen frames ([10, K, 224, 224, 3] uint8, 24 MB at K = 16) from
    a decoder process to the model process. Before: the whole array pickled through a pipe
    (what multiprocessing.Pool returned). After: the decoder wrote it into shared memory;
    one message per batch goes each way (pipeline.decoders). ms per video, wall and CPU of
    both ends (the receiver is a thread here, so one process's CPU time holds both)."""
    import threading
    from multiprocessing import Pipe

    import numpy as np

    frames = np.random.default_rng(0).integers(0, 256, options.frames_shape(SEGMENTS), dtype=np.uint8)

    def measure(send, count: int) -> tuple[float, float]:
        a, b = Pipe()
        received = []
        walls, cpus = [], []
        for _ in range(reps):
            received.clear()
            receiver = threading.Thread(target=lambda: received.extend(b.recv() for _ in range(count)))
            t, c = time.perf_counter(), time.process_time()
            receiver.start()
            send(a)
            receiver.join()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        return 1000 * min(walls), 1000 * min(cpus)

    before = measure(lambda conn: conn.send(frames), 1)
    after = measure(lambda conn: [conn.send(("batch", 0, s, s, 1)) for s in range(SEGMENTS)], SEGMENTS)
    return {
        "bytes": frames.nbytes,
        "before_ms": before[0],
        "before_cpu_ms": before[1],
        "after_ms": after[0],
        "after_cpu_ms": after[1],
    }


def stage_decode(cfg: BenchConfig, work: Path) -> dict:
    """The decode limit and the project's decoder on the same files, in this one stage."""
    from avel.pipeline.extract.local import decoder_threads
    from avel.pipeline.media.decode import DecodeOptions

    paths = video_paths(work)
    n_jobs = max(len(paths), 8 if cfg.quick else 16)
    jobs = [paths[i % len(paths)] for i in range(n_jobs)]
    workers = max(1, cfg.workers)
    options = DecodeOptions.from_settings(settings_for(cfg), threads=decoder_threads(workers))
    rss_before = rss_mib()
    limits = [decode_limit(jobs, workers, 0), decode_limit(jobs, workers, 1)]
    project = project_decode(jobs, workers, options)
    frames = limits[0]["frames"]  # source frames decoded: the same for every run
    project.update(frames=frames, frames_per_s=frames / project["wall_s"], frames_per_cpu_s=frames / project["cpu_s"])
    profile = decode_profile(
        paths[:2], DecodeOptions.from_settings(settings_for(cfg), threads=1), 2 if cfg.quick else 3
    )
    return {
        "jobs": n_jobs,
        "distinct_files": len(paths),
        "limits": limits,
        "project": project,
        "profile": profile,
        "transfer": transfer_cost(options, 3 if cfg.quick else 5),
        "rss_before_mib": rss_before,
        **peak_memory(__import__("torch").device("cpu")),
    }


# -- 1c. torch.compile against eager -------------------------------------------------------------------
def vgg19_flops_per_frame(size: int = 224) -> float:
    """FLOPs (2 x multiply-adds) of VGG-19's 16 convolutions up to pool5 on one size x size frame."""
    plan = [
        (3, 64),
        (64, 64),
        "M",
        (64, 128),
        (128, 128),
        "M",
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        "M",
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        "M",
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        "M",
    ]
    flops, side = 0.0, size
    for layer in plan:
        if layer == "M":
            side //= 2
        else:
            flops += 2.0 * layer[0] * layer[1] * 9 * side * side
    return flops


def card_peak(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DENSE_BF16_PEAK.items() if key in name), None)


def stage_compile(cfg: BenchConfig, work: Path) -> dict:
    """VGG-19 and VGGish at the pipeline's batch, eager and torch.compile'd (default; on a
    GPU also max-autotune), side by side: the time the first (compiling) batch took, the
    steady rate, the features' cosine to eager, and the whole AVE set's time with the
    compile time counted once."""
    import numpy as np
    import torch

    device = torch.device(cfg.device)
    modes = ["off", "default"] + (["max-autotune"] if device.type == "cuda" else [])
    rng = np.random.default_rng(cfg.seed)
    fe = extractor_for(cfg)
    n = fe.batch_size
    frames = rng.integers(0, 256, (max(1, n // cfg.frames_per_segment), cfg.frames_per_segment, 224, 224, 3), np.uint8)
    audio = rng.uniform(-1, 1, (fe.segments_per_batch, 16000)).astype(np.float32)
    reps = (2 if cfg.quick else 5) if device.type == "cpu" else (10 if cfg.quick else 30)
    rows, eager = [], None
    for mode in modes:
        fe.compile(mode)
        t = time.perf_counter()
        visual, vggish = fe.visual_features(frames), fe.audio_features(audio)
        first_s = time.perf_counter() - t
        times = timed(lambda: fe.visual_features(frames), reps, device)
        audio_times = timed(lambda: fe.audio_features(audio), reps, device)
        frames_per_s = frames.shape[0] * frames.shape[1] / min(times)
        if eager is None:
            eager = (visual, vggish)
        row = {
            "mode": mode,
            "first_batch_s": first_s,
            "frames_per_s": frames_per_s,
            "vggish_segments_per_s": audio.shape[0] / min(audio_times),
            "pool5_cosine_min": float(
                cosine_rows(visual.reshape(len(visual), -1), eager[0].reshape(len(visual), -1)).min()
            ),
            "vggish_cosine_min": float(cosine_rows(vggish, eager[1]).min()),
            "flops_per_s": frames_per_s * vgg19_flops_per_frame(),
        }
        seconds_per_segment = cfg.frames_per_segment / frames_per_s + 1 / row["vggish_segments_per_s"]
        row["ave_s"] = (first_s if mode != "off" else 0.0) + AVE_SEGMENTS * seconds_per_segment
        rows.append(row)
    peak = card_peak(device)
    for row in rows:
        row["mfu"] = row["flops_per_s"] / peak if peak else None
    return {
        "batch_size": n,
        "rows": rows,
        "flops_per_frame": vgg19_flops_per_frame(),
        "peak_flops": peak,
        **peak_memory(device),
    }


# -- 1b. feeding the model: the model process's own cost, the pool's delivered rate ------------------
def null_extractor(cfg: BenchConfig):
    """The pipeline's extractor with both networks replaced by modules that cost nothing:
    what is left is the model process's own work (receiving, collating, copies, writes)."""
    import torch

    class NullVisual(torch.nn.Module):
        weights_sha256, input_memory_format = "null", torch.contiguous_format

        def forward(self, frames):  # [N, S, S, 3] uint8 -> zeros [N, S/32, S/32, 512]
            return torch.zeros(frames.shape[0], frames.shape[1] // 32, frames.shape[2] // 32, 512)

    class NullAudio(torch.nn.Module):
        weights_sha256, pca_sha256 = "null", ""

        def forward(self, waveforms):  # [N, 16000] -> zeros [N, 128]
            return torch.zeros(waveforms.shape[0], 128)

    fe = extractor_for(cfg)
    fe.visual, fe.audio = NullVisual(), NullAudio()
    fe.set_visual_setting(fe.visual_setting)
    return fe


def stage_feed(cfg: BenchConfig, work: Path) -> dict:
    """(a) run_extraction with a null model, as `avel preprocess` runs it (decoder processes,
    shared memory, the part writer, progress): the CPU time of the model process itself per
    segment (all its threads), i.e. how many segments a second it could feed a model that
    costs nothing. (b) The decoder pool with a null consumer (every batch handed back at
    once): segments/s delivered and the share of the workers' cores busy (their CPU time /
    (wall x workers))."""
    import torch

    from avel.pipeline.cache.store import FeatureCache
    from avel.pipeline.extract.local import Job, decoder_threads, run_extraction
    from avel.pipeline.extract.options import ExtractOptions
    from avel.pipeline.media.decode import DecodeOptions

    paths = video_paths(work)
    n_jobs = max(len(paths), 8 if cfg.quick else 16)
    workers = max(1, cfg.workers)
    fe = null_extractor(cfg)
    if fe.device.type == "cpu":
        # a null model's collating (pool5 mean, concatenation) on CPU tensors: one torch thread, as on a GPU
        # these run on the device; with more, idle OpenMP threads spinning on a shared machine are what is timed
        torch.set_num_threads(1)
    rss_before = rss_mib()
    # (a) the model process's own cost: ids made unique so that every repeat of a file is a job
    jobs = [Job(f"job{i:04d}", paths[i % len(paths)]) for i in range(n_jobs)]
    cache_dir = Path(tempfile.mkdtemp(dir=work, prefix="feed-"))
    os.rmdir(cache_dir)
    window = Window(lambda: sum(process_cpu_s(p) for p in _descendants(os.getpid())))
    self0 = cpu_seconds("self")
    t0 = time.perf_counter()
    summary = run_extraction(jobs, cache_dir, fe, ExtractOptions(workers=workers, pooled=True, progress=True))
    wall = time.perf_counter() - t0
    model_cpu = cpu_seconds("self") - self0
    measured = window.close()
    if summary.failed or summary.done != len(jobs):
        raise RuntimeError(f"extraction failed: {summary}")
    with FeatureCache(cache_dir) as cache:
        segments = sum(e.num_segments for e in cache.entries.values())
    model = {
        "videos": len(jobs),
        "segments": segments,
        "wall_s": wall,
        "segments_per_s": segments / wall,
        "model_cpu_s": model_cpu,
        "model_cpu_ms_per_segment": 1000 * model_cpu / segments,
        "feedable_segments_per_s": segments / model_cpu if model_cpu > 0 else float("inf"),
        "segments_per_batch": fe.segments_per_batch,
        **measured,
    }
    # (b) the pool with a null consumer, at the extractor's batch of segments
    options = DecodeOptions.from_settings(settings_for(cfg), threads=decoder_threads(workers))
    pool = project_decode([paths[i % len(paths)] for i in range(n_jobs)], workers, options, fe.segments_per_batch)
    pool.update(
        segments_per_s=pool["segments"] / pool["wall_s"], busy=pool["workers_cpu_s"] / (pool["wall_s"] * workers)
    )
    return {"model": model, "pool": pool, "rss_before_mib": rss_before, **peak_memory(fe.device)}


# -- 3. end to end ---------------------------------------------------------------------------------------
def stage_e2e(cfg: BenchConfig, work: Path) -> dict:
    """run_extraction (what `avel preprocess` runs) into a temporary directory cache."""
    import torch

    from avel.pipeline.cache.store import FeatureCache
    from avel.pipeline.extract.local import jobs_from_paths, run_extraction
    from avel.pipeline.extract.options import ExtractOptions

    t = time.perf_counter()
    fe = extractor_for(cfg)
    build_s = time.perf_counter() - t
    jobs = jobs_from_paths(video_paths(work))
    cache_dir = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    os.rmdir(cache_dir)  # run_extraction creates it
    if fe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(fe.device)
    rss_before = rss_mib()
    window = Window(lambda: sum(process_cpu_s(p) for p in _descendants(os.getpid())))
    cpu0 = cpu_seconds()
    finished = []  # when each video was done
    t0 = time.perf_counter()
    summary = run_extraction(
        jobs,
        cache_dir,
        fe,
        ExtractOptions(workers=cfg.workers, pooled=True, progress=False),
        on_video=lambda job, failure: finished.append(time.perf_counter() - t0),
    )
    sync(fe.device)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0  # the decoder processes are reaped by now: their CPU is in "children"
    measured = window.close()
    if summary.failed or summary.done != len(jobs):
        raise RuntimeError(f"extraction failed: {summary}")
    with FeatureCache(cache_dir) as cache:
        segments = sum(e.num_segments for e in cache.entries.values())
    # once the decoder processes have started and each has handed over its first video
    k = min(max(1, cfg.workers), len(finished))
    steady = (segments * (len(jobs) - k) / len(jobs)) / (wall - finished[k - 1]) if len(jobs) > 2 * k else None
    return {
        "videos": len(jobs),
        "segments": segments,
        "wall_s": wall,
        "extractor_build_s": build_s,
        "first_videos_s": finished[k - 1],
        "steady_segments_per_s": steady,
        "batch_size": fe.visual_setting.batch_size,
        "memory_format": fe.visual_setting.memory_format,
        "segments_per_s": segments / wall,
        "frames_per_s": segments * cfg.frames_per_segment / wall,
        "cpu_s": cpu,
        "cpu_s_per_segment": cpu / segments,
        "threads": torch.get_num_threads(),
        "rss_before_mib": rss_before,
        **measured,
        **peak_memory(fe.device),
    }


# -- 8. the Ray engine against the local one ---------------------------------------------------------
def stage_ray(cfg: BenchConfig, work: Path) -> dict:
    """The same videos through `--engine local` (run_extraction) and `--engine ray`
    (run_ray_extraction on a local Ray started here), one after the other in this process,
    which runs in a private network namespace (loopback only: Ray falls back to 127.0.0.1,
    checked). Also Ray's start-up time and the peak RSS of its processes (the sampled sum of
    this process's descendants: GCS, raylet, workers, actors, decode tasks; the object
    store's shared memory counts in every process that maps it)."""
    import numpy as np
    import ray

    from avel.pipeline.cache.store import FeatureCache
    from avel.pipeline.extract.local import jobs_from_paths, run_extraction
    from avel.pipeline.extract.options import ExtractOptions, NetworkOptions
    from avel.pipeline.extract.ray_engine import ExtractorSpec, RayConfig, run_ray_extraction

    jobs = jobs_from_paths(video_paths(work))
    caches = {name: work / f"cache-{name}" for name in ("local", "ray")}
    # both engines timed as `avel preprocess` runs them: building the models included (Ray's
    # actors load theirs inside its time)
    window = Window(lambda: sum(process_cpu_s(p) for p in _descendants(os.getpid())))
    t = time.perf_counter()
    fe = extractor_for(cfg)
    options = ExtractOptions(workers=cfg.workers, pooled=True, progress=False)
    local = run_extraction(jobs, caches["local"], fe, options)
    local_s = time.perf_counter() - t
    local_window = window.close()
    del fe
    TREE.peak_mib = 0.0
    t = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level="ERROR",
        _temp_dir=tempfile.mkdtemp(prefix="avel-ray-"),
    )
    try:
        startup_s = time.perf_counter() - t
        addresses = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
        if addresses != ["127.0.0.1"]:
            raise RuntimeError(f"a Ray node outside loopback: {addresses}")
        window = Window(lambda: sum(process_cpu_s(p) for p in _descendants(os.getpid())))
        t = time.perf_counter()
        spec = ExtractorSpec(settings_for(cfg), NetworkOptions(device=cfg.device, batch_size=cfg.batch_size))
        remote = run_ray_extraction(jobs, caches["ray"], spec, RayConfig(decoders=max(1, cfg.workers)), options)
        ray_s = time.perf_counter() - t
        ray_window = window.close()
        ray_peak = TREE.peak_mib
    finally:
        ray.shutdown()
    if local.failed or remote.failed or local.done != len(jobs) or remote.done != len(jobs):
        raise RuntimeError(f"extraction failed: local {local}, ray {remote}")
    with FeatureCache(caches["local"]) as a, FeatureCache(caches["ray"]) as b:
        segments = sum(e.num_segments for e in a.entries.values())
        identical = all(np.array_equal(x, y) for vid in a.ids() for x, y in zip(a.read(vid), b.read(vid)))
    return {
        "videos": len(jobs),
        "segments": segments,
        "local_s": local_s,
        "ray_s": ray_s,
        "ray_startup_s": startup_s,
        "local_segments_per_s": segments / local_s,
        "ray_segments_per_s": segments / ray_s,
        "ratio": local_s / ray_s,
        "identical": identical,
        "ray_peak_rss_mib": ray_peak,
        "addresses": addresses,
        "local_window": local_window,
        "ray_window": ray_window,
        "cpus": os.cpu_count(),
    }


# -- 4. memory of a long video ----------------------------------------------------------------------------
def stage_memory(cfg: BenchConfig, work: Path) -> dict:
    """Peak RSS of `avel extract` (its own process, exact: wait4's ru_maxrss) on a short and
    a long generated video, same settings; bf16 where fp32 was asked (minutes, not hours)."""
    import torch
    from media import write_ave_like

    precision = "bf16" if cfg.precision == "fp32" else cfg.precision
    long_frames = LONG_FRAMES // 8 if cfg.quick else LONG_FRAMES
    runs = {}
    for name, seconds in (("short", 10), ("long", long_frames // cfg.frames_per_segment)):
        video = write_ave_like(work / f"memory-{name}.mp4", seed=cfg.seed, seconds=seconds, size=(128, 96), fps=16)
        out = work / f"memory-{name}.h5"
        cmd = [
            sys.executable,
            "-m",
            "avel.cli",
            "extract",
            video,
            "--out",
            str(out),
            "--visual-model",
            "random",
            "--audio-model",
            "random",
            "--frames-per-segment",
            str(cfg.frames_per_segment),
            "--device",
            cfg.device,
            "--precision",
            precision,
        ]
        cmd += ["--batch-size", str(cfg.batch_size)] if cfg.batch_size else []
        window = Window()
        t = time.perf_counter()
        log = work / f"memory-{name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"avel extract exited {proc.returncode}: {log.read_text()[-500:]}")
        runs[name] = {
            "seconds": seconds,
            "frames": seconds * cfg.frames_per_segment,
            "wall_s": time.perf_counter() - t,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            **window.close(),
        }
    frame_bytes = 224 * 224 * 3
    growth = (runs["long"]["peak_rss_mib"] - runs["short"]["peak_rss_mib"]) * 2**20
    frames_bytes = runs["long"]["frames"] * frame_bytes
    return {
        "precision": precision,
        "runs": runs,
        "growth_bytes": growth,
        "long_frames_bytes": frames_bytes,
        "growth_fraction": growth / frames_bytes,
        **peak_memory(torch.device("cpu")),
    }


# -- 5. precision, SEL training, localize -------------------------------------------------------------------
def cosine_rows(a, b):
    """Cosine similarity of matching rows of two [N, D] arrays -> [N]."""
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def stage_precision(cfg: BenchConfig, work: Path) -> dict:
    """fp32 vs --precision features of (up to) two decoded generated videos, 2 frames per segment."""
    import numpy as np

    from avel.pipeline.media.decode import DecodeOptions, decode_video

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
        "pool5_cosine_min": float(cv.min()),
        "pool5_cosine_mean": float(cv.mean()),
        "pool5_relative_l2": rel,
        "vggish_cosine_min": float(ca.min()),
        "vggish_cosine_mean": float(ca.mean()),
        "segments": len(cv),
    }


def sel_data(cfg: BenchConfig):
    """AVE-sized SEL data: 3339 train + 402 val videos x 10 segments, pool5 7x7x512 and
    VGGish 128 in float16 (random values: the cost does not depend on them)."""
    import torch

    from avel.pipeline.data.dataset import AVData

    n = sum(AVE_SPLITS.values())
    g = torch.Generator().manual_seed(cfg.seed)
    visual = torch.empty(n, SEGMENTS, 7, 7, 512, dtype=torch.float16)  # (V, T, 7, 7, 512)
    for i in range(0, n, 256):  # chunked: never a float32 copy of the whole set
        visual[i : i + 256] = torch.rand(visual[i : i + 256].shape, generator=g)
    audio = torch.rand(n, SEGMENTS, 128, generator=g).to(torch.float16)  # (V, T, 128)
    labels = torch.randint(0, AVE_CLASSES + 1, (n, SEGMENTS), generator=g)  # (V, T), 28 = background
    order = torch.randperm(n, generator=g)
    splits = {"train": order[: AVE_SPLITS["train"]].sort().values, "val": order[AVE_SPLITS["train"] :].sort().values}
    names = [f"class{i}" for i in range(AVE_CLASSES)]
    return AVData(visual, audio, labels, names, [f"v{i}" for i in range(n)], splits)


def stage_sel(cfg: BenchConfig, work: Path) -> dict:
    """Seconds per SEL training epoch (train pass + validation), pipeline.train's code path."""
    import torch

    from avel.core.config import resolve_device
    from avel.models.registry import build_model, model_config
    from avel.pipeline.train.loop import TrainConfig, evaluate, prepare_features, train

    t = time.perf_counter()
    data = sel_data(cfg)
    data_s = time.perf_counter() - t
    device = resolve_device(cfg.device)
    tcfg = TrainConfig(
        model_config(task="sel", name="dam"), epochs=1, device=cfg.device, dtype_in_ram="float16", progress=False
    )
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
        return {
            "epoch_s": epoch_s,
            "how": how,
            "data_s": data_s,
            "data_gib": data.visual.nbytes / 2**30,
            "rss_before_mib": rss_before,
            "loss": result.history[0]["loss"],
            **window.close(),
            **peak_memory(device),
        }
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
        audio, visual, target = feats.batch(
            order[k * tcfg.resolved.batch_size : (k + 1) * tcfg.resolved.batch_size], device
        )
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
    how = (
        f"extrapolated: {measured} timed batches of {tcfg.resolved.batch_size} (x{batches}) + evaluate() on "
        f"{len(val_part)} of {AVE_SPLITS['val']} val videos (scaled)"
    )
    return {
        "epoch_s": per_batch * batches + val_s,
        "how": how,
        "data_s": data_s,
        "data_gib": data.visual.nbytes / 2**30,
        "rss_before_mib": rss_before,
        **window.close(),
        **peak_memory(device),
    }


def stage_localize(cfg: BenchConfig, work: Path) -> dict:
    """`localize([video], checkpoint)`: one call (cold: checkpoint load and extractor build
    included), then the same video again with the predictor built (warm)."""
    import torch

    from avel.models.registry import build_model, model_config
    from avel.pipeline.apps.localize import _localize_one, localize
    from avel.pipeline.apps.outputs import ModelInfo
    from avel.pipeline.apps.predictor import Predictor
    from avel.pipeline.apps.windows import LocalizeRule
    from avel.pipeline.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(cfg.seed)
    model_config = model_config(task="sel", name="dam", num_classes=AVE_CLASSES + 1)
    ckpt = save_checkpoint(
        work / "sel.safetensors",
        build_model(model_config),
        model_config,
        [f"class{i}" for i in range(AVE_CLASSES)],
        settings_for(cfg),
        {},
    )
    video = video_paths(work)[0]
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mib()
    window = Window()
    options = {"device": cfg.device, "precision": cfg.precision, "batch_size": cfg.batch_size}
    t = time.perf_counter()
    [result] = localize([video], str(ckpt), progress=False, **options)
    sync(device)
    cold = time.perf_counter() - t
    if result.error:
        raise RuntimeError(result.error)
    loaded = load_checkpoint(str(ckpt), expected_task="sel")
    predictor = Predictor.build(str(ckpt), loaded, **options)
    info = ModelInfo(
        task="sel",
        model="dam",
        embedding=model_config.embedding,
        matching=model_config.matching,
        window=SEGMENTS,
        stride=5,
        checkpoint=str(ckpt),
        classes=tuple(loaded.class_names),
        features_from_checkpoint=True,
    )
    warm = []
    for _ in range(2):  # the first call may still set kernels up
        t = time.perf_counter()
        _localize_one(video, predictor, info, progress=False, rule=LocalizeRule(stride_s=5))
        sync(device)
        warm.append(time.perf_counter() - t)
    return {"cold_s": cold, "warm_s": min(warm), "rss_before_mib": rss_before, **window.close(), **peak_memory(device)}


STAGE_FUNCTIONS = {
    "ray": stage_ray,
    "ceiling": stage_ceiling,
    "compile": stage_compile,
    "feed": stage_feed,
    "decode": stage_decode,
    "e2e": stage_e2e,
    "memory": stage_memory,
    "precision": stage_precision,
    "sel": stage_sel,
    "localize": stage_localize,
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
        return f"GPU {torch.cuda.get_device_name(torch.device(cfg.device))}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()})"
    )


def mem(r: dict) -> str:
    parts = [f"peak RSS {r['peak_rss_mib']:.0f} MiB (before work {r['rss_before_mib']:.0f})"]
    if r.get("workers_peak_rss_mib"):
        parts.append(f"decoder processes together {r['workers_peak_rss_mib']:.0f} MiB (sampled peak)")
    if "cuda_peak_mib" in r:
        parts.append(f"GPU memory peak {r['cuda_peak_mib']:.0f} MiB")
    return ", ".join(parts)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def where(r: dict) -> str:
    at = f"[load {r.get('load_before', '?')} -> {r.get('load_after', '?')}"
    if r.get("cores_ours") is not None:
        at += f"; cores used: this stage {r['cores_ours']:.2f}"
        if r.get("cores_others") is not None:
            at += f", other processes {r['cores_others']:.2f}"
    return at + "]"


def busy_verdict(*figures: dict) -> str | None:
    others = max((f.get("cores_others") or 0.0) for f in figures)
    if others > BUSY_CORES:
        return f"other processes used up to {others:.2f} cores meanwhile: rerun on a quiet machine"
    return None


def report(name: str, r: dict, cfg: BenchConfig, results: dict) -> None:
    K = cfg.frames_per_segment
    if name == "ceiling":
        print(f"1. model-only ceiling at {cfg.precision}: every setting the pipeline could use {where(r)}")
        for t in r["tried"]:
            mark = " <- fastest" if t == r["best"] else ""
            print(
                f"   VGG-19 batch {t['batch_size']:4d} {t['memory_format']:13s} {t['frames_per_s']:8.2f} frames/s "
                f"(batches of {', '.join(f'{x:.2f}' for x in t['batch_s'])} s){mark}"
            )
        for a in r["audio_tried"]:
            print(f"   VGGish {a['segments']:3d} segments a batch: {a['segments_per_s']:.1f} segments/s")
        d, b = r["default"], r["best"]
        share = d["frames_per_s"] / b["frames_per_s"]
        verdict = "the fastest within 5%" if share >= 0.95 else "NOT the fastest: update features.DEVICE_DEFAULTS"
        print(
            f"   the pipeline's default here (batch {d['batch_size']}, {d['memory_format']}): "
            f"{d['frames_per_s']:.2f} frames/s = {share:.3f} of the fastest: {verdict}"
        )
        print(
            f"   ceiling (fastest VGG-19 + fastest VGGish, {K} frames + 1 s of audio a segment): "
            f"{r['ceiling_segments_per_s']:.3f} segments/s = {r['ceiling_frames_per_s']:.2f} frames/s, "
            f"{r['threads']} torch threads"
        )
        print(f"   memory: {mem(r)}")
    elif name == "ray":
        lw, rw = r["local_window"], r["ray_window"]
        verdict = "goal met" if r["ratio"] >= RAY_TARGET else "goal NOT met"
        print(
            f"8. --engine ray against --engine local, {r['videos']} videos ({r['segments']} segments), {r['cpus']} cores, "
            f"Ray nodes at {', '.join(r['addresses'])}"
        )
        print(
            f"   local: {r['local_segments_per_s']:.3f} segments/s ({r['local_s']:.1f} s, building the models included) {where(lw)}"
        )
        print(
            f"   ray:   {r['ray_segments_per_s']:.3f} segments/s ({r['ray_s']:.1f} s, the actors' model loading "
            f"included) {where(rw)}"
        )
        print(
            f"   ratio ray / local: {r['ratio']:.3f} (goal >= {RAY_TARGET}: {verdict}); features identical: "
            f"{'yes' if r['identical'] else 'NO'}"
        )
        cpu = {k: w["cores_ours"] * r[f"{k}_s"] / r["segments"] for k, w in (("local", lw), ("ray", rw))}
        print(
            f"   CPU time per segment (this stage's processes, Ray's own included): local {cpu['local']:.2f} CPU-s, "
            f"ray {cpu['ray']:.2f} CPU-s: local / ray {cpu['local'] / cpu['ray']:.3f} (what the wall-clock ratio "
            f"would be on cores of its own)"
        )
        print(
            f"   Ray start-up (ray.init, local): {r['ray_startup_s']:.1f} s; peak RSS of the Ray processes "
            f"(sum, shared memory counted in each): {r['ray_peak_rss_mib']:.0f} MiB"
        )
    elif name == "compile":
        print(
            f"1c. torch.compile against eager, VGG-19 batch {r['batch_size']} at {cfg.precision} "
            f"({r['flops_per_frame'] / 1e9:.1f} GFLOP a frame up to pool5), VGGish at the pipeline's batch"
        )
        for row in r["rows"]:
            mfu = (
                f"MFU {row['mfu']:.3f} of {r['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16"
                if row.get("mfu") is not None
                else f"{row['flops_per_s'] / 1e12:.3f} TFLOP/s"
            )
            ok = min(row["pool5_cosine_min"], row["vggish_cosine_min"]) >= COMPILE_COSINE
            print(
                f"   {row['mode']:12s} first batch {row['first_batch_s']:7.1f} s, then {row['frames_per_s']:8.1f} frames/s "
                f"({mfu}), VGGish {row['vggish_segments_per_s']:.1f} segments/s; cosine to eager pool5 "
                f"{row['pool5_cosine_min']:.6f} VGGish {row['vggish_cosine_min']:.6f} "
                f"({'ok' if ok else 'BELOW ' + str(COMPILE_COSINE)}); AVE at this rate, compile counted once: "
                f"{hours(row['ave_s'])}"
            )
        best = min(r["rows"], key=lambda x: x["ave_s"])
        print(f"   on the whole AVE set the fastest is --compile {best['mode']}")
    elif name == "feed":
        m, q = r["model"], r["pool"]
        ok = m["model_cpu_ms_per_segment"] <= FEED_TARGET_MS
        print(
            f"1b. feeding the model, {m['videos']} videos ({m['segments']} segments, {m['segments_per_batch']} a batch), "
            f"{q['workers']} decoder processes"
        )
        print(
            f"   model process with a NULL model (run_extraction: pool, shared memory, collating, copies, part writes, "
            f"progress): {m['model_cpu_ms_per_segment']:.3f} CPU-ms a segment = could feed "
            f"{m['feedable_segments_per_s']:.0f} segments/s ({'meets' if ok else 'BELOW'} the goal: <= "
            f"{FEED_TARGET_MS:.0f} ms); delivered {m['segments_per_s']:.1f} segments/s {where(m)}"
        )
        busy = busy_verdict(q) or f"{'meets' if q['busy'] >= BUSY_TARGET else 'BELOW'} the {BUSY_TARGET:.1f} goal"
        print(
            f"   decoder pool with a NULL consumer: {q['segments_per_s']:.1f} segments/s, cores busy "
            f"{q['busy']:.3f} of {q['workers']} ({busy}); consumer {1000 * q['consumer_cpu_s'] / q['segments']:.3f} "
            f"CPU-ms a segment {where(q)}"
        )
    elif name == "decode":
        p = r["project"]
        print(
            f"2. decoding, {r['jobs']} videos ({r['distinct_files']} files, {p['frames'] // r['jobs']} source frames "
            f"each), {p['workers']} processes {where(p)}"
        )
        for lim in r["limits"]:
            threads = "FFmpeg's automatic threads" if lim["threads"] == 0 else f"{lim['threads']} thread each"
            print(
                f"   decode limit (raw PyAV, every frame, no conversion), {lim['processes']} processes, {threads}: "
                f"{lim['frames_per_s']:.0f} frames/s, {lim['frames_per_cpu_s']:.0f} frames per CPU-s {where(lim)}"
            )
        best = max(r["limits"], key=lambda x: x["frames_per_cpu_s"])
        auto = r["limits"][0]
        print(
            f"   project decoder (pipeline.decoders, {p['threads'] or 'automatic'} thread(s) each, frames chosen, "
            f"converted, audio at 16 kHz, into shared memory): {p['frames_per_s']:.0f} source frames/s, "
            f"{p['frames_per_cpu_s']:.0f} per CPU-s ({p['consumer_cpu_s']:.2f} CPU-s of it in the model process)"
        )
        ratio = p["frames_per_cpu_s"] / best["frames_per_cpu_s"]
        verdict = busy_verdict(p, best) or (
            f"{'meets' if ratio >= DECODE_TARGET else 'BELOW'} the {DECODE_TARGET:.2f}x goal"
        )
        print(
            f"   project / limit per core = {ratio:.3f} against the most efficient limit ({verdict}); "
            f"{p['frames_per_cpu_s'] / auto['frames_per_cpu_s']:.3f} against automatic threading (the issue's "
            f"limit); wall: {p['frames_per_s'] / auto['frames_per_s']:.3f}"
        )
        f = r["profile"]
        print(
            f"   where a video's time goes (one core, one thread, ms per video, fastest of repeats): "
            f"decode every frame {f['decode_ms']:.0f}, convert {f['chosen_frames']:.0f} chosen frames to 224x224 RGB "
            f"{f['convert_ms']:.0f}, audio (its own demuxer, AAC, channel mean, soxr VHQ) {f['audio_ms']:.0f} "
            f"(opening a file: {f['open_ms']:.1f}), the rest {f['other_ms']:.0f} = project {f['project_ms']:.0f}"
        )
        x = r["transfer"]
        print(
            f"   moving a video's frames ({x['bytes'] / 2**20:.0f} MiB) to the model process: pickled through a pipe "
            f"{x['before_ms']:.1f} ms ({x['before_cpu_ms']:.1f} CPU-ms); shared memory, one message a batch "
            f"{x['after_ms']:.2f} ms ({x['after_cpu_ms']:.2f} CPU-ms)"
        )
        print(f"   memory: {mem(r)}")
    elif name == "e2e":
        print(
            f"3. end to end, run_extraction (avel preprocess), workers={cfg.workers}, batch {r['batch_size']} "
            f"{r['memory_format']} {where(r)}"
        )
        print(
            f"   {r['videos']} videos, {r['segments']} segments in {r['wall_s']:.1f} s: "
            f"{r['segments_per_s']:.3f} segments/s = {r['frames_per_s']:.2f} frames/s "
            f"(extractor built in {r['extractor_build_s']:.1f} s, not counted; decoder start-up and the first "
            f"video{'s' if cfg.workers > 1 else ''} {r['first_videos_s']:.1f} s, counted"
            + (f"; after them: {r['steady_segments_per_s']:.3f} segments/s)" if r.get("steady_segments_per_s") else ")")
        )
        ceiling = results.get("ceiling")
        if ceiling and "ceiling_segments_per_s" in ceiling:
            ratio = r["segments_per_s"] / ceiling["ceiling_segments_per_s"]
            target = TARGETS["cuda" if cfg.device.startswith("cuda") else "cpu"]
            if ratio > 1.0:
                verdict = (
                    "BENCHMARK DEFECT: faster than the models alone, so the ceiling is not one "
                    "(a setting faster than those tried, or the load changed between the stages)"
                )
            else:
                verdict = (
                    busy_verdict(r, ceiling) or f"{'meets' if ratio >= target else 'BELOW'} the {target:.2f}x goal"
                )
            print(f"   end-to-end / ceiling = {ratio:.3f}  ({verdict})")
            print(
                f"   CPU-s per segment: {r['cpu_s_per_segment']:.2f} end to end (decoders included) vs "
                f"{ceiling['cpu_s_per_segment']:.2f} model only: CPU-time ratio "
                f"{ceiling['cpu_s_per_segment'] / r['cpu_s_per_segment']:.3f} (less sensitive to other processes' load "
                f"than the wall-clock ratio, on a CPU run)"
            )
        print(f"   memory: {mem(r)}")
    elif name == "memory":
        s, lg = r["runs"]["short"], r["runs"]["long"]
        print(f"4. memory: peak RSS of `avel extract` (one process), {r['precision']}, 224x224 frames, {K} a segment")
        for n, run in (("short", s), ("long", lg)):
            print(
                f"   {n}: {run['seconds']} s video, {run['frames']} chosen frames "
                f"({run['frames'] * 224 * 224 * 3 / 2**30:.2f} GiB of them): peak RSS {run['peak_rss_mib']:.0f} MiB, "
                f"{run['wall_s']:.0f} s {where(run)}"
            )
        ok = r["growth_fraction"] < 0.1
        print(
            f"   long - short = {r['growth_bytes'] / 2**20:.0f} MiB = {r['growth_fraction']:.3f} of the long video's "
            f"frames ({'meets' if ok else 'BELOW'} the goal: < 0.1)"
        )
    elif name == "precision":
        print(
            f"   features {cfg.precision} vs fp32 on decoded generated videos ({r['segments']} segments x 2 frames): "
            f"pool5 cosine min {r['pool5_cosine_min']:.5f} mean {r['pool5_cosine_mean']:.5f} "
            f"(relative L2 {r['pool5_relative_l2']:.4f}); VGGish cosine min {r['vggish_cosine_min']:.5f} "
            f"mean {r['vggish_cosine_mean']:.5f}"
        )
    elif name == "sel":
        print(
            f"5. SEL training (DAM), AVE-sized float16 features in RAM ({r['data_gib']:.2f} GiB, "
            f"made in {r['data_s']:.1f} s) {where(r)}"
        )
        print(f"   {r['epoch_s']:.1f} s per epoch  ({r['how']})")
        print(f"   memory: {mem(r)}")
    elif name == "localize":
        print(
            f"6. avel localize, one 10-s video: {r['cold_s']:.2f} s cold (checkpoint and extractors built), "
            f"{r['warm_s']:.2f} s warm {where(r)}"
        )
        print(f"   memory: {mem(r)}")
    sys.stdout.flush()


def projection(cfg: BenchConfig, results: dict) -> None:
    e2e, ceiling = results.get("e2e"), results.get("ceiling")
    what = machine_line(cfg).split(",")[0]
    if e2e and "segments_per_s" in e2e:
        print(
            f"7. raw AVE ({AVE_VIDEOS} videos x {SEGMENTS} s, {AVE_SEGMENTS * cfg.frames_per_segment} frames chosen) on "
            f"{what}: {hours(AVE_SEGMENTS / e2e['segments_per_s'])} at the measured end-to-end rate"
            + (
                f", {hours(AVE_SEGMENTS / ceiling['ceiling_segments_per_s'])} at the ceiling"
                if ceiling and "ceiling_segments_per_s" in ceiling
                else ""
            )
        )


GOALS = {"e2e_ratio_cuda": 0.90, "localize_warm_s": 1.0, "ave_seconds_gpu": 90.0}


def scale_lines(e2e: dict, gpu: bool) -> list[str]:
    """Costs at scale from the measured end-to-end rate: device-seconds and CPU-core-seconds per
    1,000 videos, and the time of AVE and of 1M 10-s videos on 1 and 8 such machines."""
    rate = e2e["segments_per_s"]  # one machine: one device (or the CPU) and its cores
    per_1000 = 1000 * SEGMENTS / rate
    cores = e2e.get("cpu_s_per_segment", 0.0) * 1000 * SEGMENTS
    device = "GPU-seconds" if gpu else "machine-seconds (CPU run)"
    big = VIDEOS_AT_SCALE * SEGMENTS / rate
    return [
        f"costs at scale (10-s videos, measured end-to-end rate {rate:.2f} segments/s): {per_1000:.0f} {device} and "
        f"{cores:.0f} CPU-core-seconds per 1,000 videos; AVE ({AVE_VIDEOS}) {hours(AVE_SEGMENTS / rate)}; "
        f"{VIDEOS_AT_SCALE:,} videos {hours(big)} on 1 machine, {hours(big / 8)} on 8"
    ]


def summary_lines(results: dict) -> list[str]:
    """The figures benchmarks/gpu_check.sh reports, each beside its goal (issue #13)."""
    cfg, out = results.get("config", {}), []
    out.append(f"card: {results.get('machine', '?')}")
    ceiling, decode, e2e, loc = (results.get(k) or {} for k in ("ceiling", "decode", "e2e", "localize"))
    if "ceiling_segments_per_s" in ceiling and "segments_per_s" in e2e:
        ratio = e2e["segments_per_s"] / ceiling["ceiling_segments_per_s"]
        verdict = "BENCHMARK DEFECT (above 1.0)" if ratio > 1.0 else f"goal >= {GOALS['e2e_ratio_cuda']:.2f}"
        out.append(f"end-to-end / ceiling: {ratio:.3f} ({verdict})")
    stages = []
    if "ceiling_frames_per_s" in ceiling:
        b = ceiling["best"]
        stages.append(
            f"ceiling {ceiling['ceiling_frames_per_s']:.1f} (VGG-19 alone {b['frames_per_s']:.1f} at batch "
            f"{b['batch_size']} {b['memory_format']})"
        )
    if "project" in decode:
        p = decode["project"]
        stages.append(f"decode {p['frames_per_s']:.0f} source frames/s ({p['workers']} processes)")
    if "frames_per_s" in e2e:
        stages.append(f"end to end {e2e['frames_per_s']:.1f} (batch {e2e['batch_size']})")
    if stages:
        out.append("frames/s: " + "; ".join(stages))
    peaks = [
        f"{k} {r['cuda_peak_mib']:.0f} MiB"
        for k, r in (("ceiling", ceiling), ("end to end", e2e), ("localize", loc))
        if "cuda_peak_mib" in r
    ]
    out.append("GPU memory peak: " + (", ".join(peaks) if peaks else "n/a (not a CUDA run)"))
    if "warm_s" in loc:
        out.append(
            f"avel localize, 10-s video: {loc['warm_s']:.2f} s warm (goal < {GOALS['localize_warm_s']:.0f} s), "
            f"{loc['cold_s']:.2f} s cold"
        )
    feed = results.get("feed") or {}
    if "model" in feed:
        m, q = feed["model"], feed["pool"]
        out.append(
            f"feeding: model process {m['model_cpu_ms_per_segment']:.3f} CPU-ms a segment with a null model (goal <= "
            f"{FEED_TARGET_MS:.0f}); decoder pool {q['busy']:.3f} of its cores busy with a null consumer (goal >= "
            f"{BUSY_TARGET})"
        )
    comp = results.get("compile") or {}
    if "rows" in comp:
        out.append(
            "compile: "
            + "; ".join(
                f"{r['mode']} {r['frames_per_s']:.0f} frames/s"
                + (f" MFU {r['mfu']:.3f}" if r.get("mfu") is not None else "")
                + f" (first batch {r['first_batch_s']:.0f} s, AVE {hours(r['ave_s'])})"
                for r in comp["rows"]
            )
        )
    if "segments_per_s" in e2e:
        out += scale_lines(
            e2e, str(cfg.get("device", "")).startswith("cuda") or results.get("machine", "").startswith("GPU")
        )
        minutes = AVE_SEGMENTS / e2e["segments_per_s"] / 60
        out.append(
            f"AVE ({AVE_VIDEOS} videos) projected: {minutes:.1f} min at the end-to-end rate "
            f"(goal <= {GOALS['ave_seconds_gpu']:.0f} s on one GPU machine with 16 cores, issue #22; "
            f"{cfg.get('precision', '?')}, {cfg.get('workers', '?')} decoder processes)"
        )
    return out


def generate_videos(cfg: BenchConfig, folder: Path) -> None:
    """cfg.videos AVE-like clips, written in parallel (one process a core)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"v{i:03d}.mp4", cfg.seed + i) for i in range(cfg.videos)]
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1), mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_generate, [(str(p), seed, cfg.width, cfg.height, cfg.fps) for p, seed in jobs]))


def _generate(args) -> str:
    from media import write_ave_like

    path, seed, width, height, fps = args
    return write_ave_like(path, seed=seed, seconds=SEGMENTS, size=(width, height), fps=fps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--videos", type=int, default=4, help="generated 10-s videos (decode and end-to-end stages)")
    p.add_argument("--workers", type=int, default=2, help="decoder processes, 0 = one thread (avel preprocess: 2)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per VGG-19 forward (default: the device's)")
    p.add_argument("--frames-per-segment", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the model process (default: torch's)")
    p.add_argument("--size", default="640x360", help="WxH of the generated videos (AVE-like: 640x360)")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the generated videos (AVE-like: 30)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and settings; a shorter long video")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    p.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        width, height = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {a.size}: expected WxH, e.g. 640x360")
    cfg = BenchConfig(
        device=a.device,
        precision=a.precision,
        videos=a.videos,
        workers=a.workers,
        batch_size=a.batch_size,
        frames_per_segment=a.frames_per_segment,
        quick=a.quick,
        threads=a.threads,
        width=width,
        height=height,
        fps=a.fps,
    )
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

    print(
        f"avel benchmark: device {cfg.device}, precision {cfg.precision}, {cfg.videos} videos, "
        f"workers {cfg.workers}, batch {cfg.batch_size or 'default'}, {cfg.frames_per_segment} frames/segment"
        f"{', quick' if cfg.quick else ''}"
    )
    print(f"   {machine_line(cfg)}; load {load()}")
    results: dict = {"config": dataclasses.asdict(cfg), "machine": machine_line(cfg)}
    with tempfile.TemporaryDirectory(prefix="avel-bench-") as tmp:
        work = Path(tmp)
        if {"feed", "decode", "e2e", "precision", "localize", "ray"} & set(stages):
            t = time.perf_counter()
            generate_videos(cfg, work / "videos")
            print(
                f"   generated {cfg.videos} 10-s videos (benchmarks/media.py: {cfg.width}x{cfg.height}, {cfg.fps} fps, "
                f"h264 + AAC 44.1 kHz stereo) in {time.perf_counter() - t:.1f} s"
            )
        for name in stages:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--stage",
                name,
                "--work",
                str(work),
                "--device",
                cfg.device,
                "--precision",
                cfg.precision,
                "--videos",
                str(cfg.videos),
                "--workers",
                str(cfg.workers),
                "--frames-per-segment",
                str(cfg.frames_per_segment),
                "--size",
                f"{cfg.width}x{cfg.height}",
                "--fps",
                str(cfg.fps),
            ]
            cmd += ["--batch-size", str(cfg.batch_size)] if cfg.batch_size is not None else []
            cmd += ["--quick"] if cfg.quick else []
            cmd += ["--threads", str(cfg.threads)] if cfg.threads is not None else []
            env = None
            if name == "ray":  # loopback only, and Ray's token authentication with a token of its own
                cmd, env = (
                    NETNS + cmd,
                    {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                )
            proc = subprocess.run(cmd, cwd=ROOT, env=env)
            out = work / f"{name}.json"
            if proc.returncode != 0 or not out.is_file():
                print(f"{name}: FAILED (exit {proc.returncode}; its error is above)")
                results[name] = {"failed": proc.returncode}
                continue
            results[name] = json.loads(out.read_text())
            report(name, results[name], cfg, results)
        projection(cfg, results)
    print("summary:")
    for line in summary_lines(results):
        print(f"   {line}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 1 if any("failed" in r for r in results.values() if isinstance(r, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
