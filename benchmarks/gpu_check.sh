#!/usr/bin/env bash
# One-shot GPU check (issues #13, #22): on a machine with a CUDA GPU, after the README's test
# install (python3 -m venv .venv && .venv/bin/pip install -e '.[test]'), run as is:
#
#     benchmarks/gpu_check.sh            # planned for one device call of at most 10 minutes on one H200 (not yet run on a GPU)
#
# 1. the card (nvidia-smi, torch);
# 2. the CUDA tests: fp32 CUDA vs CPU features within 1e-4 relative on identical frames, for
#    eager and every --compile mode, through the pinned staging buffers; bf16 / fp16 cosine
#    >= 0.999 against fp32, VGGish on the GPU, the batch job on the GPU;
# 3. the benchmark with --device cuda on 256 AVE-like videos (640x360, 30 fps, h264 + AAC
#    44.1 kHz stereo), decoder processes = all cores, every stage of issue #22: ceiling,
#    compile (eager / default / max-autotune side by side, compile time amortised over AVE,
#    MFU), feed (the model process with a null model; the pool with a null consumer),
#    decoding, end to end, localize;
# 3b. avel localize on long generated videos (benchmarks/long_throughput.py) at AVE's 16 frames a
#    second: wall time, seconds of video per second, the child's peak RSS per length. Default
#    lengths 60 and 600 s (about a minute of video generation on the CPU);
#    AVEL_GPU_CHECK_LONG="60 600 3600" adds the 60-minute video (about 5 more minutes to generate
#    it); AVEL_GPU_CHECK_LONG=none skips the step (the default with AVEL_GPU_CHECK_DEVICE=cpu);
# 4. the summary: end-to-end / ceiling (goal >= 0.9), frames/s of each stage, GPU memory,
#    localize latency, costs at scale (GPU- and CPU-core-seconds per 1,000 videos; AVE and
#    1M videos on 1 and 8 machines), the AVE projection (goal <= 90 s, issue #22);
# 3b. long videos (issue #24) at 16 frames a second; 3c. `avel live` latency, 30 s a transport
#    at 16 frames a second (issue #25), and --convert device against swscale (issue #22).
#
# Raw outputs go to benchmarks/results/gpu/ with the date in their names
# (DATE_pytest.txt, DATE_bench.txt, DATE_bench.json). AVEL_GPU_CHECK_DEVICE=cpu runs the same
# steps on the CPU (what CI does to test the script; AVEL_GPU_CHECK_ARGS then makes the
# benchmark small and AVEL_GPU_CHECK_STAGES may leave out compile, minutes on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${AVEL_GPU_CHECK_DEVICE:-cuda}
PRECISION=${AVEL_GPU_CHECK_PRECISION:-bf16}
VIDEOS=${AVEL_GPU_CHECK_VIDEOS:-256}
OUT=${AVEL_GPU_CHECK_OUT:-benchmarks/results/gpu}
STAGES=${AVEL_GPU_CHECK_STAGES:-ceiling,compile,feed,decode,e2e,localize}
STAMP=$(date +%Y-%m-%d_%H%M)
CORES=$(nproc)
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1. the card"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
echo "$CORES CPU cores"
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available here (AVEL_GPU_CHECK_DEVICE=cpu runs the steps on the CPU)" >&2
    exit 2
fi

echo "== 2. the CUDA tests"
set +e
"$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_precision.py tests/test_vggish.py -k "cuda" \
    2>&1 | tee "$OUT/${STAMP}_pytest.txt"
tests=${PIPESTATUS[0]}
set -e

echo "== 3. the benchmark"
set +e
# shellcheck disable=SC2086  # AVEL_GPU_CHECK_ARGS is a list of options
"$PYTHON" benchmarks/bench.py --device "$DEVICE" --precision "$PRECISION" --workers "$CORES" --videos "$VIDEOS" \
    --quick --stages "$STAGES" --json "$OUT/${STAMP}_bench.json" ${AVEL_GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/${STAMP}_bench.txt"
bench=${PIPESTATUS[0]}
set -e

LONG=${AVEL_GPU_CHECK_LONG:-$([ "$DEVICE" = cuda ] && echo "60 600" || echo none)}
long=0
if [ "$LONG" != none ]; then
    echo "== 3b. long videos"
    set +e
    # shellcheck disable=SC2086  # LONG is a list of lengths
    "$PYTHON" benchmarks/long_throughput.py --device "$DEVICE" --frames-per-segment 16 --extrapolate 0 \
        --lengths $LONG --out "$OUT/${STAMP}_long" 2>&1 | tee "$OUT/${STAMP}_long.txt"
    long=${PIPESTATUS[0]}
    set -e
fi

live=0
convert=0
if [ "$DEVICE" = cuda ]; then
    echo "== 3c. live latency (issue #25: p95 <= 1.0 s on a GPU) and --convert device against swscale (issue #22)"
    set +e
    "$PYTHON" benchmarks/live_latency.py --seconds 30 --frames-per-segment 16 --device cuda --precision "$PRECISION" \
        --json "$OUT/${STAMP}_live.json" 2>&1 | grep -v '"type": "dropped"' | tee "$OUT/${STAMP}_live.txt"
    live=${PIPESTATUS[0]}
    "$PYTHON" benchmarks/convert.py --videos 3 --device cuda \
        --json "$OUT/${STAMP}_convert.json" 2>&1 | tee "$OUT/${STAMP}_convert.txt"
    convert=${PIPESTATUS[0]}
    set -e
fi

echo "== 4. done in $(( $(date +%s) - start )) s: tests exit $tests, benchmark exit $bench, long videos exit $long, live exit $live, convert exit $convert (summaries above; figures in $OUT/)"
exit $(( tests != 0 && tests != 5 ? tests : bench != 0 ? bench : long != 0 ? long : live != 0 ? live : convert ))
