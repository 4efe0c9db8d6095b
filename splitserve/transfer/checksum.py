"""Per-layer checksum of KV bytes, fast enough to stay off the transfer's critical path.

Measured on this machine (benchmarks/kv_transfer.py, `checksum` section): zlib.crc32 runs
at ~2.4 GB/s and adler32 at ~1.7 GB/s, slower than a loopback socket (~2-4 GB/s) and far
slower than a memory copy (~12 GB/s), so either would cap both transports. Instead we sum
the layer as uint64 words in 4 KiB chunks (numpy, memory-bandwidth bound, ~11 GB/s) and
hash the small vector of chunk sums, the byte tail and the length with blake2b.

What it catches: any change confined to one 8-byte word (bit flips, a zeroed or stale
word), truncation or extension, and any reordering or duplication of 4 KiB chunks, hence
of KV blocks (the bug a wrong block table produces). What it can miss: a permutation of
words inside one 4 KiB chunk, or several word changes in one chunk whose sum cancels.
It guards against our own bugs and memory faults, not an adversary: the transport
authenticates peers with the cluster secret, it does not MAC the stream.
"""

from __future__ import annotations

import hashlib

import numpy as np

CHECKSUM_NAME = "chunksum64-blake2b"
# Layers at least this big are checksummed on a helper thread, overlapping the transfer;
# below it a thread handoff (~0.05 ms, far more under CPU contention) costs more than the
# checksum itself (~0.1 ms per MB).
PARALLEL_CHECKSUM_MIN_BYTES = 1 << 20
_CHUNK_BYTES = 4096
_WORDS_PER_CHUNK = _CHUNK_BYTES // 8


def kv_checksum(data: memoryview | bytes | bytearray) -> int:
    """64-bit checksum of a layer's bytes (see the module docstring for its guarantees)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    num_bytes = raw.size
    num_chunk_bytes = num_bytes - num_bytes % _CHUNK_BYTES
    digest = hashlib.blake2b(digest_size=8)
    digest.update(num_bytes.to_bytes(8, "little"))
    if num_chunk_bytes:
        words = raw[:num_chunk_bytes].view(np.uint64).reshape(-1, _WORDS_PER_CHUNK)
        # uint64 addition wraps modulo 2**64, which is what a checksum wants.
        digest.update(words.sum(axis=1, dtype=np.uint64).tobytes())
    digest.update(raw[num_chunk_bytes:].tobytes())
    return int.from_bytes(digest.digest(), "little")
