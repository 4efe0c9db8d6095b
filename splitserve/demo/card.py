"""The README.md model card written into every demo checkpoint folder."""

from __future__ import annotations

from typing import Any

SAMPLE_PROMPT = "The function returns"


def model_card(info: dict[str, Any]) -> str:
    """Markdown card from build_info.json's content: what the model is, how it was made."""
    spec = info["spec"]
    result = info["training"]
    limit = (
        f"{spec['train_seconds']:g} s wall-time limit"
        if spec["train_seconds"] is not None
        else "no time limit"
    )
    steps_limit = f", {spec['max_steps']} step limit" if spec["max_steps"] is not None else ""
    tied = "tied" if spec["tie_word_embeddings"] else "untied"
    return f"""# splitserve demo model ({info["name"]})

**A toy.** This is a ~{result["num_params"] / 1e6:.1f}M-parameter Llama-architecture model that
splitserve builds on your machine so that `splitserve generate` and `splitserve serve` work
with no download. It was trained for {result["train_s"]:.0f} seconds on a CPU, on about
{result["num_corpus_tokens"] / 1e3:.0f}k tokens of the Python documentation. It writes
Python-docs-flavoured English that is often grammatical and rarely true. Do not use it for
anything but trying out the serving stack.

## How it was made

- **Text:** prose paragraphs of `pydoc_data.topics` (the reference topics behind `help()`)
  and of standard-library docstrings read with `ast` from Python {info["python_version"]}'s
  own files; code samples, tables and grammar rules filtered out. Public documented
  objects also give chat pairs ("What does json.dumps() do?" -> first docstring paragraph)
  rendered with the chat template below. No download.
- **Tokenizer:** byte-level BPE trained with `tokenizers` {info["tokenizers_version"]},
  vocabulary {spec["vocab_size"]}, special tokens `<s>` (bos), `</s>` (eos), `<pad>`,
  `<|system|>`, `<|user|>`, `<|assistant|>`. Any UTF-8 text round-trips exactly.
- **Chat template** (in `tokenizer_config.json`):
  `<s><|user|>\\n...</s><|assistant|>\\n...</s>`; `add_generation_prompt` opens the
  assistant turn.
- **Model:** `LlamaForCausalLM` (transformers {info["transformers_version"]}), hidden
  {spec["hidden_size"]}, {spec["num_hidden_layers"]} layers, {spec["num_attention_heads"]}
  query heads and {spec["num_key_value_heads"]} KV heads (GQA, head_dim
  {spec["hidden_size"] // spec["num_attention_heads"]}), MLP {spec["intermediate_size"]},
  RoPE theta {spec["rope_theta"]:g}, max positions {spec["max_position_embeddings"]},
  {tied} embeddings; weights saved in **float32** (`model.safetensors`), so parity checks
  against transformers can be exact.
- **Training:** torch {info["torch_version"]} on CPU with {result["num_threads"]} threads,
  seed {spec["seed"]}, AdamW (lr {spec["learning_rate"]:g}, warmup {spec["warmup_steps"]},
  cosine), batches of {spec["batch_size"]} x {spec["train_seq_len"]} tokens,
  {limit}{steps_limit}: {result["num_steps"]} steps, {result["num_train_tokens"] / 1e6:.2f}M
  tokens seen. Final training loss {result["train_loss"]:.3f}, held-out loss
  {result["val_loss"]:.3f}. With a time limit the step count depends on the machine, so
  two builds agree only when they ran the same number of steps on the same thread count.
- **Build:** {info["build_s"]:.0f} s in all, by `splitserve demo-model` (cached afterwards).

## Sample (greedy, transformers `generate`)

```
{info["sample"]["prompt"]}{info["sample"]["completion"]}
```
"""
