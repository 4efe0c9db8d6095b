#!/usr/bin/env bash
# What a lent GPU must show for the planner (issue 5) and the engine on torch 2.11 + CUDA, in
# one run of a few minutes (see docs/gpu.md and docs/planner.md):
#   1. the CUDA tests (tests/cuda, incl. `splitserve profile --device cuda`), then
#   2. `splitserve profile` of random Llama-3-8B and TinyLlama-1.1B shaped models in bfloat16
#      on the GPU, each compared with the planner's roofline for this accelerator
#      (benchmarks/planner_roofline_check.py, --hardware $HW);
#   meanwhile, on other cores, the whole CPU suite under this machine's torch, in two shards.
# Logs and JSON go to $OUT (eight files: the device tool brings back no more). Wheels the GPU image lacks travel in .whl/ (scripts/gpu_wheels.sh).
set -uo pipefail
OUT=${OUT:-/tmp/splitserve_gpu}
HW=${HW:-h200}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi; nproc
  python3 -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(0))"
} >"$OUT/env.txt" 2>&1
tail -n 1 "$OUT/env.txt"

shard() {  # name cores tests...
    local name=$1 cores=$2; shift 2
    SPLITSERVE_CACHE=/tmp/cache_$name timeout "${SUITE_S:-330}" taskset -c "$cores" \
        python3 -m pytest -q -p no:cacheprovider "$@" >"/tmp/suite_$name.log" 2>&1
    echo "suite shard $name exit $?" >>"/tmp/suite_$name.log"
}
shard a 8-11 tests/planner tests/model tests/engine \
    --deselect tests/model/test_parity.py::test_cuda_chunked_prefill_and_decode_match_hf &
shard b 12-15 tests --ignore=tests/cuda --ignore=tests/planner --ignore=tests/model \
    --ignore=tests/engine &

SPLITSERVE_CACHE=/tmp/cache_cuda timeout "${CUDA_TESTS_S:-150}" taskset -c 0-7 \
    python3 -m pytest tests/cuda \
    "tests/model/test_parity.py::test_cuda_chunked_prefill_and_decode_match_hf" \
    -q -p no:cacheprovider -rs >"$OUT/cuda_tests.log" 2>&1
tail -n 3 "$OUT/cuda_tests.log"

profile() {  # bench-model max-len prefill-tokens prefill-context decode-batch decode-context
    local name=$1
    taskset -c 0-7 python3 -m benchmarks.bench_models "$name" --dtype bfloat16 --device cuda \
        --max-len "$2" --out "/tmp/models/$name" >>"$OUT/run.log" 2>&1 || return 1
    timeout "${PROFILE_S:-150}" taskset -c 0-3 python3 -m splitserve.cli profile "/tmp/models/$name" \
        --device cuda --dtype bfloat16 --prefill-tokens "$3" --prefill-context "$4" \
        --decode-batch "$5" --decode-context "$6" --repeats 3 --warmup 1 --settle 2 \
        --refine-tol 0 --out "$OUT/profile_$name.json" 2>&1 | grep -v "^profile: " \
        | tee -a "$OUT/run.log"
    python3 -m benchmarks.planner_roofline_check --profile "$OUT/profile_$name.json" \
        --config "/tmp/models/$name" --hardware "$HW" \
        --out "$OUT/planner_roofline_${HW}_$name.json" 2>&1 | tee -a "$OUT/run.log"
    rm -rf "/tmp/models/$name"
}
profile llama-8b 16384 16,64,256,512,1024,2048,4096,8192 0,4096 1,4,16,64,128,256 0,4096,16384
profile llama-1b 16384 16,64,256,512,1024,2048,4096,8192 0,4096 1,4,16,64,128,256 0,4096,16384

wait
cat /tmp/suite_a.log /tmp/suite_b.log >"$OUT/suite.log"
grep -E "passed|failed|error|exit" "$OUT/suite.log" | tail -n 4
