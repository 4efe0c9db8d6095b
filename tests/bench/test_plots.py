"""Plot inputs: the timeline of one stream and labelled multi-run figures (compare glue)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitserve.bench import plots
from splitserve.bench.records import RequestRecord


def stream(index: int, send_s: float, gaps: list[float], is_long: bool = False,
           input_len: int = 10) -> RequestRecord:
    return RequestRecord(index, send_s, input_len, len(gaps) + 1, is_long, send_s=send_s,
                         ttft_s=0.5, itl_s=gaps, e2e_s=0.5 + sum(gaps), output_len=len(gaps) + 1,
                         num_chunks=len(gaps) + 1)


def test_timeline_places_each_gap_at_its_arrival_time() -> None:
    short = stream(0, 0.0, [0.1, 0.1])
    long_stream = stream(1, 1.0, [0.1, 0.1, 2.0, 0.1])
    failed = RequestRecord(2, 0.0, 10, 50, send_s=0.0, itl_s=[0.1] * 40, error="boom")
    assert plots.longest_stream([short, long_stream, failed]) is long_stream
    times, gaps = plots.stream_timeline(long_stream)
    assert times == pytest.approx([1.6, 1.7, 3.7, 3.8])
    assert gaps == [0.1, 0.1, 2.0, 0.1]
    assert plots.longest_stream([failed]) is None


def test_labelled_plots_write_pngs(tmp_path: Path) -> None:
    colocated = [stream(0, 0.0, [0.05] * 30), stream(1, 0.7, [0.05], is_long=True,
                                                     input_len=4000)]
    disagg = [stream(0, 0.0, [0.04] * 30)]
    runs = {"colocated": colocated, "1P1D": disagg}
    summaries = {
        "colocated": [{"rate_rps": 1.0, "slo_attainment": 1.0},
                      {"rate_rps": 2.0, "slo_attainment": 0.5}],
        "1P1D": [{"rate_rps": 1.0, "slo_attainment": 1.0},
                 {"rate_rps": 2.0, "slo_attainment": 0.95}],
    }
    paths = [
        plots.plot_ttft_cdf(runs, str(tmp_path / "ttft.png")),
        plots.plot_itl_cdf(runs, str(tmp_path / "itl.png")),
        plots.plot_stream_timelines({**runs, "empty": []}, str(tmp_path / "timeline.png")),
        plots.plot_attainment_vs_rate(summaries, str(tmp_path / "att.png")),
    ]
    for path in paths:
        assert Path(path).read_bytes()[:4] == b"\x89PNG"
