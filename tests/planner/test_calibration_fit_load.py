"""The `steps_load` fit's pieces (benchmarks/calibration/fit_load.py), hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.calibration import fit_load, fit_prompt


def _rec(input_len: int, output_len: int | None, success: bool = True) -> dict[str, object]:
    return {"success": success, "input_len": input_len, "output_len": output_len}


def test_context_per_decoding_sequence_is_weighted_by_decode_steps() -> None:
    # 10 + 3 tokens decodes over 11 and 12 KV tokens; 100 + 2 over 101; failed and
    # one-token requests never decode
    records = [_rec(10, 3), _rec(100, 2), _rec(50, 9, success=False), _rec(40, 1)]
    assert fit_load.ctx_per_seq(records) == pytest.approx((11 + 12 + 101) / 3)
    assert fit_load.ctx_per_seq([]) == 0.0


class _Linear:
    """A decode step of n sequences over c KV tokens: 10 ms + 1 ms per sequence + 1 us per
    KV token."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return 0.010 + 0.001 * num_decode_seqs + 1e-6 * decode_ctx_tokens


def test_profile_price_of_a_fractional_batch_interpolates_whole_batches() -> None:
    model = _Linear()
    assert fit_load.profile_decode_s(model, 2.0, 100) == pytest.approx(0.010 + 0.002 + 200e-6)
    assert fit_load.profile_decode_s(model, 2.5, 100) == pytest.approx(0.010 + 0.0025 + 250e-6)
    # below one sequence: the one-sequence price
    assert fit_load.profile_decode_s(model, 0.5, 100) == pytest.approx(0.011 + 100e-6)


def test_non_negative_least_squares_recovers_exact_coefficients() -> None:
    x = np.array([[1.0, 1.0], [1.0, 3.0], [1.0, 6.0]])
    y = x @ np.array([0.002, 0.0005])
    assert fit_load.nonneg_lstsq(x, y, np.ones(3)) == pytest.approx([0.002, 0.0005])


def test_non_negative_least_squares_drops_a_column_that_would_go_negative() -> None:
    # falling with the batch: the per-sequence part would be negative, so the fit keeps
    # the constant alone (the weighted mean)
    x = np.array([[1.0, 1.0], [1.0, 5.0]])
    y = np.array([0.003, 0.001])
    beta = fit_load.nonneg_lstsq(x, y, np.array([1.0, 3.0]))
    assert beta == pytest.approx([(0.003 + 3 * 0.001) / 4, 0.0])
    # all negative: nothing
    assert fit_load.nonneg_lstsq(x, -y, np.ones(2)) == pytest.approx([0.0, 0.0])


def test_decode_fit_separates_a_factor_from_a_per_sequence_cost() -> None:
    points = [{"profile_s": p, "batch": b, "num_steps": 100,
               "real_s": 0.95 * p + 0.0003 * b}
              for p, b in ((0.0187, 1.0), (0.0200, 3.0), (0.0219, 8.0))]
    got = fit_load.fit_decode(points)
    assert got["scale"] == pytest.approx(0.95)
    assert got["per_seq_s"] == pytest.approx(0.0003)
    assert fit_load.fit_decode([]) == {"scale": 1.0, "per_seq_s": 0.0}


def test_decode_fit_never_makes_a_step_free() -> None:
    # steps that get cheaper per profiled second as the batch grows: a pure factor
    points = [{"profile_s": 0.02, "batch": 1.0, "num_steps": 10, "real_s": 0.03},
              {"profile_s": 0.04, "batch": 8.0, "num_steps": 10, "real_s": 0.031}]
    got = fit_load.fit_decode(points)
    assert got["scale"] > 0 and got["per_seq_s"] >= 0


class _PromptLinear:
    """A prompt step of n tokens: 1 ms + 0.25 ms per token."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return 0.001 + 0.00025 * num_prefill_tokens


def _lone(n: int, stage_s: float, role: str = "prefill") -> dict[str, object]:
    return {"success": True, "input_len": n,
            "timeline": {f"{role}.engine_first_scheduled_s": 10.0,
                         f"{role}.engine_first_token_s": 10.0 + stage_s}}


def test_prompt_price_splits_into_factor_and_fixed_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.calibration.setup import Setup

    monkeypatch.setattr(fit_prompt, "latency_model", lambda setup, profile: _PromptLinear())
    price = _PromptLinear().step_s
    # real = 1.1 x price + 20 ms, over prompts priced 9 ms .. 129 ms; one over the budget
    # (two chunks) and one failed are not lone one-chunk prompt steps
    lengths = (32, 64, 128, 256, 400, 512)
    lone = [_lone(n, 1.1 * price(n, 0, n, 0, 0) + 0.020, "full" if n < 100 else "prefill")
            for n in lengths]
    lone += [_lone(600, 5.0), {**_lone(64, 5.0), "success": False}]
    fit = fit_prompt.fit_prompt_affine(Setup(), lone, {})
    assert fit is not None
    assert fit["scale"] == pytest.approx(1.1)
    assert fit["step_s"] == pytest.approx(0.020)
    assert fit["num_requests"] == len(lengths)
    # prompts priced within 2:1 of each other (17-33 ms) cannot tell the two apart
    narrow = [_lone(n, 0.05) for n in (64, 80, 100, 128)]
    assert fit_prompt.fit_prompt_affine(Setup(), narrow, {}) is None


def test_continuation_scale_reads_the_later_chunks_of_lone_long_prompts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.calibration.setup import Setup

    monkeypatch.setattr(fit_prompt, "latency_model", lambda setup, profile: _PromptLinear())
    price = _PromptLinear().step_s
    setup = Setup()  # budget 512
    lone, cont = 1.4, 0.7  # stage = lone x (first chunk + cont x later chunks)
    chunked = []
    for n in (1200, 1500, 1900):
        prices = fit_prompt.chunk_prices(_PromptLinear(), n, setup.token_budget)
        assert len(prices) == -(-n // 512) and prices[0] == pytest.approx(price(512, 0, 0, 0, 0))
        chunked.append(_lone(n, lone * (prices[0] + cont * sum(prices[1:]))))
    chunked.append({**_lone(1300, 9.0), "success": False})
    fit = fit_prompt.fit_continuation_scale(setup, chunked, {}, lone)
    assert fit is not None and fit["continuation_prompt_scale"] == pytest.approx(cont)
    assert len(fit["points"]) == 3
    # one-chunk prompts tell nothing about back-to-back chunks
    assert fit_prompt.fit_continuation_scale(setup, [_lone(300, 0.1)], {}, lone) is None
