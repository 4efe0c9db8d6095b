"""`splitserve bench` end to end: flags, outputs on disk, exit codes, light imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitserve.bench.arrivals import TraceScaling, read_trace
from splitserve.cli import main

from .fake_server import FakeConfig, free_port, serve

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # keep the caller's PYTHONPATH after ours (packages installed with --target live there)
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_bench_writes_records_summary_table_and_plots(
    tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with serve(FakeConfig(token_delay_s=0.002)) as url:
        code = main([
            "bench", "--url", url, "--tokenizer", str(tokenizer_dir), "--workload",
            "mixed-long", "--length-scale", "64", "--output-len", "fixed:6",
            "--num-requests", "20", "--sweep", "30,60", "--ttft-slo", "2", "--tpot-slo", "1",
            "--out", str(out), "--no-progress", "--label", "fake",
        ])
    assert code == 0
    table = capsys.readouterr().out
    assert "fake 30 rps" in table and "fake 60 rps" in table
    assert "goodput: 60 req/s" in table
    assert "scaling: lengths / 64" in table
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["goodput"]["goodput_rps"] == 60.0
    for rate in ("30", "60"):
        summary = json.loads((out / f"rate_{rate}.summary.json").read_text())
        assert summary["sent"] == summary["completed"] + summary["failed"] == 20
        assert summary["workload"]["name"] == "mixed-long+custom"
        assert len((out / f"rate_{rate}.jsonl").read_text().splitlines()) == 20
    for png in ("ttft_cdf", "itl_cdf", "timeline", "attainment"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_flag_keeps_the_routers_timeline_per_record(tokenizer_dir: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    with serve(FakeConfig(token_delay_s=0.001)) as url:
        for flag, name in ((["--timeline"], "with"), ([], "without")):
            assert main(["bench", "--url", url, "--tokenizer", str(tokenizer_dir),
                         "--output-len", "fixed:3", "--num-requests", "4", "--rate", "50",
                         "--out", str(out / name), "--no-progress", *flag]) == 0
    with_tl = [json.loads(x) for x in (out / "with" / "run.jsonl").read_text().splitlines()]
    without = [json.loads(x) for x in (out / "without" / "run.jsonl").read_text().splitlines()]
    assert [r["timeline"]["route_kind"] for r in with_tl] == ["fake"] * 4
    assert all(r["timeline"] is None for r in without)


def test_goodput_search_on_a_server_that_slows_with_load(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    fake = FakeConfig(ttft_s=0.005, ttft_per_inflight_s=0.04, token_delay_s=0.002)
    with serve(fake) as url:
        code = main([
            "bench", "--url", url, "--tokenizer", str(tokenizer_dir), "--input-len", "fixed:8",
            "--output-len", "fixed:4", "--arrival", "constant", "--num-requests", "10",
            "--ttft-slo", "0.25", "--goodput-search", "10,320", "--max-runs", "5",
            "--out", str(tmp_path), "--no-progress",
        ])
    assert code == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    runs = sweep["goodput"]["runs"]
    assert 1 < len(runs) <= 5 and len(sweep["summaries"]) == len(runs)
    assert runs[0][0] == 10  # starts at the lower bound (default --rate 1 is outside)
    assert any(att < 0.9 for _, att in runs)  # it found a failing rate to bracket
    goodput = sweep["goodput"]["goodput_rps"]
    assert [att for rate, att in runs if rate == goodput][0] >= 0.9
    assert 10 <= goodput < 320


def test_bare_trace_names_resolve_under_the_trace_dir(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from splitserve.bench.cli import _find_trace

    traces = tmp_path / "shared" / "traces"
    traces.mkdir(parents=True)
    (traces / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    rel = os.path.join("..", "shared", "traces")
    assert os.path.samefile(_find_trace("t.csv", rel), traces / "t.csv")
    assert _find_trace("/abs/x.csv", rel) == "/abs/x.csv"
    assert _find_trace("missing.csv", rel) == os.path.join(rel, "missing.csv")


def test_preset_choices_match_the_presets() -> None:
    from splitserve.bench.cli import PRESET_NAMES
    from splitserve.bench.workloads import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)


def test_trace_replay_records_its_scaling(tokenizer_dir: Path, tmp_path: Path) -> None:
    trace = Path("/work/shared/traces/azure_llm_2023_code.csv")
    if not trace.is_file():
        pytest.skip("shared traces absent")
    with serve(FakeConfig(token_delay_s=0.001, max_model_len=512)) as url:
        code = main([
            "bench", "--url", url, "--tokenizer", str(tokenizer_dir), "--trace", str(trace),
            "--trace-window", "0:20", "--length-scale", "32", "--speed", "4",
            "--num-requests", "100", "--out", str(tmp_path), "--no-progress",
        ])
    assert code == 0
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    in_window = read_trace(TraceScaling(str(trace), 0, 20, 32, 4))
    assert summary["arrival"] == "trace" and summary["sent"] == len(in_window) > 5
    assert summary["label"] == "azure_llm_2023_code"
    assert summary["trace_scaling"]["length_scale"] == 32
    assert "speed x4" in summary["trace_scaling"]["description"]
    records = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert max(r["input_len"] + r["requested_output_len"] for r in records) <= 512


def test_unreachable_server_clear_error_nonzero_exit(tokenizer_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve.cli", "bench", "--url", url, "--tokenizer",
         str(tokenizer_dir), "--num-requests", "3"],
        capture_output=True, text=True, env=_env(), timeout=60, cwd=REPO,
    )
    assert proc.returncode != 0
    assert "cannot reach server" in proc.stderr and url in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_flag_values_are_clear_errors(tokenizer_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--url", "http://127.0.0.1:1", "--tokenizer", str(tokenizer_dir),
                 "--arrival", "trace"])
    assert code == 2
    assert "--arrival trace needs --trace" in capsys.readouterr().err


def test_bench_never_imports_torch_and_cli_is_light() -> None:
    code = (
        "import sys, splitserve.bench.cli; "
        "assert not {'httpx', 'matplotlib', 'tokenizers'} & set(sys.modules), 'heavy cli'; "
        "import splitserve.bench.runner, splitserve.bench.plots, splitserve.bench.report, "
        "splitserve.bench.progress; from splitserve.bench import run_sweep, plots; "
        "plots._pyplot(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60)
