"""benchmarks/planner_roofline_check.py: a measured profile beside the roofline, and the
efficiency factors that fit it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import planner_roofline_check as rc
from splitserve.planner.cost_model import Efficiency, RooflineLatencyModel
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.profile_format import make_profile, save_profile

TOKENS, CONTEXT = [16, 64, 256, 1024, 4096], [0, 2048]
BATCH, KV = [1, 8, 32, 128, 256], [0, 4096, 16384]


def synthetic_profile(eff: Efficiency, model: str = "llama-3-8b") -> dict:
    """A profile whose every cell is the roofline at `eff`: what a perfectly modelled
    engine would measure."""
    roof = RooflineLatencyModel(load_model_spec(model), get_hardware("h200"), 1, eff)
    prefill = [[roof.prefill_s(n, c) for c in CONTEXT] for n in TOKENS]
    decode = [[roof.decode_s(b, max(t, b)) for t in KV] for b in BATCH]
    return make_profile(model_name="llama-8b", hardware_name="NVIDIA H200", tensor_parallel=1,
                        kv_capacity_tokens=100_000, kv_bytes_per_token=roof.kv_bytes_per_token,
                        num_layers=roof.num_layers, prefill=(TOKENS, CONTEXT, prefill),
                        decode=(BATCH, KV, decode))


def test_fit_recovers_the_factors_a_profile_was_made_with() -> None:
    truth = Efficiency(compute_efficiency=0.45, memory_efficiency=0.55, step_overhead_s=0.004,
                       compute_half_tokens=128)
    result = rc.check(synthetic_profile(truth), load_model_spec("llama-3-8b"),
                      get_hardware("h200"))
    fitted = result["fitted_efficiency"]
    assert fitted["compute_efficiency"] == pytest.approx(0.45, abs=0.026)
    assert fitted["memory_efficiency"] == pytest.approx(0.55, abs=0.026)
    assert fitted["step_overhead_s"] == pytest.approx(0.004, rel=0.15)
    assert fitted["compute_half_tokens"] == 128
    assert result["fitted_error"]["all"]["max_ratio"] < 1.03
    assert result["fitted_error"]["all"]["min_ratio"] > 0.97
    # the default factors (0.6 / 0.8 / 2 ms / no penalty) are faster than this engine
    assert result["default_error"]["prefill"]["median_ratio"] < 0.9
    assert result["default_error"]["decode"]["median_ratio"] < 0.9
    assert len(result["cells"]) == len(TOKENS) * len(CONTEXT) + len(BATCH) * len(KV)


def test_fractions_of_peak_are_the_work_over_the_measured_time() -> None:
    truth = Efficiency(compute_efficiency=0.5, memory_efficiency=0.7, step_overhead_s=0.0)
    result = rc.check(synthetic_profile(truth), load_model_spec("llama-3-8b"),
                      get_hardware("h200"))
    # a big prompt alone is compute-bound: it reaches the compute efficiency it was made with
    big = next(r for r in result["cells"] if r["table"] == "prefill" and r["row"] == 4096
               and r["col"] == 0)
    assert big["compute_fraction_of_peak"] == pytest.approx(0.5, rel=1e-6)
    # one sequence decoding reads the weights: it reaches the memory efficiency
    small = next(r for r in result["cells"] if r["table"] == "decode" and r["row"] == 1
                 and r["col"] == 0)
    assert small["bandwidth_fraction_of_peak"] == pytest.approx(0.7, rel=1e-6)
    assert result["best_prefill_compute_fraction"] == pytest.approx(0.5, rel=1e-6)


def test_a_profile_of_another_model_is_refused() -> None:
    profile = synthetic_profile(Efficiency())
    with pytest.raises(ValueError, match="KV bytes per token"):
        rc.check(replace_kv(profile, 1234), load_model_spec("llama-3-8b"), get_hardware("h200"))
    with pytest.raises(ValueError, match="layers"):
        rc.check(profile, load_model_spec("llama-3-70b"), get_hardware("h200"))


def replace_kv(profile: dict, kv_bytes: int) -> dict:
    return {**profile, "kv_bytes_per_token": kv_bytes}


def test_cli_writes_the_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "profile.json"
    save_profile(synthetic_profile(replace(Efficiency(), step_overhead_s=0.01)), path)
    out = tmp_path / "check.json"
    rc.main(["--profile", str(path), "--config", "llama-3-8b", "--hardware", "h200",
             "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["hardware"]["name"] == "h200"
    assert written["fitted_efficiency"]["step_overhead_s"] == pytest.approx(0.01, rel=0.15)
    assert "vs the h200 roofline" in capsys.readouterr().out
