from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from splitserve.planner.fleet import SchedulerConfig
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import ModelSpec, load_model_spec
from splitserve.planner.plan import recommend, run_plan
from splitserve.planner.results import Slo
from splitserve.planner.search import (
    Evaluator,
    Layout,
    PlanSetup,
    best_colocated,
    best_disaggregated,
    smallest,
)
from splitserve.planner.workload import Requests, generate, get_workload

from .conftest import TINY_CONFIG


def test_smallest_finds_the_threshold() -> None:
    for threshold in (1, 2, 3, 17, 64, 1000):
        assert smallest(lambda n, t=threshold: n >= t) == threshold
    assert smallest(lambda n: False, high=50) is None


@pytest.mark.parametrize(
    "bad",
    [dict(ttft_s=0, tpot_s=0.1), dict(ttft_s=1, tpot_s=-1), dict(ttft_s=1, tpot_s=1, attainment=0)],
)
def test_slo_must_be_positive(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="SLO|attainment"):
        Slo(**bad)


def test_colocated_search_finds_the_hand_computed_fleet() -> None:
    # Prompts arrive every 10 ms, each takes D to prefill alone, outputs are one token and
    # the TTFT SLO leaves no room to queue: exactly ceil(D / 10 ms) instances are needed.
    spec = ModelSpec.from_hf_config(TINY_CONFIG, name="tiny")
    input_len = 30_000
    setup = PlanSetup(
        spec,
        get_hardware("l40s"),
        Slo(1.0, 1.0, 1.0),
        scheduler=SchedulerConfig(token_budget=input_len, prefill_token_budget=input_len),
        tp_options=(1,),
        colocated_token_budgets=(),
    )
    model = Evaluator(setup).latency_model(1)
    assert model is not None
    prefill_s = model.prefill_s(input_len)
    gap_s = prefill_s / 4.5  # so 5 instances are needed, 4 queue
    num = 200
    requests = Requests(
        np.arange(num) * gap_s, np.full(num, input_len), np.ones(num, dtype=np.int64)
    )
    setup = replace(setup, slo=Slo(prefill_s * 1.05, 1.0, 1.0))
    ev = Evaluator(setup)
    assert best_colocated(ev, requests) == Layout(0, 1, 5, 1)
    # The split needs the same 5 prefill instances plus a decode one: never cheaper.
    split = best_disaggregated(ev, requests)
    assert split is not None and split.num_prefill == 5 and split.num_decode == 1
    plan = run_plan(setup, requests, with_goodput=False)
    assert plan["recommendation"].startswith("don't split")


def test_split_search_matches_exhaustive_enumeration() -> None:
    setup = PlanSetup(
        load_model_spec("opt-13b"),
        get_hardware("a100"),
        Slo(0.5, 0.05, 0.9),
        kv_link="interconnect",
        tp_options=(1,),
    )
    requests = generate(get_workload("summarize"), rate=8.0, num_requests=300, seed=1)
    ev = Evaluator(setup)
    found = best_disaggregated(ev, requests)
    feasible = [
        Layout(x, 1, y, 1)
        for x, y in itertools.product(range(1, 7), range(1, 5))
        if ev.meets(Layout(x, 1, y, 1), requests)
    ]
    assert found is not None and feasible
    assert found.num_gpus > 2  # not the trivial corner
    assert found.num_gpus == min(layout.num_gpus for layout in feasible)


def test_recommendation_reports_the_saving() -> None:
    colo = {"layout": "8x colocated (TP1)", "cost_per_hour": 8.0}
    split = {"layout": "3P2D (TP1/TP1)", "cost_per_hour": 5.0}
    text, saving = recommend(colo, split)
    assert saving == pytest.approx(0.375) and text.startswith("split: 3P2D")
    text, saving = recommend(colo, {"layout": "4P4D", "cost_per_hour": 8.0})
    assert text.startswith("don't split") and saving == 0.0
