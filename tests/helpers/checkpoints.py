"""Tiny local checkpoints with a real trained tokenizer (no hub): model + tokenizer files.

`make_model_dir(arch, out_dir)` writes what a real HF model folder has (config.json,
safetensors weights from `save_pretrained`, tokenizer.json, tokenizer_config.json with a
chat template, generation_config.json), so every test loads through the same path a
downloaded checkpoint takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tests.model.tiny import make_tiny_checkpoint

BOS, EOS = "<s>", "</s>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "The function returns a new list containing the items of the sequence in order.",
    "When the interpreter starts, it reads the module and executes each statement.",
    "A dictionary maps keys to values; looking up a missing key raises an exception.",
    "Café crème, naïve façade, Zürich; 你好，世界; emoji 🙂 🚀 mixed with text.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols ( ) [ ] { } : ; , . -> == !=",
] * 8


def train_tokenizer(vocab_size: int = 320) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1,
        special_tokens=[BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos_id)])
    return tok


def make_model_dir(arch: str, out_dir: str | Path, **overrides: Any) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": BOS, "eos_token": EOS, "chat_template": CHAT_TEMPLATE,
        "model_max_length": overrides.get("max_position_embeddings", 1024),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }))
    kwargs = {"vocab_size": tok.get_vocab_size(), "bos_token_id": bos_id,
              "eos_token_id": eos_id, "pad_token_id": None, **overrides}
    make_tiny_checkpoint(arch, out, **kwargs)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos_id, "eos_token_id": eos_id}))
    return out
