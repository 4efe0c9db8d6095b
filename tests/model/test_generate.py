"""Greedy generation token-identical to HF `generate(do_sample=False)`.

Our loop batches all prompts: one step prefills every prompt, later steps decode all
unfinished sequences together (the batched-decode path of the paged attention).
"""

from __future__ import annotations

import pytest
import torch

from tests.model.conftest import ARCHS, TinyModels
from tests.model.helpers import PagedRunner, random_ids

MAX_NEW_TOKENS = 12
EOS_ID = 2
PROMPT_LENS = [1, 3, 9, 17, 33, 50, 64, 120]


def hf_greedy(hf_model: object, prompt: list[int]) -> list[int]:
    with torch.no_grad():
        out = hf_model.generate(  # type: ignore[attr-defined]
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=EOS_ID,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def our_greedy(runner: PagedRunner, prompts: list[list[int]]) -> list[list[int]]:
    tables = [runner.new_table(len(p) + MAX_NEW_TOKENS) for p in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    logits = runner.step([(p, 0, t) for p, t in zip(prompts, tables, strict=True)])
    active = list(range(len(prompts)))
    while active:
        next_ids = logits.argmax(-1).tolist()
        for i, token in zip(active, next_ids, strict=True):
            outputs[i].append(token)
        active = [
            i for i in active if outputs[i][-1] != EOS_ID and len(outputs[i]) < MAX_NEW_TOKENS
        ]
        if not active:
            break
        seqs = [
            ([outputs[i][-1]], len(prompts[i]) + len(outputs[i]) - 1, tables[i]) for i in active
        ]
        logits = runner.step(seqs)
    return outputs


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_hf_generate(tiny: TinyModels, arch: str) -> None:
    config, model, hf = tiny.get(arch)
    prompts = [random_ids(n, seed=100 + n) for n in PROMPT_LENS]
    runner = PagedRunner(config, model, block_size=4, num_blocks=256, seed=3)
    ours = our_greedy(runner, prompts)
    for prompt, got in zip(prompts, ours, strict=True):
        assert got == hf_greedy(hf, prompt), f"prompt of {len(prompt)} tokens diverged"
