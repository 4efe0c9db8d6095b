"""Owns the model and its paged KV cache; turns scheduled work into logits.

The only engine file that knows about tensors and devices: the scheduler hands it
`ScheduledSequence`s (token ids, start position, block table) and it returns one row of
next-token logits per sequence that samples this step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from splitserve.engine.engine_config import EngineConfig
from splitserve.engine.sched_output import ScheduledSequence
from splitserve.metrics.phase import ModelCost
from splitserve.model import (
    ForwardBatch,
    allocate_kv_caches,
    bytes_per_block_per_layer,
    export_blocks,
    import_blocks,
    load_model,
    native,
    num_blocks_for_memory,
)

if TYPE_CHECKING:
    from splitserve.engine.llm_engine import KVLayout
    from splitserve.transfer import ModelIdentity


class ModelRunner:
    def __init__(self, config: EngineConfig) -> None:
        if config.num_threads is not None and config.device == "cpu":
            torch.set_num_threads(config.num_threads)
        self.device = torch.device(config.device)
        self.block_size = config.block_size
        self.model_config, self.model = load_model(config.model, config.dtype, self.device)
        mc = self.model_config
        self.max_model_len = min(config.max_model_len or mc.max_position_embeddings,
                                 mc.max_position_embeddings)
        self.vocab_size = mc.vocab_size
        self.num_blocks = config.num_blocks or num_blocks_for_memory(
            mc, self.block_size, mc.dtype, config.kv_cache_bytes)
        if self.num_blocks * self.block_size < self.max_model_len:
            raise ValueError(
                f"the KV pool ({self.num_blocks} blocks x {self.block_size} tokens) cannot hold "
                f"one request of max length {self.max_model_len}: raise --kv-cache-bytes / "
                "--num-blocks or lower --max-model-len")
        self.kv_caches = allocate_kv_caches(mc, self.num_blocks, self.block_size,
                                            device=self.device)
        shapes = {name: tuple(t.shape) for name, t in self.model.state_dict().items()}
        self._model_hash = mc.model_identity(shapes)  # checkpoint names: before fusing
        num_params = sum(t.numel() for t in self.model.parameters())
        itemsize = torch.empty((), dtype=self.kv_caches[0].dtype).element_size()
        self.cost = ModelCost(
            num_params=num_params, num_layers=mc.num_layers, num_q_heads=mc.num_heads,
            head_dim=mc.head_dim,
            weight_bytes=sum(t.numel() * t.element_size() for t in self.model.parameters()),
            kv_bytes_per_token=2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * itemsize)
        self._peaks: tuple[float, float] | None = None
        # Speed-only rewrites, after the hash and cost above saw the checkpoint's layout.
        self.model.fuse_projections()
        self.model.pack_for_cpu(config.max_num_batched_tokens)
        if self.device.type == "cpu":
            # build/load the C++ kernels now (first time: seconds) rather than inside the
            # first request, so a worker reports ready only once it runs at full speed
            native.load()

    def model_identity(self) -> ModelIdentity:
        from splitserve.transfer import ModelIdentity

        mc = self.model_config
        return ModelIdentity(model_hash=self._model_hash, dtype=mc.dtype,
                             block_size=self.block_size, num_layers=mc.num_layers,
                             num_kv_heads=mc.num_kv_heads, head_dim=mc.head_dim)

    @torch.inference_mode()
    def forward(self, scheduled: Sequence[ScheduledSequence],
                sampled: Sequence[ScheduledSequence]) -> torch.Tensor:
        """Run one step; returns logits [len(sampled), vocab] in `sampled` order."""
        index = {item.request_id: i for i, item in enumerate(scheduled)}
        batch = ForwardBatch.build(
            [(item.token_ids, item.num_computed_tokens, item.block_ids) for item in scheduled],
            self.block_size, logits_for=[index[item.request_id] for item in sampled],
            device=self.device)
        return self.model(batch, self.kv_caches)

    def kv_layout(self) -> KVLayout:
        from splitserve.engine.llm_engine import KVLayout

        mc = self.model_config
        return KVLayout(
            num_layers=mc.num_layers,
            bytes_per_block_per_layer=bytes_per_block_per_layer(mc, self.block_size, mc.dtype),
            dtype=mc.dtype,
            block_shape=(2, self.block_size, mc.num_kv_heads, mc.head_dim))

    def export_layer(self, layer: int, block_ids: list[int]) -> memoryview:
        return memoryview(export_blocks(self.kv_caches, layer, block_ids))

    def import_layer(self, layer: int, block_ids: list[int], data: memoryview) -> None:
        import_blocks(self.kv_caches, layer, block_ids, data)

    def device_peaks(self) -> tuple[float, float]:
        """(FLOP/s, bytes/s) this device reaches on a matmul and a large copy (measured once)."""
        if self._peaks is None:
            self._peaks = measure_peaks(self.device, self.kv_caches[0].dtype)
        return self._peaks


def measure_peaks(device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """A short micro-benchmark: best of a few matmuls and memory copies (about 0.2 s)."""
    n = 1024
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    src = torch.empty(32 << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best_mm = best_cp = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best_mm = min(best_mm, time.perf_counter() - t)
        t = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best_cp = min(best_cp, time.perf_counter() - t)
    # a copy reads and writes every byte: count both as traffic
    return 2.0 * n**3 / best_mm, 2.0 * src.numel() / best_cp
