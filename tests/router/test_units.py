"""Small pieces: config validation, worker event parsing, timeline ring, CLI wiring."""

from __future__ import annotations

import pytest

from splitserve.router.config import RouterConfig
from splitserve.router.timeline import RequestTimeline, TimelineStore
from splitserve.router.worker_client import (
    ErrorEvent,
    FinishEvent,
    HandoffEvent,
    TokenEvent,
    parse_event,
)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "at least one"),
    ({"prefill_urls": ("http://p",), "mixed_urls": ("http://m",)}, "decode"),
    ({"decode_urls": ("p:1",)}, "http://"),
    ({"decode_urls": ("http://d",), "max_model_len": 0}, "max_model_len"),
    ({"decode_urls": ("http://d",), "policy": "random"}, "policy"),
    ({"decode_urls": ("http://d",), "poll_interval_s": 0}, "poll_interval_s"),
])
def test_router_config_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RouterConfig(model_dir="m", **kwargs)  # type: ignore[arg-type]


def test_parse_event_reads_each_type() -> None:
    assert parse_event('{"type":"token","token_ids":[1,2],"text":"ab","logprobs":null}') == (
        TokenEvent([1, 2], "ab", None))
    assert parse_event('{"type":"handoff","record":{"k":1}}') == HandoffEvent({"k": 1})
    finish = parse_event('{"type":"finish","finish_reason":"length","num_prompt_tokens":3,'
                         '"num_output_tokens":2,"timeline":{"kv_transfer_s":0.1}}')
    assert finish == FinishEvent("length", 3, 2, {"kv_transfer_s": 0.1})
    assert parse_event('{"type":"error","code":503,"message":"x"}') == ErrorEvent(503, "x")


@pytest.mark.parametrize("line", [
    "[1]", '{"type":"token","token_ids":"12"}', '{"type":"handoff"}', '{"type":"other"}',
    '{"type":"token","token_ids":[1],"logprobs":[]}', "not json",
])
def test_parse_event_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse_event(line)


def test_timeline_store_keeps_only_the_most_recent() -> None:
    store = TimelineStore(capacity=2)
    for i in range(3):
        store.add(RequestTimeline(f"r{i}"))
    assert store.get("r0") is None and store.get("r1") is not None and store.get("r2") is not None


def test_cli_registers_router_verb() -> None:
    from splitserve.cli import build_parser

    args = build_parser().parse_args(
        ["router", "--model", "m", "--prefill", "http://p:1", "--decode", "http://d:2",
         "--short-prompt-len", "32"]
    )
    assert args.verb == "router" and args.prefill == ["http://p:1"]
    assert args.short_prompt_len == 32 and callable(args.func)
