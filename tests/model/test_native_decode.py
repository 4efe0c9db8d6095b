"""The C++ paged decode kernel against plain-torch attention over the same gathered KV."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from splitserve.model import native

TOL = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2}
needs_kernels = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


@pytest.mark.skipif(native._compiler() is None or os.environ.get("SPLITSERVE_NATIVE") == "0",
                    reason="no C++ compiler, or native kernels switched off: torch path only")
def test_kernel_builds_here() -> None:
    # with a compiler (CI has g++) a broken build must fail here, not silently leave every
    # other test on the torch path
    assert native.available(), "native kernels failed to build (see the logged warning)"
    assert native.supports(torch.bfloat16, torch.device("cpu"))
    assert not native.supports(torch.float16, torch.device("cpu"))
    # loading must not switch the process to flush-to-zero (as -ffast-math linking does)
    assert 5e-324 * 1.0 > 0
    assert torch.tensor([1e-40]).mul(1.0).item() > 0


def reference(q: torch.Tensor, cache: torch.Tensor, tables: torch.Tensor,
              ctx_lens: list[int], window: int | None) -> torch.Tensor:
    """float64 attention of each row's single query over its first ctx_len cached tokens."""
    _, _, block_size, kv_heads, head_dim = cache.shape
    outs = []
    for b, ctx_len in enumerate(ctx_lens):
        blocks = tables[b, : -(-ctx_len // block_size)]
        k = cache[0, blocks].reshape(-1, kv_heads, head_dim)[:ctx_len].double()
        v = cache[1, blocks].reshape(-1, kv_heads, head_dim)[:ctx_len].double()
        if window is not None:
            k, v = k[max(0, ctx_len - window):], v[max(0, ctx_len - window):]
        out = F.scaled_dot_product_attention(
            q[b].double()[None, :, None, :], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
            enable_gqa=True)
        outs.append(out[0, :, 0, :])
    return torch.stack(outs)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "head_dim,heads,kv_heads,block_size",
    [(16, 4, 2, 4), (32, 6, 2, 16), (64, 12, 4, 16), (128, 8, 1, 16), (64, 8, 8, 5),
     (48, 6, 3, 8),  # head_dim 48: no specialised variant, the portable loop
     (64, 36, 4, 16)],  # 9 query heads per KV head: the portable loop too
)
@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("generic", [False, True])
def test_matches_reference(dtype: torch.dtype, head_dim: int, heads: int, kv_heads: int,
                           block_size: int, window: int | None, generic: bool) -> None:
    gen = torch.Generator().manual_seed(head_dim * 31 + block_size)
    ctx_lens = [1, 2, block_size, block_size + 1, 3 * block_size - 1, 37, 80]
    max_blocks = -(-max(ctx_lens) // block_size)
    num_blocks = 1 + len(ctx_lens) * max_blocks
    cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    # scattered, non-monotonic block ids, padded with a block the kernel must never read
    perm = torch.randperm(num_blocks - 1, generator=gen)[: len(ctx_lens) * max_blocks] + 1
    tables = perm.view(len(ctx_lens), max_blocks).clone()
    for b, ctx_len in enumerate(ctx_lens):
        tables[b, -(-ctx_len // block_size):] = 0
    cache[:, 0] = float("nan")  # poison the padding block
    # q rows strided as in the model (q sits beside k in one fused tensor) and interleaved
    # with rows that are not decodes (a mixed batch): rows 1, 3, 5, ...
    fused = torch.randn(2 * len(ctx_lens), heads + kv_heads, head_dim, generator=gen).to(dtype)
    q = fused[:, :heads]
    rows = torch.arange(1, 2 * len(ctx_lens), 2)
    out = torch.full((2 * len(ctx_lens), heads, head_dim), 7.0, dtype=dtype)
    native.paged_decode(q, out, cache, rows, torch.tensor(ctx_lens), tables, window,
                        1 / math.sqrt(head_dim), generic=generic)
    expected = reference(q[rows], cache, tables, ctx_lens, window)
    err = (out[rows].double() - expected).abs().max().item()
    assert err < TOL[dtype] * max(1.0, expected.abs().max().item()), err
    assert (out[rows - 1] == 7.0).all()  # other rows untouched


@needs_kernels
@pytest.mark.parametrize("head_dim,heads,kv_heads", [(64, 12, 4), (128, 8, 2), (32, 4, 4)])
@pytest.mark.parametrize("window", [None, 45])
def test_long_contexts_with_a_moving_maximum(head_dim: int, heads: int, kv_heads: int,
                                             window: int | None) -> None:
    # Many chunks of the online softmax (the bf16 kernel updates it every 32 tokens): keys
    # grow along the context, so the running maximum moves chunk after chunk and every old
    # sum must be rescaled; one huge early key checks the other direction. Contexts end
    # mid-chunk and mid-block.
    gen = torch.Generator().manual_seed(head_dim + heads)
    block_size = 16
    ctx_lens = [31, 33, 250, 333, 17]
    max_blocks = -(-max(ctx_lens) // block_size)
    num_blocks = 1 + len(ctx_lens) * max_blocks
    cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen)
    ramp = torch.linspace(0.2, 3.0, block_size * num_blocks).view(num_blocks, block_size, 1, 1)
    cache[0] *= ramp[torch.randperm(num_blocks, generator=gen)]
    cache[0, 3, 2] *= 20.0
    cache = cache.to(torch.bfloat16)
    perm = torch.randperm(num_blocks - 1, generator=gen)[: len(ctx_lens) * max_blocks] + 1
    tables = perm.view(len(ctx_lens), max_blocks).clone()
    q = torch.randn(len(ctx_lens), heads, head_dim, generator=gen).to(torch.bfloat16)
    out = torch.empty_like(q)
    rows = torch.arange(len(ctx_lens))
    native.paged_decode(q, out, cache, rows, torch.tensor(ctx_lens), tables, window,
                        1 / math.sqrt(head_dim))
    expected = reference(q, cache, tables, ctx_lens, window)
    err = (out.double() - expected).abs().max().item()
    assert err < TOL[torch.bfloat16] * max(1.0, expected.abs().max().item()), err


@needs_kernels
def test_bad_layouts_are_refused() -> None:
    cache = torch.zeros(2, 4, 4, 2, 16)
    q = torch.zeros(2, 4, 16)
    out = torch.zeros(2, 4, 16)
    rows, ctx, tables = torch.arange(2), torch.tensor([3, 4]), torch.zeros(2, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="multiple"):
        native.paged_decode(torch.zeros(2, 3, 16), torch.zeros(2, 3, 16), cache, rows, ctx,
                            tables, None, 0.25)
    with pytest.raises(ValueError, match="int64"):
        native.paged_decode(q, out, cache, rows.int(), ctx, tables, None, 0.25)
    with pytest.raises(ValueError, match="contiguous heads"):
        native.paged_decode(q.transpose(1, 2).contiguous().transpose(1, 2), out, cache, rows,
                            ctx, tables, None, 0.25)
    with pytest.raises(ValueError, match="dtype"):
        native.paged_decode(q.double(), out, cache, rows, ctx, tables, None, 0.25)


@pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler")
def test_build_failure_is_reported(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++")
    monkeypatch.setenv("SPLITSERVE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="failed on broken.cpp"):
        native.build((bad,), name="broken")
