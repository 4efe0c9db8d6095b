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
        # decode side: requests whose KV is being written right now -> abort requested.
        # Their blocks must not be freed mid-write (they could be handed to another
        # request while the transfer thread still writes), so abort waits for the pull.
        self.receiving: dict[str, bool] = {}
        self.num_bytes_received = 0
        self.transfer_s_total = 0.0

    def start(self) -> None:
        if self.cfg.role == "decode":
            return  # decode workers only pull
        self.server = KVServer(
            self.engine.model_identity,
            self.cfg.secret,
            host=self.cfg.kv_host or self.cfg.host,
            port=self.cfg.kv_port,
            worker_id=self.cfg.worker_id,
            on_release=self._on_release,
            shm_enabled=self.cfg.transport == "shm",
            # measured (benchmarks/results/kv_transfer.json): copying into the segment at
            # register time, off the pull's critical path, beats filling it at pull time
            shm_export_at_register=self.cfg.transport == "shm",
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _on_release(self, request_id: str, reason: str) -> None:
        # the server is the authority on when a HELD request's blocks may be reused:
        # it calls this once, after the ack, on expiry, or after an aborted pull ended
        self.thread.call(lambda: self.engine.release(request_id))

    def _fail_after_pull(self, request_id: str) -> None:
        self.receiving.pop(request_id, None)
        self.thread.call(lambda: self.engine.fail_import(request_id))

    def abort_receiving(self, request_id: str) -> bool:
        """Abort of a request whose KV is arriving: done once the pull returns."""
        if request_id not in self.receiving:
            return False
        self.receiving[request_id] = True
        return True

    def abort_held(self, request_id: str) -> bool:
        """Abort of a HELD request: let the server release it once no pull is reading."""
        return self.server is not None and self.server.unregister(request_id)

    def offer(self, out: StepOutput) -> dict[str, object]:
        """Register a HELD request's KV with the server; return the handoff record."""
        if self.server is None:
            raise RuntimeError("this worker has no KV server (role=decode)")
        # A HELD request is in no step: read its blocks during a forward pass rather than
        # after it. Under a queue of prompts the prefill engine starts its next step at
        # once, and waiting for it held back a fifth of the handoffs of the azure-code
        # trace by a whole prompt step (~130-170 ms of their second token's gap).
        held = self.thread.call_concurrent(lambda: self.engine.held_kv(out.request_id))
        block_ids = list(held.block_ids)
        # The engine's own lease (a fallback if no offer happens) started earlier and is
        # longer; the server's expiry, which frees through on_release, comes first.
        expires_at = time.time() + 0.8 * self.engine.config.handoff_lease_s
        record = self.server.register(
            out.request_id,
            block_ids=block_ids,
            num_tokens=held.num_tokens,
            expires_at=expires_at,
            read_layer=lambda layer: self.engine.export_layer(layer, block_ids),
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
        rid = req.request_id
        first_token_id = int(req.first_token_id or 0)

        def reserve() -> list[int] | None:
            return self.engine.reserve_import(rid, req.prompt_token_ids, first_token_id, params)

        # Registered before the reservation so that an abort arriving at any point from
        # here on is deferred to us instead of freeing blocks a transfer may write.
        self.receiving[rid] = False
        deadline = time.monotonic() + self.cfg.reserve_timeout_s
        try:
            block_ids = await self.thread.acall_concurrent(reserve)
            while block_ids is None and time.monotonic() < deadline and not self.receiving[rid]:
                await asyncio.sleep(0.02)
                block_ids = await self.thread.acall_concurrent(reserve)
        except BaseException as exc:
            self._fail_after_pull(rid)
            if isinstance(exc, ValueError):
                return error_line(400, str(exc), "invalid_request_error")
            raise
        aborted = self.receiving[rid]
        if block_ids is None or aborted:
            self._fail_after_pull(rid)
            if aborted:
                return error_line(499, "request aborted before its KV transfer", "aborted")
            return error_line(503, "no free KV blocks on the decode worker", "overloaded")
        timeline["kv_transfer_start"] = time.time()
        started = time.perf_counter()
        pull = asyncio.get_running_loop().run_in_executor(None, lambda: pull_kv(
            record, self.cfg.secret, self.engine.model_identity,
            lambda layer, data: self.engine.import_layer(layer, block_ids, data),
            timeout_s=self.cfg.kv_pull_timeout_s,
            transport="auto" if self.cfg.transport == "shm" else "tcp"))
        try:
            stats = await asyncio.shield(pull)
        except TransferError as exc:
            self.receiving.pop(rid, None)
            await self.thread.acall_concurrent(lambda: self.engine.fail_import(rid))
            log.warning("KV transfer for %s failed: %s", rid, exc)
            return error_line(502, f"KV transfer failed: {exc}", f"kv_transfer_{exc.code}")
        except asyncio.CancelledError:
            # The client is gone, but the pull thread may still be writing into the
            # reserved blocks: free them only once it has returned.
            pull.add_done_callback(lambda _: self._fail_after_pull(rid))
            raise
        except BaseException:
            self._fail_after_pull(rid)
            raise
        if self.receiving.pop(rid, False):
            await self.thread.acall_concurrent(lambda: self.engine.fail_import(rid))
            return error_line(499, "request aborted during the KV transfer", "aborted")
        elapsed = time.perf_counter() - started
        self.transfer_s_total += elapsed
        self.num_bytes_received += stats.num_bytes
        timeline["kv_transfer_end"] = time.time()
        timeline["kv_transfer_s"] = elapsed
        timeline["kv_transfer_bytes"] = float(stats.num_bytes)
        await self.thread.acall_concurrent(lambda: self.engine.activate_import(rid))
        return None
