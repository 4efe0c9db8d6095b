"""Router configuration: one frozen dataclass, validated on construction; the CLI mirrors it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PolicyName = Literal["least_loaded", "round_robin"]


@dataclass(frozen=True)
class RouterConfig:
    """Everything the router needs to start.

    `short_prompt_len`: prompts with at most this many tokens are prefilled on the decode
    worker itself (conditional disaggregation); 0 disables that rule.
    `saturated_num_waiting`: the prefill pool counts as saturated when every healthy prefill
    worker has at least this many requests waiting; 0 disables that rule.
    """

    model_dir: str
    prefill_urls: tuple[str, ...] = ()
    decode_urls: tuple[str, ...] = ()
    mixed_urls: tuple[str, ...] = ()
    served_model_name: str | None = None
    max_model_len: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    secret: str = ""
    api_key: str | None = None  # when set, clients must send "Authorization: Bearer <key>"
    policy: PolicyName = "least_loaded"
    short_prompt_len: int = 64
    saturated_num_waiting: int = 8
    poll_interval_s: float = 0.5
    worker_timeout_s: float = 2.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_stop_strings: int = 16
    num_debug_timelines: int = 256

    def __post_init__(self) -> None:
        if not (self.decode_urls or self.mixed_urls):
            raise ValueError("router needs at least one --decode or --mixed worker URL")
        if self.prefill_urls and not self.decode_urls:
            raise ValueError("--prefill workers need at least one --decode worker")
        for url in (*self.prefill_urls, *self.decode_urls, *self.mixed_urls):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"worker URL must start with http:// or https://, got {url!r}")
        if self.policy not in ("least_loaded", "round_robin"):
            raise ValueError(f"unknown routing policy {self.policy!r}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be > 0, got {self.max_model_len}")
        if self.short_prompt_len < 0 or self.saturated_num_waiting < 0:
            raise ValueError("short_prompt_len and saturated_num_waiting must be >= 0")
        if self.poll_interval_s <= 0 or self.worker_timeout_s <= 0:
            raise ValueError("poll_interval_s and worker_timeout_s must be > 0")
        if self.max_body_bytes <= 0 or self.max_stop_strings < 0 or self.num_debug_timelines < 1:
            raise ValueError("max_body_bytes, max_stop_strings, num_debug_timelines out of range")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
