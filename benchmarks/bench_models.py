"""Random-weight Llama checkpoints of realistic sizes for benchmarks (no download).

`make_bench_model(name, out_dir)` writes a Hugging Face folder (config.json, safetensors
from `save_pretrained`, a byte-level BPE tokenizer trained here on Python's own docs,
tokenizer_config.json, generation_config.json). Weights are random: outputs are not text,
speeds are real. Folders are cached under benchmarks/.models/ (git-ignored).

    python -m benchmarks.bench_models llama-110m     # prints the folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parent / ".models"

# name -> LlamaConfig kwargs. Sizes are chosen for this 2-core machine.
SIZES: dict[str, dict[str, Any]] = {
    # ~110M parameters (the size peers.md quotes vLLM-CPU at); 440 MB in float32
    "llama-110m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=4, vocab_size=32000),
    # ~1.1B parameters (TinyLlama's shape): for a GPU, where 110M is all launch overhead
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                     num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
    # ~8.0B parameters (Llama-3-8B's shape, the planner's bundled llama-3-8b): for checking
    # the planner's roofline on a lent GPU (benchmarks/planner_roofline_check.py); build it
    # there with --device cuda (16 GB in bfloat16)
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     rope_theta=500000.0),
    # ~25M parameters: quick smoke runs
    "llama-25m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=2, vocab_size=32000),
}


def _tokenizer(out: Path) -> None:
    import pydoc_data.topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = list(pydoc_data.topics.topics.values())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant: {% endif %}")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": template,
         "tokenizer_class": "PreTrainedTokenizerFast"}))


def make_bench_model(name: str, out_dir: Path | None = None, *, dtype: str = "float32",
                     max_position_embeddings: int = 4096, device: str = "cpu",
                     vocab_size: int | None = None) -> Path:
    """Build (or reuse) the named random checkpoint; returns its folder. `device` is where
    the weights are initialised (cuda: seconds for an 8B model instead of minutes); the
    files are the same either way. `vocab_size`: instead of the size's own (8192 = the
    bench tokenizer's: a random model with more tokens than its tokenizer samples ids that
    decode to no text, and a streamed answer then carries none)."""
    import torch
    import transformers

    if name not in SIZES:
        raise ValueError(f"unknown bench model {name!r}; choose from {sorted(SIZES)}")
    out = out_dir or CACHE / f"{name}-{dtype}"
    if (out / "generation_config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    _tokenizer(out)
    shape = {**SIZES[name], **({"vocab_size": vocab_size} if vocab_size else {})}
    config = transformers.LlamaConfig(**shape, max_position_embeddings=max_position_embeddings,
                                      bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.save_pretrained(out, safe_serialization=True)
    # written last: its presence marks a complete folder
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0,
                                                            "eos_token_id": 1}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(SIZES))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the cache)")
    parser.add_argument("--max-len", type=int, default=4096, help="max_position_embeddings")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="override the size's vocabulary (8192: the bench tokenizer's)")
    args = parser.parse_args()
    print(make_bench_model(args.name, args.out, dtype=args.dtype,
                           max_position_embeddings=args.max_len, device=args.device,
                           vocab_size=args.vocab_size))


if __name__ == "__main__":
    main()
