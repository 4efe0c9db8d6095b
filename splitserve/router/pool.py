"""The router's view of its workers: configured URLs, last polled load, in-flight counts.

A background task polls `/internal/health` and `/internal/load` of every worker each
`poll_interval_s`; a worker that fails to answer, answers not ready, or reports another
role than configured is unhealthy until a later poll succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from splitserve.router.policies import Role, WorkerLoad
from splitserve.router.worker_client import WorkerClient

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(
        self, roles: dict[str, Role], client: WorkerClient, poll_interval_s: float
    ) -> None:
        self._roles = dict(roles)
        self._client = client
        self._poll_interval_s = poll_interval_s
        self._loads = {url: WorkerLoad(url, role, healthy=False) for url, role in roles.items()}
        self._inflight: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> list[WorkerLoad]:
        return [
            WorkerLoad(**{**load.__dict__, "num_inflight": self._inflight[url]})
            for url, load in self._loads.items()
        ]

    def acquire(self, url: str) -> None:
        self._inflight[url] += 1

    def release(self, url: str) -> None:
        self._inflight[url] = max(0, self._inflight[url] - 1)

    def mark_unhealthy(self, url: str) -> None:
        if url in self._loads:
            self._loads[url] = WorkerLoad(url, self._roles[url], healthy=False)

    async def _poll_worker(self, url: str) -> WorkerLoad:
        role = self._roles[url]
        try:
            health = await self._client.get_json(url, "/internal/health")
            if not health.get("ready") or health.get("role", role) != role:
                return WorkerLoad(url, role, healthy=False)
            load = await self._client.get_json(url, "/internal/load")
            return WorkerLoad(
                url,
                role,
                healthy=True,
                num_waiting=int(load.get("num_waiting", 0)),
                num_running=int(load.get("num_running", 0)),
                num_free_blocks=int(load.get("num_free_blocks", 0)),
                num_used_blocks=int(load.get("num_used_blocks", 0)),
            )
        except Exception as exc:  # any failure means "not usable now"; logged, not raised
            log.debug("poll %s failed: %s", url, exc)
            return WorkerLoad(url, role, healthy=False)

    async def poll_once(self) -> None:
        urls = list(self._roles)
        loads = await asyncio.gather(*(self._poll_worker(u) for u in urls))
        self._loads = dict(zip(urls, loads, strict=True))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            await self.poll_once()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
