"""Short bounded runs against the fake OpenAI server: records, summary, failures, bounds."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path

import openai
import pytest

from splitserve.bench.client import (
    BenchError,
    ClientConfig,
    RequestSpec,
    probe_server,
    run_requests,
)
from splitserve.bench.records import RequestRecord
from splitserve.bench.report import read_records, save_run
from splitserve.bench.runner import BenchConfig, run_bench, run_sweep, sweep_goodput
from splitserve.bench.stats import SLO
from splitserve.bench.workloads import LengthDist, LengthPolicy, Workload, sample_lengths

from .fake_server import FakeConfig, free_port, serve

SMALL = Workload("small", LengthDist("uniform", 24, 16, 32), LengthDist("fixed", 8, 1, 8))
SUMMARY_KEYS = {
    "schema", "url", "model", "workload", "arrival", "rate_rps", "seed", "length_scale",
    "max_model_len", "trace_scaling", "api", "prompt_mode", "bounds", "sent", "completed",
    "failed", "duration_s", "request_throughput_rps", "output_throughput_tps",
    "total_input_tokens", "total_output_tokens", "ttft_s", "tpot_s", "itl_s", "e2e_s", "slo",
    "slo_attainment", "errors", "started_at", "send_lag_s", "label",
}
RECORD_KEYS = {
    "index", "scheduled_s", "send_s", "input_len", "requested_output_len", "is_long", "ttft_s",
    "itl_s", "e2e_s", "output_len", "num_chunks", "output_len_source", "error", "success",
    "tpot_s", "timeline", "send_wall_s",
}


def config(url: str, tokenizer_dir: Path, **kw: object) -> BenchConfig:
    base: dict[str, object] = dict(url=url, tokenizer_dir=str(tokenizer_dir), workload=SMALL,
                                   arrival="poisson", rate_rps=40.0, num_requests=20,
                                   timeout_s=10.0, slo=SLO(ttft_s=1.0, tpot_s=0.5))
    base.update(kw)
    return BenchConfig(**base)  # type: ignore[arg-type]


def test_run_records_and_summary_schema(tokenizer_dir: Path, tmp_path: Path) -> None:
    fake = FakeConfig(ttft_s=0.05, token_delay_s=0.01)
    with serve(fake) as url:
        result = run_bench(config(url, tokenizer_dir))
    s = result.summary
    assert set(s) == SUMMARY_KEYS
    assert (s["sent"], s["completed"], s["failed"]) == (20, 20, 0)
    assert s["model"] == "fake-model" and s["prompt_mode"] == "token_ids"
    assert s["total_output_tokens"] == 20 * 8
    assert s["slo_attainment"] == 1.0
    assert 0 <= s["send_lag_s"]["p50"] < 0.5
    # the server got exactly what we planned: token-id prompts of the sampled lengths
    planned = sample_lengths(SMALL, 20, seed=0, policy=LengthPolicy(max_model_len=4096))
    assert sorted(len(b["prompt"]) for b in fake.bodies) == sorted(p.input_len for p in planned)
    for body in fake.bodies:
        assert body["ignore_eos"] is True and body["max_tokens"] == 8
        assert body["stream_options"] == {"include_usage": True}
    for rec in result.records:
        assert rec.output_len_source == "usage" and rec.output_len == rec.num_chunks == 8
        assert rec.ttft_s is not None and 0.05 <= rec.ttft_s < 2.0
        assert len(rec.itl_s) == 7
    gaps = [g for r in result.records for g in r.itl_s]
    assert 0.009 <= statistics.median(gaps) < 0.2
    paths = save_run(str(tmp_path), "run", s, result.records)
    lines = Path(paths["records"]).read_text().splitlines()
    assert len(lines) == 20 and all(set(json.loads(line)) == RECORD_KEYS for line in lines)
    assert read_records(paths["records"]) == result.records
    assert json.loads(Path(paths["summary"]).read_text())["sent"] == 20


def test_failures_are_counted_not_lost(tokenizer_dir: Path) -> None:
    fake = FakeConfig(fail_every=4, midstream_fail_every=5, token_delay_s=0.001)
    with serve(fake) as url:
        s = run_bench(config(url, tokenizer_dir)).summary
    # request numbers 4, 8, 12, 16, 20 -> HTTP 500; 5, 10, 15 -> error mid-stream (20 is a 500)
    assert (s["sent"], s["completed"], s["failed"]) == (20, 12, 8)
    assert s["sent"] == s["completed"] + s["failed"]
    assert sum(s["errors"].values()) == 8
    assert any(e.startswith("HTTP 500") for e in s["errors"])
    assert any("mid-stream" in e for e in s["errors"])
    assert s["slo_attainment"] == pytest.approx(12 / 20)


def test_chat_text_prompts_and_usage(tokenizer_dir: Path) -> None:
    fake = FakeConfig(token_delay_s=0.001)
    with serve(fake) as url:
        result = run_bench(config(url, tokenizer_dir, chat=True, num_requests=5))
    assert result.summary["api"] == "chat" and result.summary["completed"] == 5
    for body in fake.bodies:
        assert isinstance(body["messages"][0]["content"], str)
    # the fake counts words; our text prompts are one whole-word token per word
    for rec in result.records:
        assert rec.output_len == 8 and rec.num_chunks == 8  # role-only chunk not counted


def test_duration_and_timeout_bounds(tokenizer_dir: Path) -> None:
    with serve(FakeConfig(token_delay_s=0.001)) as url:
        s = run_bench(config(url, tokenizer_dir, arrival="constant", rate_rps=20.0,
                             num_requests=1000, duration_s=0.5)).summary
    assert s["sent"] == 10 and s["completed"] == 10
    with serve(FakeConfig(token_delay_s=0.2)) as url:
        s = run_bench(config(url, tokenizer_dir, num_requests=3, timeout_s=0.4)).summary
    assert (s["sent"], s["failed"]) == (3, 3)
    assert list(s["errors"]) == ["timeout after 0.4 s"]
    assert s["slo_attainment"] == 0.0


def test_sweep_same_requests_per_rate(tokenizer_dir: Path) -> None:
    with serve(FakeConfig(token_delay_s=0.001)) as url:
        results = run_sweep(url, SMALL, [20.0, 40.0], tokenizer_dir=str(tokenizer_dir),
                            num_requests=6, slo=SLO(ttft_s=1.0), label="colocated")
    assert {r.summary["label"] for r in results} == {"colocated"}
    assert [r.summary["rate_rps"] for r in results] == [20.0, 40.0]
    assert [r.input_len for r in results[0].records] == [r.input_len for r in results[1].records]
    assert sweep_goodput([r.summary for r in results]) == 40.0


def test_unreachable_server_is_a_bench_error(tokenizer_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BenchError, match="cannot reach server"):
        run_bench(config(url, tokenizer_dir))


def test_timings_agree_with_the_openai_client() -> None:
    """The fake speaks what the official client parses; our record matches its view."""
    fake = FakeConfig(ttft_s=0.02, token_delay_s=0.002)
    with serve(fake) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        stream = client.completions.create(
            model="fake-model", prompt=[5, 6, 7], max_tokens=6, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        texts = [c.choices[0].text for c in chunks if c.choices]
        usage = chunks[-1].usage
        assert usage is not None
        spec = RequestSpec(0, 0.0, [5, 6, 7], 3, 6)
        records, _ = asyncio.run(run_requests(ClientConfig(url, "fake-model"), [spec]))
        info = asyncio.run(probe_server(url + "/v1/"))
    rec: RequestRecord = records[0]
    assert rec.num_chunks == len(texts) == 6
    assert (rec.input_len, rec.output_len) == (usage.prompt_tokens, usage.completion_tokens)
    assert info.model_ids == ["fake-model"] and info.max_model_len == 4096


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("rate_rps", 0.0, "rate_rps"), ("num_requests", 0, "num_requests"),
     ("timeout_s", -1.0, "timeout_s"), ("max_concurrency", 0, "max_concurrency"),
     ("length_scale", 0.5, "divisor"), ("arrival", "trace", "trace file")],
)
def test_config_rejects_bad_values(tokenizer_dir: Path, field: str, value: object,
                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config("http://127.0.0.1:1", tokenizer_dir, **{field: value})


def test_capture_timeline_keeps_the_routers_comment(tokenizer_dir: Path) -> None:
    fake = FakeConfig(ttft_s=0.01, token_delay_s=0.002)
    with serve(fake) as url:
        plain = run_bench(config(url, tokenizer_dir, num_requests=3))
        traced = run_bench(config(url, tokenizer_dir, num_requests=3, capture_timeline=True))
    for r in plain.records:
        assert r.success and r.timeline is None and r.send_wall_s is None
    for r in traced.records:
        assert r.success and r.timeline is not None and r.timeline["route_kind"] == "fake"
        assert r.send_wall_s is not None and r.timeline["received"] >= r.send_wall_s
        assert r.output_len == 8 and r.num_chunks == 8  # the comment is not output
