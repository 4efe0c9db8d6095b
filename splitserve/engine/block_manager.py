"""Paged KV block allocator with reference counts and a hash-keyed prefix cache.

Every block is in exactly one of three places:

- in use: reference count > 0 (held by one or more sequences' block tables);
- truly free: count 0, holds nothing reusable;
- evictable: count 0 but registered in the prefix cache, so a later request with the same
  token prefix can take it back instead of recomputing; evicted (unregistered and handed
  out as a new block) least-recently-freed first, and only when no truly free block is left.

A block is registered in the prefix cache once it is full and all its tokens are computed;
its key chains the parent's key, so equal keys mean equal tokens at equal positions:
`key_i = sha256(key_{i-1} || token ids of block i as little-endian int64)`. We use sha256
rather than Python's `hash()` because the key must be the same in every process (the
router can compute it for prefix affinity, and imported KV is registered on the decode
worker under the key the prefill worker would use), and a collision would silently serve
another prompt's KV: a 64-bit non-cryptographic hash is not good enough for that.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from collections.abc import Sequence as SequenceOf

from splitserve.engine.config import CacheConfig
from splitserve.engine.sequence import Sequence


class BlockAccountingError(RuntimeError):
    """A block was freed twice, or an unknown block id was used: an engine bug."""


def hash_block_tokens(parent_hash: bytes | None, token_ids: SequenceOf[int]) -> bytes:
    """Prefix-cache key of one full block (deterministic across processes and hosts)."""
    digest = hashlib.sha256(parent_hash or b"")
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return digest.digest()


def hash_prefix_blocks(token_ids: SequenceOf[int], block_size: int) -> list[bytes]:
    """Keys of every full block of `token_ids` (the partial tail block has none)."""
    keys: list[bytes] = []
    parent: bytes | None = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, token_ids[start : start + block_size])
        keys.append(parent)
    return keys


class BlockManager:
    """Allocates KV blocks to sequences; owns the prefix cache.

    Mutates `seq.block_ids`, `seq.block_hashes` and `seq.num_cached_blocks` of the
    sequences handed to it and nothing else. Call order per admission:
    `find_cached_prefix(seq)` then, with no other allocation in between,
    `allocate(seq, num_tokens, cached_block_ids)`; later `allocate(seq, more_tokens)` to
    grow, `cache_computed_blocks(seq)` after the model computed tokens, `free(seq)` once.
    """

    def __init__(self, config: CacheConfig) -> None:
        self.block_size = config.block_size
        self.num_total_blocks = config.num_blocks
        self.enable_prefix_caching = config.enable_prefix_caching
        self._ref_counts = [0] * config.num_blocks
        self._block_keys: list[bytes | None] = [None] * config.num_blocks
        self._key_to_block: dict[bytes, int] = {}
        self._free: deque[int] = deque(range(config.num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._num_used_blocks = 0
        self.num_prefix_query_tokens = 0  # prompt tokens looked up at admission
        self.num_prefix_hit_tokens = 0  # of those, tokens served from the cache

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation may take: truly free plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self._num_used_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks registered in the prefix cache, in use or evictable."""
        return len(self._key_to_block)

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def ref_count(self, block_id: int) -> int:
        self._check_id(block_id)
        return self._ref_counts[block_id]

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Ids of the longest run of cached full blocks that starts seq's tokens.

        Never covers the last token: it must be computed so its logits exist.
        """
        if not self.enable_prefix_caching or seq.block_ids:
            return []
        max_blocks = (seq.num_tokens - 1) // self.block_size
        keys = self._block_keys_of(seq, max_blocks)
        hits: list[int] = []
        for key in keys:
            block_id = self._key_to_block.get(key)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def allocate(
        self, seq: Sequence, num_tokens: int, cached_block_ids: SequenceOf[int] = ()
    ) -> bool:
        """Give seq blocks for positions [0, num_tokens); all or nothing.

        `cached_block_ids` (from `find_cached_prefix`, only on seq's first allocation)
        are shared (reference +1) instead of newly allocated. False, and no change, when
        the free blocks do not suffice.
        """
        if not cached_block_ids and num_tokens <= len(seq.block_ids) * self.block_size:
            return True  # the common decode step: the last block still has room
        if cached_block_ids and seq.block_ids:
            raise BlockAccountingError(f"{seq.request_id}: cached prefix on a non-empty table")
        num_new = self.num_blocks_for(num_tokens) - len(seq.block_ids) - len(cached_block_ids)
        num_revived = sum(1 for b in cached_block_ids if self._ref_counts[b] == 0)
        if max(num_new, 0) + num_revived > self.num_free_blocks:
            return False
        if cached_block_ids:
            keys = self._block_keys_of(seq, len(cached_block_ids))
            for key, block_id in zip(keys, cached_block_ids, strict=True):
                if self._block_keys[block_id] != key:
                    raise BlockAccountingError(f"block {block_id} is not cached under this key")
                self._incref(block_id)
                seq.block_ids.append(block_id)
            seq.num_cached_blocks = len(cached_block_ids)
            self.num_prefix_query_tokens += seq.num_tokens
            self.num_prefix_hit_tokens += len(cached_block_ids) * self.block_size
        elif not seq.block_ids:
            self.num_prefix_query_tokens += seq.num_tokens
        for _ in range(num_new):
            block_id = self._take_free_block()
            self._incref(block_id)
            seq.block_ids.append(block_id)
        return True

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Register seq's full, computed blocks in the prefix cache (call after a step)."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_ids))
        if num_full <= seq.num_cached_blocks:
            return
        keys = self._block_keys_of(seq, num_full)
        for index in range(seq.num_cached_blocks, num_full):
            key = keys[index]
            block_id = seq.block_ids[index]
            # Another sequence may have computed the same prefix in the same step: keep the
            # first copy registered; this one is freed as a plain block later.
            if key not in self._key_to_block and self._block_keys[block_id] is None:
                self._key_to_block[key] = block_id
                self._block_keys[block_id] = key
        seq.num_cached_blocks = num_full

    def free(self, seq: Sequence) -> None:
        """Drop seq's references; its table becomes empty.

        Tail blocks are released first so that, among the now evictable ones, a
        sequence's tail is evicted before its (more widely shared) head.
        """
        for block_id in reversed(seq.block_ids):
            self._decref(block_id)
        seq.block_ids = []
        seq.num_cached_blocks = 0

    def check_consistency(self, block_tables: Iterable[SequenceOf[int]] | None = None) -> None:
        """Raise BlockAccountingError unless every internal invariant holds.

        With `block_tables` (every live sequence's table), also check that each block's
        reference count equals the number of tables that hold it.
        """
        free_ids = set(self._free)
        evictable_ids = set(self._evictable)
        problems: list[str] = []
        if len(free_ids) != len(self._free) or free_ids & evictable_ids:
            problems.append("a block is listed twice among free blocks")
        for block_id, count in enumerate(self._ref_counts):
            idle = block_id in free_ids or block_id in evictable_ids
            if count < 0 or (count == 0) != idle:
                problems.append(f"block {block_id}: ref {count}, idle listed {idle}")
            key = self._block_keys[block_id]
            if block_id in evictable_ids and key is None:
                problems.append(f"evictable block {block_id} has no key")
            if block_id in free_ids and key is not None:
                problems.append(f"free block {block_id} still has a key")
            if key is not None and self._key_to_block.get(key) != block_id:
                problems.append(f"block {block_id}: key map disagrees")
        if len(self._key_to_block) != sum(k is not None for k in self._block_keys):
            problems.append("key map size differs from keyed blocks")
        num_used = sum(1 for count in self._ref_counts if count > 0)
        if num_used != self._num_used_blocks:
            problems.append(f"used counter {self._num_used_blocks} != {num_used}")
        if num_used + self.num_free_blocks != self.num_total_blocks:
            problems.append("used + free != total")
        if block_tables is not None:
            expected = [0] * self.num_total_blocks
            for table in block_tables:
                if len(set(table)) != len(table):
                    problems.append(f"a table holds a block twice: {list(table)}")
                for block_id in table:
                    expected[block_id] += 1
            if expected != self._ref_counts:
                problems.append("reference counts differ from live block tables")
        if problems:
            raise BlockAccountingError("; ".join(problems))

    def _block_keys_of(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        keys = seq.block_hashes
        size = self.block_size
        parent = keys[-1] if keys else None
        for index in range(len(keys), num_blocks):
            parent = hash_block_tokens(
                parent, seq.token_ids_slice(index * size, (index + 1) * size)
            )
            keys.append(parent)
        return keys[:num_blocks]

    def _take_free_block(self) -> int:
        if self._free:
            return self._free.popleft()
        block_id, _ = self._evictable.popitem(last=False)
        key = self._block_keys[block_id]
        assert key is not None  # only keyed blocks are evictable
        del self._key_to_block[key]
        self._block_keys[block_id] = None
        return block_id

    def _incref(self, block_id: int) -> None:
        if self._ref_counts[block_id] == 0:
            self._evictable.pop(block_id, None)
            self._num_used_blocks += 1
        self._ref_counts[block_id] += 1

    def _decref(self, block_id: int) -> None:
        self._check_id(block_id)
        if self._ref_counts[block_id] <= 0:
            raise BlockAccountingError(f"block {block_id} freed more often than allocated")
        self._ref_counts[block_id] -= 1
        if self._ref_counts[block_id] == 0:
            self._num_used_blocks -= 1
            if self._block_keys[block_id] is None:
                self._free.append(block_id)
            else:
                self._evictable[block_id] = None

    def _check_id(self, block_id: int) -> None:
        if not isinstance(block_id, int) or not 0 <= block_id < self.num_total_blocks:
            raise BlockAccountingError(f"unknown block id {block_id!r}")
