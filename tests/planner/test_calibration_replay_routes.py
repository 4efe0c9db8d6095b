"""The calibration replay reports, per simulated draw, which prompts ran on the decode
worker (what benchmarks/calibration_overflow.py compares with the router's route_kind)."""

from __future__ import annotations

import numpy as np

from benchmarks.calibration import replay
from benchmarks.calibration.setup import Setup
from splitserve.planner import ServingOverhead
from splitserve.planner.profile_format import make_profile


def _profile() -> dict:
    return make_profile(model_name="m", hardware_name="cpu", tensor_parallel=1,
                        kv_capacity_tokens=100_000, kv_bytes_per_token=1000, num_layers=2,
                        prefill=([1, 1024], [0, 1024], [[0.01, 0.012], [0.2, 0.25]]),
                        decode=([1, 64], [0, 8192], [[0.01, 0.012], [0.02, 0.03]]))


def test_short_prompts_are_local_in_every_draw() -> None:
    setup = Setup()
    lengths = [8, 300, 12, 500, 900, 16, 40]
    records = [{"send_s": 0.05 * i, "input_len": n, "output_len": 4,
                "requested_output_len": 4} for i, n in enumerate(lengths)]
    jitter = ServingOverhead(prefill_jitter_cv=0.2)  # several draws
    sim = replay.replay(setup, "1P1D", records, _profile(), replay.Link(1e9, 0.001), jitter)
    draws = sim["num_draws"]
    assert draws > 1 and len(sim["local_prefill"]) == draws * len(records)
    short = np.array(lengths) <= setup.short_prompt_len
    for k in range(draws):
        # no overflow rule here: exactly the short prompts stay on the decode worker
        assert sim["local_prefill"][k * len(records):(k + 1) * len(records)].tolist() == \
            short.tolist()
