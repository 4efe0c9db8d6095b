"""The oracle: greedy output of the whole engine == Hugging Face `generate`, token for token.

For every supported architecture, a random-initialised tiny `transformers` model saved
with `save_pretrained` is loaded through the normal path and run with a batch of prompts
of lengths 1..300+, shared prefixes (prefix-cache hits), a small token budget (chunked
prefill) and, separately, a KV pool so small that sequences get preempted and recompute.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from splitserve.engine.llm import LLM
from splitserve.engine.sampling_params import SamplingParams
from tests.helpers.checkpoints import make_model_dir
from tests.model.tiny import load_hf

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "llama3-rope", "llama-tied"]
MAX_NEW_TOKENS = 12


def _prompts(vocab_size: int, eos_id: int) -> list[list[int]]:
    rng = random.Random(7)

    def ids(n: int) -> list[int]:
        return [rng.choice([t for t in range(5, vocab_size) if t != eos_id]) for _ in range(n)]

    shared = ids(40)  # 2+ full blocks of 16: a prefix-cache hit for the prompts using it
    return [ids(1), ids(7), ids(33), shared + ids(9), shared + ids(25), ids(120), ids(310),
            shared + ids(2)]


def _hf_greedy(model_dir: Path, prompts: list[list[int]],
               device: str = "cpu") -> list[list[int]]:
    hf = load_hf(model_dir).to(device)
    # No EOS for HF either: the engine runs with ignore_eos (random models hit EOS early),
    # and min_new_tokens would instead mask EOS out of the argmax.
    hf.generation_config.eos_token_id = None
    outs = []
    for prompt in prompts:
        inp = torch.tensor([prompt], device=device)
        with torch.no_grad():
            gen = hf.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False,
                              max_new_tokens=MAX_NEW_TOKENS, pad_token_id=0)
        outs.append(gen[0, len(prompt):].tolist())
    return outs


@pytest.fixture(scope="module", params=ARCHS)
def model_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    model_dir = make_model_dir(request.param, tmp_path_factory.mktemp(request.param))
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    prompts = _prompts(cfg["vocab_size"], cfg["eos_token_id"])
    return model_dir, prompts, _hf_greedy(model_dir, prompts)


# ignore_eos: random models emit EOS early; we compare the full MAX_NEW_TOKENS.
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, ignore_eos=True)


def generate_recording_preemptions(llm: LLM, prompts: list[list[int]]
                                   ) -> tuple[list[list[int]], list[str]]:
    """Greedy token ids per prompt, and the ids the scheduler preempted on the way."""
    preempted: list[str] = []
    original = llm.engine.scheduler.schedule

    def spy():  # record preemptions while keeping behaviour unchanged
        out = original()
        preempted.extend(out.preempted_ids)
        return out

    llm.engine.scheduler.schedule = spy  # type: ignore[method-assign]
    outs = llm.generate(prompts, GREEDY)
    return [o.outputs[0].token_ids for o in outs], preempted


def test_greedy_matches_transformers_with_chunked_prefill_and_prefix_cache(model_case) -> None:
    model_dir, prompts, expected = model_case
    llm = LLM(str(model_dir), dtype="float32", block_size=16, num_blocks=256,
              max_num_batched_tokens=64, max_num_seqs=8)
    outs = llm.generate(prompts, GREEDY)
    got = [o.outputs[0].token_ids for o in outs]
    assert got == expected
    stats = llm.engine.stats()
    assert stats["num_prefix_hit_tokens"] >= 32, stats  # the shared 40-token prefix: 2 blocks reused
    assert stats["num_used_blocks"] == 0, stats  # everything freed


def test_greedy_matches_transformers_under_preemption(model_case) -> None:
    model_dir, prompts, expected = model_case
    # 24 blocks x 16 = 384 token slots: the 310-token prompt alone needs 21 of them, so the
    # batch cannot fit at once and running sequences get preempted and recomputed.
    llm = LLM(str(model_dir), dtype="float32", block_size=16, num_blocks=24,
              max_num_batched_tokens=48, max_num_seqs=8, enable_prefix_caching=False,
              max_model_len=384)
    got, preempted = generate_recording_preemptions(llm, prompts)
    assert got == expected
    assert preempted, "the tiny KV pool should have forced at least one preemption"
    assert llm.engine.stats()["num_used_blocks"] == 0
