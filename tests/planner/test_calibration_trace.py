"""A calibration judged on a production trace window (benchmarks/calibration/setup.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from benchmarks import goodput_compare, planner_calibration
from benchmarks.calibration import measure
from benchmarks.calibration import setup as setup_mod
from benchmarks.calibration.rawfile import setup_from_dict
from benchmarks.calibration.setup import Setup
from splitserve.bench.arrivals import read_trace
from splitserve.engine.engine_config import EngineConfig

TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.0000000,400,10
2023-11-16 18:17:04.0000000,801,3
2023-11-16 18:17:06.5000000,100,1
2023-11-16 18:17:20.0000000,100,1
"""


@pytest.fixture
def trace_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "t.csv").write_text(TRACE)
    monkeypatch.setattr(setup_mod, "TRACE_DIRS", (tmp_path / "absent", tmp_path))
    return tmp_path


def test_a_trace_setup_has_one_rate_and_a_positive_gauge_rate() -> None:
    with pytest.raises(ValueError, match="one rate"):
        Setup(trace="t.csv", rates=(1.0, 2.0))
    with pytest.raises(ValueError, match="gauge_rate"):
        Setup(gauge_rate=0.0)


def test_judged_run_replays_the_window_scaled_once(trace_dir: Path) -> None:
    setup = Setup(trace="t.csv", trace_window_s=(0.0, 10.0), rates=(0.3,), length_scale=4.0)
    base = {"tokenizer_dir": "unused", "workload": setup.make_workload(), "timeout_s": 9.0,
            "length_scale": setup.length_scale}
    config = measure.judged_config(setup, "http://127.0.0.1:1", base, 0.3)
    assert config.arrival == "trace"
    assert config.length_scale == 1.0  # the trace scaling divides the lengths, once
    requests = read_trace(config.trace)
    assert [(r.arrival_s, r.input_len, r.output_len) for r in requests] == [
        (0.0, 100, 3), (1.0, 201, 1), (3.5, 25, 1)]  # the 20-s request is past the window


def test_poisson_setups_judge_poisson_runs() -> None:
    setup = Setup()
    base = {"tokenizer_dir": "unused", "workload": setup.make_workload(), "timeout_s": 9.0,
            "length_scale": setup.length_scale}
    config = measure.judged_config(setup, "http://127.0.0.1:1", base, 4.0)
    assert (config.arrival, config.rate_rps, config.seed) == ("poisson", 4.0, setup.seed)


def test_missing_trace_names_where_it_looked(trace_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        Setup(trace="nope.csv", rates=(1.0,)).trace_scaling()


def test_raw_file_setup_round_trips() -> None:
    setup = planner_calibration.PRESETS["azure-code"]
    assert setup_from_dict(setup.to_dict()) == setup


@pytest.mark.parametrize("preset,scenario_name", [
    ("azure-code", "azure-code"), ("azure-code-self-gauge", "azure-code"),
    ("azure-conv", "azure-conv")])
def test_trace_presets_are_the_goodput_benchmarks_scenarios(preset: str,
                                                           scenario_name: str) -> None:
    """The issue asks for the goodput benchmark's own runs: same file, window, scaling."""
    setup = planner_calibration.PRESETS[preset]
    scenario = next(s for s in goodput_compare.scenarios() if s.name == scenario_name)
    assert scenario.trace is not None and setup.trace is not None
    assert os.path.basename(scenario.trace.path) == setup.trace
    assert (scenario.trace.start_s, scenario.trace.duration_s) == setup.trace_window_s
    assert scenario.trace.length_scale == setup.length_scale
    assert scenario.trace.speed == setup.trace_speed
    both = goodput_compare.SLOS["both"]
    assert (both.ttft_s, both.tpot_s) == setup.slo


@pytest.mark.parametrize("preset,scenario_name", [
    ("goodput-chat", "chat"), ("goodput-mixed-long", "mixed-long")])
def test_poisson_presets_are_the_goodput_benchmarks_scenarios(preset: str,
                                                             scenario_name: str) -> None:
    setup = planner_calibration.PRESETS[preset]
    scenario = next(s for s in goodput_compare.scenarios() if s.name == scenario_name)
    assert setup.trace is None and scenario.trace is None
    assert (setup.workload, setup.rates) == (scenario.workload, scenario.rates)
    assert setup.length_scale == goodput_compare.LENGTH_SCALE
    # the same worker flags; the calibration also spells out the engine's default batch cap
    extra = set(setup.worker_args()) - set(goodput_compare.WORKER_ARGS)
    assert extra == {f"--max-num-seqs={setup.max_num_seqs}"}
    assert setup.max_num_seqs == EngineConfig.__dataclass_fields__["max_num_seqs"].default
    assert setup.router_args() == goodput_compare.ROUTER_ARGS
    both = goodput_compare.SLOS["both"]
    assert (both.ttft_s, both.tpot_s) == setup.slo


def test_self_gauged_trace_preset_gauges_with_the_window(trace_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(trace="t.csv", trace_window_s=(0.0, 10.0), rates=(0.3,))
    seen: list[object] = []
    monkeypatch.setattr(measure, "_bench", lambda cluster, pids, config: seen.append(config)
                        or {"foreign_cpu_s": 0.0, "duration_s": 1.0})
    base = {"tokenizer_dir": "unused", "workload": setup.make_workload(), "timeout_s": 9.0,
            "length_scale": setup.length_scale}
    cluster = type("C", (), {"url": "http://127.0.0.1:1"})()
    measure._gauge(setup, cluster, {}, base, 0.3, 0)
    measure._gauge(dataclasses.replace(setup, gauge_rate=4.0), cluster, {}, base, 0.3, 0)
    assert [c.arrival for c in seen] == ["trace", "poisson"]  # type: ignore[attr-defined]
    assert "azure-code-self-gauge" in planner_calibration.PRESETS


def test_the_calm_code_trace_preset_is_the_scenario_s_first_30_seconds() -> None:
    calm = planner_calibration.PRESETS["azure-code-calm"]
    full = planner_calibration.PRESETS["azure-code-self-gauge"]
    assert (calm.trace, calm.trace_speed, calm.length_scale) == (
        full.trace, full.trace_speed, full.length_scale)
    assert calm.trace_window_s == (0.0, 30.0) and calm.num_repeats == 5
    assert calm.gauge_rate is None  # gauged with the window itself


def test_the_calm_mixed_long_preset_is_the_scenario_at_its_lower_rates() -> None:
    calm = planner_calibration.PRESETS["goodput-mixed-long-calm"]
    full = planner_calibration.PRESETS["goodput-mixed-long"]
    assert dataclasses.replace(calm, rates=full.rates) == full
    assert calm.rates == (1.0, 2.0) and set(calm.rates) < set(full.rates)
