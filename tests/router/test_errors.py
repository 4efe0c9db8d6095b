"""Errors: OpenAI-style 4xx/5xx bodies, in-stream errors, KV retry, client disconnect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.router.conftest import SCRIPT, Cluster, StartCluster, behaviour, script_text

LONG_PROMPT = "The quick brown fox jumps over the lazy dog."


def _assert_openai_error(resp: httpx.Response, status: int, param: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


def _still_serves(c: Cluster, model: str) -> None:
    assert c.http.get("/health").status_code == 200
    out = c.client.completions.create(model=model, prompt=LONG_PROMPT, max_tokens=2)
    assert out.choices[0].finish_reason == "length" and out.usage is not None
    assert out.usage.completion_tokens == 2


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"best_of": 2}, "best_of"),
    ({"suffix": "x"}, "suffix"),
    ({"echo": True}, "echo"),
    ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"temperature": 5}, "temperature"),
    ({"stop": [""]}, "stop"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
    ({"stream_options": {"include_usage": True}}, None),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [[1, 2], [3]]}, "prompt"),
    ({"prompt": [1, 10**9]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "word " * 300}, "prompt"),
    ({"max_tokens": 250}, "max_tokens"),
]


def test_every_bad_completion_is_a_400_and_router_stays_healthy(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    for fields, param in BAD_FIELDS:
        body = {"model": model_dir.name, "prompt": LONG_PROMPT, **fields}
        _assert_openai_error(c.http.post("/v1/completions", json=body), 400, param)
    assert c.workers["prefill"][0].generate_calls == []
    rejected = c.metric("splitserve_router_rejected_requests_total", {"code": "400"})
    assert rejected == len(BAD_FIELDS)
    _still_serves(c, model_dir.name)


@pytest.mark.parametrize("fields", [
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"response_format": {"type": "json_object"}},
    {"n": 3},
    {"messages": []},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]},
    {"top_logprobs": 2},
])
def test_unsupported_chat_fields_are_rejected(
    start_cluster: StartCluster, model_dir: Path, fields: dict[str, Any]
) -> None:
    c = start_cluster(mixed=[behaviour()])
    body = {"model": model_dir.name, "messages": [{"role": "user", "content": "hi"}], **fields}
    _assert_openai_error(c.http.post("/v1/chat/completions", json=body), 400)


def test_openai_client_sees_typed_errors(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(mixed=[behaviour()])
    with pytest.raises(openai.NotFoundError) as not_found:
        c.client.completions.create(model="other-model", prompt="hi", max_tokens=1)
    assert not_found.value.status_code == 404
    with pytest.raises(openai.BadRequestError):
        c.client.completions.create(model=model_dir.name, prompt="hi", max_tokens=1, n=2)
    with pytest.raises(openai.BadRequestError):
        c.client.chat.completions.create(model=model_dir.name, max_tokens=0,
                                         messages=[{"role": "user", "content": "hi"}])


def test_malformed_json_unknown_route_and_large_body(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour()], max_body_bytes=4096)
    headers = {"content-type": "application/json"}
    _assert_openai_error(c.http.post("/v1/completions", content=b"{not json", headers=headers), 400)
    _assert_openai_error(c.http.post("/v1/completions", content=b"[1, 2]", headers=headers), 400)
    _assert_openai_error(c.http.post("/v1/nothing-here", json={}), 404)
    _assert_openai_error(c.http.get("/v1/completions"), 405)
    big = {"model": model_dir.name, "prompt": "x" * 5000}
    _assert_openai_error(c.http.post("/v1/completions", json=big), 413)
    _still_serves(c, model_dir.name)


def test_no_healthy_worker_is_503(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour(ready=False)])
    resp = c.http.post("/v1/completions",
                       json={"model": model_dir.name, "prompt": LONG_PROMPT, "max_tokens": 2})
    _assert_openai_error(resp, 503)
    assert c.http.get("/health").status_code == 503
    c.workers["decode"][0].behaviour.ready = True
    deadline = time.monotonic() + 5
    while c.http.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "router never saw the worker come back"
        time.sleep(0.05)
    _still_serves(c, model_dir.name)


def test_decode_failure_mid_stream_is_an_in_stream_error(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour(fail_after_tokens=2)])
    stream = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=6,
                                         stream=True)
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="engine crashed"):
        for chunk in stream:
            assert chunk.choices[0].finish_reason is None, "failure reported as a normal finish"
            texts.append(chunk.choices[0].text)
    assert "".join(texts) == script_text(3)  # token 0 from prefill, 2 from decode
    assert c.metric("splitserve_router_requests_total", {"status": "error"}) == 1
    _still_serves(c, model_dir.name)


def test_decode_failure_before_response_is_an_http_error(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour(fail_after_tokens=1)])
    with pytest.raises(openai.InternalServerError, match="engine crashed"):
        c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=4)


def test_worker_side_abort_is_an_error_not_a_finish(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour(finish_reason="abort")])
    with pytest.raises(openai.InternalServerError, match="ended by worker: abort"):
        c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=3)
    stream = c.client.chat.completions.create(
        model=model_dir.name, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
        stream=True)
    with pytest.raises(openai.APIError, match="ended by worker"):
        for chunk in stream:
            assert chunk.choices[0].finish_reason is None


def test_kv_transfer_failure_retries_prefill_on_another_worker(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour(), behaviour()],
                      decode=[behaviour(num_decode_failures=1)])
    out = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=4)
    assert out.choices[0].text == script_text(4)
    first, second = (c.generate_modes("prefill", i) for i in range(2))
    assert sorted([first, second]) == [["prefill"], ["prefill"]]
    decode_calls = c.workers["decode"][0].generate_calls
    assert len(decode_calls) == 2 and decode_calls[1]["first_token_id"] == SCRIPT[0][0]
    retry_source = decode_calls[1]["handoff"]["source"]
    assert retry_source != decode_calls[0]["handoff"]["source"]
    failed_p = next(w for w in c.workers["prefill"] if w.url != retry_source)
    assert [rid for rid, _ in failed_p.aborts] == [out.id]
    assert c.metric("splitserve_router_retries_total", {"reason": "kv_transfer"}) == 1


def test_prefill_failure_before_first_token_fails_over_to_decode_worker(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour(prefill_fails=True)], decode=[behaviour()])
    chunks = list(c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT,
                                              max_tokens=4, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == script_text(4)
    (p_call,), (d_call,) = c.workers["prefill"][0].generate_calls, c.workers["decode"][0].generate_calls
    assert d_call["mode"] == "full" and d_call["request_id"] == p_call["request_id"] + "-retry"
    assert c.metric("splitserve_router_retries_total", {"reason": "prefill_failed"}) == 1
    deadline = time.monotonic() + 1
    while not c.workers["prefill"][0].aborts:
        assert time.monotonic() < deadline, "failed prefill was not aborted"
        time.sleep(0.01)


def test_kv_transfer_failing_twice_is_an_in_stream_error(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour(num_decode_failures=2)])
    stream = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=4,
                                         stream=True)
    with pytest.raises(openai.APIError, match="checksum mismatch"):
        for chunk in stream:
            assert chunk.choices[0].finish_reason is None
    assert c.generate_modes("prefill") == ["prefill", "prefill"]


def _wait_for_aborts(c: Cluster, roles: list[str], request_id: str, since: float) -> float:
    deadline = since + 1.0
    while time.monotonic() < deadline:
        got = [any(rid == request_id for rid, _ in c.workers[r][0].aborts) for r in roles]
        if all(got):
            return max(t for r in roles for rid, t in c.workers[r][0].aborts if rid == request_id)
        time.sleep(0.01)
    raise AssertionError(f"abort did not reach {roles} within 1 s")


def test_client_disconnect_mid_stream_aborts_both_workers(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    slow = [(40 + i % 6, f" w{i}") for i in range(100)]
    p, d = behaviour(), behaviour(token_delay_s=0.05)
    d.script = slow
    c = start_cluster(prefill=[p], decode=[d])
    body = {"model": model_dir.name, "prompt": LONG_PROMPT, "max_tokens": 100, "stream": True}
    with c.http.stream("POST", "/v1/completions", json=body) as resp:
        lines = resp.iter_lines()
        while not next(lines).startswith("data:"):
            pass
        request_id = c.workers["decode"][0].generate_calls[0]["request_id"] if (
            c.workers["decode"][0].generate_calls) else None
        while request_id is None:
            next(lines)
            calls = c.workers["decode"][0].generate_calls
            request_id = calls[0]["request_id"] if calls else None
    closed = time.monotonic()
    _wait_for_aborts(c, ["prefill", "decode"], request_id, closed)
    assert c.metric("splitserve_router_requests_total", {"status": "abort"}) == 1
    _still_serves(c, model_dir.name)


def test_client_timeout_on_non_stream_aborts_the_worker(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    m = behaviour(token_delay_s=0.05)
    m.script = [(40, " w")] * 100
    c = start_cluster(mixed=[m])
    body = {"model": model_dir.name, "prompt": LONG_PROMPT, "max_tokens": 100}
    with pytest.raises(httpx.ReadTimeout):
        c.http.post("/v1/completions", json=body, timeout=0.5)
    gone = time.monotonic()
    request_id = c.workers["mixed"][0].generate_calls[0]["request_id"]
    _wait_for_aborts(c, ["mixed"], request_id, gone)


def test_api_key_is_required_when_configured(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour()], api_key="sk-right")
    with pytest.raises(openai.AuthenticationError):
        c.client.completions.create(model=model_dir.name, prompt="hi", max_tokens=1)
    good = openai.OpenAI(base_url=c.url + "/v1", api_key="sk-right", max_retries=0)
    try:
        out = good.completions.create(model=model_dir.name, prompt="hi", max_tokens=2)
        assert out.choices[0].text == script_text(2)
    finally:
        good.close()
    assert c.workers["mixed"][0].generate_calls[0]["sampling"]["max_tokens"] == 2
