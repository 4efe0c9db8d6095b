"""Runs an `LLMEngine` on its own thread and bridges it to asyncio.

The engine is single-threaded by design (scheduler and KV cache have one owner). HTTP
handlers and the KV transfer threads never touch it directly: they post commands
(`call`) that the engine thread runs between steps, and receive per-request events on an
asyncio queue fed with `loop.call_soon_threadsafe`. The thread sleeps on a condition
variable when there is no work, so an idle worker uses no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from splitserve.engine.llm_engine import LLMEngine, StepOutput

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineThread:
    """Owns the engine. Call order: start() once, then call()/subscribe() from any thread."""

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self._commands: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._cv = threading.Condition()
        self._queues: dict[str, asyncio.Queue[StepOutput | None]] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self.busy_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` on the engine thread before its next step; returns a Future."""
        fut: Future[T] = Future()
        with self._cv:
            self._commands.append((fn, fut))
            self._cv.notify()
        return fut

    async def acall(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.call(fn))

    def subscribe(self, request_id: str) -> asyncio.Queue[StepOutput | None]:
        """Queue receiving this request's outputs; `None` marks the end of the stream."""
        queue: asyncio.Queue[StepOutput | None] = asyncio.Queue()
        self._queues[request_id] = queue
        return queue

    def unsubscribe(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def _deliver(self, out: StepOutput) -> None:
        queue = self._queues.get(out.request_id)
        if queue is None:
            return
        queue.put_nowait(out)
        if out.finished:
            queue.put_nowait(None)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._commands and not self.engine.has_work():
                    self._cv.wait(timeout=self.engine.idle_wait_s())
                    self.engine.tick()  # lease expiry and other clock-driven work
                if self._stop:
                    return
                commands, self._commands = self._commands, []
            for fn, fut in commands:
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # handed to the caller, never lost
                    fut.set_exception(exc)
            if not self.engine.has_work():
                continue
            started = time.perf_counter()
            try:
                outputs = self.engine.step()
            except Exception:
                log.exception("engine step failed; failing the running requests")
                outputs = self.engine.fail_all("internal engine error")
            self.busy_s += time.perf_counter() - started
            for out in outputs:
                self.loop.call_soon_threadsafe(self._deliver, out)
