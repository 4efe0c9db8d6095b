"""Offline generation in the shape vLLM users know: `LLM(model).generate(prompts, params)`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from splitserve.engine.engine_config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine, StepOutput
from splitserve.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from splitserve.engine.sampling_params import SamplingParams


class LLM:
    """Load a model once; generate for batches of prompts with continuous batching.

    `LLM(model_dir, dtype="float32", max_num_batched_tokens=256, ...)`: keyword arguments
    are `EngineConfig` fields. `model=None` uses the bundled demo model.
    """

    def __init__(self, model: str | None = None, **engine_args: Any) -> None:
        if model is None:
            from splitserve.demo import default_model_dir

            model = str(default_model_dir())
        names = {f.name for f in dataclasses.fields(EngineConfig)}
        unknown = sorted(set(engine_args) - names)
        if unknown:
            raise ValueError(f"unknown engine argument(s) {unknown}; known: {sorted(names)}")
        self.engine = LLMEngine.from_config(EngineConfig(model=model, **engine_args))
        self.tokenizer = self.engine.tokenizer
        self._counter = 0

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt; results in prompt order.

        A prompt is text, a list of token ids, or (as in vLLM) a dict with either
        `"prompt"` (text) or `"prompt_token_ids"` (ids).
        """
        prompt_list = (
            [_normalize(prompts)] if isinstance(prompts, str | dict) else
            [_normalize(p) for p in prompts])
        if not prompt_list:
            raise ValueError("prompts is empty")
        if sampling_params is None:
            sampling_params = SamplingParams()
        params_list = (
            [sampling_params] * len(prompt_list)
            if isinstance(sampling_params, SamplingParams) else list(sampling_params))
        if len(params_list) != len(prompt_list):
            raise ValueError(f"{len(prompt_list)} prompts but {len(params_list)} sampling params")
        order: list[str] = []
        results: dict[str, RequestOutput] = {}
        try:
            for prompt, params in zip(prompt_list, params_list, strict=True):
                rid = self._add(prompt, params, results)
                order.append(rid)
        except ValueError:
            for queued in order:  # all or nothing: a bad prompt queues no request
                self.engine.abort(queued)
            raise
        while self.engine.has_work():
            for out in self.engine.step():
                _merge(results[out.request_id], out)
        return [results[rid] for rid in order]

    def _add(self, prompt: str | list[int], params: SamplingParams,
             results: dict[str, RequestOutput]) -> str:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            text: str | None = prompt
            ids = self.tokenizer.encode(prompt)
        else:
            text, ids = None, list(prompt)
        rid = f"offline-{self._counter}"
        self._counter += 1
        self.engine.add_request(rid, ids, params)
        results[rid] = RequestOutput(
            request_id=rid, prompt=text, prompt_token_ids=ids,
            outputs=[CompletionOutput(index=0, text="", token_ids=[],
                                      logprobs=[] if params.logprobs is not None else None)],
            finished=False, metrics=RequestMetrics(arrival_time_s=time.time()))
        return rid


PromptInput = str | list[int] | dict[str, Any]


def _normalize(prompt: Any) -> str | list[int]:
    """Text or token ids from any accepted prompt form; a clear error for anything else."""
    if isinstance(prompt, dict):
        keys = set(prompt)
        if keys == {"prompt"}:
            prompt = prompt["prompt"]
            if not isinstance(prompt, str):
                raise ValueError(f"'prompt' must be text, got {type(prompt).__name__}")
        elif keys == {"prompt_token_ids"}:
            prompt = prompt["prompt_token_ids"]
        else:
            raise ValueError(
                f"a prompt dict needs exactly one of 'prompt' or 'prompt_token_ids', "
                f"got keys {sorted(keys)}")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, bytes) or not isinstance(prompt, Sequence):
        raise ValueError(f"a prompt is text, token ids or a dict, got {type(prompt).__name__}")
    ids = list(prompt)
    bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int)]
    if bad:
        raise ValueError(f"prompt token ids must be integers, got {bad[:3]!r}")
    return ids


def _merge(result: RequestOutput, out: StepOutput) -> None:
    completion = result.outputs[0]
    completion.token_ids.extend(out.new_token_ids)
    completion.text += out.new_text
    if out.logprobs is not None and completion.logprobs is not None:
        from splitserve.engine.outputs import TokenLogprobs

        completion.logprobs.extend(TokenLogprobs.from_dict(lp) for lp in out.logprobs)
    if out.finished:
        result.finished = True
        completion.finish_reason = out.finish_reason  # type: ignore[assignment]
        completion.stop_reason = out.stop_reason
        if result.metrics is not None:
            result.metrics.first_token_time_s = out.timeline.get("engine_first_token")
            result.metrics.first_scheduled_time_s = out.timeline.get("engine_first_scheduled")
            result.metrics.finished_time_s = time.time()
