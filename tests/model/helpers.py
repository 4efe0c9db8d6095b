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
