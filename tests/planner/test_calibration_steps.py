"""Rebuilding a worker's engine steps from token arrival times (benchmarks/calibration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.calibration.pooled import judge
from benchmarks.calibration.steps import decode_ratios, reconstruct


def _record(send_s: float, token_s: list[float], input_len: int, sched_s: float,
            worker: str = "http://w0", jitter_s: float = 0.0) -> dict[str, Any]:
    """A mixed-worker request whose tokens left the engine at `token_s` (absolute) and
    reached the client `jitter_s` later (the first token exactly on time)."""
    arrive = [token_s[0]] + [t + jitter_s for t in token_s[1:]]
    return {"success": True, "send_s": send_s, "ttft_s": arrive[0] - send_s,
            "itl_s": list(np.diff(arrive)), "input_len": input_len,
            "timeline": {"workers": {"full": worker},
                         "full.engine_first_scheduled_s": sched_s - send_s,
                         "full.engine_first_token_s": token_s[0] - send_s}}


def test_steps_are_the_bursts_of_tokens_between_running_requests() -> None:
    # engine steps end at 0.10, 0.12, 0.14, 0.17, 0.20; A prefilled in the step ending at
    # 0.10, B in the one from 0.12 to 0.14
    a = _record(0.0, [0.10, 0.12, 0.14, 0.17], 10, sched_s=0.0)
    b = _record(0.12, [0.14, 0.17, 0.20], 20, sched_s=0.12)
    steps = sorted(reconstruct([a, b]), key=lambda s: s.end_s)
    assert [s.duration_s for s in steps] == pytest.approx([0.02, 0.02, 0.03, 0.03])
    assert [s.num_decode for s in steps] == [1, 1, 2, 1]
    assert [s.has_prompt for s in steps] == [False, True, False, False]
    assert [s.decode_ctx_tokens for s in steps] == [11, 12, 13 + 21, 22]


def test_tokens_of_one_step_arriving_apart_still_make_one_step() -> None:
    # A's decode tokens reach the client 2 ms after B's of the same step
    a = _record(0.0, [0.10, 0.12, 0.14], 10, sched_s=0.0, jitter_s=0.002)
    b = _record(0.0, [0.10, 0.12, 0.14], 10, sched_s=0.0)
    steps = reconstruct([a, b])
    assert [s.num_decode for s in steps] == [2, 2]
    assert [s.duration_s for s in steps] == pytest.approx([0.02, 0.02])


def test_a_gap_with_nothing_running_through_is_not_a_step() -> None:
    a = _record(0.0, [0.10, 0.12], 10, sched_s=0.0)
    b = _record(0.50, [0.60, 0.62], 10, sched_s=0.5)
    steps = reconstruct([a, b])
    assert sorted(round(s.duration_s, 3) for s in steps) == [0.02, 0.02]


def test_decode_ratio_prices_pure_decode_steps_with_the_model() -> None:
    class Flat:
        def step_s(self, n: int, pairs: float, kv: int, num_decode: int, ctx: int) -> float:
            return 0.01 * num_decode

    a = _record(0.0, [0.10, 0.12, 0.14, 0.17], 10, sched_s=0.0)
    b = _record(0.12, [0.14, 0.17, 0.20], 20, sched_s=0.12)
    ratios = decode_ratios(reconstruct([a, b]), Flat())
    # the step with B's prompt in it is left out
    assert sorted(np.round(ratios, 3)) == [1.5, 2.0, 3.0]


def test_repeats_are_pooled_and_their_spread_reported() -> None:
    rng = np.random.default_rng(0)

    def arrays(scale: float) -> dict[str, np.ndarray]:
        n = 200
        return {"ttft_s": scale * rng.uniform(0.1, 0.3, n),
                "tpot_s": scale * rng.uniform(0.02, 0.04, n),
                "finished": np.ones(n, dtype=bool)}

    rows = [{"topology": "2 mixed", "rate_rps": 4.0} for _ in range(2)]
    per_row = [{"real": arrays(1.0), "sim": arrays(1.0)}, {"real": arrays(1.2), "sim": arrays(1.0)}]
    (group,) = judge(rows, per_row, ("sim",), (2.0, 0.1))
    pooled_ttft = np.concatenate([per_row[0]["real"]["ttft_s"], per_row[1]["real"]["ttft_s"]])
    assert group["real"]["p90_ttft_s"] == pytest.approx(np.percentile(pooled_ttft, 90))
    lo, hi = group["repeat_spread"]["p90_ttft_rel"]
    assert lo < 0 < hi  # one repeat below the pooled p90, the other above
    # both metrics at their pooled p90: real attainment between 0.81 and 0.9
    assert 0.78 <= group["real"]["attainment_at"]["q90"] <= 0.9
    assert group["sim"]["error"]["attainment_pp@q90"] > 0  # the faster simulation meets more
    assert group["real"]["attainment"] == 1.0


def test_a_load_line_is_read_between_probe_points_never_beyond() -> None:
    from benchmarks.calibration.fit_steps import at_rate, line

    points = [{"token_rate": 50.0, "k": 1.0, "num_requests": 10},
              {"token_rate": 150.0, "k": 1.2, "num_requests": 10},
              {"token_rate": 250.0, "k": None, "num_requests": 10}]  # not measured: skipped
    fitted = line(points, "k")
    assert fitted is not None
    assert at_rate(fitted, 100.0, 0.0) == pytest.approx(1.1)
    assert at_rate(fitted, 400.0, 0.0) == pytest.approx(1.2)  # held at the last point
    assert at_rate(fitted, 0.0, 0.0) == pytest.approx(1.0)
    falling = line([{"token_rate": 50.0, "k": 1.2, "num_requests": 1},
                    {"token_rate": 150.0, "k": 1.0, "num_requests": 1}], "k")
    assert falling is not None and falling["per_token_rate"] == 0.0  # slope kept >= 0
    assert at_rate(None, 100.0, 0.7) == 0.7


def test_repeats_run_beside_other_peoples_jobs_leave_the_reference() -> None:
    from benchmarks.calibration.snapshot import contaminated

    quiet = {"foreign_cpu_s": 0.8, "duration_s": 47.0}
    busy = {"foreign_cpu_s": 8.0, "duration_s": 47.0}
    short = {"foreign_cpu_s": 1.0, "duration_s": 10.0}  # 10% of a core, but ~the quiet floor
    assert not contaminated(quiet) and contaminated(busy) and not contaminated(short)

    def arrays(ttft_s: float) -> dict[str, np.ndarray]:
        return {"ttft_s": np.full(50, ttft_s), "tpot_s": np.full(50, 0.03),
                "finished": np.ones(50, dtype=bool)}

    rows = [{"topology": "1P1D", "rate_rps": 2.0, "repeat": k, "contaminated": c,
             "foreign_cpu_s": f} for k, (c, f) in enumerate([(False, 0.5), (True, 9.0),
                                                               (False, 0.7)])]
    per_row = [{"real": arrays(t), "sim": arrays(0.2)} for t in (0.2, 0.4, 0.2)]
    (group,) = judge(rows, per_row, ("sim",), (2.0, 0.1))
    assert group["num_repeats"] == 2
    assert group["excluded_repeats"] == [{"repeat": 1, "foreign_cpu_s": 9.0}]
    assert group["real"]["p90_ttft_s"] == pytest.approx(0.2)


def test_busy_prompt_factor_prices_only_the_prompt_steps() -> None:
    from benchmarks.calibration.fit_steps import _busy_prompt_factor

    split = {"engine_busy_s": {"prefill-0": 12.0, "decode-1": 40.0}}
    sim = {"engine_busy_s": {"prefill": 10.0, "decode": 39.0},
           "prompt_busy_s": {"prefill": 10.0, "decode": 1.0}}
    assert _busy_prompt_factor(split, sim) == pytest.approx(1.2)  # the decode worker ignored
    mixed = {"engine_busy_s": {"mixed-0": 45.0, "mixed-1": 45.0}}
    sim = {"engine_busy_s": {"mixed": 80.0}, "prompt_busy_s": {"mixed": 30.0}}
    # the 50 s of decode-only steps stay as priced; the prompt steps take the rest
    assert _busy_prompt_factor(mixed, sim) == pytest.approx(40.0 / 30.0)
    assert _busy_prompt_factor(mixed, {"engine_busy_s": {"mixed": 5.0},
                                       "prompt_busy_s": {"mixed": 0.0}}) is None


def test_a_point_without_a_quiet_repeat_is_not_judged() -> None:
    from benchmarks.calibration.pooled import summarize

    def arrays(ttft_s: float) -> dict[str, np.ndarray]:
        return {"ttft_s": np.full(20, ttft_s), "tpot_s": np.full(20, 0.03),
                "finished": np.ones(20, dtype=bool)}

    rows = [{"topology": "1P1D", "rate_rps": 4.0, "repeat": 0, "contaminated": True,
             "foreign_cpu_s": 20.0},
            {"topology": "1P1D", "rate_rps": 2.0, "repeat": 0, "contaminated": False,
             "foreign_cpu_s": 0.1}]
    per_row = [{"real": arrays(0.4), "sim": arrays(0.2)}, {"real": arrays(0.2), "sim": arrays(0.2)}]
    groups = judge(rows, per_row, ("sim",), (2.0, 0.1))
    assert [g["all_contaminated"] for g in groups] == [True, False]
    ttft = summarize(groups, "sim")["p90_ttft_rel_err"]
    assert (ttft["of"], ttft["num_within_target"]) == (1, 1)  # the -50% point left out


def _split_record(send_s: float, token_s: list[float], sched_s: float,
                  route: str) -> dict[str, Any]:
    """A request on a split's decode worker whose engine there scheduled it at `sched_s`
    and whose first token reached the client at token_s[0] (absolute; the engine's clock
    is the client's)."""
    return {"success": True, "send_s": send_s, "ttft_s": token_s[0] - send_s,
            "itl_s": list(np.diff(token_s)), "input_len": 100,
            "timeline": {"workers": {"prefill": "http://p", "decode": "http://d"},
                         "route_kind": route,
                         "decode.engine_first_scheduled_s": sched_s - send_s,
                         "decode.engine_first_token_s": token_s[0] - send_s}}


def test_a_prompt_the_decode_worker_computes_itself_is_not_a_join() -> None:
    from benchmarks.calibration.steps import join_costs

    class Flat:
        def step_s(self, n: int, pairs: float, kv: int, num_decode: int, ctx: int) -> float:
            return 0.01 * num_decode

    # A decodes on the decode worker in steps ending 0.22, 0.24, 0.36, 0.38; B's prompt
    # runs there from 0.24 to 0.36, in the step A waits 120 ms for
    a = _split_record(0.0, [0.10, 0.20, 0.22, 0.24, 0.36, 0.38], 0.10, "disaggregated")

    def costs(route: str) -> list[float]:
        b = _split_record(0.2, [0.36, 0.38], 0.24, route)
        return join_costs(reconstruct([a, b]), Flat(), 1.0).tolist()

    # overflowed to the decode worker: a prompt step, no join cost read off it
    assert costs("local_prefill_saturated") == []
    assert costs("local_prefill_short") == []
    # handed off with its KV: the 120-ms step is that join's cost beyond A's decode
    assert costs("disaggregated") == pytest.approx([0.12 - 0.01])


def test_the_overflow_share_counts_the_saturated_local_prefills() -> None:
    from benchmarks.calibration.fit_steps import MAX_JOIN_OVERFLOW, overflow_share

    def rec(route: str) -> dict[str, Any]:
        return {"timeline": {"route_kind": route}}

    mostly = [rec("local_prefill_saturated")] * 6 + [rec("disaggregated")] * 3 + [
        rec("local_prefill_short")]
    assert overflow_share(mostly) == pytest.approx(0.6)
    assert overflow_share(mostly) > MAX_JOIN_OVERFLOW
    assert overflow_share([rec("disaggregated"), {"timeline": None}]) == 0.0
    assert overflow_share([]) == 0.0
