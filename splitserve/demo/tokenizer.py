"""Train the demo's byte-level BPE tokenizer and write it in Hugging Face format.

Byte-level BPE (GPT-2 / Llama-3 style) encodes any UTF-8 text without an unknown token,
so every string round-trips exactly; no normalizer runs for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from splitserve.demo.spec import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    DemoSpec,
)

# The HF convention: a jinja template over `messages` (role, content) that the chat API
# renders; `add_generation_prompt` opens the assistant turn the model should complete.
# Each turn ends with eos, so a model that learned the format stops after its answer.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """CHAT_TEMPLATE rendered with jinja2, as HF's apply_chat_template would render it."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(CHAT_TEMPLATE)
    return template.render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A `tokenizers.Tokenizer` trained on texts; ids 0.. are SPECIAL_TOKENS in order.

    Encoding adds BOS in front (like Llama's tokenizers); decoding is exact byte-level.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            raise RuntimeError(f"special token {token} got id {tokenizer.token_to_id(token)}")
    return tokenizer


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    return {
        "bos_token_id": int(tokenizer.token_to_id(BOS_TOKEN)),
        "eos_token_id": int(tokenizer.token_to_id(EOS_TOKEN)),
        "pad_token_id": int(tokenizer.token_to_id(PAD_TOKEN)),
    }


def tokenizer_config(spec: DemoSpec) -> dict[str, Any]:
    """tokenizer_config.json as HF writes it for a fast-only tokenizer with a chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "additional_special_tokens": list(ROLE_TOKENS),
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": spec.max_position_embeddings,
        # HF's default clean-up rewrites " ." to "." and would break exact round trips.
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def write_tokenizer_files(tokenizer: Any, spec: DemoSpec, out_dir: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = tokenizer_config(spec)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {key: config[key] for key in ("bos_token", "eos_token", "pad_token")} | {
        "additional_special_tokens": list(ROLE_TOKENS)
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
