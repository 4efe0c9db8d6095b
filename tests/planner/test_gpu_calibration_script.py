"""benchmarks/planner_gpu_calibration.py: a bench sweep's records beside their replay."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from benchmarks import planner_gpu_calibration as gc
from splitserve.planner.profile_format import save_profile
from tests.planner.test_calibration_replay_routes import _profile


def _records(n: int, ttft_s: float) -> list[dict]:
    timeline = {"prefill.queue_s": 0.5, "decode.kv_transfer_s": 0.2,
                "prefill.engine_first_scheduled_s": 10.0, "prefill.engine_first_token_s": 10.3}
    return [{"send_s": 0.1 * i, "input_len": 300, "output_len": 5, "requested_output_len": 5,
             "ttft_s": ttft_s, "tpot_s": 0.05, "success": True, "timeline": timeline}
            for i in range(n)]


def test_real_statistics_stages_and_errors(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    for rate, ttft in (("2", 1.0), ("4", 3.0)):
        (bench / f"rate_{rate}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in _records(10, ttft)) + "\n")
    with tarfile.open(tmp_path / "bench.tar.gz", "w:gz") as tar:
        tar.add(bench, arcname="bench")
    save_profile(_profile(), tmp_path / "profile.json")
    out = tmp_path / "result.json"
    gc.main([str(tmp_path), "--out", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [r["rate_rps"] for r in runs] == [2.0, 4.0]
    assert runs[1]["real"]["p90_ttft_s"] == pytest.approx(3.0)
    assert runs[1]["real"]["attainment"] == 0.0  # TTFT 3 s > the 2 s SLO
    # a 300-token prompt alone is priced ~0.06 s by this profile: the simulation is faster
    assert runs[0]["errors"]["p90_ttft_rel_err"] < -0.5
    stages = runs[0]["real_stages"]
    assert stages["prefill.queue_s"]["p50"] == pytest.approx(0.5)
    assert stages["decode.kv_transfer_s"]["p90"] == pytest.approx(0.2)
