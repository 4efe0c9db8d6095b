"""The demo checkpoint: HF-format files that transformers loads, cached, built atomically."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from splitserve.demo import build as build_module
from splitserve.demo.build import COMPLETE_MARKER, build_demo_model, is_complete
from splitserve.demo.tokenizer import render_chat
from tests.demo.conftest import TINY_SPEC, TINY_STEPS, build_tiny

REQUIRED = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "README.md",
)


def _no_rebuild(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the demo model was rebuilt although a complete build exists")


def test_build_writes_a_complete_hf_folder(tiny_demo_dir: Path) -> None:
    for name in REQUIRED:
        assert (tiny_demo_dir / name).is_file(), name
    assert is_complete(tiny_demo_dir)
    config = json.loads((tiny_demo_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA
    tok_config = json.loads((tiny_demo_dir / "tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "<s>" and tok_config["eos_token"] == "</s>"
    assert tok_config["model_max_length"] == TINY_SPEC.max_position_embeddings
    assert "messages" in tok_config["chat_template"]
    gen_config = json.loads((tiny_demo_dir / "generation_config.json").read_text())
    tokenizer_json = json.loads((tiny_demo_dir / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    assert gen_config["bos_token_id"] == ids["<s>"] == config["bos_token_id"]
    assert gen_config["eos_token_id"] == ids["</s>"] == config["eos_token_id"]
    info = json.loads((tiny_demo_dir / "build_info.json").read_text())
    assert info["training"]["num_steps"] == TINY_STEPS
    assert "toy" in (tiny_demo_dir / "README.md").read_text().lower()


def test_weights_are_float32_safetensors(tiny_demo_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_demo_dir / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        assert names and all(str(f.get_tensor(n).dtype) == "torch.float32" for n in names)
    assert "lm_head.weight" in names  # untied: the head is stored, not inferred


def test_transformers_loads_and_generates(tiny_demo_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_demo_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_demo_dir)
    encoded = tokenizer("The function returns", return_tensors="pt")
    assert encoded["input_ids"][0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert output.shape[1] == encoded["input_ids"].shape[1] + 8
    # Greedy generate must agree with argmax of a plain forward pass on the same weights.
    with torch.no_grad():
        logits = model(**encoded).logits
    assert output[0, encoded["input_ids"].shape[1]].item() == logits[0, -1].argmax().item()


def test_training_lowered_the_loss_below_uniform(tiny_demo_dir: Path) -> None:
    info = json.loads((tiny_demo_dir / "build_info.json").read_text())
    uniform_loss = math.log(TINY_SPEC.vocab_size)
    assert info["training"]["val_loss"] < uniform_loss - 0.5
    assert info["training"]["train_loss"] < uniform_loss - 0.5


@pytest.mark.parametrize(
    "text",
    ["plain ASCII, with  double spaces .", "naïve café — 日本語 😀\n\ttabs", " leading space"],
)
def test_tokenizer_round_trips_text(tiny_demo_dir: Path, text: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_demo_dir)
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_roles_and_generation_prompt(tiny_demo_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_demo_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does json.dumps() do?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_chat(messages, add_generation_prompt=True)
    assert rendered == "<s><|system|>\nBe brief.</s><|user|>\nWhat does json.dumps() do?</s>" + (
        "<|assistant|>\n"
    )
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    role_ids = tokenizer.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>"])
    assert all(role_id in ids for role_id in role_ids)  # role markers are single tokens
    closed = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not closed.endswith("<|assistant|>\n")


def test_second_call_reuses_the_cached_build(
    tiny_demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_ns = (tiny_demo_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(build_module, "_build_into", _no_rebuild)
    assert build_tiny(tiny_demo_dir) == tiny_demo_dir
    assert (tiny_demo_dir / "model.safetensors").stat().st_mtime_ns == before_ns


def test_default_location_follows_splitserve_cache(
    tiny_demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from splitserve.demo import DEMO_DIR_NAME, default_model_dir

    shutil.copytree(tiny_demo_dir, tmp_path / DEMO_DIR_NAME)
    monkeypatch.setenv("SPLITSERVE_CACHE", str(tmp_path))
    monkeypatch.setattr(build_module, "_build_into", _no_rebuild)
    assert default_model_dir() == tmp_path / DEMO_DIR_NAME


def test_interrupted_build_leaves_no_complete_looking_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(_info: object) -> str:
        raise KeyboardInterrupt  # as if Ctrl-C hit after the weights were written

    monkeypatch.setattr(build_module, "model_card", interrupt)
    target = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt):
        build_tiny(target, max_steps=2)
    assert not target.exists()
    assert not is_complete(target)
    assert [p.name for p in tmp_path.iterdir()] == [".demo.lock"]  # temp folder removed


def test_incomplete_folder_is_replaced_and_build_is_reproducible(
    tiny_demo_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "config.json").write_text("{}")  # e.g. left by a copy that broke off
    (tmp_path / ".demo.tmp-dead").mkdir()  # temp folder of a build that was killed
    assert build_tiny(target) == target
    assert is_complete(target) and (target / COMPLETE_MARKER).is_file()
    assert not (tmp_path / ".demo.tmp-dead").exists()
    # Same seed and step count: byte-identical weights and tokenizer.
    for name in ("model.safetensors", "tokenizer.json"):
        assert (target / name).read_bytes() == (tiny_demo_dir / name).read_bytes(), name


def test_bad_build_arguments_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_seconds"):
        build_demo_model(tmp_path / "x", train_seconds=-1.0)
    with pytest.raises(ValueError, match="train_seconds or max_steps"):
        build_demo_model(tmp_path / "x", train_seconds=None, max_steps=None)
    with pytest.raises(ValueError, match="num_threads"):
        build_demo_model(tmp_path / "x", num_threads=0)
    assert not (tmp_path / "x").exists()
