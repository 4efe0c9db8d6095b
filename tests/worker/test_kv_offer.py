"""The prefill side's KV offer does not wait for the engine's running step."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

from splitserve.worker.engine_thread import EngineThread
from splitserve.worker.kv_bridge import KVBridge

STEP_S = 0.6  # one long forward pass (a prompt chunk on a busy prefill worker)


class _BusyEngine:
    """Always has work; every step's forward pass takes STEP_S. One request is HELD."""

    config = SimpleNamespace(handoff_lease_s=30.0)

    def __init__(self) -> None:
        self.in_forward = threading.Event()

    def has_work(self) -> bool:
        return True

    def idle_wait_s(self) -> float:
        return 1.0

    def tick(self) -> None:
        pass

    def begin_step(self) -> object:
        return object()

    def run_model(self, plan: object) -> None:
        self.in_forward.set()
        time.sleep(STEP_S)

    def finish_step(self, plan: object, logits: object) -> list[Any]:
        return []

    def held_kv(self, request_id: str) -> SimpleNamespace:
        return SimpleNamespace(block_ids=(3, 4), num_tokens=20)

    def export_layer(self, layer: int, block_ids: list[int]) -> memoryview:
        return memoryview(b"")


class _Server:
    def register(self, request_id: str, **kwargs: Any) -> SimpleNamespace:
        record = {"request_id": request_id, "block_ids": kwargs["block_ids"],
                  "num_tokens": kwargs["num_tokens"]}
        return SimpleNamespace(to_dict=lambda: record)


def test_offer_runs_during_a_forward_pass() -> None:
    engine = _BusyEngine()
    loop = asyncio.new_event_loop()
    thread = EngineThread(engine, loop)  # type: ignore[arg-type]
    bridge = KVBridge(SimpleNamespace(role="prefill"), engine, thread)  # type: ignore[arg-type]
    bridge.server = _Server()  # type: ignore[assignment]
    thread.start()
    try:
        assert engine.in_forward.wait(5)
        started = time.perf_counter()
        record = bridge.offer(SimpleNamespace(request_id="r1"))  # type: ignore[arg-type]
        took = time.perf_counter() - started
    finally:
        thread.stop()
        loop.close()
    assert record == {"request_id": "r1", "block_ids": [3, 4], "num_tokens": 20}
    # waiting for the step to end (and the next to be scheduled) would take ~STEP_S
    assert took < STEP_S / 3, f"offer waited {took:.3f} s for the running step"
