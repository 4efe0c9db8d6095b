"""One request's measured record: the unit of the JSONL output and of all statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """What one request did, as seen by the client.

    Times are seconds. `send_s` is the offset from the start of the run; `ttft_s` is from
    send to the first chunk carrying output; `itl_s` holds the gaps between consecutive
    chunks carrying output (one per chunk after the first); `e2e_s` is send to the end of
    the stream. `output_len` comes from the server's `usage` when it reports one, else it
    is the number of output chunks (`output_len_source` says which).
    """

    index: int
    scheduled_s: float
    input_len: int
    requested_output_len: int
    is_long: bool = False
    send_s: float | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    output_len: int = 0
    num_chunks: int = 0
    output_len_source: str = "chunks"
    error: str | None = None
    # With ClientConfig.capture_timeline: the router's per-request timeline (route kind,
    # workers, router and engine event times, wall clock) and the client's wall-clock send.
    timeline: dict[str, Any] | None = None
    send_wall_s: float | None = None

    @property
    def success(self) -> bool:
        return self.error is None and self.e2e_s is not None

    @property
    def tpot_s(self) -> float | None:
        """(e2e - ttft) / (output_len - 1): mean time per output token after the first."""
        if not self.success or self.ttft_s is None or self.e2e_s is None:
            return None
        if self.output_len < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_len - 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "success": self.success, "tpot_s": self.tpot_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        fields = {k: v for k, v in data.items() if k not in ("success", "tpot_s")}
        return cls(**fields)
