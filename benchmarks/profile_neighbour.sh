#!/usr/bin/env bash
# Does a busy neighbour core slow a worker's steps? `splitserve profile` on core 0 three
# times: alone, with a decode-heavy profile loop on core 1, with a prefill-heavy one.
# Writes OUT/{alone,decode_neighbour,prefill_neighbour}.json (profile/v1; compare their
# latency tables). Usage: bash benchmarks/profile_neighbour.sh [MODEL_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="${1:-benchmarks/.models/llama-110m-v8k-bfloat16}"
out="${2:-benchmarks/results/profile_neighbour}"
mkdir -p "$out"
prof=".venv/bin/splitserve profile $model --num-threads 1 --refine-tol 0"
grid="--prefill-tokens 64,256,512 --prefill-context 0,1536 --decode-batch 1,8,32
      --decode-context 256,1024 --repeats 5 --warmup 2"
run_beside() {  # $1: name, $2: the neighbour's grid ("" = none)
  local pid=""
  if [ -n "$2" ]; then
    taskset -c 1 $prof $2 --repeats 500 --out "$out/.neighbour.json" >/dev/null 2>&1 &
    pid=$!
    sleep 20  # past the neighbour's model load, into its steps
  fi
  taskset -c 0 $prof $grid --out "$out/$1.json"
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
}
run_beside alone ""
run_beside decode_neighbour "--prefill-tokens 8,16 --prefill-context 0,64 --decode-batch 4,8,16,32 --decode-context 256,1024"
run_beside prefill_neighbour "--prefill-tokens 256,512 --prefill-context 0,1536 --decode-batch 1,2 --decode-context 0,64"
rm -f "$out/.neighbour.json"
