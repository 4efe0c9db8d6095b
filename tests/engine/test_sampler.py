import math
import random
from typing import cast

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from splitserve.engine.sampler import sample
from splitserve.engine.sampling_masks import min_p_mask, top_k_mask, top_p_mask
from splitserve.engine.sampling_params import SamplingParams

_NO_IDS = cast(torch.LongTensor, torch.zeros(1, 0, dtype=torch.long))  # warpers ignore ids
PROBS = [0.5, 0.3, 0.15, 0.05]
# Chi-square critical value for 3 degrees of freedom at p = 0.001.
CHI2_3DF_P001 = 16.27


def _logits_of(probs: list[float], num_rows: int = 1) -> torch.Tensor:
    return torch.log(torch.tensor([probs] * num_rows, dtype=torch.float32))


def _chi_square(counts: list[int], probs: list[float]) -> float:
    total = sum(counts)
    return sum((c - total * p) ** 2 / (total * p) for c, p in zip(counts, probs, strict=True))


def test_top_k_mask_known_answers() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]] * 4)
    keep = top_k_mask(logits, torch.tensor([2, 0, -1, 9]))
    assert keep[0].tolist() == [False, True, False, True, False]
    assert keep[1:].all()  # 0, -1 and k > vocab disable the filter


def test_top_p_mask_known_answers() -> None:
    logits = _logits_of(PROBS, 5)
    keep = top_p_mask(logits, torch.tensor([0.3, 0.7, 0.9, 1.0, 1e-6]))
    assert keep[0].tolist() == [True, False, False, False]
    assert keep[1].tolist() == [True, True, False, False]
    assert keep[2].tolist() == [True, True, True, False]
    assert keep[3].all()
    assert keep[4].tolist() == [True, False, False, False]  # top token always kept


def test_top_p_mask_stops_as_soon_as_mass_reaches_p() -> None:
    # Dyadic probabilities are exact in float32, so the boundary is tested exactly.
    logits = _logits_of([0.5, 0.25, 0.125, 0.125], 3)
    keep = top_p_mask(logits, torch.tensor([0.5, 0.75, 0.875]))
    assert keep[0].tolist() == [True, False, False, False]
    assert keep[1].tolist() == [True, True, False, False]
    assert keep[2].tolist() == [True, True, True, False]


def test_top_p_mask_unsorted_vocab() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.3, 0.15, 0.5]]))
    assert top_p_mask(logits, torch.tensor([0.7]))[0].tolist() == [False, True, False, True]


def test_min_p_mask_known_answers() -> None:
    logits = _logits_of(PROBS, 4)
    keep = min_p_mask(logits, torch.tensor([0.5, 0.2, 0.0, 1.0]))
    assert keep[0].tolist() == [True, True, False, False]  # >= 0.25
    assert keep[1].tolist() == [True, True, True, False]  # >= 0.1
    assert keep[2].all()
    assert keep[3].tolist() == [True, False, False, False]


@pytest.mark.parametrize("row_seed", range(5))
def test_masks_agree_with_transformers_warpers(row_seed: int) -> None:
    gen = torch.Generator().manual_seed(row_seed)
    logits = torch.randn(6, 500, generator=gen) * 3
    top_ks = [1, 5, 50, 499, 7, 200]
    top_ps = [0.1, 0.5, 0.9, 0.95, 0.3, 0.75]
    min_ps = [0.01, 0.1, 0.5, 0.9, 0.05, 0.2]
    ours_k = top_k_mask(logits, torch.tensor(top_ks))
    ours_p = top_p_mask(logits, torch.tensor(top_ps))
    ours_m = min_p_mask(logits, torch.tensor(min_ps))
    for r in range(6):
        row = logits[r : r + 1]
        ref_k = TopKLogitsWarper(top_ks[r])(_NO_IDS, row.clone()) > -math.inf
        ref_p = TopPLogitsWarper(top_ps[r])(_NO_IDS, row.clone()) > -math.inf
        ref_m = MinPLogitsWarper(min_ps[r])(_NO_IDS, row.clone()) > -math.inf
        assert torch.equal(ours_k[r], ref_k[0])
        assert torch.equal(ours_p[r], ref_p[0])
        assert torch.equal(ours_m[r], ref_m[0])


def test_greedy_equals_argmax_including_ties() -> None:
    logits = torch.randn(8, 300, generator=torch.Generator().manual_seed(0))
    logits[3, 10] = logits[3, 200] = logits[3].max() + 1.0  # tie: first index wins, like HF
    out = sample(logits, [SamplingParams(temperature=0)] * 8, [0] * 8)
    assert out.token_ids == torch.argmax(logits, dim=-1).tolist()
    assert out.token_ids[3] == 10
    assert out.logprobs == [None] * 8


def test_greedy_rows_in_a_mixed_batch_stay_argmax() -> None:
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.5, seed=3)] * 3
    out = sample(logits, params, [0] * 6, torch.Generator().manual_seed(0))
    for r in (0, 2, 4):
        assert out.token_ids[r] == int(torch.argmax(logits[r]))


def _request_logits(request: int, index: int, vocab: int = 1000) -> torch.Tensor:
    """Deterministic, fairly flat logits for (request, output index)."""
    return torch.randn(vocab, generator=torch.Generator().manual_seed(request * 1000 + index))


def test_seeded_sampling_is_independent_of_batch_composition() -> None:
    seeded = {
        "a": SamplingParams(temperature=1.3, seed=42),
        "b": SamplingParams(temperature=0.9, top_p=0.95, seed=7),
        "c": SamplingParams(temperature=2.0, top_k=50, min_p=0.01, seed=42),
    }
    filler = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.8, seed=99),
    ]
    names = list(seeded)
    alone: dict[tuple[str, int], int] = {}
    for r, name in enumerate(names):
        for index in range(6):
            logits = _request_logits(r, index).unsqueeze(0)
            alone[(name, index)] = sample(logits, [seeded[name]], [index]).token_ids[0]
    rng = random.Random(0)
    engine_gen = torch.Generator().manual_seed(123)
    for _ in range(10):
        rows: list[tuple[str, int] | int] = [(n, rng.randrange(6)) for n in names]
        rows += [rng.randrange(3) for _ in range(rng.randrange(5))]
        rng.shuffle(rows)
        logits_rows, params, indices = [], [], []
        for i, row in enumerate(rows):
            if isinstance(row, tuple):
                name, index = row
                logits_rows.append(_request_logits(names.index(name), index))
                params.append(seeded[name])
                indices.append(index)
            else:
                logits_rows.append(_request_logits(50 + i, 0))
                params.append(filler[row])
                indices.append(rng.randrange(10))
        out = sample(torch.stack(logits_rows), params, indices, engine_gen)
        for i, row in enumerate(rows):
            if isinstance(row, tuple):
                assert out.token_ids[i] == alone[row], row


def test_different_seeds_and_indices_give_different_draws() -> None:
    logits = torch.zeros(1, 1000)  # uniform: any fixed outcome would be a bug

    def draws(seed: int) -> list[int]:
        params = SamplingParams(temperature=1.0, seed=seed)
        return [sample(logits, [params], [i]).token_ids[0] for i in range(20)]

    a, b = draws(1), draws(2)
    assert a != b
    assert len(set(a)) > 10  # the index changes the draw too
    assert draws(1) == a


def test_unseeded_draws_follow_the_distribution() -> None:
    num_rows = 4000
    out = sample(
        _logits_of(PROBS, num_rows),
        [SamplingParams()] * num_rows,
        [0] * num_rows,
        torch.Generator().manual_seed(0),
    )
    counts = [out.token_ids.count(t) for t in range(4)]
    assert _chi_square(counts, PROBS) < CHI2_3DF_P001


def test_seeded_draws_across_seeds_follow_the_distribution() -> None:
    num_rows = 4000
    params = [SamplingParams(seed=s) for s in range(num_rows)]
    out = sample(_logits_of(PROBS, num_rows), params, [0] * num_rows)
    counts = [out.token_ids.count(t) for t in range(4)]
    assert _chi_square(counts, PROBS) < CHI2_3DF_P001


def test_temperature_and_top_k_reshape_the_distribution() -> None:
    num_rows = 4000
    gen = torch.Generator().manual_seed(1)
    hot = sample(
        _logits_of(PROBS, num_rows),
        [SamplingParams(temperature=2.0)] * num_rows,
        [0] * num_rows,
        gen,
    )
    tempered = [math.sqrt(p) for p in PROBS]
    tempered = [p / sum(tempered) for p in tempered]
    assert _chi_square([hot.token_ids.count(t) for t in range(4)], tempered) < CHI2_3DF_P001
    top2 = sample(
        _logits_of(PROBS, num_rows), [SamplingParams(top_k=2)] * num_rows, [0] * num_rows, gen
    )
    assert set(top2.token_ids) == {0, 1}
    frac0 = top2.token_ids.count(0) / num_rows
    assert abs(frac0 - 0.5 / 0.8) < 4 * math.sqrt(0.625 * 0.375 / num_rows)


def _reference_keep(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Kept set by the pure masks applied in the documented order, on one row `[1, V]`."""
    x = logits / params.temperature
    x = x.masked_fill(~top_k_mask(x, torch.tensor([params.top_k])), -math.inf)
    x = x.masked_fill(~top_p_mask(x, torch.tensor([params.top_p])), -math.inf)
    x = x.masked_fill(~min_p_mask(x, torch.tensor([params.min_p])), -math.inf)
    return x > -math.inf


def test_truncated_draws_follow_the_reference_masks() -> None:
    # Vocabulary order differs from probability order on purpose.
    probs = [0.05, 0.3, 0.02, 0.4, 0.15, 0.08]
    params = SamplingParams(temperature=0.9, top_p=0.85, min_p=0.1, seed=0)
    logits = torch.log(torch.tensor([probs]))
    keep = _reference_keep(logits, params)[0]
    ref = torch.softmax((logits / 0.9).masked_fill(~keep, -math.inf), dim=-1)[0]
    num_rows = 4000
    rows = [SamplingParams(temperature=0.9, top_p=0.85, min_p=0.1, seed=s) for s in range(num_rows)]
    out = sample(logits.repeat(num_rows, 1), rows, [0] * num_rows)
    kept_ids = keep.nonzero().squeeze(-1).tolist()
    assert set(out.token_ids) == set(kept_ids) and len(kept_ids) == 3
    counts = [out.token_ids.count(t) for t in kept_ids]
    # 2 degrees of freedom, p = 0.001
    assert _chi_square(counts, [float(ref[t]) for t in kept_ids]) < 13.82


def test_candidate_shortcut_gives_the_same_draws_as_a_full_sort() -> None:
    gen = torch.Generator().manual_seed(7)
    vocab = 400
    logits = torch.randn(48, vocab, generator=gen) * 2
    logits[::5] = torch.randn(vocab, generator=gen) * 0.01  # flat rows: nucleus is wide
    params = [
        SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m, seed=s)
        for s, (t, k, p, m) in enumerate(
            [
                (1.0, 0, 0.9, 0.0),
                (0.7, 20, 1.0, 0.0),
                (1.5, 300, 0.95, 0.0),
                (1.0, 0, 1.0, 0.01),
                (2.0, 50, 0.5, 0.2),
                (1.0, 0, 0.999, 0.0),
            ]
            * 8
        )
    ]
    indices = list(range(48))
    reference = sample(logits, params, indices, num_candidates=vocab).token_ids
    for num_candidates in (1, 8, 64, 1024):
        assert sample(logits, params, indices, num_candidates=num_candidates).token_ids == (
            reference
        )
    for r in range(48):
        assert _reference_keep(logits[r : r + 1], params[r])[0, reference[r]]


def test_logprobs_are_log_softmax_of_raw_logits() -> None:
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(5)) * 2
    params = [
        SamplingParams(temperature=0, logprobs=5),
        SamplingParams(),
        SamplingParams(temperature=0.7, top_k=3, seed=1, logprobs=0),
        SamplingParams(temperature=1.2, logprobs=20),
    ]
    out = sample(logits, params, [0, 1, 2, 3], torch.Generator().manual_seed(0))
    ref = torch.log_softmax(logits, dim=-1)
    assert out.logprobs[1] is None
    for r in (0, 2, 3):
        lp = out.logprobs[r]
        assert lp is not None
        token = out.token_ids[r]
        assert lp.token_id == token
        assert lp.logprob == pytest.approx(float(ref[r, token]), abs=1e-6)
        assert lp.rank == int((ref[r] > ref[r, token]).sum()) + 1
        n = params[r].logprobs or 0
        top = torch.topk(ref[r], n) if n else None
        assert list(lp.top_token_ids) == (top.indices.tolist() if top is not None else [])
        assert lp.top_logprobs == pytest.approx(top.values.tolist() if top is not None else [])
    assert out.logprobs[0] is not None and out.logprobs[0].rank == 1


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    logits = torch.zeros(3, 10)
    logits[:, 9] = 10.0  # EOS is the argmax
    logits[:, 4] = 9.0  # a stop token id is next
    logits[:, 2] = 8.0
    params = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[4])
    out = sample(logits, [params] * 3, [0, 1, 2], eos_token_ids=[9])
    assert out.token_ids == [2, 2, 9]
    ignore = SamplingParams(temperature=0, min_tokens=2, ignore_eos=True)
    assert sample(logits[:1], [ignore], [0], eos_token_ids=[9]).token_ids == [9]


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="logits"):
        sample(torch.zeros(2, 5), [SamplingParams()], [0])
    with pytest.raises(ValueError, match="vocab"):
        sample(torch.zeros(5), [SamplingParams()], [0])
    assert sample(torch.zeros(0, 5), [], []).token_ids == []
