"""The C++ bf16 prefill attention kernel against float64 attention over the same cache; the
C++ K/V scatter against index_copy_."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from splitserve.model import native

needs_prefill = pytest.mark.skipif(
    native.prefill_path() is None,
    reason="no bf16 prefill kernel on this CPU / build (SDPA path only)")
# every kernel this machine runs: the AVX512-BF16 one always, AMX where the CPU has it
PATHS = ["avx512_bf16"] + (["amx"] if native.prefill_path() == "amx" else [])


def reference(q: torch.Tensor, cache: torch.Tensor, tables: torch.Tensor,
              chunks: list[tuple[int, int]], window: int | None) -> list[torch.Tensor]:
    """float64 attention of each chunk (q_len, start) over keys 0 .. start + q_len - 1 with a
    shifted causal mask (and window); q [sum q_len, H, D] in chunk order."""
    _, _, block_size, kv_heads, head_dim = cache.shape
    outs, row = [], 0
    for b, (q_len, start) in enumerate(chunks):
        ctx_len = start + q_len
        blocks = tables[b, : -(-ctx_len // block_size)]
        k = cache[0, blocks].reshape(-1, kv_heads, head_dim)[:ctx_len].double()
        v = cache[1, blocks].reshape(-1, kv_heads, head_dim)[:ctx_len].double()
        q_pos = torch.arange(start, ctx_len)[:, None]
        k_pos = torch.arange(ctx_len)[None, :]
        mask = k_pos <= q_pos
        if window is not None:
            mask &= k_pos > q_pos - window
        out = F.scaled_dot_product_attention(
            q[row : row + q_len].double().transpose(0, 1)[None], k.transpose(0, 1)[None],
            v.transpose(0, 1)[None], attn_mask=mask, enable_gqa=True)
        outs.append(out[0].transpose(0, 1))
        row += q_len
    return outs


def run_case(chunks: list[tuple[int, int]], heads: int, kv_heads: int, head_dim: int,
             block_size: int, window: int | None, path: str, seed: int) -> float:
    """Largest error of the kernel vs the reference, relative to the output's scale; checks
    that rows which are not prefill rows are left alone."""
    gen = torch.Generator().manual_seed(seed)
    ctx_lens = [q_len + start for q_len, start in chunks]
    max_blocks = -(-max(ctx_lens) // block_size)
    num_blocks = 1 + len(chunks) * max_blocks
    cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen)
    # keys growing along the cache: the running maximum moves block after block
    ramp = torch.linspace(0.3, 2.5, num_blocks)[torch.randperm(num_blocks, generator=gen)]
    cache[0] *= ramp.view(num_blocks, 1, 1, 1)
    cache = cache.to(torch.bfloat16)
    # scattered block ids; block 0 is NaN-poisoned padding the kernel must never read
    perm = torch.randperm(num_blocks - 1, generator=gen)[: len(chunks) * max_blocks] + 1
    tables = perm.view(len(chunks), max_blocks).clone()
    for b, ctx_len in enumerate(ctx_lens):
        tables[b, -(-ctx_len // block_size):] = 0
    cache[:, 0] = float("nan")
    # q strided as in the model (beside k in the fused qkv output); one spare row between
    # chunks stands for a decode row another kernel owns
    num_rows = sum(q_len for q_len, _ in chunks) + len(chunks)
    fused = torch.randn(num_rows, heads + kv_heads, head_dim, generator=gen).to(torch.bfloat16)
    q = fused[:, :heads]
    q_lens = [q_len for q_len, _ in chunks]
    rows = torch.tensor([sum(q_lens[:i]) + i + 1 for i in range(len(chunks))])
    out = torch.full((num_rows, heads, head_dim), 7.0, dtype=torch.bfloat16)
    native.paged_prefill(q, out, cache, rows, torch.tensor(q_lens), torch.tensor(ctx_lens),
                         tables, window, 1 / math.sqrt(head_dim), path=path)
    chunk_rows = [torch.arange(r, r + n) for r, n in zip(rows.tolist(), q_lens, strict=True)]
    expected = reference(q[torch.cat(chunk_rows)], cache, tables, chunks, window)
    err = 0.0
    for idx, exp in zip(chunk_rows, expected, strict=True):
        scale = max(1.0, exp.abs().max().item())
        err = max(err, (out[idx].double() - exp).abs().max().item() / scale)
    assert (out[rows - 1] == 7.0).all(), "a row outside the prefill chunks was written"
    return err


# bf16 output rounding alone is 2^-9 relative; probabilities rounded to bf16 add about as much
TOL = 1e-2


@needs_prefill
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("head_dim,heads,kv_heads", [(64, 12, 4), (64, 4, 4), (128, 6, 2),
                                                     (128, 8, 2), (64, 3, 1)])
@pytest.mark.parametrize("window", [None, 37])
def test_matches_reference(path: str, head_dim: int, heads: int, kv_heads: int,
                           window: int | None) -> None:
    # (query rows, cached prefix): fresh prompts of 1 .. 600 tokens and continuation chunks
    # whose prefix ends mid-block, mid-tile and mid-key-block
    chunks = [(1, 0), (2, 0), (17, 0), (600, 0), (33, 5), (16, 48), (100, 37), (5, 123),
              (64, 64), (250, 211)]
    err = run_case(chunks, heads, kv_heads, head_dim, 16, window, path, seed=head_dim + heads)
    assert err < TOL, err


@needs_prefill
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(4))
def test_random_shapes(path: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(1000 + seed)

    def pick(hi: int) -> int:
        return int(torch.randint(hi, (1,), generator=gen))

    head_dim = (64, 128)[pick(2)]
    kv_heads = 1 + pick(3)
    heads = kv_heads * (1, 3, 4)[pick(3)]
    block_size = (16, 5, 32)[pick(3)]
    window = (None, 1 + pick(300))[pick(2)]
    chunks = [(1 + pick(600), pick(2) * pick(300)) for _ in range(1 + pick(5))]
    err = run_case(chunks, heads, kv_heads, head_dim, block_size, window, path, seed)
    assert err < TOL, (err, chunks, heads, kv_heads, head_dim, block_size, window)


@needs_prefill
@pytest.mark.parametrize("path", PATHS)
def test_multithreaded_matches_reference(path: str) -> None:
    # one long chunk on more threads than its KV heads: its query rows split into runs
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        err = run_case([(300, 40), (7, 0)], 8, 2, 64, 16, None, path, seed=7)
        err = max(err, run_case([(513, 0)], 4, 1, 128, 16, 100, path, seed=8))
    finally:
        torch.set_num_threads(threads)
    assert err < TOL, err


@needs_prefill
def test_bad_inputs_are_refused() -> None:
    cache = torch.zeros(2, 4, 16, 2, 64, dtype=torch.bfloat16)
    q = torch.zeros(8, 4, 64, dtype=torch.bfloat16)
    lens = torch.tensor([8])
    args = (torch.tensor([0]), lens, lens, torch.zeros(1, 1, dtype=torch.int64), None, 0.125)
    with pytest.raises(ValueError, match="multiple"):
        native.paged_prefill(torch.zeros(8, 3, 64, dtype=torch.bfloat16),
                             torch.zeros(8, 3, 64, dtype=torch.bfloat16), cache, *args)
    with pytest.raises(ValueError, match="bfloat16"):
        native.paged_prefill(q.float(), q.float(), cache.float(), *args)
    with pytest.raises(ValueError, match="int64"):
        native.paged_prefill(q, q.clone(), cache, torch.tensor([0], dtype=torch.int32),
                             *args[1:])
    with pytest.raises(ValueError, match="head_dim 32"):
        native.paged_prefill(torch.zeros(8, 4, 32, dtype=torch.bfloat16),
                             torch.zeros(8, 4, 32, dtype=torch.bfloat16),
                             torch.zeros(2, 4, 16, 2, 32, dtype=torch.bfloat16), *args)
    with pytest.raises(ValueError, match="path"):
        native.paged_prefill(q, q.clone(), cache, *args, path="sse")


@pytest.mark.skipif(not native.supports_prefill(torch.bfloat16, torch.device("cpu"), 64),
                    reason="the engine runs the prefill kernel only with AMX")
@pytest.mark.parametrize("arch", ["llama", "mistral-window"])
def test_bf16_model_with_kernel_tracks_transformers(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                    arch: str) -> None:
    """A bf16 model with head_dim 64 (the kernel's) end to end: fresh prompts, continuation
    chunks of a cached prefix that ends mid-block, then decodes. Its logits are no further
    from transformers' bf16 eager model than the SDPA path's are."""
    from tests.model.helpers import bf16_runner, hf_bf16_model, hf_logits, random_ids
    from tests.model.tiny import make_tiny_checkpoint

    path = make_tiny_checkpoint(arch, tmp_path / arch, hidden_size=256, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=256)
    hf_model = hf_bf16_model(path)
    calls = []
    real = native.paged_prefill
    monkeypatch.setattr(native, "paged_prefill", lambda *a, **k: calls.append(1) or real(*a, **k))
    long_, other = random_ids(90, seed=1), random_ids(37, seed=2)
    errors = {}
    for use_native in (False, True):
        runner = bf16_runner(path, use_native, block_size=16)
        t_long, t_other = runner.new_table(95), runner.new_table(40)
        first = runner.step([(long_[:29], 0, t_long), (other, 0, t_other)], every_token=True)
        second = runner.step([(long_[29:70], 29, t_long)], every_token=True)
        third = runner.step([(long_[70:], 70, t_long), ([5], 37, t_other)], every_token=True)
        ours = torch.cat([first[:29], second, third[:-1], first[29:], third[-1:]])
        expected = torch.cat([hf_logits(hf_model, long_), hf_logits(hf_model, other + [5])])
        errors[use_native] = (ours - expected).abs().max().item()
    assert calls, "the kernel never ran"
    assert errors[True] <= 1.5 * errors[False] + 0.05, errors


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_kv_matches_index_copy(dtype: torch.dtype) -> None:
    # k and v strided inside one fused qkv output, as the model passes them
    gen = torch.Generator().manual_seed(3)
    num_blocks, block_size, kv_heads, head_dim, tokens = 9, 4, 2, 8, 300
    qkv = torch.randn(tokens, 6 * head_dim + 3, generator=gen).to(dtype)
    k = qkv[:, 2 * head_dim : 4 * head_dim].view(tokens, kv_heads, head_dim)
    v = qkv[:, 4 * head_dim : 6 * head_dim].view(tokens, kv_heads, head_dim)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens % 36]
    k, v = k[: len(slots)], v[: len(slots)]
    cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    expected = cache.clone()
    flat = expected.view(2, -1, kv_heads, head_dim)
    flat[0].index_copy_(0, slots, k)
    flat[1].index_copy_(0, slots, v)
    native.write_kv(cache, slots, k, v)
    assert torch.equal(cache, expected)
    before = cache.clone()
    with pytest.raises(ValueError, match="outside"):
        native.write_kv(cache, torch.tensor([0, num_blocks * block_size]), k[:2], v[:2])
    assert torch.equal(cache, before), "a refused scatter must write nothing"
    with pytest.raises(ValueError, match="contiguous heads"):
        native.write_kv(cache, slots, k.transpose(1, 2), v)


def test_allocator_setting_applies_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert native.keep_freed_memory()
    monkeypatch.setenv("SPLITSERVE_MALLOC_TUNE", "0")
    assert not native.keep_freed_memory()
