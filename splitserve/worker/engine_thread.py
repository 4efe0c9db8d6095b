"""Runs an `LLMEngine` on its own thread and bridges it to asyncio.

The engine has one owner thread. HTTP handlers post commands (`call`) that it runs
between steps, and receive per-request events on an asyncio queue fed with
`loop.call_soon_threadsafe`. The thread sleeps on a condition variable when there is no
work, so an idle worker uses no CPU.

A step holds the engine lock while it schedules and while it samples and updates, but
not during the forward pass. The KV handoff calls (prefill side: read a HELD request's
blocks for the offer; decode side: reserve blocks, activate or fail a transfer) take the
lock from their own thread (`call_concurrent`) and so run during a forward pass instead
of waiting for it: they touch only blocks no scheduled sequence uses, and an activated
request joins the very next step. This takes up to three step times off the gap between
the first and second token of a disaggregated request.
Everything else (abort above all: it frees blocks a forward pass may be writing) stays
between steps.
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
from splitserve.thread_names import name_this_thread

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineThread:
    """Owns the engine. Call order: start() once, then call()/subscribe() from any thread."""

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self._commands: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._cv = threading.Condition()
        self._lock = threading.Lock()  # engine state, except during the forward pass
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

    def call_concurrent(self, fn: Callable[[], T]) -> T:
        """Run `fn()` on this thread under the engine lock, possibly during a forward
        pass. Only for calls that touch no block of a scheduled sequence (see above)."""
        with self._lock:
            result = fn()
        with self._cv:
            self._cv.notify()  # it may have made work (an activated request)
        return result

    async def acall_concurrent(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.call_concurrent, fn)

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

    def _step(self) -> list[StepOutput]:
        with self._lock:
            plan = self.engine.begin_step()
        if plan is None:
            return []
        logits = self.engine.run_model(plan)  # unlocked: see the module docstring
        with self._lock:
            return self.engine.finish_step(plan, logits)

    def _run(self) -> None:
        name_this_thread()
        while True:
            with self._cv:
                while not self._stop and not self._commands and not self.engine.has_work():
                    self._cv.wait(timeout=self.engine.idle_wait_s())
                    self.engine.tick()  # lease expiry and other clock-driven work
                if self._stop:
                    return
                commands, self._commands = self._commands, []
            with self._lock:
                for fn, fut in commands:
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # handed to the caller, never lost
                        fut.set_exception(exc)
                if not self.engine.has_work():
                    continue
            started = time.perf_counter()
            try:
                outputs = self._step()
            except Exception:
                log.exception("engine step failed; failing the running requests")
                with self._lock:
                    outputs = self.engine.fail_all("internal engine error")
            self.busy_s += time.perf_counter() - started
            for out in outputs:
                self.loop.call_soon_threadsafe(self._deliver, out)
