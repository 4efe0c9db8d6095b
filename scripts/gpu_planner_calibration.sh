#!/usr/bin/env bash
# A first planner calibration point on a lent GPU (issue 5), in one run of ~3 min:
#   1. a random TinyLlama-1.1B-shaped model (bfloat16) and `splitserve profile` of it there;
#   2. a 1 prefill + 1 decode cluster on GPU 0 with the calibration's engine limits, and
#      the goodput benchmark's chat workload at a few Poisson rates (`splitserve bench`).
# Here afterwards: `python -m benchmarks.planner_gpu_calibration $FILES_AT` replays every
# run's requests in the simulator on that profile and compares p90 TTFT / TPOT.
# DEVICE=cpu MODEL=llama-25m RATES=1,2 DUR=10 NO_WHEELS=1 PY=.venv/bin/python: the same steps
# on the CPU (a dry run).
set -uo pipefail
OUT=${OUT:-/tmp/splitserve_gpu}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-llama-1b}
RATES=${RATES:-4,8}
DUR=${DUR:-20}
PORT=${PORT:-8123}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
PY=${PY:-python3}
dir=/tmp/models/$MODEL
$PY -m benchmarks.bench_models "$MODEL" --dtype bfloat16 --device "$DEVICE" --max-len 4096 --vocab-size 8192 \
    --out "$dir" >"$OUT/run.log" 2>&1 || { tail "$OUT/run.log"; exit 1; }
$PY -m splitserve.cli profile "$dir" --device "$DEVICE" --dtype bfloat16 \
    --prefill-tokens 16,64,128,256,512 --prefill-context 0,512,2048 \
    --decode-batch 1,2,4,8,16,32,64 --decode-context 0,1024,4096 --kv-cache-bytes 1073741824 \
    --repeats 3 --warmup 1 --settle 2 --refine-tol 0 --out "$OUT/profile.json" 2>&1 \
    | grep -v "^profile: " | tee -a "$OUT/run.log"

gpus=(); [ "$DEVICE" = cuda ] && gpus=(--gpus 0)
# the calibration's engine limits (benchmarks/calibration/setup.py) and router fallbacks
setsid $PY -m splitserve.cli serve "$dir" --prefill 1 --decode 1 --port "$PORT" "${gpus[@]}" \
    --log-dir /tmp/cluster_logs --worker-arg=--device="$DEVICE" --worker-arg=--dtype=bfloat16 \
    --worker-arg=--max-num-batched-tokens=512 --worker-arg=--max-num-seqs=64 \
    --worker-arg=--num-blocks=2048 --worker-arg=--no-enable-prefix-caching \
    --router-arg=--short-prompt-len=16 >"$OUT/serve.log" 2>&1 &
serve=$!
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1 && break
    sleep 1
done
timeout "${BENCH_S:-200}" $PY -m splitserve.cli bench --url "http://127.0.0.1:$PORT" \
    --tokenizer "$dir" --workload chat --sweep "$RATES" --duration "$DUR" --num-requests 0 \
    --seed 0 --ttft-slo 2 --tpot-slo 0.1 --timeout 60 --timeline --no-progress --out /tmp/bench \
    2>&1 | tail -n 12 | tee -a "$OUT/run.log"
kill -TERM -- -"$serve" 2>/dev/null; wait "$serve" 2>/dev/null
tar -czf "$OUT/bench.tar.gz" -C /tmp bench cluster_logs 2>/dev/null
echo "bench files: $(ls /tmp/bench | tr '\n' ' ')" | tee -a "$OUT/run.log"
