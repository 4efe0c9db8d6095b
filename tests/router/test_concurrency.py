"""Many concurrent streams through 2 prefill + 2 decode fake workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai

from tests.router.conftest import StartCluster, behaviour, script_text

NUM_REQUESTS = 32


def test_concurrent_streams_all_finish_and_spread_over_workers(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(
        prefill=[behaviour(token_delay_s=0.01), behaviour(token_delay_s=0.01)],
        decode=[behaviour(token_delay_s=0.01), behaviour(token_delay_s=0.01)],
    )

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        stream = await client.completions.create(
            model=model_dir.name, prompt=f"request number {i} with a long enough prompt",
            max_tokens=5, stream=True)
        return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    async def run_all() -> list[str]:
        async with openai.AsyncOpenAI(base_url=c.url + "/v1", api_key="x", max_retries=0,
                                      timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(NUM_REQUESTS)))

    texts = asyncio.run(run_all())
    assert texts == [script_text(5)] * NUM_REQUESTS
    for role in ("prefill", "decode"):
        counts = [len(w.generate_calls) for w in c.workers[role]]
        assert sum(counts) == NUM_REQUESTS and min(counts) > 0, (role, counts)
    assert c.metric("splitserve_router_requests_total", {"status": "ok"}) == NUM_REQUESTS
    deadline = time.monotonic() + 2
    while any(w["num_inflight"] for w in c.http.get("/health").json()["workers"]):
        assert time.monotonic() < deadline, "router still counts requests in flight"
        time.sleep(0.02)
