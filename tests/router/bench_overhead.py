"""Router overhead against fake workers (not a test; run by hand, prints JSON).

    PYTHONPATH=. python -m tests.router.bench_overhead [--num-requests 200]

Measures, sequentially, non-streaming completion latency sent directly to a fake mixed
worker's /internal/generate and through the router (colocated and 1P1D), and the TTFT of
streamed requests through the router. Workers emit tokens with no delay, so the numbers
are the router's own cost (plus loopback HTTP). The integrator may move it to benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from splitserve.router import RouterConfig, build_app
from tests.router.conftest import SCRIPT, SECRET
from tests.router.fake_worker import FakeBehaviour, FakeWorker, ServerThread, stop_all
from tests.router.tokenizer_fixtures import build_llama3_like

PROMPT = "The quick brown fox jumps over the lazy dog. " * 4


def _pcts(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {"p50_ms": 1e3 * statistics.median(ordered),
            "p90_ms": 1e3 * ordered[int(0.9 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-requests", type=int, default=200)
    args = parser.parse_args()
    model_dir = build_llama3_like(Path(tempfile.mkdtemp()) / "tiny")
    servers: list[ServerThread] = []

    def serve(app: object) -> str:
        servers.append(ServerThread(app))
        return servers[-1].__enter__()

    workers = {role: FakeWorker(role, SECRET, FakeBehaviour(script=list(SCRIPT)))
               for role in ("mixed", "prefill", "decode")}
    for worker in workers.values():
        worker.url = serve(worker.app())
    colocated = serve(build_app(RouterConfig(str(model_dir), mixed_urls=(workers["mixed"].url,),
                                             secret=SECRET)))
    split = serve(build_app(RouterConfig(
        str(model_dir), prefill_urls=(workers["prefill"].url,),
        decode_urls=(workers["decode"].url,), secret=SECRET, short_prompt_len=0)))
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 6}
    internal = {"request_id": "x", "prompt_token_ids": list(range(40)), "mode": "full",
                "handoff": None, "first_token_id": None,
                "sampling": {"max_tokens": 6, "logprobs": None}}
    results: dict[str, object] = {"num_requests": args.num_requests}
    try:
        with httpx.Client(timeout=10) as http:
            def timed(url: str, payload: dict[str, object], headers: dict[str, str]) -> list[float]:
                out = []
                for i in range(args.num_requests):
                    if "request_id" in payload:
                        payload = {**payload, "request_id": f"r{i}"}
                    start = time.perf_counter()
                    http.post(url, json=payload, headers=headers).raise_for_status()
                    out.append(time.perf_counter() - start)
                return out

            results["direct_worker"] = _pcts(timed(
                workers["mixed"].url + "/internal/generate", internal,
                {"X-Splitserve-Secret": SECRET}))
            results["router_colocated"] = _pcts(timed(colocated + "/v1/completions", body, {}))
            results["router_1p1d"] = _pcts(timed(split + "/v1/completions", body, {}))
            ttft = []
            for _ in range(args.num_requests):
                start = time.perf_counter()
                with http.stream("POST", split + "/v1/completions",
                                 json={**body, "stream": True}) as resp:
                    next(line for line in resp.iter_lines() if line.startswith("data:"))
                    ttft.append(time.perf_counter() - start)
            results["router_1p1d_stream_ttft"] = _pcts(ttft)
    finally:
        stop_all(servers)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
