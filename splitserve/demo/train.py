"""Train the demo Llama on the corpus: next-token prediction over random windows.

The token stream is every document (BOS + text + EOS) and every rendered chat pair,
shuffled by the seed and concatenated; the last few percent of it is held out to report a
validation loss. The learning rate warms up linearly, then follows a cosine from the peak
to a tenth of it over the run's progress, where progress is the larger of the step and
wall-time fractions, so a time-bounded run still ends its schedule when time runs out.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from splitserve.demo.corpus import DemoCorpus
from splitserve.demo.spec import EOS_TOKEN, DemoSpec
from splitserve.demo.threads import ThreadTuner
from splitserve.demo.tokenizer import render_chat, special_token_ids

_VAL_FRACTION = 0.02
_NUM_VAL_BATCHES = 4
_LOSS_WINDOW_STEPS = 20
_LOG_EVERY_S = 15.0


@dataclass(frozen=True)
class TrainResult:
    num_params: int
    num_steps: int
    num_train_tokens: int  # tokens the model was trained on (with repeats)
    num_corpus_tokens: int
    train_s: float
    train_loss: float  # mean over the last steps
    val_loss: float
    num_threads: int  # the count most steps ran with


def token_stream(tokenizer: Any, corpus: DemoCorpus, seed: int) -> list[int]:
    """All training token ids in one list, documents and chat pairs shuffled together."""
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    pieces: list[list[int]] = [tokenizer.encode(doc).ids + [eos_id] for doc in corpus.documents]
    for example in corpus.chat_examples:
        messages = [
            {"role": "user", "content": example.question},
            {"role": "assistant", "content": example.answer},
        ]
        text = render_chat(messages, add_generation_prompt=False)
        pieces.append(tokenizer.encode(text, add_special_tokens=False).ids)
    random.Random(seed).shuffle(pieces)
    return [token_id for piece in pieces for token_id in piece]


def make_model(spec: DemoSpec, tokenizer: Any) -> Any:
    """A freshly initialised transformers LlamaForCausalLM for the spec (float32)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = special_token_ids(tokenizer)
    fields: dict[str, Any] = {
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_theta": spec.rope_theta,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": spec.tie_word_embeddings,
        **ids,
    }
    config = LlamaConfig(**fields)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    return model


def _lr_scale(spec: DemoSpec, step: int, progress: float) -> float:
    warmup = min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else 1.0
    return warmup * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _progress(spec: DemoSpec, step: int, elapsed_s: float) -> float:
    fractions = [0.0]
    if spec.max_steps is not None:
        fractions.append(step / spec.max_steps)
    if spec.train_seconds is not None:
        fractions.append(elapsed_s / spec.train_seconds)
    return max(fractions)


def _windows(data: Any, starts: Any, seq_len: int) -> Any:
    import torch

    return torch.stack([data[int(start) : int(start) + seq_len] for start in starts])


def train_model(
    model: Any, spec: DemoSpec, ids: list[int], log: Callable[[str], None] | None = None
) -> TrainResult:
    """Train model in place on ids until the spec's step or time limit; returns stats."""
    import torch

    data = torch.tensor(ids, dtype=torch.long)
    num_val = max(spec.train_seq_len * 2, int(len(ids) * _VAL_FRACTION))
    train_data, val_data = data[:-num_val], data[-num_val:]
    if len(train_data) <= spec.train_seq_len or len(val_data) < spec.train_seq_len:
        raise ValueError(
            f"corpus of {len(ids)} tokens is too short for train_seq_len {spec.train_seq_len}"
        )
    generator = torch.Generator().manual_seed(spec.seed)
    params: list[torch.Tensor] = list(model.parameters())
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.dim() < 2]},  # no decay on norm gains
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    # A fixed thread count keeps a step-bounded run reproducible (reduction order depends
    # on it); a time-bounded run is not reproducible anyway and takes the fastest count.
    tuner = ThreadTuner(torch.get_num_threads()) if spec.train_seconds is not None else None
    model.train()
    recent_losses: list[float] = []
    step = 0
    start_s = last_log_s = time.monotonic()
    while True:
        # Elapsed time only counts when the spec sets a time limit, so a step-bounded run
        # has a deterministic schedule.
        progress = _progress(spec, step, time.monotonic() - start_s)
        if progress >= 1.0:
            break
        lr = spec.learning_rate * _lr_scale(spec, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(
            0, len(train_data) - spec.train_seq_len, (spec.batch_size,), generator=generator
        )
        batch = _windows(train_data, starts, spec.train_seq_len)
        if tuner is not None:
            torch.set_num_threads(tuner.threads_for_next_step())
        step_start_s = time.monotonic()
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        recent_losses = (recent_losses + [loss.item()])[-_LOSS_WINDOW_STEPS:]
        now_s = time.monotonic()
        if tuner is not None:
            tuner.record(now_s - step_start_s)
        if log is not None and now_s - last_log_s >= _LOG_EVERY_S:
            last_log_s = now_s
            log(
                f"step {step}  loss {sum(recent_losses) / len(recent_losses):.3f}  "
                f"lr {lr:.2e}  threads {torch.get_num_threads()}"
            )
    train_s = time.monotonic() - start_s
    return TrainResult(
        num_params=sum(p.numel() for p in model.parameters()),
        num_steps=step,
        num_train_tokens=step * spec.batch_size * spec.train_seq_len,
        num_corpus_tokens=len(ids),
        train_s=train_s,
        train_loss=sum(recent_losses) / max(1, len(recent_losses)),
        val_loss=evaluate(model, val_data, spec),
        num_threads=tuner.most_used_threads if tuner else torch.get_num_threads(),
    )


def evaluate(model: Any, val_data: Any, spec: DemoSpec) -> float:
    """Mean next-token loss over evenly spaced held-out windows."""
    import torch

    num_windows = min(_NUM_VAL_BATCHES * spec.batch_size, len(val_data) // spec.train_seq_len)
    starts = [i * spec.train_seq_len for i in range(num_windows)]
    model.eval()
    with torch.no_grad():
        losses = [
            float(model(input_ids=batch, labels=batch).loss)
            for batch in (
                _windows(val_data, starts[i : i + spec.batch_size], spec.train_seq_len)
                for i in range(0, num_windows, spec.batch_size)
            )
        ]
    return sum(losses) / len(losses)


def greedy_sample(model: Any, hf_tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation of prompt with transformers' own generate (text after prompt)."""
    import torch

    encoded = hf_tokenizer(prompt, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    new_ids = output[0, encoded["input_ids"].shape[1] :].tolist()
    return str(hf_tokenizer.decode(new_ids, skip_special_tokens=True))
