#!/usr/bin/env bash
# Everything here that needs a CUDA GPU, as one prepared script (nothing in this repository has run on a GPU yet):
#   bash benchmarks/gpu_suite.sh            # from the repository root, after `make .venv/.installed`
# 1. the CUDA tests: NVDEC decoding through torchcodec (needs the system FFmpeg: make system-packages), the bf16/fp16
#    gates, the compiled encoder, pinned copies; pytest's -rs lists any that still skip, and why;
# 2. bench_ray.py with one encode actor on the GPU (ray.gpus_per_encoder=1, bf16), beside the local engine on the same
#    GPU, while nvidia-smi samples the GPU's busy share every 0.5 s;
# then one summary: videos/s, frames/s (videos/s x 16 frames) and the GPU's mean busy share over the benchmark.
# Bounded: each part has its own time limit, 8 minutes in all.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=${GPU_SUITE_OUT:-gpu_suite_output}
mkdir -p "$out"
if ! command -v nvidia-smi >/dev/null || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_suite: no CUDA GPU here (nvidia-smi or torch.cuda.is_available() fails): nothing to run" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "bf16", torch.cuda.is_bf16_supported())'

echo "== CUDA tests"
# every test file with a CUDA path, whole (on a GPU machine their CUDA cases run instead of skipping)
timeout 270 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_video_corpus.py tests/test_precision.py \
  tests/test_config.py tests/test_compile.py tests/test_decode_gate.py 2>&1 | tee "$out/cuda_tests.txt" | tail -25
tests_rc=${PIPESTATUS[0]}

echo "== bench_ray.py on the GPU"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$out/gpu_busy.txt" &
sampler=$!
timeout 200 "$PY" benchmarks/bench_ray.py --videos 160 --rounds 1 --sweep "1,2,$(nproc)" --gpus-per-encoder 1 \
  --cpus-per-encoder 1 --cpus-per-decoder 1 --decode-actors "$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))" --precision bf16 \
  2> "$out/bench_ray.err" | tee "$out/bench_ray.txt"
bench_rc=${PIPESTATUS[0]}
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null

echo "== summary"
awk '/videos\/s start-up excluded/ {printf "%s engine: %s videos/s, %.0f frames/s\n", $1, $3, $3 * 16}' "$out/bench_ray.txt"
awk '{s += $1; n++} END {if (n) printf "GPU busy: %.0f%% of %d samples over the benchmark\n", s / n, n}' "$out/gpu_busy.txt"
echo "CUDA tests: exit $tests_rc; bench_ray: exit $bench_rc; logs in $out/"
exit $(( tests_rc || bench_rc ))
