"""Fused q/k/v and gate/up projections compute what the separate Hugging Face ones do."""

from __future__ import annotations

import pytest
import torch

from splitserve.model import load_model
from splitserve.model.layers import PackedLinear
from tests.model.conftest import ARCHS, TinyModels
from tests.model.helpers import PagedRunner, hf_logits, random_ids


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_model_matches_transformers_prefill_and_decode(tiny: TinyModels, arch: str) -> None:
    config, model = load_model(tiny.path(arch))
    model.fuse_projections()
    model.fuse_projections()  # idempotent
    names = {name for name, _ in model.named_parameters()}
    assert not any(".q_proj." in n or ".gate_proj." in n for n in names)
    assert any(".qkv_proj." in n for n in names) and any(".gate_up_proj." in n for n in names)
    _, _, hf = tiny.get(arch)
    prompts = [random_ids(n, seed=n) for n in (37, 5, 20)]
    runner = PagedRunner(config, model, block_size=8)
    tables = [runner.new_table(len(p) + 4) for p in prompts]
    # prefill all three in one batch, then two batched decode steps over the paged cache
    ours = runner.step([(p, 0, t) for p, t in zip(prompts, tables, strict=True)])
    seqs = [list(p) for p in prompts]
    for step in range(3):
        for i, seq in enumerate(seqs):
            ref = hf_logits(hf, seq)[-1]
            assert (ours[i] - ref).abs().max().item() < 1e-4, (arch, step, i)
        nxt = [int(row.argmax()) for row in ours]
        for seq, tok in zip(seqs, nxt, strict=True):
            seq.append(tok)
        ours = runner.step([([s[-1]], len(s) - 1, t) for s, t in zip(seqs, tables, strict=True)])


def test_decode_gather_workspace_is_reused_and_grown(tiny: TinyModels) -> None:
    config, model = load_model(tiny.path("llama"))
    model.use_native = False  # the torch path (CUDA, or no compiler) gathers into it
    runner = PagedRunner(config, model, block_size=4)
    short, long_ = random_ids(6, seed=1), random_ids(30, seed=2)
    t_short, t_long = runner.new_table(8), runner.new_table(32)
    runner.step([(short, 0, t_short)])
    runner.step([(short[-1:], 5, t_short)])
    first = model._workspace
    assert first is not None
    runner.step([(short[-1:], 5, t_short)])
    assert model._workspace is first  # same size: no new buffer
    runner.step([(long_, 0, t_long)])
    out = runner.step([(long_[-1:], 29, t_long), (short[-1:], 5, t_short)])
    assert model._workspace is not None and model._workspace.numel() >= first.numel()
    _, _, hf = tiny.get("llama")
    assert torch.allclose(out[0], hf_logits(hf, long_)[-1], atol=1e-4)
    assert torch.allclose(out[1], hf_logits(hf, short)[-1], atol=1e-4)


@pytest.mark.parametrize("use_native", [False, True])
def test_many_decodes_in_length_groups_match_transformers(
    tiny: TinyModels, use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """17 decodes of spread-out lengths (torch path: 4 groups; native kernel: one pass)
    plus a prefill chunk in one step."""
    config, model, hf = tiny.get("llama")
    monkeypatch.setattr(model, "use_native", use_native)
    runner = PagedRunner(config, model, block_size=4, num_blocks=512)
    lengths = [3, 40, 7, 22, 1, 35, 12, 28, 5, 17, 9, 31, 2, 26, 14, 38, 20]
    prompts = [random_ids(n, seed=100 + n) for n in lengths]
    tables = [runner.new_table(n + 1) for n in lengths]
    for p, t in zip(prompts, tables, strict=True):
        runner.step([(p[:-1], 0, t)] if len(p) > 1 else [(p, 0, t)])
    fresh = random_ids(11, seed=5)
    seqs = [([p[-1]], len(p) - 1, t) for p, t in zip(prompts, tables, strict=True) if len(p) > 1]
    kept = [p for p in prompts if len(p) > 1]
    out = runner.step([*seqs[:5], (fresh, 0, runner.new_table(11)), *seqs[5:]])
    expected = [*kept[:5], fresh, *kept[5:]]
    for row, ids in zip(out, expected, strict=True):
        assert (row - hf_logits(hf, ids)[-1]).abs().max().item() < 1e-4


def test_packed_bf16_linears_give_the_unpacked_outputs(tiny: TinyModels) -> None:
    config, plain = load_model(tiny.path("qwen2"), dtype="bfloat16")  # qkv bias: packed too
    _, packed = load_model(tiny.path("qwen2"), dtype="bfloat16")
    for model in (plain, packed):
        model.fuse_projections()
    num_packed = packed.pack_for_cpu(max_num_tokens=256)  # laid out for 256-row steps
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert num_packed == 0  # nothing to gain here: the plain path stays
        return
    assert num_packed == 4 * config.num_layers + 1  # qkv, o, gate_up, down per layer; head
    _, fp32 = load_model(tiny.path("qwen2"))
    assert fp32.pack_for_cpu() == 0  # float32 keeps F.linear (exact parity path)
    prompts = [random_ids(n, seed=n) for n in (19, 3, 250)]  # 1- to 272-row GEMMs
    outs = []
    for model in (plain, packed):
        runner = PagedRunner(config, model, block_size=8)
        tables = [runner.new_table(len(p) + 1) for p in prompts]
        first = runner.step([(p, 0, t) for p, t in zip(prompts, tables, strict=True)])
        nxt = runner.step([([7], len(p), t) for p, t in zip(prompts, tables, strict=True)])
        outs.append(torch.cat([first, nxt]))
    assert (outs[0] - outs[1]).abs().max().item() < 1e-2


def test_pack_rejects_a_non_positive_row_hint(tiny: TinyModels) -> None:
    _, model = load_model(tiny.path("llama"), dtype="bfloat16")
    with pytest.raises(ValueError, match="batch_size_hint"):
        PackedLinear(model.lm_head, 0)
