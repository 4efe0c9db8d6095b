"""A small byte-level BPE tokenizer trained here with `tokenizers`, for detokenizer tests.

The vocabulary is kept small so that rare multi-byte characters (CJK, emoji, some accents)
stay split into several byte-level tokens, which is what incremental detokenization must
survive. Training takes well under a second and is cached per test session.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [EOS_TOKEN, "<|im_start|>", "<|im_end|>"]

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. The end of the story is near.",
    "Stop here. STOP! The model should stop when it sees the stop string.",
    "Café crème, naïve façade, jalapeño, Ångström, Zürich, São Paulo, Kraków.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000; symbols: ##, ::, ->, =>, </s>.",
    "你好，世界。今天天气很好。我们去公园散步吧。",
    "こんにちは世界。日本語のテキストです。",
    "Emoji: 🙂 😀 🚀 🎉 👍🏽 ❤️ — mixed with text: fun 🚀 launch!",
    "def main():\n    print('hello world')\n    return 0\n",
    "Once upon a time there was a little robot who loved to read books about the sea.",
    "It read about whales, ships, storms and islands, and dreamed of sailing away.",
] * 4


@functools.lru_cache(maxsize=1)
def byte_bpe_tokenizer() -> Tokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenizer and decoder) with ~300 tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAIN_TEXT, trainer=trainer)
    return tokenizer


def eos_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    assert token_id is not None
    return token_id


@functools.lru_cache(maxsize=1)
def metaspace_bpe_tokenizer() -> Tokenizer:
    """SentencePiece-style BPE ("▁" marks spaces, as Llama-2 / Mistral tokenizers do): its
    decoder drops the leading space of the first token decoded, which a per-token decode
    gets wrong and a window decode gets right. ASCII only (unknown characters -> <unk>)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[*SPECIAL_TOKENS, "<unk>"], show_progress=False
    )
    tokenizer.train_from_iterator(TRAIN_TEXT, trainer=trainer)
    return tokenizer
