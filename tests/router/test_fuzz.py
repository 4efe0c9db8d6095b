"""Random request bodies never crash the router: each gets a success or an OpenAI-style 4xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.router.conftest import StartCluster, behaviour

_scalars = st.none() | st.booleans() | st.integers(-5, 300) | st.floats(-3, 3) | st.text(max_size=8)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
_keys = st.sampled_from([
    "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream",
    "stream_options", "logprobs", "n", "echo", "ignore_eos", "user", "messages",
    "max_completion_tokens", "top_logprobs", "presence_penalty", "tools",
])
_bodies = st.dictionaries(_keys, _values, max_size=6)


def test_random_bodies_get_success_or_openai_4xx(
    start_cluster: StartCluster, model_dir: Path
) -> None:
    c = start_cluster(mixed=[behaviour()])

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=_bodies, endpoint=st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
    def check(body: dict[str, Any], endpoint: str) -> None:
        resp = c.http.post(endpoint, json={"model": model_dir.name, **body})
        assert resp.status_code in (200, 400), (resp.status_code, resp.text, body)
        if resp.status_code == 400:
            error = resp.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]

    check()
    assert c.http.get("/health").status_code == 200
