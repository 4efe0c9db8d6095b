"""ForwardBatch.build: flat layout, slot mapping, logits rows, validation."""

from __future__ import annotations

import pytest
import torch

from splitserve.model import ForwardBatch, allocate_kv_caches
from tests.model.conftest import TinyModels


def test_build_lays_out_sequences_and_slots() -> None:
    batch = ForwardBatch.build(
        [([11, 12, 13], 2, [7, 3]), ([21], 5, [0, 9])], block_size=4, logits_for=[1, 0]
    )
    assert batch.input_ids.tolist() == [11, 12, 13, 21]
    assert batch.positions.tolist() == [2, 3, 4, 5]
    # pos 2,3 -> block 7 offsets 2,3; pos 4 -> block 3 offset 0; pos 5 -> block 9 offset 1
    assert batch.slot_mapping.tolist() == [30, 31, 12, 37]
    assert batch.query_lens == [3, 1]
    assert batch.context_lens == [5, 6]
    assert batch.block_tables == [[7, 3], [0, 9]]
    assert batch.logits_indices.tolist() == [3, 2]
    every = ForwardBatch.build([([1, 2], 0, [0]), ([3], 0, [1])], 4, every_token=True)
    assert every.logits_indices.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("seqs", "kwargs", "message"),
    [
        ([], {}, "at least one sequence"),
        ([([], 0, [0])], {}, "no tokens"),
        ([([1], -1, [0])], {}, "start_position"),
        ([([1] * 5, 0, [0])], {}, "block table of 1 blocks"),
        ([([1], 0, [0])], {"logits_for": [1]}, "logits_for names sequence 1"),
    ],
)
def test_build_rejects_bad_input(seqs: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ForwardBatch.build(seqs, 4, **kwargs)


def test_direct_construction_is_validated() -> None:
    ids = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="sum\\(query_lens\\)"):
        ForwardBatch(ids, ids, ids, [1], [1], [[0]], torch.tensor([0]))
    with pytest.raises(ValueError, match="query_len <= context_len"):
        ForwardBatch(ids, ids, ids, [2], [1], [[0]], torch.tensor([0]))


def test_forward_rejects_wrong_number_of_layer_caches(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama")
    caches = allocate_kv_caches(config, 4, 4)
    batch = ForwardBatch.build([([5, 6], 0, [0])], 4)
    with pytest.raises(ValueError, match="expected 2 KV cache tensors, got 1"):
        model(batch, caches[:1])


def test_step_without_logits_rows_still_fills_the_cache(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama")
    caches = allocate_kv_caches(config, 4, 4)
    batch = ForwardBatch.build([([5, 6, 7], 0, [2])], 4, logits_for=[])
    logits = model(batch, caches)
    assert logits.shape == (0, config.vocab_size)
    assert torch.count_nonzero(caches[0][:, 2, :3]) > 0
    assert torch.count_nonzero(caches[0][:, 2, 3]) == 0


def test_forward_rejects_block_ids_outside_the_cache(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama")
    caches = allocate_kv_caches(config, 4, 4)
    batch = ForwardBatch.build([([5, 6, 7, 8, 9], 0, [1, 4])], 4)
    with pytest.raises(ValueError, match=r"ids outside the cache's \[0, 4\) blocks"):
        model(batch, caches)


def test_unused_trailing_block_table_entries_are_ignored(tiny: TinyModels) -> None:
    """An allocator may pad tables (e.g. with -1) past the blocks a context uses."""
    config, model, _ = tiny.get("llama")
    caches = allocate_kv_caches(config, 4, 4)
    prompt = ForwardBatch.build([([5, 6, 7], 0, [2, -1])], 4)
    decode = ForwardBatch.build([([8], 3, [2, -1]), ([9, 10, 11, 12, 13], 0, [0, 1])], 4)
    model(prompt, caches)
    assert model(decode, caches).shape == (2, config.vocab_size)
