"""The README's main job: a few streamed requests through a running cluster, then a report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from splitserve.cluster.launcher import Cluster

# Short prompts are prefilled on the decode worker itself (conditional disaggregation);
# the long ones go through the prefill worker and a KV transfer. The report shows which.
DEMO_PROMPTS = (
    "The function returns",
    "A module is a file containing Python definitions and statements. The file name is "
    "the module name with the suffix added. Within a module, the module's name is "
    "available as the value of the global variable. A module can contain executable "
    "statements as well as function definitions. These statements are intended to "
    "initialize the module. They are executed only the first time the module name is "
    "encountered in an import statement. When the interpreter starts, it",
    "A list is a sequence of",
    "An exception is raised when an operation or function is applied to an object of "
    "inappropriate type. The associated value is a string giving details about the type "
    "mismatch. User code can raise built-in exceptions. This can be used to test an "
    "exception handler or to report an error condition just like the situation in which "
    "the interpreter raises the same exception; but beware that nothing prevents user "
    "code from raising an inappropriate error. When an exception is raised, the handler",
)


@dataclass
class DemoResult:
    prompt: str
    text: str = ""
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    error: str | None = None
    route_kind: str = "?"
    kv_transfer_ms: float | None = None


def stream_one(client: httpx.Client, url: str, model: str, prompt: str,
               max_tokens: int) -> DemoResult:
    res = DemoResult(prompt=prompt)
    # seeded sampling: varied text, yet the same on every run and in every topology
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7,
            "seed": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    headers = {"X-Splitserve-Debug": "1"}
    with client.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            res.error = f"HTTP {resp.status_code}: {resp.read().decode(errors='replace')}"
            return res
        for line in resp.iter_lines():
            if line.startswith(": timeline "):
                _read_timeline(res, json.loads(line[len(": timeline "):]))
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                res.error = chunk["error"].get("message", str(chunk["error"]))
                break
            if chunk.get("usage"):
                res.completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    res.token_times.append(time.perf_counter() - start)
                    res.text += choice["text"]
    res.e2e_s = time.perf_counter() - start
    res.ttft_s = res.token_times[0] if res.token_times else res.e2e_s
    return res


def _read_timeline(res: DemoResult, timeline: dict[str, object]) -> None:
    res.route_kind = str(timeline.get("route_kind"))
    workers = timeline.get("worker_timelines")
    for worker in (workers.values() if isinstance(workers, dict) else []):
        if isinstance(worker, dict) and "kv_transfer_s" in worker:
            res.kv_transfer_ms = 1000 * float(worker["kv_transfer_s"])


def _phase_lines(cluster: Cluster, client: httpx.Client) -> list[str]:
    lines = []
    for child in cluster.workers():
        text = client.get(f"{child.url}/metrics").text
        tokens: dict[str, float] = {}
        busy: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "splitserve_worker_phase_tokens_total":
                    tokens[s.labels["phase"]] = s.value
                elif s.name == "splitserve_worker_phase_busy_seconds_total":
                    busy[s.labels["phase"]] = s.value
        lines.append(
            f"  {child.name:10s} prefill {tokens.get('prefill', 0):6.0f} tok in "
            f"{busy.get('prefill', 0):6.2f} s | decode {tokens.get('decode', 0):6.0f} tok in "
            f"{busy.get('decode', 0):6.2f} s"
        )
    return lines


def run_demo_job(cluster: Cluster, num_requests: int, max_tokens: int) -> int:
    """Send `num_requests` streamed seeded completions one after another; print a report."""
    with httpx.Client(timeout=120.0) as client:
        model = client.get(f"{cluster.url}/v1/models").json()["data"][0]["id"]
        print(f"cluster up at {cluster.url} ({', '.join(cluster.spec.roles())}); model {model}")
        results = [
            stream_one(client, cluster.url, model, DEMO_PROMPTS[i % len(DEMO_PROMPTS)],
                       max_tokens)
            for i in range(num_requests)
        ]
        print("\nrequests (seeded sampling, streamed through the router):")
        for r in results:
            if r.error:
                print(f"  {r.prompt!r}: ERROR {r.error}")
                continue
            gaps = [b - a for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
            itl_ms = 1000 * sum(gaps) / len(gaps) if gaps else 0.0
            prompt = r.prompt if len(r.prompt) < 40 else r.prompt[:20] + "..." + r.prompt[-16:]
            kv = f" | KV moved in {r.kv_transfer_ms:.1f} ms" if r.kv_transfer_ms else ""
            print(f"  {prompt!r} -> {r.text[:60]!r}")
            print(f"     route {r.route_kind} | TTFT {1000 * r.ttft_s:6.1f} ms | mean ITL "
                  f"{itl_ms:5.1f} ms | {r.completion_tokens} tokens | total {r.e2e_s:5.2f} s{kv}")
        print("\nper-phase work on each worker:")
        for line in _phase_lines(cluster, client):
            print(line)
    num_failed = sum(1 for r in results if r.error)
    print(f"\n{len(results) - num_failed} of {len(results)} requests completed")
    return 1 if num_failed else 0
