"""The calibrations `planner_calibration.py --preset NAME` measures: the goodput benchmark's
scenarios (benchmarks/goodput_compare.py; tests/planner/test_calibration_trace.py holds them
equal) and a quick one for trying the pipeline."""

from __future__ import annotations

from benchmarks.calibration.setup import Setup

PRESETS = {
    "goodput-chat": Setup(),
    # the goodput benchmark's azure-code scenario: the code trace's first 120 s (63
    # requests within 39 s, 1.6 req/s; prompts ~590 tokens after / 4, ~6 output tokens),
    # prefill-bound: the prefill worker runs 512-token chunks back to back for seconds.
    # The probe is the chat one; the gauges run chat at 4 req/s (the probe's middle).
    "azure-code": Setup(trace="azure_llm_2023_code.csv", trace_window_s=(0.0, 120.0),
                        rates=(1.6,), gauge_rate=4.0),
    # the same, each judged repeat right after a gauge that replays the window itself: the
    # machine's speed on this workload's step mix (a saturated prefill worker's prompt
    # steps run back to back at ~1.2x the profile, lone ones after idle at ~1.3-1.5x)
    "azure-code-self-gauge": Setup(trace="azure_llm_2023_code.csv",
                                   trace_window_s=(0.0, 120.0), rates=(1.6,)),
    # the goodput benchmark's mixed-long scenario (chat plus 5% prompts of 2-4k tokens
    # after scaling) at its rates: a workload the chat probe has no long prompts of
    "goodput-mixed-long": Setup(workload="mixed-long", rates=(1.0, 2.0, 4.0, 6.0)),
    # the same at its middle rates with 120 s of arrivals per run instead of 45: a run's
    # p90 TTFT sits on the 5% long prompts it draws (10-15 per 45-s run at 2-4 req/s), and
    # identical reruns' p90s then differ by a median 11%; 2.7x the samples per repeat
    "goodput-mixed-long-120s": Setup(workload="mixed-long", rates=(2.0, 4.0), duration_s=120.0),
    # the same middle rates with five 45-s repeats instead of three: a p90 over 5/3 the
    # samples without the longer run's drift away from its gauge
    "goodput-mixed-long-5x": Setup(workload="mixed-long", rates=(2.0, 4.0), num_repeats=5),
    # the same at its two lower rates: below saturation on a machine without AMX (ml10:
    # 70 / 59% in SLO, p90 TTFT 3.3 / 4.5 s), where the long prompts' 25-50 MB of KV go
    # out while the prefill worker computes the next prompt and weigh on TPOT
    "goodput-mixed-long-calm": Setup(workload="mixed-long", rates=(1.0, 2.0)),
    # the code trace's calm first 30 s (17 requests, 0.57 req/s, before the burst at 30-39
    # s), five repeats, each after a gauge replaying it: below saturation on a machine
    # without AMX, where the full window saturates the prefill worker; a split fleet's
    # short-output requests whose TPOT is their KV handoff
    "azure-code-calm": Setup(trace="azure_llm_2023_code.csv", trace_window_s=(0.0, 30.0),
                             rates=(0.57,), num_repeats=5),
    # the goodput benchmark's azure-conv scenario: the conversation trace's first 30 s (59
    # requests within 30 s, 2.0 req/s; ~180 input, ~31 output tokens after / 4), each
    # judged repeat right after a gauge replaying the window
    "azure-conv": Setup(trace="azure_llm_2023_conv.csv", trace_window_s=(0.0, 30.0),
                        rates=(2.0,)),
    "quick": Setup(model="llama-25m-v8k", dtype="float32", workload="uniform",
                   length_scale=1.0, num_requests=50, duration_s=None, short_prompt_len=0,
                   slo=(0.5, 0.08)),
}
