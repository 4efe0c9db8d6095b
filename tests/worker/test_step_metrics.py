"""The worker's engine-step metrics, read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from splitserve.engine.engine_config import EngineConfig
from splitserve.metrics.phase import PhaseCounters
from splitserve.worker.app import create_app
from splitserve.worker.config import WorkerConfig
from splitserve.worker.metrics import WorkerMetrics
from tests.helpers.checkpoints import make_model_dir

SECRET = "step-metrics-test"
KINDS = ("prefill", "decode", "mixed")


def parse(text: str) -> dict[str, Any]:
    """name -> {"type", "samples": {(sample name, frozenset(labels)): value}}."""
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {"type": fam.type, "samples": {
            (s.name, frozenset((k, v) for k, v in s.labels.items()
                               if k not in ("worker", "role"))): s.value
            for s in fam.samples}}
    return out


def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    return fams[family]["samples"][(sample, frozenset(labels.items()))]


def buckets(fams: dict[str, Any], family: str, **labels: str) -> dict[float, float]:
    return {float(dict(lab)["le"]): v for (name, lab), v in fams[family]["samples"].items()
            if name == family + "_bucket"
            and {k: x for k, x in lab if k != "le"} == labels}


def render(counters: PhaseCounters) -> dict[str, Any]:
    engine = SimpleNamespace(stats=lambda: {}, phase_counters=counters,
                             device_peaks=lambda: (1e12, 1e10))
    cfg = WorkerConfig(EngineConfig(model="unused"), role="mixed", worker_id="w-1",
                       secret=SECRET)
    body, content_type = WorkerMetrics(cfg, engine).render(1.0)  # type: ignore[arg-type]
    assert content_type.startswith("text/plain")
    return parse(body.decode())


def test_exposition_counts_buckets_and_sums_of_fed_steps() -> None:
    counters = PhaseCounters()
    fed = [(0.0004, 8, 0), (0.2, 512, 0), (0.03, 0, 4), (0.05, 0, 64), (0.3, 100, 3)]
    for step_s, num_prefill, num_decode in fed:
        counters.record_step(step_s, (num_prefill, 1.0, 1.0), (num_decode, 1.0, 1.0))
    fams = render(counters)

    assert fams["splitserve_worker_steps"]["type"] == "counter"
    for kind, want in zip(KINDS, (2, 2, 1), strict=True):
        assert value(fams, "splitserve_worker_steps", "splitserve_worker_steps_total",
                     kind=kind) == want
    fam = "splitserve_worker_step_duration_seconds"
    assert fams[fam]["type"] == "histogram"
    assert value(fams, fam, fam + "_count", kind="prefill") == 2
    assert value(fams, fam, fam + "_sum", kind="prefill") == pytest.approx(0.2004)
    assert value(fams, fam, fam + "_sum", kind="decode") == pytest.approx(0.08)
    prefill = buckets(fams, fam, kind="prefill")
    assert prefill[0.0005] == 1 and prefill[0.15] == 1 and prefill[0.25] == 2
    assert prefill[math.inf] == 2
    mixed = buckets(fams, fam, kind="mixed")
    assert mixed[0.25] == 0 and mixed[0.5] == 1

    fam = "splitserve_worker_decode_batch_size"
    assert fams[fam]["type"] == "histogram"
    assert value(fams, fam, fam + "_count") == 3  # decode-only and mixed steps
    assert value(fams, fam, fam + "_sum") == 71
    batch = buckets(fams, fam)
    assert batch[2] == 0 and batch[4] == 2 and batch[32] == 2 and batch[64] == 3

    fam = "splitserve_worker_prefill_tokens_per_step"
    assert value(fams, fam, fam + "_count") == 3
    assert value(fams, fam, fam + "_sum") == 620
    tokens = buckets(fams, fam)
    assert tokens[16] == 1 and tokens[128] == 2 and tokens[512] == 3


def test_empty_worker_exports_zero_steps_and_empty_histograms() -> None:
    fams = render(PhaseCounters())
    for kind in KINDS:
        assert value(fams, "splitserve_worker_steps", "splitserve_worker_steps_total",
                     kind=kind) == 0
    fam = "splitserve_worker_decode_batch_size"
    assert value(fams, fam, fam + "_count") == 0
    assert set(buckets(fams, fam).values()) == {0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir("llama", tmp_path_factory.mktemp("model"))


def generate(client: TestClient, request_id: str, prompt_ids: list[int],
             max_tokens: int) -> int:
    """Run one request to the end on the worker; return the tokens it streamed."""
    body = {"request_id": request_id, "prompt_token_ids": prompt_ids,
            "sampling": {"max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}}
    num_tokens = 0
    with client.stream("POST", "/internal/generate", json=body,
                       headers={"X-Splitserve-Secret": SECRET}) as resp:
        assert resp.status_code == 200
        events = [json.loads(line) for line in resp.iter_lines() if line]
    for event in events:
        assert event.get("type", event.get("event")) != "error", event
        num_tokens += len(event.get("token_ids", []))
    return num_tokens


def test_real_worker_step_counts_match_the_tokens_it_generated(model_dir: Path) -> None:
    engine = EngineConfig(model=str(model_dir), dtype="float32", num_blocks=64,
                          max_num_batched_tokens=32, max_num_seqs=8,
                          enable_prefix_caching=False)
    cfg = WorkerConfig(engine, role="mixed", worker_id="mixed-1", secret=SECRET)
    # prompts of 20, 50 and 70 tokens under a 32-token budget: 1, 2 and 3 prompt chunks
    requests = [("a", 20, 5), ("b", 50, 3), ("c", 70, 6)]
    with TestClient(create_app(cfg)) as client:
        generated = {rid: generate(client, rid, [5 + i % 50 for i in range(n)], out)
                     for rid, n, out in requests}
        fams = parse(client.get("/metrics").text)
    assert generated == {rid: out for rid, _, out in requests}

    steps = {k: value(fams, "splitserve_worker_steps", "splitserve_worker_steps_total",
                      kind=k) for k in KINDS}
    # one at a time: each request's prompt chunks are prompt-only steps (the last one
    # samples its first token), then one decode step per further token
    assert steps == {"prefill": 1 + 2 + 3, "decode": (5 - 1) + (3 - 1) + (6 - 1), "mixed": 0}
    fam = "splitserve_worker_decode_batch_size"
    assert value(fams, fam, fam + "_count") == steps["decode"]
    assert value(fams, fam, fam + "_sum") == sum(out - 1 for _, _, out in requests)
    fam = "splitserve_worker_prefill_tokens_per_step"
    assert value(fams, fam, fam + "_sum") == 20 + 50 + 70
    assert buckets(fams, fam)[32] == steps["prefill"]  # no chunk over the budget
    # the step histogram agrees with the per-phase counters the worker already exported
    dur = "splitserve_worker_step_duration_seconds"
    step_s = sum(value(fams, dur, dur + "_sum", kind=k) for k in KINDS)
    phase_s = sum(value(fams, "splitserve_worker_phase_busy_seconds",
                        "splitserve_worker_phase_busy_seconds_total", phase=p)
                  for p in ("prefill", "decode"))
    assert step_s == pytest.approx(phase_s) and step_s > 0
    tokens = value(fams, "splitserve_worker_phase_tokens",
                   "splitserve_worker_phase_tokens_total", phase="decode")
    assert tokens == steps["decode"]
