"""Fused C++ element-wise ops against transformers' own Llama modules, op for op."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama import modeling_llama as hf

from splitserve.model import native

pytestmark = pytest.mark.skipif(not native.available(), reason="no C++ compiler")
# bf16: the same roundings as transformers' eager ops; rsqrt vs 1/sqrt and exp can still
# differ by one float32 ulp before the final rounding, so allow one bf16 ulp on rare elements
DTYPES = [torch.float32, torch.bfloat16]


def close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    if ours.dtype == torch.float32:
        torch.testing.assert_close(ours, ref, rtol=2e-6, atol=2e-6)
        return
    diff = (ours.float() - ref.float()).abs()
    ulp = ref.float().abs().clamp_min(1e-30) * 2.0**-7
    assert (diff <= ulp).all(), diff.max()
    assert (diff == 0).float().mean().item() > 0.99


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize("hidden", [96, 72])  # 72: not a multiple of 16 (the scalar loop)
def test_add_rms_norm_matches_transformers(dtype: torch.dtype, with_add: bool,
                                           hidden: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(37, hidden, generator=gen).to(dtype)
    residual = (torch.randn(37, hidden, generator=gen) * 3).to(dtype)
    norm = hf.LlamaRMSNorm(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(hidden, generator=gen))
    expected_res = residual + x if with_add else residual.clone()
    with torch.no_grad():
        expected = norm(expected_res)
    res = residual.clone()
    out = native.add_rms_norm(x if with_add else None, res, norm.weight.detach(), 1e-5)
    assert torch.equal(res, expected_res)  # the add rounds exactly like torch's
    close(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_in_place_matches_transformers(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    tokens, heads, kv_heads, head_dim = 9, 4, 2, 32
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=gen).to(dtype)
    positions = torch.tensor([0, 1, 2, 3, 100, 101, 7, 4000, 5])
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim).transpose(0, 1)[None]
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim]
    k = k.reshape(tokens, kv_heads, head_dim).transpose(0, 1)[None]
    q_ref, k_ref = hf.apply_rotary_pos_emb(q, k, cos[None], sin[None])
    v_before = qkv[:, (heads + kv_heads) * head_dim :].clone()
    native.rotary_(qkv, heads + kv_heads, head_dim, cos, sin)
    q_ours = qkv[:, : heads * head_dim].view(tokens, heads, head_dim).transpose(0, 1)[None]
    k_ours = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim]
    k_ours = k_ours.reshape(tokens, kv_heads, head_dim).transpose(0, 1)[None]
    close(q_ours, q_ref)
    close(k_ours, k_ref)
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim :], v_before)  # v untouched


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_matches_transformers_mlp(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    gate_up = (torch.randn(21, 2 * 80, generator=gen) * 4).to(dtype)
    gate, up = gate_up[:, :80], gate_up[:, 80:]
    expected = torch.nn.functional.silu(gate) * up  # LlamaMLP: act_fn(gate) * up
    close(native.silu_mul(gate_up), expected)


def test_bad_shapes_are_refused() -> None:
    x = torch.zeros(4, 8)
    with pytest.raises(ValueError, match="weight"):
        native.add_rms_norm(None, x, torch.zeros(7), 1e-5)
    with pytest.raises(ValueError, match="differ"):
        native.add_rms_norm(torch.zeros(3, 8), x, torch.zeros(8), 1e-5)
    with pytest.raises(ValueError, match="contiguous 2-D"):
        native.silu_mul(torch.zeros(4, 8).t())
    with pytest.raises(ValueError, match="cos"):
        native.rotary_(x, 1, 8, torch.zeros(4, 6), torch.zeros(4, 8))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral-window"])
def test_bf16_model_native_path_tracks_transformers(tiny, arch: str) -> None:
    """bf16 end to end (prefill, then decode steps over the paged cache): the native path is
    no further from transformers' bf16 eager model than the pure-torch path is."""
    from tests.model.helpers import (
        bf16_runner,
        greedy_decode_error,
        hf_bf16_model,
        random_ids,
    )

    path = tiny.path(arch)
    hf_model = hf_bf16_model(path)
    prompts = [random_ids(n, seed=n) for n in (40, 9, 23)]
    errors = {}
    for use_native in (False, True):
        runner = bf16_runner(path, use_native)
        worst = greedy_decode_error(runner, hf_model, prompts)
        errors[use_native] = worst
    assert errors[True] <= 1.5 * errors[False] + 0.05, errors


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_continuation_chunks_match_transformers(tiny, arch: str) -> None:
    """Prefill chunks that continue a cached prefix (gathered context, shifted causal mask),
    next to a fresh prompt and a decode on the native path, float32."""
    from splitserve.model import load_model
    from tests.model.helpers import PagedRunner, hf_logits, random_ids

    _, _, hf_model = tiny.get(arch)
    config, model = load_model(tiny.path(arch))
    model.fuse_projections()
    runner = PagedRunner(config, model, block_size=8)
    long_, other, fresh = random_ids(70, seed=1), random_ids(12, seed=2), random_ids(9, seed=3)
    t_long, t_other = runner.new_table(70), runner.new_table(13)
    runner.step([(long_[:29], 0, t_long), (other, 0, t_other)])
    runner.step([(long_[29:50], 29, t_long)])  # continuation, chunk not block aligned
    out = runner.step([(long_[50:], 50, t_long), ([5], 12, t_other),
                       (fresh, 0, runner.new_table(9))], every_token=True)
    expected = torch.cat([hf_logits(hf_model, long_)[50:], hf_logits(hf_model, other + [5])[-1:],
                          hf_logits(hf_model, fresh)])
    assert (out - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("width", [1, 15, 16, 17, 32000])
def test_argmax_rows_matches_torch_max(width: int) -> None:
    # greedy sampling's argmax: first index of the maximum, ties, infinities, and a NaN
    # anywhere wins at its first position (torch's max(dim) semantics), rows strided
    gen = torch.Generator().manual_seed(width)
    full = torch.randn(12, width + 3, generator=gen)
    logits = full[:, :width]
    logits[1] = 0.0  # all tied: index 0
    logits[2] = float("-inf")
    logits[3, -1] = float("inf")
    logits[4, width // 2] = logits[4, -1] = 50.0  # tie: the first one
    logits[5, -1] = float("nan")
    logits[6, width // 3] = float("nan")
    logits[6, -1] = float("nan")
    logits[7, 0] = 1e30
    got = native.argmax_rows(logits)
    assert got.dtype == torch.int64
    assert got.tolist() == logits.max(dim=-1).indices.tolist()


def test_argmax_rows_refuses_other_layouts() -> None:
    with pytest.raises(ValueError, match="float32"):
        native.argmax_rows(torch.zeros(2, 4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="contiguous rows"):
        native.argmax_rows(torch.zeros(4, 2).t())
