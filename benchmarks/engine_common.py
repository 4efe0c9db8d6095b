"""Shared pieces of the engine benchmarks: workloads, environment record, our engine's runs.

Token ids are random (2..vocab_cap): the benchmark checkpoints have random weights, so text
would mean nothing, and feeding ids skips tokenizer differences between the engines.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

Request = tuple[list[int], int]  # (prompt token ids, output tokens asked for)


def mixed_workload(num_requests: int = 64, seed: int = 0, vocab_cap: int = 8000,
                   prompt_range: tuple[int, int] = (16, 512),
                   output_range: tuple[int, int] = (16, 256)) -> list[Request]:
    """Prompt lengths uniform in prompt_range, output lengths uniform in output_range."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(num_requests):
        p_len = rng.randint(*prompt_range)
        o_len = rng.randint(*output_range)
        reqs.append(([rng.randint(2, vocab_cap) for _ in range(p_len)], o_len))
    return reqs


def fixed_workload(num_requests: int, prompt_len: int = 128, output_len: int = 128,
                   seed: int = 1, vocab_cap: int = 8000) -> list[Request]:
    rng = random.Random(seed)
    return [([rng.randint(2, vocab_cap) for _ in range(prompt_len)], output_len)
            for _ in range(num_requests)]


def useful_tokens(reqs: list[Request]) -> int:
    return sum(o for _, o in reqs)


def environment(threads: int, dtype: str) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(), "torch_threads": threads, "dtype": dtype,
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


class OurEngine:
    """splitserve's offline LLM, loaded once; `run(reqs)` -> useful tokens/s."""

    def __init__(self, model_dir: Path, dtype: str, threads: int, max_num_seqs: int = 64,
                 max_num_batched_tokens: int = 1024, device: str = "cpu") -> None:
        from splitserve.engine.llm import LLM

        self.llm = LLM(str(model_dir), dtype=dtype, num_threads=threads, device=device,
                       max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                       kv_cache_bytes=1 << 30, max_model_len=2048,
                       enable_prefix_caching=False)

    def run(self, reqs: list[Request]) -> float:
        from splitserve.engine.sampling_params import SamplingParams

        params = [SamplingParams(max_tokens=o, ignore_eos=True, temperature=0.0)
                  for _, o in reqs]
        start = time.perf_counter()
        outs = self.llm.generate([p for p, _ in reqs], params)
        elapsed = time.perf_counter() - start
        got = sum(len(o.outputs[0].token_ids) for o in outs)
        if got != useful_tokens(reqs):
            raise RuntimeError(f"engine produced {got} tokens, asked for {useful_tokens(reqs)}")
        return got / elapsed


class HFEngine:
    """transformers `generate`, batched with left padding; counts only requested tokens."""

    def __init__(self, model_dir: Path, dtype: str, threads: int, device: str = "cpu") -> None:
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=getattr(torch, dtype))
        # transformers types `to` through a wrapper that mypy reads as taking the model
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        # ignore_eos: never stop early, every row generates its batch's max_new_tokens
        self.model.generation_config.eos_token_id = None
        self.model.generation_config.pad_token_id = 0

    def run(self, reqs: list[Request], batch_size: int) -> float:
        torch = self.torch
        start = time.perf_counter()
        for i in range(0, len(reqs), batch_size):
            chunk = reqs[i:i + batch_size]
            max_len = max(len(p) for p, _ in chunk)
            ids = torch.zeros((len(chunk), max_len), dtype=torch.int64)
            mask = torch.zeros((len(chunk), max_len), dtype=torch.int64)
            for row, (prompt, _) in enumerate(chunk):
                ids[row, max_len - len(prompt):] = torch.tensor(prompt)
                mask[row, max_len - len(prompt):] = 1
            new = max(o for _, o in chunk)
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids.to(self.device),
                                          attention_mask=mask.to(self.device), do_sample=False,
                                          max_new_tokens=new, min_new_tokens=new)
            if out.shape[1] != max_len + new:
                raise RuntimeError(f"HF generated {out.shape[1] - max_len} tokens, not {new}")
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # our engine's outputs are host lists: already synced
        return useful_tokens(reqs) / (time.perf_counter() - start)
