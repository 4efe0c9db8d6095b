"""`splitserve profile`: real engine steps on a small local model -> a profile the planner
reads and prices. Only robust timing facts are asserted (the machine is shared)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from splitserve.engine import profile_cli
from splitserve.engine.profile_grid import Cell
from splitserve.engine.profiler import (
    FULL_GRID,
    QUICK_GRID,
    ProfileGrid,
    _blocks_needed,
    _refine,
    profile_engine,
)
from splitserve.planner import Pool, ProfileLatencyModel, SchedulerConfig, load_profile, simulate
from splitserve.planner.workload import fixed_workload, generate
from tests.helpers.checkpoints import make_model_dir


def run_profile(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    profile_cli.register(parser.add_subparsers())
    args = parser.parse_args(["profile", *argv])
    return int(args.func(args))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Wide enough that a 512-token prefill is compute, not Python overhead.
    return make_model_dir("llama", tmp_path_factory.mktemp("model"), hidden_size=256,
                          intermediate_size=768, num_attention_heads=4,
                          num_key_value_heads=2, num_hidden_layers=2)


@pytest.fixture(scope="module")
def profile_path(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "profile.json"
    assert run_profile(str(model_dir), "--quick", "--num-threads", "1",
                       "--dtype", "float32", "--out", str(out)) == 0
    return out


def test_quick_profile_is_a_valid_planner_profile(profile_path: Path, model_dir: Path) -> None:
    profile = load_profile(profile_path)
    hf = json.loads((model_dir / "config.json").read_text())
    head_dim = hf["hidden_size"] // hf["num_attention_heads"]
    # K and V, every layer, float32: computed from config.json, not from engine code
    assert profile["kv_bytes_per_token"] == (
        2 * hf["num_hidden_layers"] * hf["num_key_value_heads"] * head_dim * 4)
    assert profile["num_layers"] == hf["num_hidden_layers"]
    assert profile["tensor_parallel"] == 1
    # the serving engine's default pool: 1 GiB of KV, whole 16-token blocks
    per_block = 16 * profile["kv_bytes_per_token"]
    assert profile["kv_capacity_tokens"] == (1 << 30) // per_block * 16
    assert profile["prefill"]["num_tokens"] == list(QUICK_GRID.prefill_tokens)
    assert profile["decode"]["batch_size"] == list(QUICK_GRID.decode_batch)
    assert profile["hardware"]["num_threads"] == 1
    assert profile["hardware"]["name"] == "cpu-1thread"
    assert profile["model"]["dtype"] == "float32"
    assert len(profile["model"]["config_hash"]) == 64
    assert profile["repeats"] == QUICK_GRID.num_repeats
    # a smoke profile measures its grid only
    assert profile["refine_tol"] == 0
    assert profile["refined"] == {"prefill_tokens": [], "decode_batch": []}
    # one thread cannot use more than about one core's worth of CPU per wall second
    assert 0 < profile["cpu_share"] <= 1.2


def test_profile_latencies_grow_with_work(profile_path: Path) -> None:
    model = ProfileLatencyModel(load_profile(profile_path))
    assert model.prefill_s(512) > model.prefill_s(8)
    assert model.prefill_s(512, 256) > model.prefill_s(8, 0)
    # a mixed step costs at least its prefill part
    assert model.step_s(64, 64 * 65 / 2, 64, 4, 256) >= model.prefill_s(64) * 0.99


def test_simulator_runs_on_the_measured_profile(profile_path: Path) -> None:
    model = ProfileLatencyModel(load_profile(profile_path))
    requests = generate(fixed_workload(64, 8), rate=2.0, num_requests=20, seed=0)
    result = simulate(requests, [Pool("mixed", 1, model)], SchedulerConfig(token_budget=512))
    assert result.num_unfinished == 0
    # nothing beats one prefill alone: every TTFT is at least the measured 64-token prefill
    assert float(np.min(result.ttft_s)) >= model.prefill_s(64) * 0.99


def test_missing_model_dir_is_a_clear_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = run_profile(str(tmp_path / "nope"), "--quick", "--out", str(tmp_path / "p.json"))
    assert code == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--prefill-tokens", "64,8"], "prefill_tokens must be strictly increasing"),
    (["--decode-batch", "4"], "decode_batch needs at least 2 values"),
    (["--decode-context=-1,5"], "decode_context must be strictly increasing from >= 0"),
    (["--prefill-tokens", "8,4096"], "max length is 1024"),
    (["--decode-batch", "1,2", "--decode-context", "0,2048"], "max length is 1024"),
    (["--repeats", "0"], "num_repeats must be >= 1"),
    (["--num-threads", "0"], "--num-threads must be >= 1"),
    (["--device", "gpu"], "device must be cpu or cuda[:N]"),
    (["--refine-tol", "1.5"], "refine_tol must be a number in [0, 1)"),
    (["--refine-tol=-0.1"], "refine_tol must be a number in [0, 1)"),
    (["--refine-tol", "nan"], "refine_tol must be a number in [0, 1)"),
    (["--max-refine-points=-1"], "max_refine_points must be an integer >= 0"),
])
def test_bad_grid_is_a_clear_error(model_dir: Path, tmp_path: Path, flags: list[str],
                                   message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_profile(str(model_dir), "--quick", "--out", str(tmp_path / "p.json"), *flags)
    assert code == 2
    assert message in capsys.readouterr().err


def test_non_integer_grid_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_profile("m", "--prefill-tokens", "8,lots")
    assert exc.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_profile("m", "--refine-tol", "tight")
    assert exc.value.code == 2
    assert "invalid float value" in capsys.readouterr().err


def test_refined_profile_holds_the_refined_points_in_its_tables(model_dir: Path) -> None:
    # tol 1e-9: no measured midpoint is that close to the chord, so the first midpoints
    # (12 and 2) are always measured and the rest refine up to the cap of 2 per axis
    grid = ProfileGrid(prefill_tokens=(8, 16), prefill_context=(0, 16), decode_batch=(1, 4),
                       decode_context=(0, 64), num_repeats=1, num_warmup=0, num_settle=0,
                       refine_tol=1e-9, max_refine_points=2)
    lines: list[str] = []
    profile = profile_engine(model_dir, grid=grid, dtype="float32", num_threads=1,
                             progress=lines.append)
    ProfileLatencyModel(profile)  # the planner reads it (validates the schema)
    refined = profile["refined"]
    assert profile["refine_tol"] == 1e-9
    assert 12 in refined["prefill_tokens"] and 2 in refined["decode_batch"]
    # ... and are off the chord by more than 1e-9 at their first measurement too, so each
    # is measured once more; only added points are, each at most once
    remeasured = profile["remeasured"]
    assert 12 in remeasured["prefill_tokens"] and 2 in remeasured["decode_batch"]
    for name in ("prefill_tokens", "decode_batch"):
        assert set(remeasured[name]) <= set(refined[name])
        assert len(set(remeasured[name])) == len(remeasured[name])
    for table, row_axis, col_axis, name, coarse in (
            ("prefill", "num_tokens", "context_len", "prefill_tokens", grid.prefill_tokens),
            ("decode", "batch_size", "context_tokens", "decode_batch", grid.decode_batch)):
        rows, body = profile[table][row_axis], profile[table]
        assert all(b > a for a, b in zip(rows, rows[1:], strict=False))
        assert 1 <= len(refined[name]) <= 2
        assert sorted(set(coarse) | set(refined[name])) == rows
        assert all(coarse[0] < v < coarse[-1] for v in refined[name])
        assert len(body["latency_s"]) == len(rows)
        assert all(len(row) == len(body[col_axis]) for row in body["latency_s"])
    assert any(line.startswith("refinement round 1") for line in lines)
    assert any(line.startswith("refinement round 2") and "measured again, off the chord"
               in line for line in lines)


def test_refinement_measures_an_outlier_again_and_keeps_the_faster_median() -> None:
    # a pure stand-in for the measurement: straight lines, except that decode batch 24
    # hits a burst of load at context 0 when first measured (20%) and at context 64 when
    # measured again (3%): the table keeps the faster of the two at each
    grid = ProfileGrid(prefill_tokens=(8, 16), prefill_context=(0, 16), decode_batch=(16, 32),
                       decode_context=(0, 64), refine_tol=0.05, max_refine_points=8)
    labels: list[str] = []
    num_measured: dict[Cell, int] = {}

    def cost(cell: Cell) -> float:
        table, row, col = cell
        base = 0.01 + 0.001 * row + 1e-5 * col if table == "prefill" else (
            0.01 + 0.0004 * row + 2e-6 * col)
        num_measured[cell] = num_measured.get(cell, 0) + 1
        bursts = {("decode", 24, 0): (0.2, 0.0), ("decode", 24, 64): (0.0, 0.03)}
        return base * (1 + bursts.get(cell, (0.0, 0.0))[num_measured[cell] - 1])

    def measure(cells: list[Cell], label: str) -> dict[Cell, float]:
        labels.append(label)
        return {cell: cost(cell) for cell in cells}

    median = measure(grid.cells(), "grid")
    prefill_axis, decode_axis, fields = _refine(grid, median, measure)
    assert (prefill_axis, decode_axis) == ([8, 12, 16], [16, 24, 32])
    assert fields == {"refined": {"prefill_tokens": [12], "decode_batch": [24]},
                      "remeasured": {"prefill_tokens": [], "decode_batch": [24]}}
    assert labels[1:] == [
        "refinement round 1 (prefill tokens [12], decode batch [24])",
        "refinement round 2 (prefill tokens [], decode batch [24]; measured again, off the "
        "chord: prefill tokens [], decode batch [24])"]
    for t in grid.decode_context:  # the table keeps the on-the-line measurement
        assert median[("decode", 24, t)] == pytest.approx(0.01 + 0.0004 * 24 + 2e-6 * t)
        assert num_measured[("decode", 24, t)] == 2


def test_kv_blocks_cover_batches_between_grid_points() -> None:
    # batch 1 x 1024 tokens: 64 blocks; batch 64: 16 tokens each, 64 blocks; but batch 33
    # (a refined point) holds 31 tokens each, 2 blocks each: 66
    grid = ProfileGrid((8, 16), (0, 16), (1, 64), (0, 1024), refine_tol=0.0)
    assert _blocks_needed(grid, 16) == 64
    refining = dataclasses.replace(grid, refine_tol=0.05)
    assert _blocks_needed(refining, 16) >= 66


def test_builtin_grid_is_trimmed_to_a_short_model() -> None:
    grid = FULL_GRID.trimmed(1024)
    assert grid.prefill_tokens[-1] + grid.prefill_context[-1] <= 1024
    assert grid.prefill_context == (0, 512)  # 2048 dropped first
    assert grid.decode_context == (0, 1024)
    assert grid.decode_batch == FULL_GRID.decode_batch
    with pytest.raises(ValueError, match="at least 2 values"):
        FULL_GRID.trimmed(8)


def test_grid_validates_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="num_warmup must be >= 0"):
        ProfileGrid((1, 2), (0, 1), (1, 2), (0, 1), num_warmup=-1)
    for tol in (-0.01, 1.0, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=r"refine_tol must be a number in \[0, 1\)"):
            ProfileGrid((1, 2), (0, 1), (1, 2), (0, 1), refine_tol=tol)  # type: ignore[arg-type]
    for cap in (-1, 2.5):
        with pytest.raises(ValueError, match="max_refine_points must be an integer >= 0"):
            ProfileGrid((1, 2), (0, 1), (1, 2), (0, 1),
                        max_refine_points=cap)  # type: ignore[arg-type]
    assert ProfileGrid((1, 2), (0, 1), (1, 2), (0, 1)).refine_tol == 0.05
    assert FULL_GRID.refine_tol > 0 and QUICK_GRID.refine_tol == 0
    grid = ProfileGrid((1, 2), (0, 1), (1, 2), (0, 8))
    grid.check_fits(8)
    with pytest.raises(ValueError, match="decode grid puts 8 tokens"):
        grid.check_fits(7)
