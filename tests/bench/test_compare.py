"""`splitserve bench --compare`: real clusters (tiny model) one after the other, end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from splitserve.bench.compare import COMPARE_SCHEMA, Topology, gap_stats, goodput_by_slo
from splitserve.bench.compare_plots import pick_timeline_stream, timeline_inputs
from splitserve.bench.records import RequestRecord
from splitserve.cli import main
from tests.helpers.checkpoints import make_model_dir

RUN_KEYS = {"sent", "completed", "failed", "ttft_s", "tpot_s", "itl_s", "e2e_s", "rate_rps",
            "slo_attainment", "attainment_by_slo", "topology", "label"}


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (here: the test's model path)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry))
    return pids


def test_topology_parse_and_validation() -> None:
    assert Topology.parse("2m") == Topology("2m", num_mixed=2)
    assert Topology.parse("1P1D") == Topology("1p1d", num_prefill=1, num_decode=1)
    assert Topology.parse("1p1d").label == "disaggregated 1P1D"
    with pytest.raises(ValueError, match="topology"):
        Topology.parse("2x")
    with pytest.raises(ValueError, match="both prefill and decode"):
        Topology("bad", num_prefill=1)


def test_goodput_by_slo_picks_highest_passing_rate() -> None:
    summaries = [
        {"rate_rps": 1.0, "attainment_by_slo": {"ttft": 1.0, "tpot": 0.95}},
        {"rate_rps": 2.0, "attainment_by_slo": {"ttft": 0.5, "tpot": 0.9}},
        {"rate_rps": 4.0, "attainment_by_slo": {"ttft": 0.95, "tpot": 0.2}},  # noisy pass
    ]
    assert goodput_by_slo(summaries, 0.9) == {"tpot": 2.0, "ttft": 4.0}
    assert goodput_by_slo(summaries, 0.99) == {"tpot": 0.0, "ttft": 1.0}


def test_compare_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model_dir("llama", tmp_path / "model", max_position_embeddings=2048)
    out = tmp_path / "out"
    code = main([
        "bench", "--compare", "2m,1p1d", "--model", str(model), "--cores", "0",
        "--worker-arg=--dtype=float32", "--worker-arg=--num-blocks=128",
        "--workload", "mixed-long", "--length-scale", "32", "--sweep", "2,4",
        "--num-requests", "6", "--duration", "20", "--timeout", "60",
        "--slo", "ttft=2:", "--slo", "tpot=:0.5", "--max-per-topology", "240",
        "--out", str(out), "--no-progress",
    ])
    assert code == 0
    table = capsys.readouterr().out
    assert "colocated 2x mixed" in table and "disaggregated 1P1D" in table
    assert "goodput 1p1d:" in table and "load average" in table

    data = json.loads((out / "compare.json").read_text())
    assert data["schema"] == COMPARE_SCHEMA
    assert [t["name"] for t in data["topologies"]] == ["2m", "1p1d"]
    assert data["cores"] == [0] and data["rates_rps"] == [2.0, 4.0]
    assert set(data["slos"]) == {"ttft", "tpot"} and data["skipped"] == []
    assert len(data["loadavg_before"]) == 3 and len(data["loadavg_after"]) == 3
    for name in ("2m", "1p1d"):
        runs = data["runs"][name]
        assert [r["rate_rps"] for r in runs] == [2.0, 4.0]
        for run in runs:
            assert RUN_KEYS <= set(run)
            assert run["sent"] == run["completed"] + run["failed"]
            assert run["completed"] >= 1 and run["topology"] == name
            assert set(run["attainment_by_slo"]) == {"ttft", "tpot"}
            assert {"first_itl_s", "itl_after_first_s", "router_counters"} <= set(run)
            lines = (out / name / f"rate_{run['rate_rps']:g}.jsonl").read_text().splitlines()
            assert len(lines) == 6
        assert set(data["goodput_rps"][name]) == {"ttft", "tpot"}
        assert all(g in (0.0, 2.0, 4.0) for g in data["goodput_rps"][name].values())
    for png in ("attainment_ttft", "attainment_tpot", "itl_cdf", "ttft_cdf", "timeline"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both clusters were stopped: no worker or router serving this model is left
    assert _processes_mentioning(str(model)) == []


def test_compare_needs_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--compare", "2m,1p1d", "--no-progress"]) == 2
    assert "--compare needs --model" in capsys.readouterr().err


def test_compare_rejects_unequal_topologies(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--compare", "2m,2p1d", "--model", str(tmp_path),
                 "--tokenizer", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "same number of workers" in capsys.readouterr().err


def _record(index: int, send_s: float, gaps: list[float], is_long: bool = False) -> RequestRecord:
    return RequestRecord(index=index, scheduled_s=send_s, input_len=8, requested_output_len=4,
                         is_long=is_long, send_s=send_s, ttft_s=0.1, itl_s=gaps,
                         e2e_s=0.1 + sum(gaps), output_len=len(gaps) + 1)


def test_gap_stats_splits_first_gap_from_later_gaps() -> None:
    records = [_record(0, 0.0, [1.0, 0.1, 0.1]), _record(1, 0.5, [3.0, 0.2]),
               RequestRecord(2, 0.0, 8, 4, send_s=0.0, error="boom")]
    stats = gap_stats(records)
    assert stats["first_itl_s"]["p50"] == pytest.approx(2.0)  # median of 1.0, 3.0
    assert stats["first_itl_s"]["max"] == pytest.approx(3.0)
    assert stats["itl_after_first_s"]["max"] == pytest.approx(0.2)
    assert stats["itl_after_first_s"]["mean"] == pytest.approx(0.4 / 3)


def test_timeline_picks_the_stream_overlapping_most_long_prompts() -> None:
    # stream 0 spans [0, 5.1] and sees both long sends; stream 1 spans [6, 6.3] and none
    colocated = [_record(0, 0.0, [1.0] * 5), _record(1, 6.0, [0.1, 0.1]),
                 _record(2, 1.0, [0.1], is_long=True), _record(3, 3.0, [0.1], is_long=True)]
    disagg = [_record(0, 0.0, [0.1] * 5), _record(1, 6.0, [0.1, 0.1] * 10),
              _record(2, 1.0, [0.1], is_long=True), _record(3, 3.0, [0.1], is_long=True)]
    runs = {"colocated": colocated, "disaggregated": disagg}
    assert pick_timeline_stream(runs) == 0
    picked = timeline_inputs(runs)
    for records in picked.values():
        assert [r.index for r in records if r.itl_s] == [0]  # long prompts kept as markers
        assert sorted(r.index for r in records if r.is_long) == [2, 3]
