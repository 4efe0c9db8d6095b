"""What the simulator simulates: pools of instances, their scheduler knobs, the KV link."""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from splitserve.planner.cost_model import LatencyModel
from splitserve.planner.host_share import HostShare

Role = Literal["mixed", "prefill", "decode"]


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-instance batching knobs (the engine's scheduler, as the simulator models it).

    token_budget: tokens per step of a mixed (colocated) or decode instance, decode tokens
    included (Sarathi / vLLM chunked prefill). prefill_token_budget: tokens per step of a
    prefill instance (whole prompts are batched up to it; one longer prompt still runs
    alone). chunked_prefill=False gives the pre-chunking vLLM policy DistServe compared
    against: a step with any prompt in it is prefill-only, decodes wait.
    prefill_role_chunks: a prefill instance also cuts the prompt that does not fit the
    step's remaining budget and finishes it in the next step (splitserve's engine does
    this on every role), instead of leaving it whole for the next step.
    step_gap_s: seconds the engine loop spends before each step outside the step itself
    (taking commands, handing the previous step's tokens over): every step ends
    `step_gap_s` later than it started plus its duration, and its duration (what a
    worker's step metrics time, `SimResult.steps`) excludes it.
    step_gap_per_seq_s: further seconds of that gap per sequence the step decodes (the
    loop hands every sampled token over between steps). Fitted on one CPU core, with
    decode steps priced per sequence: under 0.5 ms per step in all
    (docs/calibration_history.md, "Step prices fitted against load").
    host: the serving front end sharing the instances' cores (`HostShare`): every step
    stretched by the share of a core it takes at the current token rate. None (the
    default, a real fleet): the front end runs elsewhere.
    continuation_prompt_scale: factor on a step whose prompt chunks all continue prompts
    begun in earlier steps (a long prompt's later chunks), against one that starts a
    prompt. Measured on one CPU core: a lone prompt's step took ~1.4x the profile, a long
    prompt's later chunks ~1.0x (a started prompt has no request to take in, no first token
    to emit, no KV to offer beside it); 1 (default) prices both alike.
    """

    token_budget: int = 2048
    prefill_token_budget: int = 8192
    max_num_seqs: int = 256
    chunked_prefill: bool = True
    prefill_role_chunks: bool = False
    step_gap_s: float = 0.0
    step_gap_per_seq_s: float = 0.0
    host: HostShare | None = None
    continuation_prompt_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.continuation_prompt_scale < float("inf"):
            raise ValueError(f"continuation_prompt_scale must be a finite number > 0, "
                             f"got {self.continuation_prompt_scale}")
        for name in ("token_budget", "prefill_token_budget", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("step_gap_s", "step_gap_per_seq_s"):
            if not (0 <= getattr(self, name) < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0 seconds, "
                                 f"got {getattr(self, name)}")


@dataclass(frozen=True)
class TransferConfig:
    """The prefill -> decode KV link of one instance: every GPU of the receiving instance
    has its own link (`link_bw_bytes_s` each), transfers into one instance queue on it.

    join_s: seconds a decode instance's step takes longer for each request that joins it
    with transferred KV (activating the request and its first step there; measured ~2-3 ms
    on one CPU core, see docs/planner.md "Calibration against our engine").

    busy_source_bw_bytes_s / busy_source_extra_latency_s: the link of a transfer whose
    source instance is computing when it starts (a step in flight or prompts waiting),
    where the source's side of the transfer shares its cores with the next prompt (our
    engine on CPU: checksums and the TCP send beside a prompt step, ~2x the latency and a
    slower rate; docs/planner.md "The KV transfer itself"). None / 0: as any transfer.
    """

    link_bw_bytes_s: float
    latency_s: float = 0.0
    layer_overlap: bool = False  # send layer by layer while the prefill still runs
    join_s: float = 0.0
    busy_source_bw_bytes_s: float | None = None
    busy_source_extra_latency_s: float = 0.0

    def __post_init__(self) -> None:
        if self.link_bw_bytes_s <= 0:
            raise ValueError(f"link_bw_bytes_s must be > 0, got {self.link_bw_bytes_s}")
        if self.busy_source_bw_bytes_s is not None and not self.busy_source_bw_bytes_s > 0:
            raise ValueError(f"busy_source_bw_bytes_s must be > 0, "
                             f"got {self.busy_source_bw_bytes_s}")
        for name in ("latency_s", "join_s", "busy_source_extra_latency_s"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def duration_s(self, num_tokens: int, receiver: LatencyModel,
                   prefill_step_s: float, source_busy: bool = False) -> float:
        """Seconds the link is busy moving `num_tokens` tokens' KV to `receiver` (latency
        not included). With `layer_overlap`, all layers but the last went out while the
        prefill step (`prefill_step_s`) computed the next ones. `source_busy`: the source
        instance computes meanwhile (`busy_source_bw_bytes_s`)."""
        bw = (self.busy_source_bw_bytes_s
              if source_busy and self.busy_source_bw_bytes_s is not None
              else self.link_bw_bytes_s)
        full_s = num_tokens * receiver.kv_bytes_per_token / (bw * receiver.tensor_parallel)
        if not self.layer_overlap:
            return full_s
        hidden_s = prefill_step_s * (receiver.num_layers - 1) / receiver.num_layers
        return max(full_s - hidden_s, full_s / receiver.num_layers)


@dataclass(frozen=True)
class Pool:
    role: Role
    num_instances: int
    latency_model: LatencyModel

    def __post_init__(self) -> None:
        if self.role not in ("mixed", "prefill", "decode"):
            raise ValueError(f"unknown role {self.role!r}")
        if self.num_instances < 1:
            raise ValueError(f"{self.role} pool needs >= 1 instance, got {self.num_instances}")

    @property
    def num_gpus(self) -> int:
        return self.num_instances * self.latency_model.tensor_parallel


class Instance:
    """Mutable state of one simulated engine instance."""

    __slots__ = (
        "idx",
        "role",
        "model",
        "kv_capacity",
        "waiting",
        "pending",
        "ready",
        "running",
        "num_running",
        "num_incoming",
        "ctx_tokens",
        "kv_used",
        "decode_step",
        "busy",
        "queued_prefill_tokens",
        "link_free_s",
        "chunks",
        "has_decode",
        "step_s",
        "step_started_s",
        "prefix_cache",
        "prefix_capacity",
    )

    def __init__(self, idx: int, role: Role, model: LatencyModel, prefix_blocks: int) -> None:
        self.idx = idx
        self.role = role
        self.model = model
        self.kv_capacity = model.kv_capacity_tokens
        self.waiting: deque[int] = deque()  # requests to prefill here, FIFO
        self.pending: deque[int] = deque()  # prefilled elsewhere, waiting for KV space here
        self.ready: list[int] = []  # KV arrived, join the batch at the next step
        self.running: list[tuple[int, int]] = []  # heap of (last decode step, request)
        self.num_running = 0
        self.num_incoming = 0
        self.ctx_tokens = 0  # KV tokens of the running sequences
        self.kv_used = 0  # tokens reserved (prompt + output, or prompt on a prefill role)
        self.decode_step = 0
        self.busy = False
        self.queued_prefill_tokens = 0
        self.link_free_s = 0.0
        self.chunks: list[tuple[int, int, int]] = []  # (request, new tokens, cached before)
        self.has_decode = False
        self.step_s = 0.0
        self.step_started_s = 0.0
        self.prefix_cache: OrderedDict[int, None] | None = (
            OrderedDict() if prefix_blocks > 0 else None
        )
        self.prefix_capacity = prefix_blocks

    def join_running(self, rid: int, input_len: int, output_len: int) -> None:
        """Start decoding `rid` (first token already out): it runs output_len - 1 steps."""
        heapq.heappush(self.running, (self.decode_step + output_len - 1, rid))
        self.num_running += 1
        self.ctx_tokens += input_len + 1

    def decode_load(self) -> int:
        return self.num_running + self.num_incoming + len(self.pending) + len(self.ready)

    def lookup_prefix(self, hash_ids: tuple[int, ...]) -> int:
        """Leading blocks of `hash_ids` cached here; then insert them all (LRU)."""
        cache = self.prefix_cache
        if cache is None:
            return 0
        num_hit = 0
        for h in hash_ids:
            if h not in cache:
                break
            num_hit += 1
        for h in hash_ids:
            cache[h] = None
            cache.move_to_end(h)
        while len(cache) > self.prefix_capacity:
            cache.popitem(last=False)
        return num_hit


def make_instances(
    pools: Sequence[Pool], block_tokens: int, prefix_cache: bool
) -> tuple[list[Instance], dict[str, list[Instance]]]:
    """Instances of one mixed pool, or of a prefill and a decode pool, numbered in order.

    With `prefix_cache`, every prefill-capable instance keeps as many prefix blocks of
    `block_tokens` as its KV cache holds.
    """
    roles = sorted(p.role for p in pools)
    if roles not in (["mixed"], ["decode", "prefill"]):
        raise ValueError(f"need one mixed pool, or a prefill and a decode pool; got {roles}")
    instances: list[Instance] = []
    by_role: dict[str, list[Instance]] = {}
    for pool in pools:
        blocks = pool.latency_model.kv_capacity_tokens // block_tokens
        use = prefix_cache and pool.role != "decode"
        insts = [
            Instance(len(instances) + k, pool.role, pool.latency_model, blocks if use else 0)
            for k in range(pool.num_instances)
        ]
        instances.extend(insts)
        by_role[pool.role] = insts
    return instances, by_role
