from __future__ import annotations

import numpy as np
import pytest

from splitserve.transfer import kv_checksum

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("num_bytes", [0, 1, 7, 4095, 4096, 4097, 3 * 4096 + 13, 1 << 20])
def test_equal_bytes_equal_checksum_whatever_the_container(num_bytes):
    data = RNG.integers(0, 256, num_bytes, dtype=np.uint8)
    raw = data.tobytes()
    assert kv_checksum(raw) == kv_checksum(bytearray(raw)) == kv_checksum(memoryview(data))
    # Unaligned views (a layer slice at an odd offset) give the same answer.
    padded = np.concatenate([np.zeros(3, np.uint8), data])
    assert kv_checksum(memoryview(padded)[3:]) == kv_checksum(raw)


def test_every_single_byte_flip_is_detected():
    data = bytearray(RNG.integers(0, 256, 3 * 4096 + 100, dtype=np.uint8).tobytes())
    reference = kv_checksum(data)
    for position in range(0, len(data), 37):
        for flip in (0x01, 0x80, 0xFF):
            data[position] ^= flip
            assert kv_checksum(data) != reference, (position, flip)
            data[position] ^= flip
    assert kv_checksum(data) == reference


def test_reordered_or_duplicated_blocks_are_detected():
    block_bytes = 8192
    blocks = [RNG.integers(0, 256, block_bytes, dtype=np.uint8).tobytes() for _ in range(4)]
    reference = kv_checksum(b"".join(blocks))
    assert kv_checksum(b"".join([blocks[1], blocks[0], *blocks[2:]])) != reference
    assert kv_checksum(b"".join([blocks[0], blocks[0], *blocks[2:]])) != reference
    assert kv_checksum(b"".join(blocks[:3])) != reference
    assert kv_checksum(b"".join(blocks) + b"\0") != reference


def test_zeroed_layer_is_not_mistaken_for_another_length():
    assert kv_checksum(bytes(4096)) != kv_checksum(bytes(8192))
