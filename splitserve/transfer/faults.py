"""Fault injection for tests of the KV handoff: never enabled unless asked for."""

from __future__ import annotations

import os
from dataclasses import dataclass

CORRUPT_ENV = "SPLITSERVE_TEST_CORRUPT_KV"


@dataclass(frozen=True)
class FaultInjection:
    """Test hooks. `corrupt_every_transfer` flips a byte of every layer sent (TCP) or of
    the exported segment (shm) after it was checksummed; `close_after_bytes` closes the
    connection once that many layer bytes were sent; `stall_s` sleeps before the layers."""

    corrupt_every_transfer: bool = False
    close_after_bytes: int | None = None
    stall_s: float = 0.0

    @classmethod
    def from_env(cls) -> FaultInjection:
        return cls(corrupt_every_transfer=os.environ.get(CORRUPT_ENV, "") == "1")
