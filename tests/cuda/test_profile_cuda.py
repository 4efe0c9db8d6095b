"""`splitserve profile --device cuda`: the planner's measured profile taken on a GPU
(skipped without one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from splitserve.planner import Pool, ProfileLatencyModel, SchedulerConfig, load_profile, simulate
from splitserve.planner.workload import fixed_workload, generate
from tests.engine.test_profiler import run_profile
from tests.helpers.checkpoints import make_model_dir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_profile_on_cuda_is_a_planner_profile(tmp_path: Path) -> None:
    model_dir = make_model_dir("llama", tmp_path / "model", hidden_size=256,
                               intermediate_size=768, num_attention_heads=4,
                               num_key_value_heads=2, num_hidden_layers=2)
    out = tmp_path / "profile.json"
    assert run_profile(str(model_dir), "--quick", "--device", "cuda", "--dtype", "bfloat16",
                       "--out", str(out)) == 0
    profile = load_profile(out)
    assert profile["hardware"]["device"] == "cuda"
    assert profile["hardware"]["name"] == torch.cuda.get_device_name(0)
    assert profile["model"]["dtype"] == "bfloat16"
    # bfloat16 KV: 2 bytes x K and V x layers x KV heads x head dim
    assert profile["kv_bytes_per_token"] == 2 * 2 * 2 * 2 * 64
    model = ProfileLatencyModel(profile)
    requests = generate(fixed_workload(64, 8), rate=5.0, num_requests=20, seed=0)
    result = simulate(requests, [Pool("mixed", 1, model)], SchedulerConfig(token_budget=512))
    assert result.num_unfinished == 0
    assert float(np.min(result.ttft_s)) >= model.prefill_s(64) * 0.99
