"""Glue between the engine's KV cache and the transfer package, on both sides.

Prefill side (`offer`): a request that finished its prompt is HELD by the scheduler; we
register its blocks with the KV server (export is lazy, layer by layer, straight from
the cache: the blocks are pinned so nobody writes them) and build the handoff record
the router forwards. The server calls back once, on ack or expiry, and the engine frees
the blocks (`release`).

Decode side (`receive`): reserve blocks first (waiting a bounded time for space), pull
the bytes into them on a transfer thread, and only after every layer verified activate
the request in the scheduler. Any failure frees the reservation and becomes an error
event the router can retry on; nothing is decoded from unverified KV.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from splitserve.transfer import (
    HandoffRecord,
    KVServer,
    TransferError,
    pull_kv,
)
from splitserve.worker.protocol import GenerateRequest, error_line

if TYPE_CHECKING:
    from splitserve.engine.llm_engine import LLMEngine, StepOutput
    from splitserve.engine.sampling_params import SamplingParams
    from splitserve.worker.config import WorkerConfig
    from splitserve.worker.engine_thread import EngineThread

log = logging.getLogger(__name__)


class KVBridge:
    def __init__(self, cfg: WorkerConfig, engine: LLMEngine, thread: EngineThread) -> None:
        self.cfg = cfg
        self.engine = engine
        self.thread = thread
        self.server: KVServer | None = None
        self.num_bytes_received = 0
        self.transfer_s_total = 0.0

    def start(self) -> None:
        if self.cfg.role == "decode":
            return  # decode workers only pull
        self.server = KVServer(
            host=self.cfg.kv_host or self.cfg.host,
            port=self.cfg.kv_port,
            secret=self.cfg.secret,
            identity=self.engine.model_identity,
            on_release=self._on_release,
        )
        self.server.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _on_release(self, request_id: str, reason: str) -> None:
        self.thread.call(lambda: self.engine.release(request_id))

    def offer(self, out: StepOutput) -> dict[str, object]:
        """Register a HELD request's KV with the server; return the handoff record."""
        if self.server is None:
            raise RuntimeError("this worker has no KV server (role=decode)")
        held = self.thread.call(lambda: self.engine.held_kv(out.request_id)).result()
        layout = self.engine.kv_layout()
        block_ids = list(held.block_ids)
        expires_at = time.time() + self.engine.config.handoff_lease_s
        self.server.register(
            out.request_id,
            num_layers=layout.num_layers,
            read_layer=lambda layer: self.engine.export_layer(layer, block_ids),
            expires_at=expires_at,
        )
        record = HandoffRecord.build(
            request_id=out.request_id,
            source_worker=self.cfg.worker_id,
            tcp_address=self.server.address,
            shm=self.cfg.transport == "shm",
            num_layers=layout.num_layers,
            block_ids=block_ids,
            num_tokens=held.num_tokens,
            bytes_per_layer=layout.bytes_per_block_per_layer * len(block_ids),
            dtype=layout.dtype,
            block_shape=layout.block_shape,
            model_hash=self.engine.model_identity.model_hash,
            expires_at=expires_at,
        )
        return record.to_dict()

    async def receive(
        self, req: GenerateRequest, params: SamplingParams, timeline: dict[str, float]
    ) -> bytes | None:
        """Reserve, pull, verify, activate. Returns an error event line, or None on success."""
        try:
            record = HandoffRecord.from_dict(req.handoff or {})
        except ValueError as exc:
            return error_line(400, f"bad handoff record: {exc}", "invalid_request_error")
        if record.request_id != req.request_id:
            return error_line(400, "handoff record is for another request",
                              "invalid_request_error")
        first_token_id = int(req.first_token_id or 0)

        def reserve() -> list[int] | None:
            return self.engine.reserve_import(
                req.request_id, req.prompt_token_ids, first_token_id, params,
                emitted_text_len=req.emitted_text_len)

        deadline = time.monotonic() + self.cfg.reserve_timeout_s
        try:
            block_ids = await self.thread.acall(reserve)
            while block_ids is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                block_ids = await self.thread.acall(reserve)
        except ValueError as exc:
            return error_line(400, str(exc), "invalid_request_error")
        if block_ids is None:
            return error_line(503, "no free KV blocks on the decode worker", "overloaded")
        timeline["kv_transfer_start"] = time.time()
        started = time.perf_counter()
        try:
            stats = await asyncio.to_thread(
                pull_kv, record, self.cfg.secret, self.engine.model_identity,
                lambda layer, data: self.engine.import_layer(layer, block_ids, data),
                timeout_s=self.cfg.kv_pull_timeout_s, prefer_shm=self.cfg.transport == "shm",
            )
        except TransferError as exc:
            await self.thread.acall(lambda: self.engine.fail_import(req.request_id))
            log.warning("KV transfer for %s failed: %s", req.request_id, exc)
            return error_line(502, f"KV transfer failed: {exc}", f"kv_transfer_{exc.code}")
        except BaseException:
            # cancelled (client gone) or a bug: never leave the reservation behind
            self.thread.call(lambda: self.engine.fail_import(req.request_id))
            raise
        elapsed = time.perf_counter() - started
        self.transfer_s_total += elapsed
        self.num_bytes_received += stats.num_bytes
        timeline["kv_transfer_end"] = time.time()
        timeline["kv_transfer_s"] = elapsed
        timeline["kv_transfer_bytes"] = float(stats.num_bytes)
        await self.thread.acall(lambda: self.engine.activate_import(req.request_id))
        return None
