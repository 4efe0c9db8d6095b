"""Load, disconnects, corrupt KV, mismatched models, bad input: against a real 1P1D cluster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from splitserve.cluster.launcher import Cluster, free_port
from splitserve.transfer import CORRUPT_ENV
from tests.helpers.checkpoints import make_model_dir
from tests.integration.conftest import WORKER_ARGS, start_cluster, wait_blocks_freed, worker_loads


def test_32_concurrent_streams_finish_and_free_every_block(cluster_1p1d: Cluster,
                                                           model_dir: Path) -> None:
    client = openai.AsyncOpenAI(base_url=f"{cluster_1p1d.url}/v1", api_key="x", max_retries=0,
                                timeout=120)

    async def one(i: int) -> tuple[str, int]:
        stream = await client.completions.create(
            model=model_dir.name, prompt=f"Request number {i}: " + "word " * (i % 7 * 9),
            max_tokens=8 + i % 5, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, usage

    async def run_all() -> list[tuple[str, int]]:
        return await asyncio.gather(*(one(i) for i in range(32)))

    results = asyncio.run(run_all())
    assert [u for _, u in results] == [8 + i % 5 for i in range(32)]
    loads = wait_blocks_freed(cluster_1p1d, timeout_s=2.0)
    assert all(v["num_used_blocks"] == 0 for v in loads.values()), loads
    assert all(v["num_held"] == 0 and v["num_running"] == 0 for v in loads.values()), loads


def test_client_disconnect_frees_blocks_on_both_workers(cluster_1p1d: Cluster,
                                                        model_dir: Path) -> None:
    body = {"model": model_dir.name, "prompt": "A long story: " + "once upon a time " * 20,
            "max_tokens": 3000, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{cluster_1p1d.url}/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            for num_lines, _ in enumerate(resp.iter_lines()):
                if num_lines >= 8:
                    # (checked inside the loop: leaving it closes the stream)
                    busy = worker_loads(cluster_1p1d)
                    break  # leave mid-stream: this closes the connection
            assert any(v["num_used_blocks"] > 0 for v in busy.values()), busy
    closed = time.monotonic()
    loads = wait_blocks_freed(cluster_1p1d, timeout_s=1.0)
    assert all(v["num_used_blocks"] == 0 for v in loads.values()), loads
    assert time.monotonic() - closed <= 1.5
    # and the router keeps serving
    out = httpx.post(f"{cluster_1p1d.url}/v1/completions", timeout=30, json={
        "model": model_dir.name, "prompt": "still there?", "max_tokens": 3})
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("case", [
    ("not json", 400), ({"model": "nope", "prompt": "x"}, 404),
    ({"prompt": "x" * 9000, "max_tokens": 4}, 400), ({"prompt": "x", "max_tokens": 0}, 400),
    ({"prompt": "x", "n": 2}, 400), ({"prompt": "x", "temperature": -1}, 400),
])
def test_bad_input_gets_openai_error_and_server_stays_healthy(
    cluster_1p1d: Cluster, model_dir: Path, case: tuple[object, int]
) -> None:
    body, status = case
    url = f"{cluster_1p1d.url}/v1/completions"
    if isinstance(body, str):
        resp = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        resp = httpx.post(url, json={"model": model_dir.name, **body}, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"] and err["type"]
    assert httpx.get(f"{cluster_1p1d.url}/health").status_code == 200


def test_corrupted_kv_transfer_never_yields_wrong_text(model_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefill worker flips KV bytes after checksumming (test hook): the decode worker
    must refuse them; the client sees an error, never silently wrong text."""
    monkeypatch.setenv(CORRUPT_ENV, "1")
    cluster = start_cluster(model_dir)
    try:
        client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError) as info:
            stream = client.completions.create(
                model=model_dir.name, prompt="The function returns a new list " * 4,
                max_tokens=8, temperature=0, stream=True, extra_body={"ignore_eos": True})
            for _ in stream:
                pass
        assert "checksum" in str(info.value).lower() or "kv" in str(info.value).lower()
        loads = wait_blocks_freed(cluster, timeout_s=2.0)
        assert all(v["num_used_blocks"] == 0 for v in loads.values()), loads
    finally:
        cluster.stop()


def test_handshake_refuses_kv_from_a_different_model(model_dir: Path, tmp_path: Path) -> None:
    """A prefill worker serving model A and a decode worker serving model B: the request
    fails with a clear handshake error and no KV moves."""
    other = make_model_dir("qwen2", tmp_path / "other", max_position_embeddings=1024)
    # the router needs both ends to share a tokenizer; make B's identical to A's
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    secret = "s3cret"
    env = {**os.environ, "SPLITSERVE_SECRET": secret}
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(3)]

    def spawn(*argv: str) -> None:
        procs.append(subprocess.Popen([sys.executable, "-m", "splitserve.cli", *argv], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        spawn("worker", "--role", "prefill", "--model", str(model_dir), "--port", str(ports[0]),
              *WORKER_ARGS)
        spawn("worker", "--role", "decode", "--model", str(other), "--port", str(ports[1]),
              *WORKER_ARGS)
        spawn("router", "--model", str(model_dir), "--port", str(ports[2]),
              "--prefill", f"http://127.0.0.1:{ports[0]}",
              "--decode", f"http://127.0.0.1:{ports[1]}", "--short-prompt-len", "0")
        url = f"http://127.0.0.1:{ports[2]}"
        deadline = time.monotonic() + 120
        ready: set[int] = set()
        while time.monotonic() < deadline and len(ready) < 3:
            for port, path in zip(ports, ("/internal/health",) * 2 + ("/health",), strict=True):
                try:
                    resp = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2,
                                     headers={"X-Splitserve-Secret": secret})
                    if resp.status_code == 200:
                        ready.add(port)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        time.sleep(1.5)  # let the router's poller see both workers healthy
        resp = httpx.post(f"{url}/v1/completions", timeout=60, json={
            "model": model_dir.name, "prompt": "The function returns a new list " * 4,
            "max_tokens": 8, "temperature": 0, "ignore_eos": True})
        assert resp.status_code >= 400, resp.text
        assert "handshake" in resp.json()["error"]["message"].lower()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)


def test_router_and_worker_metrics_parse_and_count_the_handoff(cluster_1p1d: Cluster,
                                                               model_dir: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    resp = httpx.post(f"{cluster_1p1d.url}/v1/completions", timeout=60, json={
        "model": model_dir.name, "prompt": "A long prompt for the prefill pool " * 12,
        "max_tokens": 4, "ignore_eos": True})
    assert resp.status_code == 200

    def samples(url: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for s in fam.samples:
                key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
                out[key] = s.value
        return out

    router = samples(cluster_1p1d.url)
    assert router["splitserve_router_routing_decisions_total|kind=disaggregated"] >= 1
    assert router["splitserve_router_kv_transfer_bytes_count"] >= 1
    assert router["splitserve_router_kv_transfer_bytes_sum"] > 0
    assert router["splitserve_router_queue_time_seconds_count"] >= 1
    decode = next(w for w in cluster_1p1d.workers() if w.name.startswith("decode"))
    worker = samples(decode.url)
    key = "splitserve_worker_phase_tokens_total|phase=decode|role=decode|worker=decode-1"
    assert worker[key] >= 3
