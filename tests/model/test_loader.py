"""Strict loading: every missing, unexpected or misshapen tensor is named in a ValueError."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from splitserve.model import ModelConfig, load_model
from tests.model.conftest import TinyModels
from tests.model.helpers import PagedRunner, hf_logits, random_ids
from tests.model.tiny import make_tiny_checkpoint

Tensors = dict[str, torch.Tensor]


def edited_checkpoint(src: Path, dst: Path, edit: Callable[[Tensors], object]) -> Path:
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_is_named(tiny: TinyModels, tmp_path: Path) -> None:
    name = "model.layers.1.mlp.up_proj.weight"
    bad = edited_checkpoint(tiny.path("llama"), tmp_path / "bad", lambda t: t.pop(name))
    with pytest.raises(ValueError, match=f"missing tensor '{name}'"):
        load_model(bad)


def test_unexpected_tensor_is_named(tiny: TinyModels, tmp_path: Path) -> None:
    def add(t: Tensors) -> None:
        t["model.layers.0.extra.weight"] = torch.zeros(3)

    bad = edited_checkpoint(tiny.path("llama"), tmp_path / "bad", add)
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.extra.weight'"):
        load_model(bad)


def test_misshapen_tensor_is_named(tiny: TinyModels, tmp_path: Path) -> None:
    name = "model.layers.0.self_attn.k_proj.weight"

    def reshape(t: Tensors) -> None:
        t[name] = torch.zeros(8, 64)

    bad = edited_checkpoint(tiny.path("llama"), tmp_path / "bad", reshape)
    with pytest.raises(
        ValueError, match=rf"tensor '{name}' has shape \(8, 64\), expected \(32, 64\)"
    ):
        load_model(bad)


def test_rotary_inv_freq_buffers_are_ignored(tiny: TinyModels, tmp_path: Path) -> None:
    def add(t: Tensors) -> None:
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    ok = edited_checkpoint(tiny.path("llama"), tmp_path / "ok", add)
    _, model = load_model(ok)
    assert model.model.embed_tokens.weight.shape == (384, 64)


def test_no_weights_file_is_an_error(tiny: TinyModels, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy(tiny.path("llama") / "config.json", tmp_path / "empty" / "config.json")
    with pytest.raises(ValueError, match="checkpoint file missing"):
        load_model(tmp_path / "empty")


def test_unsupported_architecture_in_checkpoint(tiny: TinyModels, tmp_path: Path) -> None:
    bad = edited_checkpoint(tiny.path("llama"), tmp_path / "bad", lambda t: None)
    config = json.loads((bad / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'"):
        load_model(bad)


def test_sharded_checkpoint_loads_and_matches_hf(tiny: TinyModels, tmp_path: Path) -> None:
    sharded = make_tiny_checkpoint("qwen2", tmp_path / "sharded", max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    config, model = load_model(sharded)
    _, single, hf = tiny.get("qwen2")
    assert model.identity == single.identity
    prompt = random_ids(40, seed=5)
    runner = PagedRunner(config, model, block_size=8)
    ours = runner.step([(prompt, 0, runner.new_table(40))], every_token=True)
    assert (ours - hf_logits(hf, prompt)).abs().max().item() < 1e-4


def test_tied_embeddings_share_one_tensor(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama-tied")
    assert config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_identity_depends_on_weight_shapes_and_config(tiny: TinyModels) -> None:
    config, model, _ = tiny.get("llama")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert config.model_identity(shapes) == model.identity
    assert config.with_dtype("bfloat16").model_identity(shapes) == model.identity
    shapes["model.norm.weight"] = (65,)
    assert config.model_identity(shapes) != model.identity
    other = ModelConfig.from_hf({**_hf_dict(tiny), "rms_norm_eps": 1e-5})
    assert other.model_identity(shapes) != config.model_identity(shapes)


def _hf_dict(tiny: TinyModels) -> dict[str, object]:
    return json.loads((tiny.path("llama") / "config.json").read_text())


def test_bfloat16_on_cpu_loads_and_tracks_float32(tiny: TinyModels) -> None:
    config, model = load_model(tiny.path("llama"), dtype="bfloat16")
    assert config.dtype == "bfloat16"
    assert model.lm_head.weight.dtype == torch.bfloat16
    _, _, hf = tiny.get("llama")
    prompt = random_ids(50, seed=6)
    runner = PagedRunner(config, model, block_size=16)
    assert runner.kv_caches[0].dtype == torch.bfloat16
    table = runner.new_table(51)
    ours = torch.cat(
        [
            runner.step([(prompt[:30], 0, table)], every_token=True),
            runner.step([(prompt[30:], 30, table)], every_token=True),
        ]
    )
    assert ours.dtype == torch.float32
    ref = hf_logits(hf, prompt)
    # bf16 keeps ~3 significant digits: loose logit tolerance, mostly the same argmax.
    assert (ours - ref).abs().max().item() < 0.5
    agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree > 0.9


def test_auto_dtype_float16_checkpoint_falls_back_to_float32_on_cpu(
    tiny: TinyModels, tmp_path: Path
) -> None:
    fp16 = edited_checkpoint(tiny.path("llama"), tmp_path / "fp16", lambda t: None)
    config = json.loads((fp16 / "config.json").read_text())
    config["dtype"] = "float16"
    (fp16 / "config.json").write_text(json.dumps(config))
    loaded, model = load_model(fp16)
    assert loaded.dtype == "float32"
    assert model.lm_head.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        load_model(fp16, dtype="float16")
