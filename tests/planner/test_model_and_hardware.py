from __future__ import annotations

import subprocess
import sys

import pytest

from splitserve.planner.cost_model import Efficiency, RooflineLatencyModel
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import ModelSpec, load_model_spec

from .conftest import TINY_CONFIG


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, splitserve.planner, splitserve.planner.cli, splitserve.planner.plan;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bundled_configs_match_published_parameter_counts() -> None:
    # Meta reports 70.6B parameters for Llama 3 70B; the OPT paper 13B (12.85B in HF).
    assert load_model_spec("llama-3-70b").num_params == pytest.approx(70.55e9, rel=0.01)
    assert load_model_spec("opt-13b").num_params == pytest.approx(12.85e9, rel=0.01)


def test_kv_bytes_per_token_of_llama_3_70b() -> None:
    spec = load_model_spec("llama-3-70b")
    # 2 (K, V) * 80 layers * 8 KV heads * 128 dims * 2 bytes
    assert spec.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2


def test_config_missing_field_names_it() -> None:
    broken = dict(TINY_CONFIG)
    del broken["num_hidden_layers"]
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ModelSpec.from_hf_config(broken)


def test_unknown_hardware_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown hardware 'tpu'.*h100"):
        get_hardware("tpu")
    assert get_hardware("H100").name == "h100-sxm"
    assert get_hardware("a100", price_per_hour=9.0).price_per_hour == 9.0


def test_roofline_is_memory_bound_for_decode_and_compute_bound_for_prefill() -> None:
    spec = ModelSpec.from_hf_config(TINY_CONFIG, name="tiny")
    hw = get_hardware("h100")
    eff = Efficiency(compute_efficiency=0.5, memory_efficiency=0.8, step_overhead_s=0.001)
    lm = RooflineLatencyModel(spec, hw, 1, eff)
    bw = hw.memory_bw_bytes_s * 0.8
    flops = hw.peak_flops["bf16"] * 0.5
    ctx = 100
    expect_decode = (spec.weight_bytes + ctx * spec.kv_bytes_per_token) / bw + 0.001
    assert lm.decode_s(1, ctx) == pytest.approx(expect_decode, rel=1e-9)
    n = 65536
    attn = 4 * spec.num_layers * spec.num_heads * spec.head_dim * (n * (n + 1) / 2)
    expect_prefill = (2 * spec.num_matmul_params * n + attn) / flops + 0.001
    assert lm.prefill_s(n) == pytest.approx(expect_prefill, rel=1e-9)


def test_tensor_parallel_adds_communication_and_memory() -> None:
    spec = load_model_spec("llama-3-70b")
    hw = get_hardware("h100")
    with pytest.raises(ValueError, match="does not fit"):
        RooflineLatencyModel(spec, hw, 1)
    tp2, tp4 = RooflineLatencyModel(spec, hw, 2), RooflineLatencyModel(spec, hw, 4)
    assert tp4.kv_capacity_tokens > 2 * tp2.kv_capacity_tokens
    # Halving the per-GPU work does not halve the step: the all-reduces remain.
    assert tp4.decode_s(8, 8000) > tp2.decode_s(8, 8000) / 2


def test_efficiency_out_of_range() -> None:
    with pytest.raises(ValueError, match="compute_efficiency"):
        Efficiency(compute_efficiency=1.5)


def test_small_gemm_penalty_adds_half_tokens_of_matmul_work() -> None:
    spec = ModelSpec.from_hf_config(TINY_CONFIG, name="tiny")
    hw = get_hardware("h100")
    plain = RooflineLatencyModel(spec, hw, 1, Efficiency(step_overhead_s=0.0))
    penalised = RooflineLatencyModel(
        spec, hw, 1, Efficiency(step_overhead_s=0.0, compute_half_tokens=65536)
    )
    matmul_s = 2 * spec.num_matmul_params * 65536 / (hw.peak_flops["bf16"] * 0.6)
    assert penalised.prefill_s(65536) - plain.prefill_s(65536) == pytest.approx(matmul_s)
