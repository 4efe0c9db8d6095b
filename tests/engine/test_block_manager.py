"""Block allocator and prefix cache rules, on tiny pools (no torch)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from splitserve.engine.block_manager import (
    BlockAccountingError,
    BlockManager,
    hash_block_tokens,
    hash_prefix_blocks,
)
from splitserve.engine.config import CacheConfig
from splitserve.engine.sequence import Sequence


def _manager(num_blocks: int = 8, block_size: int = 4, caching: bool = True) -> BlockManager:
    return BlockManager(
        CacheConfig(num_blocks=num_blocks, block_size=block_size, enable_prefix_caching=caching)
    )


def _computed(bm: BlockManager, rid: str, tokens: list[int]) -> Sequence:
    """A sequence admitted with its cached prefix and then fully computed."""
    seq = Sequence(rid, tokens)
    cached = bm.find_cached_prefix(seq)
    assert bm.allocate(seq, seq.num_tokens, cached)
    seq.num_computed_tokens = seq.num_tokens
    bm.cache_computed_blocks(seq)
    return seq


def test_allocate_counts_blocks_and_free_returns_them() -> None:
    bm = _manager(num_blocks=8, block_size=4)
    seq = Sequence("a", list(range(9)))  # 9 tokens -> 3 blocks
    assert bm.allocate(seq, seq.num_tokens)
    assert len(seq.block_ids) == 3 and len(set(seq.block_ids)) == 3
    assert (bm.num_used_blocks, bm.num_free_blocks) == (3, 5)
    assert bm.allocate(seq, 12)  # still fits the third block
    assert len(seq.block_ids) == 3
    assert bm.allocate(seq, 13)  # needs a fourth
    assert len(seq.block_ids) == 4
    bm.free(seq)
    assert seq.block_ids == []
    assert (bm.num_used_blocks, bm.num_free_blocks) == (0, 8)
    bm.check_consistency([])


def test_allocation_is_all_or_nothing() -> None:
    bm = _manager(num_blocks=4, block_size=4)
    first = Sequence("a", list(range(12)))
    assert bm.allocate(first, 12)
    second = Sequence("b", list(range(8)))
    assert not bm.allocate(second, 8)  # needs 2 blocks, 1 free
    assert second.block_ids == []
    assert (bm.num_used_blocks, bm.num_free_blocks) == (3, 1)
    bm.check_consistency([first.block_ids])


def test_double_free_and_unknown_block_raise() -> None:
    bm = _manager()
    seq = Sequence("a", [1, 2, 3])
    assert bm.allocate(seq, 3)
    stale_table = list(seq.block_ids)
    bm.free(seq)
    seq.block_ids = stale_table  # a buggy caller frees the same blocks again
    with pytest.raises(BlockAccountingError, match="freed more often"):
        bm.free(seq)
    with pytest.raises(BlockAccountingError, match="unknown block"):
        bm.ref_count(99)
    bogus = Sequence("b", [1])
    bogus.block_ids = [42]
    with pytest.raises(BlockAccountingError, match="unknown block"):
        bm.free(bogus)


def test_block_key_is_sha256_chain_of_little_endian_int64() -> None:
    tokens = [5, 6, 7, 8, 9, 10, 11, 12]
    expected_first = hashlib.sha256(struct.pack("<4q", 5, 6, 7, 8)).digest()
    expected_second = hashlib.sha256(expected_first + struct.pack("<4q", 9, 10, 11, 12)).digest()
    assert hash_prefix_blocks(tokens, 4) == [expected_first, expected_second]
    # Same tokens after a different prefix are a different block.
    assert hash_block_tokens(None, [9, 10, 11, 12]) != expected_second
    assert hash_prefix_blocks(tokens + [1, 2], 4) == [expected_first, expected_second]


def test_prefix_hit_shares_full_blocks_and_counts_refs() -> None:
    bm = _manager(num_blocks=8, block_size=4)
    first = _computed(bm, "a", list(range(10)))  # blocks: [0..3] [4..7] partial
    assert bm.num_cached_blocks == 2
    second = Sequence("b", list(range(8)) + [50, 51, 52])
    hits = bm.find_cached_prefix(second)
    assert hits == first.block_ids[:2]
    assert bm.allocate(second, second.num_tokens, hits)
    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.block_ids[2] != first.block_ids[2]
    assert [bm.ref_count(b) for b in first.block_ids] == [2, 2, 1]
    assert bm.num_used_blocks == 4
    assert bm.num_prefix_hit_tokens == 8
    bm.check_consistency([first.block_ids, second.block_ids])


def test_prefix_hit_never_covers_the_last_token() -> None:
    bm = _manager(num_blocks=8, block_size=4)
    _computed(bm, "a", list(range(8)))  # exactly two full blocks, both cached
    assert bm.num_cached_blocks == 2
    same = Sequence("b", list(range(8)))
    # The last token must be computed for its logits, so only the first block is reused.
    assert len(bm.find_cached_prefix(same)) == 1


def test_freed_cached_blocks_stay_reusable_and_count_as_free() -> None:
    bm = _manager(num_blocks=4, block_size=4)
    first = _computed(bm, "a", list(range(9)))
    kept = list(first.block_ids[:2])
    bm.free(first)
    assert (bm.num_used_blocks, bm.num_free_blocks, bm.num_cached_blocks) == (0, 4, 2)
    again = Sequence("b", list(range(9)))
    assert bm.find_cached_prefix(again) == kept
    assert bm.allocate(again, 9, kept)
    assert again.block_ids[:2] == kept
    bm.check_consistency([again.block_ids])


def test_lru_eviction_takes_truly_free_first_then_oldest_tail_first() -> None:
    bm = _manager(num_blocks=6, block_size=2)
    old = _computed(bm, "old", [1, 2, 3, 4, 5])  # 3 blocks, 2 cached
    new = _computed(bm, "new", [7, 8, 9, 10, 11])  # 3 blocks, 2 cached
    old_head, old_tail = old.block_ids[0], old.block_ids[1]
    new_head, new_tail = new.block_ids[0], new.block_ids[1]
    bm.free(old)
    bm.free(new)
    assert bm.num_cached_blocks == 4
    taker = Sequence("taker", [0] * 4)
    assert bm.allocate(taker, 4)  # 2 blocks: the two uncached partial blocks come first
    assert bm.num_cached_blocks == 4
    taker2 = Sequence("taker2", [0] * 2)
    assert bm.allocate(taker2, 2)  # now evicts: the oldest-freed sequence's tail first
    assert taker2.block_ids == [old_tail]
    assert bm.find_cached_prefix(Sequence("q", [1, 2, 3, 4, 5])) == [old_head]
    taker3 = Sequence("taker3", [0] * 4)
    assert bm.allocate(taker3, 4)
    assert taker3.block_ids == [old_head, new_tail]
    assert bm.find_cached_prefix(Sequence("q2", [7, 8, 9, 10, 11])) == [new_head]
    assert bm.num_cached_blocks == 1
    bm.check_consistency([taker.block_ids, taker2.block_ids, taker3.block_ids])


def test_reusing_a_cached_block_refreshes_its_lru_position() -> None:
    bm = _manager(num_blocks=4, block_size=2)
    a = _computed(bm, "a", [1, 2, 3])  # block a0 cached, a1 partial
    b = _computed(bm, "b", [5, 6, 7])  # block b0 cached
    a_head, b_head = a.block_ids[0], b.block_ids[0]
    bm.free(a)
    bm.free(b)
    # Touch a's head again: it becomes most recently used.
    again = _computed(bm, "a2", [1, 2, 3])
    assert again.block_ids[0] == a_head
    bm.free(again)
    grab = Sequence("grab", [0] * 8)
    assert bm.allocate(grab, 8)  # 2 truly free blocks, then evicts b_head before a_head
    assert grab.block_ids[2:] == [b_head, a_head]


def test_same_prefix_computed_twice_keeps_one_cached_copy() -> None:
    bm = _manager(num_blocks=8, block_size=4)
    x = Sequence("x", list(range(6)))
    y = Sequence("y", list(range(6)))
    # Both admitted before either computed anything: no hit, two physical copies.
    assert bm.allocate(x, 6, bm.find_cached_prefix(x))
    assert bm.allocate(y, 6, bm.find_cached_prefix(y))
    for seq in (x, y):
        seq.num_computed_tokens = 6
        bm.cache_computed_blocks(seq)
    assert bm.num_cached_blocks == 1
    bm.check_consistency([x.block_ids, y.block_ids])
    bm.free(x)
    bm.free(y)
    assert (bm.num_used_blocks, bm.num_free_blocks, bm.num_cached_blocks) == (0, 8, 1)
    bm.check_consistency([])


def test_prefix_caching_disabled_never_hits_or_caches() -> None:
    bm = _manager(caching=False)
    first = _computed(bm, "a", list(range(9)))
    assert bm.num_cached_blocks == 0
    assert bm.find_cached_prefix(Sequence("b", list(range(9)))) == []
    bm.free(first)
    assert bm.num_free_blocks == bm.num_total_blocks


def test_only_computed_full_blocks_are_cached() -> None:
    bm = _manager(num_blocks=8, block_size=4)
    seq = Sequence("a", list(range(12)))
    assert bm.allocate(seq, 12)
    seq.num_computed_tokens = 7  # a chunk ended mid-block
    bm.cache_computed_blocks(seq)
    assert bm.num_cached_blocks == 1
    seq.num_computed_tokens = 12
    bm.cache_computed_blocks(seq)
    assert bm.num_cached_blocks == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_blocks": 0}, "num_blocks"),
        ({"num_blocks": 4, "block_size": 0}, "block_size"),
        ({"num_blocks": 4, "block_size": 2.5}, "block_size"),
        ({"num_blocks": True}, "num_blocks"),
        ({"num_blocks": 4, "enable_prefix_caching": "yes"}, "enable_prefix_caching"),
    ],
)
def test_cache_config_rejects_bad_values(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CacheConfig(**kwargs)  # type: ignore[arg-type]
