from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitserve.cli import main

from .conftest import TINY_CONFIG


def _plan(out: Path, *extra: str) -> list[str]:
    return [
        "plan",
        "--hardware", "l40s",
        "--workload", "code",
        "--rate", "40",
        "--ttft", "0.5",
        "--tpot", "0.05",
        "--num-requests", "300",
        "--tp", "1",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_plan_writes_json_and_png(
    tiny_config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(_plan(out, "--model", str(tiny_config_path.parent))) == 0
    plan = json.loads((out / "plan.json").read_text())
    png = (out / "attainment_vs_rate.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert plan["hardware"] == "l40s" and plan["slo"]["ttft_s"] == 0.5
    for side in ("colocated", "disaggregated"):
        assert plan[side]["attainment"] >= 0.9
        assert plan[side]["goodput_per_gpu_rps"] > 0
        assert len(plan["attainment_vs_rate"][side]) == len(plan["attainment_vs_rate"]["rates_rps"])
    printed = capsys.readouterr().out
    assert "recommendation:" in printed and "$/M output tokens" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hardware", "tpu-v9"], "unknown hardware"),
        (["--ttft", "0"], "TTFT SLO must be > 0"),
        (["--tpot", "-0.1"], "TPOT SLO must be > 0"),
        (["--workload", "poetry"], "unknown workload"),
        (["--trace", "/nonexistent/trace.csv"], "trace not found"),
    ],
)
def test_plan_bad_input_exits_2_with_message(
    tiny_config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = _plan(tmp_path / "o", "--model", str(tiny_config_path), "--no-plot", *extra)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_plan_config_missing_field_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = {k: v for k, v in TINY_CONFIG.items() if k != "hidden_size"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(broken))
    assert main(_plan(tmp_path / "o", "--model", str(path), "--no-plot")) == 2
    assert "hidden_size" in capsys.readouterr().err


def test_plan_reads_a_trace_file(tiny_config_path: Path, tmp_path: Path) -> None:
    rows = [
        f"2023-11-16 18:15:{i // 10:02d}.{i % 10}000000,{300 + i},{20 + i % 7}" for i in range(200)
    ]
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = [
        "plan", "--model", str(tiny_config_path), "--hardware", "a100", "--trace", str(trace),
        "--ttft", "0.5", "--tpot", "0.05", "--tp", "1", "--no-plot", "--no-goodput",
        "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["workload"] == "trace.csv" and plan["num_requests"] == 200
    assert plan["rate_rps"] == pytest.approx(10.0, rel=0.01)


def test_plan_with_a_measured_profile_uses_it(
    tiny_config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--profile` replaces the roofline: a profile 10x slower than another needs more
    instances for the same load and SLOs."""
    from splitserve.planner.profile_format import make_profile, save_profile

    def profile(scale: float) -> Path:
        toks, ctx = [1, 512, 4096], [0, 4096]
        batch, kv = [1, 64, 256], [0, 65536]
        data = make_profile(
            model_name="tiny", hardware_name="test", tensor_parallel=1,
            kv_capacity_tokens=200_000, kv_bytes_per_token=4096, num_layers=2,
            prefill=(toks, ctx, [[scale * (0.002 + 2e-5 * t) * (1 + c / 8192) for c in ctx]
                                 for t in toks]),
            decode=(batch, kv, [[scale * (0.004 + 1e-5 * b) * (1 + k / 65536) for k in kv]
                                for b in batch]))
        path = tmp_path / f"profile_{scale}.json"
        save_profile(data, path)
        return path

    results = {}
    for scale in (1.0, 10.0):
        out = tmp_path / f"out_{scale}"
        args = _plan(out, "--model", str(tiny_config_path.parent), "--profile",
                     str(profile(scale)), "--no-plot", "--no-goodput")
        assert main(args) == 0
        results[scale] = json.loads((out / "plan.json").read_text())
    fast, slow = results[1.0]["colocated"], results[10.0]["colocated"]
    assert slow["num_gpus"] > fast["num_gpus"]
    assert main(_plan(tmp_path / "bad", "--model", str(tiny_config_path.parent),
                      "--profile", str(tmp_path / "missing.json"))) == 2
