"""Runs one routed request against the workers and relays their events.

Disaggregated flow: POST the prefill worker P (`mode=prefill`); relay its first token at
once; on its `handoff` event POST the decode worker D (`mode=decode`, the handoff record and
`first_token_id`) and relay D's tokens. If P finishes the request itself (first token was
EOS/stop, or max_tokens=1) it sends `finish` and no handoff. Other kinds are one
`mode=full` stream to one worker.

KV retry: if D fails before relaying any token (a transfer or verification error), the
request's blocks on P are aborted, the prompt is prefilled again (under a fresh worker
request id `<id>-retry`) on another healthy prefill worker (or the same one when it is the
only one) and D is asked once more. The new prefill's own sampled token is dropped: D
continues from the first token the client already has, so the text stays consistent for
every sampling mode. Only 5xx failures are retried (a 4xx would fail the same way). A second failure, or a
failure after D relayed tokens, is raised to the caller (an in-stream error once the
response has started).

Prefill failover: if P fails (5xx, lost connection) before the client got anything, the
decode worker runs the request whole (`mode=full`) under a fresh worker request id.

Cancellation (client gone) or any error aborts the request on every worker it touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from splitserve.router.job import Job
from splitserve.router.metrics import RouterMetrics
from splitserve.router.policies import (
    Pickers,
    PolicyConfig,
    Route,
    RouteRequest,
    alternative_prefill,
    choose,
)
from splitserve.router.pool import WorkerPool
from splitserve.router.timeline import TimelineStore
from splitserve.router.worker_client import (
    ErrorEvent,
    FinishEvent,
    HandoffEvent,
    TokenEvent,
    WorkerClient,
    WorkerError,
)


class Relay:
    def __init__(
        self,
        pool: WorkerPool,
        client: WorkerClient,
        policy: PolicyConfig,
        metrics: RouterMetrics,
        timelines: TimelineStore,
    ) -> None:
        self._pool = pool
        self._client = client
        self._policy = policy
        self._pickers = Pickers.new()
        self._metrics = metrics
        self._timelines = timelines
        self._background: set[asyncio.Task[Any]] = set()

    def route(self, job: Job) -> Route:
        """Pick workers now; raises NoWorkerError (-> 503) before any response starts."""
        route = choose(
            self._pool.snapshot(), RouteRequest(len(job.prompt_ids)), self._policy, self._pickers
        )
        self._metrics.routing.labels(kind=route.kind).inc()
        job.timeline.route_kind = route.kind
        job.timeline.workers = {"decode" if route.prefill_url else "full": route.decode_url}
        if route.prefill_url:
            job.timeline.workers["prefill"] = route.prefill_url
        job.timeline.mark("routed")
        self._timelines.add(job.timeline)
        for url in (route.prefill_url, route.decode_url):
            if url is not None:
                self._hold(job, url)
        return route

    def _hold(self, job: Job, url: str) -> None:
        self._pool.acquire(url)
        job.held_urls.append(url)

    def _unhold(self, job: Job, url: str) -> None:
        if url in job.held_urls:
            job.held_urls.remove(url)
            self._pool.release(url)

    def release(self, job: Job) -> None:
        """Drop the job's in-flight counts; idempotent (run() calls it when it ends)."""
        for url in job.held_urls:
            self._pool.release(url)
        job.held_urls.clear()

    async def run(self, job: Job, route: Route) -> AsyncIterator[TokenEvent | FinishEvent]:
        """Token events, then exactly one FinishEvent carrying the router's counts.
        Raises WorkerError on failure."""
        status = "error"
        try:
            if route.prefill_url is None:
                events = self._full(job, route.decode_url)
            else:
                events = self._disaggregated(job, route.prefill_url, route.decode_url)
            async for event in events:
                if isinstance(event, TokenEvent):
                    self._observe_token(job, event)
                    yield event
                else:
                    if event.finish_reason not in ("stop", "length"):
                        # A worker-side abort (drain, lease expiry, ...) is no normal finish.
                        reason = event.finish_reason
                        raise WorkerError("", 503, f"request ended by worker: {reason}")
                    status = "ok"
                    self._metrics.observe_finish(job.timeline)
                    yield FinishEvent(
                        event.finish_reason, len(job.prompt_ids), job.num_output_tokens,
                        event.timeline,
                    )
                    return
        except (asyncio.CancelledError, GeneratorExit):
            status = "abort"
            raise
        finally:
            self.release(job)
            self._metrics.requests.labels(endpoint=job.endpoint, status=status).inc()
            if status != "ok":
                job.timeline.mark(status)
                self._spawn(self._abort_all(dict(job.touched)))

    def _observe_token(self, job: Job, event: TokenEvent) -> None:
        # Only the first token is a timeline event: the ring of recent timelines must stay
        # small however long the outputs are; later gaps go to the ITL histogram.
        if job.last_token_s is None:
            now = job.timeline.mark("first_token")
            self._metrics.ttft_s.observe(now - job.timeline.received_s)
        else:
            now = time.time()
            self._metrics.itl_s.observe(now - job.last_token_s)
        job.last_token_s = now
        job.num_output_tokens += len(event.token_ids)
        job.timeline.num_output_tokens = job.num_output_tokens

    async def _stream(
        self, job: Job, url: str, mode: str, role: str, **extra: Any
    ) -> AsyncIterator[TokenEvent | HandoffEvent | FinishEvent]:
        """One worker stream; an ErrorEvent becomes WorkerError."""
        body = {
            "request_id": job.worker_request_id,
            "prompt_token_ids": job.prompt_ids,
            "sampling": job.sampling,
            "mode": mode,
            "handoff": extra.get("handoff"),
            "first_token_id": extra.get("first_token_id"),
        }
        job.touched.setdefault(url, set()).add(job.worker_request_id)
        async for event in self._client.generate(url, body):
            if isinstance(event, ErrorEvent):
                raise WorkerError(url, event.code, event.message)
            if not isinstance(event, TokenEvent) and event.timeline:
                job.timeline.worker_timelines[role] = event.timeline
            yield event

    async def _full(self, job: Job, url: str) -> AsyncIterator[TokenEvent | FinishEvent]:
        async for event in self._stream(job, url, "full", "full"):
            if isinstance(event, HandoffEvent):
                raise WorkerError(url, 502, "handoff event in full mode")
            yield event
        raise WorkerError(url, 502, "worker stream ended without a finish event")

    async def _prefill(
        self, job: Job, url: str, relay_tokens: bool
    ) -> AsyncIterator[TokenEvent | FinishEvent | HandoffEvent]:
        """P's whole stream. The caller stops at handoff and hands the rest to `_drain`:
        P may keep its stream open (e.g. until D acks) and closing it early could read as
        a client disconnect."""
        job.timeline.mark("prefill_sent")
        ended = False
        async for event in self._stream(job, url, "prefill", "prefill"):
            if isinstance(event, TokenEvent) and not relay_tokens:
                continue
            ended = ended or isinstance(event, FinishEvent | HandoffEvent)
            yield event
        if not ended:
            raise WorkerError(url, 502, "prefill stream ended without handoff or finish")

    async def _drain(self, events: AsyncIterator[Any]) -> None:
        with contextlib.suppress(Exception):
            async for _ in events:
                pass

    async def _disaggregated(
        self, job: Job, prefill_url: str, decode_url: str
    ) -> AsyncIterator[TokenEvent | FinishEvent]:
        first_token_id: int | None = None
        record: dict[str, Any] | None = None
        p_events = self._prefill(job, prefill_url, relay_tokens=True)
        try:
            async for event in p_events:
                if isinstance(event, TokenEvent):
                    if event.token_ids:
                        first_token_id = event.token_ids[-1]
                    yield event
                elif isinstance(event, FinishEvent):
                    yield event
                    return
                else:
                    record = event.record
                    break
        except WorkerError as exc:
            if first_token_id is not None or exc.code < 500:
                raise
            # Nothing reached the client yet, so the decode worker can run it whole.
            async for event in self._prefill_failover(job, prefill_url, decode_url):
                yield event
            return
        self._spawn(self._drain(p_events))
        self._unhold(job, prefill_url)  # P's part is done; its queue no longer has this one
        job.timeline.mark("handoff")
        if record is None or first_token_id is None:
            raise WorkerError(prefill_url, 502, "handoff before the first token")
        for attempt in range(2):
            relayed = False
            try:
                job.timeline.mark("decode_sent")
                async for event in self._stream(
                    job, decode_url, "decode", "decode",
                    handoff=record, first_token_id=first_token_id,
                ):
                    if isinstance(event, TokenEvent):
                        if not relayed:
                            job.timeline.mark("decode_first_token")
                        relayed = True
                        yield event
                    elif isinstance(event, FinishEvent):
                        yield event
                        return
                raise WorkerError(decode_url, 502, "decode stream ended without a finish event")
            except WorkerError as exc:
                if relayed or attempt == 1 or exc.code < 500:
                    raise
            prefill_url, record = await self._prefill_again(job, prefill_url)

    async def _prefill_failover(
        self, job: Job, failed_url: str, decode_url: str
    ) -> AsyncIterator[TokenEvent | FinishEvent]:
        self._metrics.retries.labels(reason="prefill_failed").inc()
        job.timeline.mark("prefill_failover")
        self._unhold(job, failed_url)
        self._spawn(self._abort_all({failed_url: {job.worker_request_id}}))
        job.worker_request_id = f"{job.request_id}-retry"
        async for event in self._full(job, decode_url):
            yield event

    async def _prefill_again(self, job: Job, failed_url: str) -> tuple[str, dict[str, Any]]:
        """Free the old KV, prefill on another (or the same) worker, return its handoff."""
        self._metrics.retries.labels(reason="kv_transfer").inc()
        job.timeline.mark("kv_retry")
        with contextlib.suppress(Exception):
            await self._client.abort(failed_url, job.worker_request_id)
        job.worker_request_id = f"{job.request_id}-retry"
        url = alternative_prefill(self._pool.snapshot(), failed_url, self._policy, self._pickers)
        job.timeline.workers["prefill_retry"] = url
        self._hold(job, url)
        p_events = self._prefill(job, url, relay_tokens=False)
        async for event in p_events:
            if isinstance(event, HandoffEvent):
                self._spawn(self._drain(p_events))
                self._unhold(job, url)
                return url, event.record
        # The retry finished on its own (e.g. it sampled EOS): we cannot use its token.
        raise WorkerError(url, 502, "KV handoff failed and the retry gave no handoff")

    async def _abort_all(self, touched: dict[str, set[str]]) -> None:
        async def one(url: str, request_id: str) -> None:
            with contextlib.suppress(Exception):
                await self._client.abort(url, request_id)

        await asyncio.gather(*(one(u, r) for u, ids in touched.items() for r in sorted(ids)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
