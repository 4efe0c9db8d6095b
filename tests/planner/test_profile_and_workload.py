from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splitserve.planner.cost_model import RooflineLatencyModel
from splitserve.planner.fleet import Pool
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.profile_format import (
    ProfileLatencyModel,
    load_profile,
    make_profile,
    save_profile,
    suggested_axes,
)
from splitserve.planner.simulator import simulate
from splitserve.planner.workload import generate, get_workload, load_trace, shared_traces_dir

TRACES = shared_traces_dir()


def _profile_from(model: RooflineLatencyModel) -> dict:
    tokens, ctx = [16, 256, 1024, 4096], [0, 1024, 4096]
    batch, total = [1, 8, 64], [64, 8192, 65536]
    return make_profile(
        model_name="opt-13b",
        hardware_name="a100-80gb",
        tensor_parallel=1,
        kv_capacity_tokens=model.kv_capacity_tokens,
        kv_bytes_per_token=model.kv_bytes_per_token,
        num_layers=model.num_layers,
        prefill=(tokens, ctx, [[model.prefill_s(t, c) for c in ctx] for t in tokens]),
        decode=(batch, total, [[model.decode_s(b, x) for x in total] for b in batch]),
    )


@pytest.fixture(scope="module")
def roofline() -> RooflineLatencyModel:
    return RooflineLatencyModel(load_model_spec("opt-13b"), get_hardware("a100"), 1)


def test_profile_round_trips_and_reproduces_grid(
    roofline: RooflineLatencyModel, tmp_path: Path
) -> None:
    path = tmp_path / "profile.json"
    save_profile(_profile_from(roofline), path)
    model = ProfileLatencyModel(load_profile(path))
    assert model.prefill_s(1024, 1024) == pytest.approx(roofline.prefill_s(1024, 1024))
    assert model.decode_s(8, 8192) == pytest.approx(roofline.decode_s(8, 8192))
    # Between grid points the (compute-bound, near-linear) prefill is interpolated closely.
    assert model.prefill_s(2048, 0) == pytest.approx(roofline.prefill_s(2048, 0), rel=0.05)
    # Beyond the grid it extrapolates rather than clamping.
    assert model.prefill_s(8192, 0) > model.prefill_s(4096, 0) * 1.8


def test_simulation_on_a_profile_tracks_the_roofline(roofline: RooflineLatencyModel) -> None:
    model = ProfileLatencyModel(_profile_from(roofline))
    reqs = generate(get_workload("chat"), rate=3.0, num_requests=300, seed=0)
    a = simulate(reqs, [Pool("mixed", 1, roofline)]).summary()
    b = simulate(reqs, [Pool("mixed", 1, model)]).summary()
    assert b["p90_tpot_s"] == pytest.approx(a["p90_tpot_s"], rel=0.1)
    assert b["p90_ttft_s"] == pytest.approx(a["p90_ttft_s"], rel=0.1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(schema="other/v9"), "schema"),
        (lambda p: p.pop("decode"), "decode"),
        (lambda p: p["prefill"].update(num_tokens=[16, 16, 1024, 4096]), "strictly increasing"),
        (lambda p: p["prefill"]["latency_s"][0].pop(), "must have 3 values"),
        (lambda p: p.update(kv_capacity_tokens=0), "kv_capacity_tokens"),
    ],
)
def test_bad_profile_is_rejected(
    roofline: RooflineLatencyModel, tmp_path: Path, mutate, message: str
) -> None:
    profile = _profile_from(roofline)
    mutate(profile)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    with pytest.raises(ValueError, match=message):
        load_profile(path)


def test_generated_lengths_have_the_preset_means() -> None:
    reqs = generate(get_workload("chat"), rate=10.0, num_requests=20_000, seed=0)
    assert np.mean(reqs.input_len) == pytest.approx(755, rel=0.05)
    assert np.mean(reqs.output_len) == pytest.approx(200, rel=0.05)
    assert reqs.rate == pytest.approx(10.0, rel=0.05)
    assert reqs.with_rate(5.0).rate == pytest.approx(5.0)


def test_trace_readers(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:48.6805900,10,0\n"
    )
    reqs = load_trace(csv_path)
    assert reqs.arrival_s.tolist() == pytest.approx([0.0, 2.0])
    assert reqs.output_len.tolist() == [44, 1]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'
    )
    assert load_trace(jsonl).hash_ids == ((0, 1),)
    with pytest.raises(ValueError, match="bad trace row"):
        jsonl.write_text('{"timestamp": 0}\n')
        load_trace(jsonl)


@pytest.mark.skipif(TRACES is None, reason="shared traces not present")
def test_shared_traces_load_at_full_scale() -> None:
    assert TRACES is not None
    conv = load_trace(TRACES / "azure_llm_2023_conv.csv")
    assert len(conv) == 19_366
    assert np.mean(conv.input_len) == pytest.approx(1155, rel=0.01)
    mooncake = load_trace(TRACES / "mooncake_fast25_conversation.jsonl", limit=1000)
    assert mooncake.hash_ids is not None and len(mooncake) == 1000


def test_suggested_axes_are_valid_profile_axes(roofline: RooflineLatencyModel) -> None:
    axes = suggested_axes(max_model_len=2048, max_num_seqs=64, kv_capacity_tokens=50_000)
    assert axes["num_tokens"][0] == 16 and axes["num_tokens"][-1] == 2048
    assert axes["context_len"] == [0, 256, 512, 1024]
    assert axes["batch_size"] == [1, 2, 4, 8, 16, 32, 64]
    assert axes["context_tokens"][-1] == 2048  # a batch of one holds max_model_len
    p, c, b, t = (axes[k] for k in ("num_tokens", "context_len", "batch_size", "context_tokens"))
    profile = make_profile(
        model_name="m",
        hardware_name="h",
        tensor_parallel=1,
        kv_capacity_tokens=50_000,
        kv_bytes_per_token=1,
        num_layers=1,
        prefill=(p, c, [[roofline.prefill_s(x, y) for y in c] for x in p]),
        decode=(b, t, [[roofline.decode_s(x, y) for y in t] for x in b]),
    )
    assert ProfileLatencyModel(profile).decode_s(3, 1000) > 0
    tiny = suggested_axes(max_model_len=8, max_num_seqs=2, kv_capacity_tokens=4)
    assert all(len(v) >= 2 for v in tiny.values())
