#!/usr/bin/env bash
# Everything a lent CUDA machine must show, in one run (see docs/gpu.md):
#   1. the CUDA tests (tests/cuda + the CUDA parity test in tests/model) and, at the same
#      time on the CPU, the whole suite under that machine's torch (2.11 + CUDA);
#   2. benchmarks/engine_gpu.py (ours vs transformers on the GPU), alone on the machine.
# Logs and JSON go to $OUT. Packages the GPU image lacks travel as wheels in .whl/
# (scripts/gpu_wheels.sh fetches them; carry .whl). See docs/gpu.md.
set -uo pipefail
OUT=${OUT:-/tmp/splitserve_gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 SPLITSERVE_CACHE=/tmp/splitserve_cache
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi; nproc; g++ --version | head -1
  python3 -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(0))"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

timeout "${SUITE_S:-300}" python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/cuda >"$OUT/suite.log" 2>&1 &
suite=$!
timeout "${CUDA_TESTS_S:-240}" python3 -m pytest tests/cuda \
    "tests/model/test_parity.py::test_cuda_chunked_prefill_and_decode_match_hf" \
    -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/cuda_tests.log"
wait $suite; echo "suite exit $?"; tail -n 25 "$OUT/suite.log"

timeout "${BENCH_S:-240}" python3 -m benchmarks.engine_gpu --models "${BENCH_MODELS:-llama-110m,llama-1b}" \
    --reps 2 --out "$OUT/engine_gpu.json" 2>&1 | grep -v "it/s" | tee "$OUT/engine_gpu.log"
