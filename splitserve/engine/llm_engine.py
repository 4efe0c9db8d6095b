"""The engine step loop: scheduler -> model -> sampler -> detokenizer, once per `step()`.

One step: the scheduler decides how many tokens of each request to compute (decodes,
prefill chunks, new prompts, within the token budget and free KV blocks); the model runs
them as one flat batch over the paged cache; the sampler draws one token for every
request whose scheduled tokens reach its end; the detokenizer turns tokens into text and
decides stops; finished requests free their blocks. Prefill-only requests (disaggregated
prefill) end in HELD: their blocks stay pinned until the decode worker acks, the request
is aborted, or the lease expires. Decode-side requests arrive with their prompt's KV
imported into reserved blocks and the first token already sampled.

Not thread-safe: one owner thread calls everything except `export_layer` /
`import_layer`, which touch only pinned or reserved blocks (see worker.kv_bridge).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.detokenizer import IncrementalDetokenizer
from splitserve.engine.engine_config import EngineConfig
from splitserve.engine.model_runner import ModelRunner
from splitserve.engine.sampler import sample
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.sched_output import HeldBlocks, ScheduledSequence, SchedulerOutput
from splitserve.engine.scheduler import Scheduler
from splitserve.engine.sequence import FinishReason, Sequence
from splitserve.metrics.phase import PhaseCounters
from splitserve.tokenizer import Tokenizer, load_tokenizer

if TYPE_CHECKING:
    from splitserve.transfer import ModelIdentity


@dataclass
class StepOutput:
    """What one step produced for one request (deltas, not the whole text)."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    logprobs: list[dict[str, Any]] | None
    finished: bool
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    held: bool = False  # prefill-only request now HELD: hand its KV off
    emitted_text_len: int = 0
    timeline: dict[str, float] = field(default_factory=dict)


@dataclass
class _Request:
    seq: Sequence
    params: SamplingParams
    detok: IncrementalDetokenizer
    timeline: dict[str, float]


@dataclass(frozen=True)
class StepPlan:
    """A scheduled step between `begin_step` and `finish_step`."""

    sched: SchedulerOutput
    sampled: list[ScheduledSequence]
    started_s: float


@dataclass(frozen=True)
class KVLayout:
    num_layers: int
    bytes_per_block_per_layer: int
    dtype: str
    block_shape: tuple[int, ...]


class LLMEngine:
    def __init__(self, config: EngineConfig, runner: ModelRunner, tokenizer: Tokenizer) -> None:
        self.config = config
        self.runner = runner
        self.tokenizer = tokenizer
        self.max_model_len = runner.max_model_len
        cache_cfg = CacheConfig(num_blocks=runner.num_blocks, block_size=config.block_size,
                                enable_prefix_caching=config.enable_prefix_caching)
        sched_cfg = SchedulerConfig(
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_num_seqs=config.max_num_seqs, max_model_len=self.max_model_len,
            handoff_lease_s=config.handoff_lease_s)
        self.scheduler = Scheduler(sched_cfg, cache_cfg)
        self.requests: dict[str, _Request] = {}
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.phase_counters = PhaseCounters()

    @property
    def model_identity(self) -> ModelIdentity:
        """What the KV handshake compares (model hash, dtype, block and head shapes)."""
        return self.runner.model_identity()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        tokenizer = load_tokenizer(config.model)
        return cls(config, ModelRunner(config), tokenizer)

    # ---- requests -------------------------------------------------------------------
    def _new_request(self, request_id: str, prompt_token_ids: list[int],
                     params: SamplingParams, prefill_only: bool,
                     output_token_ids: list[int] | None = None) -> _Request:
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt_token_ids:
            raise ValueError("prompt is empty: at least one token is needed")
        vocab = self.runner.vocab_size
        bad = [t for t in prompt_token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}")
        total = len(prompt_token_ids) + (1 if prefill_only else params.max_tokens)
        if len(prompt_token_ids) >= self.max_model_len or total > self.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_token_ids)} tokens) + max_tokens ({params.max_tokens}) "
                f"exceeds the max model length {self.max_model_len}")
        seq = Sequence(request_id=request_id, prompt_token_ids=list(prompt_token_ids),
                       params=params, prefill_only=prefill_only,
                       output_token_ids=list(output_token_ids or []))
        detok = IncrementalDetokenizer(
            self.tokenizer.backend, prompt_token_ids, params,
            output_token_ids=output_token_ids or (),
            eos_token_ids=self.tokenizer.eos_token_ids, max_model_len=self.max_model_len)
        req = _Request(seq, params, detok, {"engine_arrival": time.time()})
        return req

    def add_request(self, request_id: str, prompt_token_ids: list[int],
                    params: SamplingParams, *, prefill_only: bool = False) -> None:
        """Queue a request. Raises ValueError for bad input (nothing is queued then)."""
        req = self._new_request(request_id, prompt_token_ids, params, prefill_only)
        self.scheduler.add(req.seq)
        self.requests[request_id] = req

    def abort(self, request_id: str) -> bool:
        """Abort in any state (idempotent); frees its blocks. True if it was known."""
        req = self.requests.pop(request_id, None)
        self.scheduler.abort(request_id)
        return req is not None

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def idle_wait_s(self) -> float:
        return 0.5

    def tick(self) -> None:
        """Clock-driven work: free HELD blocks whose lease ran out."""
        for request_id in self.scheduler.expire(time.monotonic()):
            self.requests.pop(request_id, None)

    def stats(self) -> dict[str, int]:
        return self.scheduler.stats().to_dict()

    # ---- the step ---------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        """One engine step: `begin_step`, `run_model`, `finish_step`."""
        plan = self.begin_step()
        if plan is None:
            return []
        return self.finish_step(plan, self.run_model(plan))

    def begin_step(self) -> StepPlan | None:
        """Schedule this step's work (scheduler state: the owner thread, or its lock)."""
        self.tick()
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return None
        now = time.time()
        for item in sched.scheduled:
            self.requests[item.request_id].timeline.setdefault("engine_first_scheduled", now)
        sampled = [item for item in sched.scheduled if item.sample]
        return StepPlan(sched, sampled, time.perf_counter())

    def run_model(self, plan: StepPlan) -> torch.Tensor:
        """The forward pass. Touches only the KV blocks of the scheduled sequences, so
        reservations, imports and activations of other requests may run meanwhile."""
        return self.runner.forward(plan.sched.scheduled, plan.sampled)

    def finish_step(self, plan: StepPlan, logits: torch.Tensor) -> list[StepOutput]:
        """Sample, advance the scheduler, detokenize; returns per-request outputs."""
        # every sampled request is still here: aborts run only between steps, and the
        # calls allowed during run_model touch no scheduled request
        reqs = [self.requests[item.request_id] for item in plan.sampled]
        result = sample(
            logits, [r.params for r in reqs], [r.seq.num_output_tokens for r in reqs],
            self.generator, self.tokenizer.eos_token_ids)
        sampled = {item.request_id: tok for item, tok in
                   zip(plan.sampled, result.token_ids, strict=True)}
        update = self.scheduler.update(plan.sched, sampled, now_s=time.monotonic())
        held = set(update.held_ids)
        outputs = []
        for req, tok, lp in zip(reqs, result.token_ids, result.logprobs, strict=True):
            outputs.append(self._emit(req, tok, lp, req.seq.request_id in held))
        self.phase_counters.record_step(time.perf_counter() - plan.started_s,
                                        *self.runner.cost.split_step(plan.sched.scheduled))
        return outputs

    def _emit(self, req: _Request, token_id: int, logprob: Any, held: bool) -> StepOutput:
        rid = req.seq.request_id
        tl = req.timeline
        if "queue_s" not in tl and "engine_first_scheduled" in tl:
            tl["queue_s"] = tl["engine_first_scheduled"] - tl["engine_arrival"]
        delta = req.detok.append(token_id)
        req.timeline.setdefault("engine_first_token", time.time())
        out = StepOutput(
            request_id=rid, new_token_ids=[token_id], new_text=delta,
            logprobs=[logprob.to_dict()] if logprob is not None else None,
            finished=False, num_prompt_tokens=req.seq.num_prompt_tokens,
            num_output_tokens=len(req.detok.token_ids))
        if req.detok.finished or req.seq.status.is_finished:
            reason = req.detok.finish_reason or "length"
            # (a HELD request that ended on its first token is released: nothing to hand off)
            self.scheduler.finish(rid, FinishReason(reason))
            self.requests.pop(rid, None)
            out.finished, out.finish_reason = True, reason
            out.stop_reason = req.detok.stop_reason
            out.timeline = req.timeline
        elif held:
            out.held, out.finished = True, False
            out.emitted_text_len = len(req.detok.text)
            out.timeline = req.timeline
        return out

    def fail_all(self, message: str) -> list[StepOutput]:
        """After an unexpected step error: end every request with an error output."""
        outs = []
        for rid in list(self.requests):
            self.abort(rid)
            outs.append(StepOutput(request_id=rid, new_token_ids=[], new_text="",
                                   logprobs=None, finished=True, finish_reason="error",
                                   stop_reason=message))
        return outs

    def device_peaks(self) -> tuple[float, float]:
        return self.runner.device_peaks()

    # ---- disaggregation: prefill side ---------------------------------------------------
    def held_kv(self, request_id: str) -> HeldBlocks:
        return self.scheduler.held_blocks(request_id)

    def release(self, request_id: str) -> None:
        """Decode acked (or the transfer server gave up): free the HELD blocks once."""
        self.scheduler.release(request_id)
        self.requests.pop(request_id, None)

    def kv_layout(self) -> KVLayout:
        return self.runner.kv_layout()

    def export_layer(self, layer: int, block_ids: list[int]) -> memoryview:
        return self.runner.export_layer(layer, block_ids)

    # ---- disaggregation: decode side ----------------------------------------------------
    def reserve_import(self, request_id: str, prompt_token_ids: list[int], first_token_id: int,
                       params: SamplingParams) -> list[int] | None:
        """Reserve blocks for a prefilled prompt's KV; None if there is no room yet."""
        existing = self.requests.get(request_id)
        if existing is not None and existing.seq.status.is_receiving_kv:
            return list(existing.seq.block_ids)
        req = self._new_request(request_id, prompt_token_ids, params, prefill_only=False,
                                output_token_ids=[first_token_id])
        block_ids = self.scheduler.reserve(req.seq)
        if block_ids is None:
            return None
        self.requests[request_id] = req
        self.scheduler.mark_receiving(request_id)
        return list(block_ids)

    def import_layer(self, layer: int, block_ids: list[int], data: memoryview) -> None:
        self.runner.import_layer(layer, block_ids, data)

    def activate_import(self, request_id: str) -> None:
        self.scheduler.mark_verified(request_id)
        self.scheduler.activate(request_id)

    def fail_import(self, request_id: str) -> None:
        self.requests.pop(request_id, None)
        self.scheduler.fail(request_id)
