"""KV bytes: export/import roundtrip between caches, sizing helpers, clear errors."""

from __future__ import annotations

import pytest
import torch

from splitserve.model import (
    allocate_kv_caches,
    bytes_per_block_per_layer,
    export_blocks,
    import_blocks,
    num_blocks_for_memory,
)
from tests.model.conftest import TinyModels
from tests.model.helpers import PagedRunner, random_ids


def test_sizes(tiny: TinyModels) -> None:
    config, _, _ = tiny.get("llama")  # 2 layers, 2 kv heads, head_dim 16
    assert bytes_per_block_per_layer(config, 16, "float32") == 2 * 16 * 2 * 16 * 4
    assert bytes_per_block_per_layer(config, 16, torch.bfloat16) == 2 * 16 * 2 * 16 * 2
    per_block_all_layers = 2 * 16 * 2 * 16 * 4 * 2
    assert num_blocks_for_memory(config, 16, "float32", 10 * per_block_all_layers + 5) == 10
    caches = allocate_kv_caches(config, 10, 16)
    assert sum(c.numel() * c.element_size() for c in caches) == 10 * per_block_all_layers


def test_export_import_roundtrip_continues_decoding_identically(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama")
    prompt = random_ids(45, seed=21)
    src = PagedRunner(config, model, block_size=8, num_blocks=64, seed=1)
    dst = PagedRunner(config, model, block_size=8, num_blocks=64, seed=2)
    src_table = src.new_table(60)
    dst_table = dst.new_table(60)
    assert src_table != dst_table
    first = int(src.step([(prompt, 0, src_table)]).argmax(-1).item())
    num_blocks = -(-len(prompt) // 8)
    for layer in range(config.num_layers):
        data = export_blocks(src.kv_caches, layer, src_table[:num_blocks])
        assert len(data) == num_blocks * bytes_per_block_per_layer(config, 8, "float32")
        import_blocks(dst.kv_caches, layer, dst_table[:num_blocks], memoryview(data))
    tokens_src, tokens_dst = [first], [first]
    for runner, table, tokens in ((src, src_table, tokens_src), (dst, dst_table, tokens_dst)):
        for _ in range(8):
            pos = len(prompt) + len(tokens) - 1
            logits = runner.step([([tokens[-1]], pos, table)])
            tokens.append(int(logits.argmax(-1).item()))
    assert tokens_src == tokens_dst
    # A cache that did not receive the bytes decodes differently (the test can fail).
    empty = PagedRunner(config, model, block_size=8, num_blocks=64, seed=3)
    cold = empty.step([([first], len(prompt), empty.new_table(60))])
    warm = dst.step([([first], len(prompt), dst_table)])
    assert not torch.allclose(cold, warm)


def test_export_is_block_major_k_then_v() -> None:
    caches = [torch.arange(2 * 3 * 2 * 1 * 2, dtype=torch.float32).view(2, 3, 2, 1, 2)]
    data = export_blocks(caches, 0, [2, 0])
    values = torch.frombuffer(bytearray(data), dtype=torch.float32)
    expected = torch.cat([caches[0][0, 2], caches[0][1, 2], caches[0][0, 0], caches[0][1, 0]])
    assert torch.equal(values, expected.flatten())


def test_import_errors_are_clear(tiny: TinyModels) -> None:
    config, _, _ = tiny.get("llama")
    caches = allocate_kv_caches(config, 4, 8)
    block = bytes_per_block_per_layer(config, 8, "float32")
    with pytest.raises(ValueError, match=f"got {block - 1} bytes, expected {block}"):
        import_blocks(caches, 0, [1], b"\0" * (block - 1))
    with pytest.raises(ValueError, match="block id 4 out of range"):
        import_blocks(caches, 0, [4], b"\0" * block)
    with pytest.raises(ValueError, match="layer 2 out of range"):
        export_blocks(caches, 2, [0])
    with pytest.raises(ValueError, match="duplicate block ids"):
        export_blocks(caches, 0, [1, 1])


def test_import_into_cache_allocated_under_inference_mode(tiny: TinyModels) -> None:
    config, _, _ = tiny.get("llama")
    with torch.inference_mode():
        caches = allocate_kv_caches(config, 4, 8)
    source = [torch.randn_like(c) for c in allocate_kv_caches(config, 4, 8)]
    import_blocks(caches, 1, [3, 0], export_blocks(source, 1, [0, 2]))
    assert torch.equal(caches[1][:, 3], source[1][:, 0])
    assert torch.equal(caches[1][:, 0], source[1][:, 2])
    assert torch.count_nonzero(caches[1][:, 1:3]) == 0
