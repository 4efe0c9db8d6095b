"""Tiny HF-style tokenizer folders built locally (no downloads) for tokenizer and router tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

CHATML_TEMPLATE = """{% for message in messages %}
{% if loop.first and message['role'] != 'system' %}
<|im_start|>system
You are helpful.<|im_end|>
{% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Prefill reads the prompt; decode writes one token at a time.",
    "Disaggregated serving moves the KV cache between workers.",
    "Hello, world! Numbers 0123456789 and symbols #$%&*()[]{}.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u65e5\u672c\u8a9e emoji \U0001f600 tabs\tand\nnewlines",
] * 20


def _train(special: list[str], bos: str | None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if bos is None:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    return tok


def build_llama3_like(root: Path, max_position_embeddings: int = 256) -> Path:
    """Llama-3 style: BOS added by the post-processor, eos_token as a plain string,
    generation_config lists two EOS ids, template as one string."""
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>"]
    tok = _train(special, bos="<|begin_of_text|>")
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    config: dict[str, Any] = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA3_TEMPLATE,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    eos_ids = [tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")]
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": eos_ids}))
    (root / "config.json").write_text(
        json.dumps({"model_type": "llama", "max_position_embeddings": max_position_embeddings})
    )
    return root


def build_chatml_like(root: Path) -> Path:
    """Qwen-style: no BOS, eos_token as an AddedToken dict, explicit add_bos_token=False,
    template stored as a list of named templates."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _train(special, bos=None)
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    eos = {"content": "<|im_end|>", "lstrip": False, "rstrip": False, "normalized": False,
           "single_word": False, "special": True, "__type": "AddedToken"}
    config: dict[str, Any] = {
        "bos_token": None,
        "eos_token": eos,
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": [{"name": "default", "template": CHATML_TEMPLATE}],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    return root
