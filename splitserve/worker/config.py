"""Worker configuration (one frozen dataclass; the CLI mirrors it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from splitserve.engine.engine_config import EngineConfig

ROLES = ("prefill", "decode", "mixed")


@dataclass(frozen=True)
class WorkerConfig:
    engine: EngineConfig
    role: str = "mixed"
    host: str = "127.0.0.1"
    port: int = 8100
    kv_host: str | None = None  # address decode workers reach us at; defaults to host
    kv_port: int = 0  # 0 = pick a free port
    transport: str = "tcp"  # what this worker offers/pulls: tcp | shm
    worker_id: str = "worker-0"
    secret: str = field(default="", repr=False)
    kv_pull_timeout_s: float = 30.0
    reserve_timeout_s: float = 30.0  # how long a decode waits for free KV blocks

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.transport not in ("tcp", "shm"):
            raise ValueError(f"transport must be 'tcp' or 'shm', got {self.transport!r}")
        if not self.secret:
            raise ValueError("a cluster secret is required (set SPLITSERVE_SECRET)")
        if not 0 <= self.port < 65536 or not 0 <= self.kv_port < 65536:
            raise ValueError(f"bad port: {self.port} / {self.kv_port}")

    @staticmethod
    def secret_from_env() -> str:
        return os.environ.get("SPLITSERVE_SECRET", "")
