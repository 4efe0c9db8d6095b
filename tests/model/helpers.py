"""Test helpers: a shuffled block pool and a reference-model cache."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from splitserve.model import ForwardBatch, LlamaForCausalLM, ModelConfig, allocate_kv_caches


@dataclass
class PagedRunner:
    """Drives our model over a paged cache with non-contiguous, shuffled block tables."""

    config: ModelConfig
    model: LlamaForCausalLM
    block_size: int
    num_blocks: int = 256
    seed: int = 0
    device: str = "cpu"
    kv_caches: list[torch.Tensor] = field(init=False)
    free_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.kv_caches = allocate_kv_caches(
            self.config, self.num_blocks, self.block_size, device=self.device
        )
        self.free_ids = list(range(self.num_blocks))
        random.Random(self.seed).shuffle(self.free_ids)

    def new_table(self, max_tokens: int) -> list[int]:
        num = -(-max_tokens // self.block_size)
        table, self.free_ids = self.free_ids[:num], self.free_ids[num:]
        assert len(table) == num, "test block pool exhausted"
        return table

    def step(self, seqs: list[tuple[list[int], int, list[int]]], **kwargs: Any) -> torch.Tensor:
        batch = ForwardBatch.build(seqs, self.block_size, device=self.device, **kwargs)
        return self.model(batch, self.kv_caches).cpu()


def hf_logits(hf_model: Any, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), vocab] float32 logits of the reference model."""
    with torch.no_grad():
        return hf_model(torch.tensor([token_ids])).logits[0].float()


def random_ids(num_tokens: int, seed: int, vocab_size: int = 384) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    # Skip ids 0-2 (pad/bos/eos) so generation does not stop on the prompt itself.
    return torch.randint(3, vocab_size, (num_tokens,), generator=gen).tolist()


def bf16_runner(path: Any, use_native: bool, block_size: int = 8,
                pack: bool = False) -> PagedRunner:
    """A bfloat16 model with fused projections, on the native kernels or plain torch
    (`pack`: its linears also laid out for the CPU GEMMs)."""
    from splitserve.model import load_model

    config, model = load_model(path, dtype="bfloat16")
    model.fuse_projections()
    if pack:
        assert model.pack_for_cpu(max_num_tokens=256) > 0
    model.use_native = use_native
    return PagedRunner(config, model, block_size=block_size)


def greedy_decode_error(runner: PagedRunner, hf_model: Any, prompts: list[list[int]],
                        num_steps: int = 4, split_rows: bool = False) -> float:
    """Largest |logit| difference from `hf_model` over the prompts' prefill and
    `num_steps` greedy decode steps. `split_rows`: every other step decodes the first
    sequence alone, the others in a second step (1-row and multi-row decodes)."""
    tables = [runner.new_table(len(p) + num_steps) for p in prompts]
    seqs = [list(p) for p in prompts]
    ours = runner.step([(p, 0, t) for p, t in zip(prompts, tables, strict=True)])

    def decode(rows: range) -> torch.Tensor:
        return runner.step([([seqs[i][-1]], len(seqs[i]) - 1, tables[i]) for i in rows])

    worst = 0.0
    for step in range(num_steps):
        for row, seq in zip(ours, seqs, strict=True):
            worst = max(worst, (row - hf_logits(hf_model, seq)[-1]).abs().max().item())
        for row, seq in zip(ours, seqs, strict=True):
            seq.append(int(row.argmax()))
        if split_rows and not step % 2:
            ours = torch.cat([decode(range(1)), decode(range(1, len(seqs)))])
        else:
            ours = decode(range(len(seqs)))
    return worst


def hf_bf16_model(path: Any) -> Any:
    """The reference: transformers' bfloat16 eager model of the checkpoint at `path`."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                attn_implementation="eager").eval()
