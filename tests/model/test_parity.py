"""Logits parity with HF transformers (float32) through the paged cache.

Tolerance: max abs logit difference < 1e-4 (logits are O(5)); argmax must be equal.
"""

from __future__ import annotations

import pytest
import torch

from tests.model.conftest import ARCHS, TinyModels
from tests.model.helpers import PagedRunner, hf_logits, random_ids

ATOL = 1e-4


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff < ATOL, f"max abs logit diff {diff}"
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_prompt_in_one_step_matches_hf(tiny: TinyModels, arch: str) -> None:
    config, model, hf = tiny.get(arch)
    prompt = random_ids(70, seed=1)
    runner = PagedRunner(config, model, block_size=16)
    ours = runner.step([(prompt, 0, runner.new_table(70))], every_token=True)
    assert_close(ours, hf_logits(hf, prompt))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("block_size", [4, 16])
def test_chunked_prefill_then_decode_matches_hf(
    tiny: TinyModels, arch: str, block_size: int
) -> None:
    config, model, hf = tiny.get(arch)
    prompt = random_ids(60, seed=2)
    num_decode = 5
    full = prompt + random_ids(num_decode, seed=3)
    ref = hf_logits(hf, full)
    runner = PagedRunner(config, model, block_size=block_size, seed=block_size)
    table = runner.new_table(len(full))
    assert table != sorted(table), "block table should be non-contiguous"
    pieces = []
    for start, end in [(0, 7), (7, 20), (20, len(prompt))]:
        pieces.append(runner.step([(prompt[start:end], start, table)], every_token=True))
    assert_close(torch.cat(pieces), ref[: len(prompt)])
    for pos in range(len(prompt), len(full)):
        logits = runner.step([([full[pos]], pos, table)])
        assert_close(logits, ref[pos : pos + 1])


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_of_prefills_chunks_and_decodes_matches_hf(tiny: TinyModels, arch: str) -> None:
    config, model, hf = tiny.get(arch)
    runner = PagedRunner(config, model, block_size=8, num_blocks=200, seed=7)
    # (full sequence, tokens already cached before the mixed step, tokens computed in it)
    plans = [
        (random_ids(1, seed=10), 0, 1),  # one-token prompt
        (random_ids(310, seed=11), 0, 310),  # long fresh prefill
        (random_ids(150, seed=12), 100, 50),  # prefill chunk continuing a cached prefix
        (random_ids(38, seed=13), 37, 1),  # decode
        (random_ids(130, seed=14), 129, 1),  # decode, longer context
        (random_ids(90, seed=15), 33, 20),  # middle chunk (more prompt follows)
    ]
    tables = [runner.new_table(len(ids)) for ids, _, _ in plans]
    for (ids, num_cached, _), table in zip(plans, tables, strict=True):
        if num_cached:
            runner.step([(ids[:num_cached], 0, table)])
    seqs = [
        (ids[cached : cached + num_new], cached, table)
        for (ids, cached, num_new), table in zip(plans, tables, strict=True)
    ]
    ours = runner.step(seqs, every_token=True)
    refs = [hf_logits(hf, ids[: cached + num_new])[cached:] for ids, cached, num_new in plans]
    assert_close(ours, torch.cat(refs))
    # Only the last-token rows, in the order asked for.
    order = [4, 0, 2]
    table_copy = [list(t) for t in tables]
    runner2 = PagedRunner(config, model, block_size=8, num_blocks=200, seed=7)
    for (ids, num_cached, _), table in zip(plans, table_copy, strict=True):
        if num_cached:
            runner2.step([(ids[:num_cached], 0, table)])
    last = runner2.step(seqs, logits_for=order)
    assert_close(last, torch.stack([refs[i][-1] for i in order]))


def test_sliding_window_is_active_for_mistral_window(tiny: TinyModels) -> None:
    config, _, _ = tiny.get("mistral-window")
    assert config.sliding_window == 16
    plain, _, _ = tiny.get("mistral")
    assert plain.sliding_window is None


@pytest.mark.parametrize("arch", ["llama", "mistral-window"])
def test_shared_prefix_blocks_are_read_not_recomputed(tiny: TinyModels, arch: str) -> None:
    """Prefix caching: B's block table starts with A's full blocks; B computes only its suffix."""
    config, model, hf = tiny.get(arch)
    runner = PagedRunner(config, model, block_size=8, seed=11)
    prefix = random_ids(32, seed=30)
    table_a = runner.new_table(40)
    runner.step([(prefix + random_ids(8, seed=31), 0, table_a)])
    suffix = random_ids(25, seed=32)
    table_b = table_a[:4] + runner.new_table(25)
    ours = runner.step([(suffix, 32, table_b)], every_token=True)
    assert_close(ours, hf_logits(hf, prefix + suffix)[32:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_chunked_prefill_and_decode_match_hf(tiny: TinyModels, dtype: str) -> None:
    from splitserve.model import load_model

    _, _, hf = tiny.get("qwen3")
    config, model = load_model(tiny.path("qwen3"), dtype=dtype, device="cuda")
    runner = PagedRunner(config, model, block_size=16, device="cuda")
    full = random_ids(70, seed=40)
    table = runner.new_table(len(full))
    ours = torch.cat(
        [
            runner.step([(full[:33], 0, table)], every_token=True),
            runner.step([(full[33:69], 33, table)], every_token=True),
            runner.step([(full[69:], 69, table)], every_token=True),
        ]
    )
    ref = hf_logits(hf, full)
    if dtype == "float32":
        assert (ours - ref).abs().max().item() < 1e-3
        assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    else:
        assert (ours - ref).abs().max().item() < 0.5
        assert (ours.argmax(-1) == ref.argmax(-1)).float().mean().item() > 0.9
