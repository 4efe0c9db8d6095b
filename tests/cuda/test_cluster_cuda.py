"""A disaggregated cluster whose workers run on the GPU (skipped without one).

Both workers share GPU 0; greedy answers through the official `openai` client must equal
the offline engine on the CPU (float32), with the KV cache moving GPU -> host -> GPU over
TCP and shared memory; blocks are freed and the per-phase utilization metric parses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port
from splitserve.engine.llm import LLM
from splitserve.engine.sampling_params import SamplingParams
from tests.integration.conftest import WORKER_ARGS, wait_blocks_freed
from tests.integration.test_cluster_openai import MAX_TOKENS, PROMPTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> dict[str, str]:
    llm = LLM(str(model_dir), dtype="float32", num_blocks=256)
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    return {p: r.outputs[0].text for p, r in zip(PROMPTS, llm.generate(PROMPTS, params),
                                                 strict=True)}


@pytest.fixture(scope="module", params=["tcp", "shm"])
def gpu_cluster(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[Cluster]:
    spec = ClusterSpec(model_dir=str(model_dir), router_port=free_port(),
                       transport=request.param, gpus=(0,),
                       worker_args=(*WORKER_ARGS, "--device=cuda"), ready_timeout_s=180.0)
    cluster = Cluster(spec)
    cluster.start()
    yield cluster
    cluster.stop()


def test_gpu_workers_answer_like_the_offline_engine(gpu_cluster: Cluster, reference,
                                                    model_dir: Path) -> None:
    client = openai.OpenAI(base_url=f"{gpu_cluster.url}/v1", api_key="unused",
                           max_retries=0, timeout=120)
    for prompt in PROMPTS:
        out = client.completions.create(model=model_dir.name, prompt=prompt,
                                        max_tokens=MAX_TOKENS, temperature=0,
                                        extra_body={"ignore_eos": True})
        assert out.choices[0].text == reference[prompt], prompt
        chunks = client.completions.create(model=model_dir.name, prompt=prompt, stream=True,
                                           max_tokens=MAX_TOKENS, temperature=0,
                                           extra_body={"ignore_eos": True})
        assert "".join(c.choices[0].text for c in chunks if c.choices) == reference[prompt]
    loads = wait_blocks_freed(gpu_cluster, timeout_s=5.0)
    assert all(load["num_used_blocks"] == 0 for load in loads.values()), loads


def test_gpu_workers_report_phase_utilization(gpu_cluster: Cluster) -> None:
    seen: dict[str, float] = {}
    for w in gpu_cluster.workers():
        for fam in text_string_to_metric_families(httpx.get(f"{w.url}/metrics").text):
            if fam.name == "splitserve_worker_phase_utilization":
                for s in fam.samples:
                    seen[f"{w.name}/{s.labels['kind']}"] = s.value
    assert seen, "no splitserve_worker_phase_utilization samples"
    assert all(0.0 <= v <= 1.0 for v in seen.values()), seen
