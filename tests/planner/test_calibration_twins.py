"""Each repeat against its twins (benchmarks/calibration/twins.py), hand-checked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.calibration import twins


def _arrays(ttft: np.ndarray) -> dict[str, np.ndarray]:
    return {"ttft_s": ttft, "tpot_s": np.full(len(ttft), 0.01),
            "finished": np.ones(len(ttft), bool)}


def _point(rate: float, contaminated: tuple[bool, ...] = (False, False, False),
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ttft = np.arange(1.0, 11.0)  # the same ten requests in every repeat
    rows = [{"topology": "1P1D", "rate_rps": rate, "contaminated": c} for c in contaminated]
    arrays = [{"real": _arrays(ttft), "sim": _arrays(1.2 * ttft)} for _ in contaminated]
    return rows, arrays


def test_identical_repeats_agree_and_a_slow_simulation_is_off_by_its_factor() -> None:
    rows, arrays = _point(2.0)
    d = twins.differences(rows, arrays, ("sim",))
    assert d[twins.REAL]["attainment_pp@q90"] == [0.0, 0.0, 0.0]
    assert d["sim"]["p90_ttft_rel_err"] == pytest.approx([0.2] * 3)
    # the twins' q90 TTFT is 9.1 s: 9 of 10 real requests meet it, 7 simulated (1.2..8.4)
    assert d["sim"]["attainment_pp@q90"] == pytest.approx([-20.0] * 3)
    s = twins.summarize(d)
    assert s[twins.REAL]["attainment_pp@q90"]["num_within_target"] == 3
    assert s["sim"]["attainment_pp@q90"]["num_within_target"] == 0
    assert s["sim"]["p90_tpot_rel_err"]["num_within_target"] == 3
    assert "0/3 (20.0 pp)" in twins.markdown(s)


def test_points_without_three_quiet_repeats_are_left_out() -> None:
    rows, arrays = _point(2.0, (False, True, False))
    more_rows, more_arrays = _point(4.0)
    d = twins.differences(rows + more_rows, arrays + more_arrays, ("sim",))
    assert len(d["sim"]["attainment_pp@q50"]) == 3  # only the 4 req/s point's three
