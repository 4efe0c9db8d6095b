"""The official openai client against the router and fake workers: happy paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitserve.tokenizer import load_tokenizer
from tests.router.conftest import SCRIPT, SECRET, StartCluster, behaviour, script_text

LONG_PROMPT = "The quick brown fox jumps over the lazy dog."


def test_disaggregated_completion_relays_prefill_then_decode(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    out = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=4)
    assert out.choices[0].text == script_text(4)
    assert out.choices[0].finish_reason == "length"
    prompt_ids = load_tokenizer(model_dir).encode(LONG_PROMPT)
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt_ids), 4)
    (p_call,), (d_call,) = c.workers["prefill"][0].generate_calls, c.workers["decode"][0].generate_calls
    assert p_call["mode"] == "prefill" and p_call["prompt_token_ids"] == prompt_ids
    assert d_call["mode"] == "decode" and d_call["first_token_id"] == SCRIPT[0][0]
    assert d_call["handoff"]["source"] == c.workers["prefill"][0].url
    assert d_call["request_id"] == p_call["request_id"] == out.id
    assert c.metric("splitserve_router_routing_decisions_total", {"kind": "disaggregated"}) == 1


def test_stream_first_chunk_comes_from_prefill_and_usage_is_last(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    chunks = list(c.client.completions.create(
        model=model_dir.name, prompt=LONG_PROMPT, max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    ))
    texts = [ch.choices[0].text for ch in chunks if ch.choices]
    assert texts[0] == SCRIPT[0][1]
    assert "".join(texts) == script_text(5)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_prompt_is_the_checkpoint_chat_template(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    # tests/test_tokenizer.py checks this rendering against transformers itself.
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Explain disaggregated serving."}]
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    out = c.client.chat.completions.create(
        model=model_dir.name, messages=messages, max_completion_tokens=3  # type: ignore[arg-type]
    )
    assert out.choices[0].message.content == script_text(3)
    assert out.choices[0].message.role == "assistant"
    tok = load_tokenizer(model_dir)
    expected = tok.encode(tok.apply_chat_template(messages), add_special_tokens=False)
    assert expected[0] == tok.bos_token_id and expected.count(tok.bos_token_id) == 1
    assert c.workers["prefill"][0].generate_calls[0]["prompt_token_ids"] == list(expected)
    assert out.usage is not None and out.usage.prompt_tokens == len(expected)


def test_chat_stream_role_then_content_then_finish(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    chunks = list(c.client.chat.completions.create(
        model=model_dir.name, messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=4, stream=True, stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == script_text(4)
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + 4)


def test_colocated_uses_full_mode_on_mixed_worker(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour()])
    out = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=3)
    assert out.choices[0].text == script_text(3)
    assert c.generate_modes("mixed") == ["full"]
    assert c.metric("splitserve_router_routing_decisions_total", {"kind": "colocated"}) == 1


def test_short_prompt_prefilled_on_decode_worker_is_counted(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()], short_prompt_len=64)
    out = c.client.completions.create(model=model_dir.name, prompt="Hi", max_tokens=2)
    assert out.choices[0].text == script_text(2)
    assert c.generate_modes("decode") == ["full"] and c.generate_modes("prefill") == []
    assert c.metric("splitserve_router_routing_decisions_total",
                    {"kind": "local_prefill_short"}) == 1
    assert c.metric("splitserve_router_routing_decisions_total", {"kind": "disaggregated"}) == 0


def test_saturated_prefill_pool_prefills_locally(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour(num_waiting=9)], decode=[behaviour()],
                      saturated_num_waiting=8)
    c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=2)
    assert c.generate_modes("decode") == ["full"]
    assert c.metric("splitserve_router_routing_decisions_total",
                    {"kind": "local_prefill_saturated"}) == 1


def test_prefill_worker_finishing_itself_skips_decode(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour(prefill_finishes=True)], decode=[behaviour()])
    out = c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=8)
    assert out.choices[0].text == SCRIPT[0][1] and out.choices[0].finish_reason == "stop"
    assert c.workers["decode"][0].generate_calls == []


def test_metrics_after_one_disaggregated_request(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=4)
    assert c.metric("splitserve_router_time_to_first_token_seconds_count") == 1
    assert c.metric("splitserve_router_inter_token_latency_seconds_count") == 3
    assert c.metric("splitserve_router_e2e_request_latency_seconds_count") == 1
    assert c.metric("splitserve_router_queue_time_seconds_sum") == pytest.approx(0.003)
    assert c.metric("splitserve_router_kv_transfer_bytes_sum") == 65536
    assert c.metric("splitserve_router_kv_transfer_seconds_sum") == pytest.approx(0.004)
    assert c.metric("splitserve_router_requests_total",
                    {"endpoint": "completions", "status": "ok"}) == 1


def test_sampling_fields_reach_the_worker(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(mixed=[behaviour()])
    c.client.completions.create(
        model=model_dir.name, prompt=[1, 2, 3, 4, 5], max_tokens=2, temperature=0.7, top_p=0.9,
        seed=123, stop=["\n", "END"], user="abc",
        extra_body={"top_k": 5, "min_p": 0.1, "ignore_eos": True},
    )
    call = c.workers["mixed"][0].generate_calls[0]
    assert call["prompt_token_ids"] == [1, 2, 3, 4, 5]
    assert call["sampling"] == {
        "max_tokens": 2, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.1,
        "seed": 123, "stop": ["\n", "END"], "ignore_eos": True, "logprobs": None,
    }


def test_logprobs_completions_and_chat(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(mixed=[behaviour()])
    tok = load_tokenizer(model_dir)
    out = c.client.completions.create(model=model_dir.name, prompt="x y z w", max_tokens=3,
                                      logprobs=2)
    lp = out.choices[0].logprobs
    assert lp is not None and lp.tokens == [tok.decode([t], False) for t, _ in SCRIPT[:3]]
    assert lp.token_logprobs == [-0.25] * 3 and lp.top_logprobs is not None
    assert len(lp.top_logprobs[0]) == 2
    assert c.workers["mixed"][0].generate_calls[0]["sampling"]["logprobs"] == 2
    chat = c.client.chat.completions.create(
        model=model_dir.name, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        logprobs=True, top_logprobs=1,
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and [e.logprob for e in content] == [-0.25, -0.25]
    assert len(content[0].top_logprobs) == 1


def test_secret_header_sent_to_every_worker(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    c.client.completions.create(model=model_dir.name, prompt=LONG_PROMPT, max_tokens=3)
    for worker in (*c.workers["prefill"], *c.workers["decode"]):
        assert worker.secrets_seen == {SECRET}


def test_debug_timeline_header_and_endpoint(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(prefill=[behaviour()], decode=[behaviour()])
    resp = c.http.post("/v1/completions", headers={"X-Splitserve-Debug": "1"},
                       json={"model": model_dir.name, "prompt": LONG_PROMPT, "max_tokens": 3})
    timeline = json.loads(resp.headers["X-Splitserve-Timeline"])
    names = [e["name"] for e in timeline["events"]]
    assert names == ["routed", "prefill_sent", "first_token", "handoff", "decode_sent",
                     "decode_first_token", "finished"]
    assert timeline["num_output_tokens"] == 3
    times = [e["t"] for e in timeline["events"]]
    assert times == sorted(times)
    assert timeline["worker_timelines"]["decode"]["kv_transfer_bytes"] == 65536
    again = c.http.get(f"/debug/requests/{resp.json()['id']}").json()
    assert again["route_kind"] == "disaggregated"
    assert c.http.get("/debug/requests/nope").status_code == 404


def test_models_lists_the_served_model(start_cluster: StartCluster, model_dir: Path) -> None:
    c = start_cluster(mixed=[behaviour()], served_model_name="tiny")
    assert [m.id for m in c.client.models.list()] == ["tiny"]
    assert c.client.completions.create(model="tiny", prompt="a b c d e", max_tokens=1)
    assert c.http.get("/health").json()["status"] == "ok"
