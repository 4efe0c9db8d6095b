"""Fixtures: a local tokenizer folder, fake workers and a router in front of them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from splitserve.router import RouterConfig, build_app
from tests.router.fake_worker import FakeBehaviour, FakeWorker, ServerThread, stop_all
from tests.router.tokenizer_fixtures import build_llama3_like

SECRET = "cluster-secret"
MAX_MODEL_LEN = 256
# Ids are arbitrary in-vocab tokens; the router relays the worker's text as is.
SCRIPT = [(40, "Hello"), (41, " big"), (42, " world"), (43, "!"), (44, " More"), (45, " text")]


def script_text(num_tokens: int) -> str:
    return "".join(text for _, text in SCRIPT[:num_tokens])


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama3_like(tmp_path_factory.mktemp("tiny-llama"), MAX_MODEL_LEN)


@dataclass
class Cluster:
    url: str
    workers: dict[str, list[FakeWorker]]
    client: openai.OpenAI
    http: httpx.Client

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample from /metrics, parsed with prometheus_client's own parser."""
        text = self.http.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and (labels or {}).items() <= sample.labels.items():
                    return float(sample.value)
        raise KeyError(name)

    def generate_modes(self, role: str, index: int = 0) -> list[str]:
        return [c["mode"] for c in self.workers[role][index].generate_calls]


StartCluster = Callable[..., Cluster]


@pytest.fixture
def start_cluster(model_dir: Path) -> Iterator[StartCluster]:
    servers: list[ServerThread] = []

    def serve(app: Any) -> str:
        server = ServerThread(app)
        servers.append(server)
        return server.__enter__()

    with contextlib.ExitStack() as stack:
        stack.callback(stop_all, servers)

        def start(
            prefill: list[FakeBehaviour] | None = None,
            decode: list[FakeBehaviour] | None = None,
            mixed: list[FakeBehaviour] | None = None,
            **overrides: Any,
        ) -> Cluster:
            workers: dict[str, list[FakeWorker]] = {"prefill": [], "decode": [], "mixed": []}
            for role, behaviours in (("prefill", prefill), ("decode", decode), ("mixed", mixed)):
                for behaviour in behaviours or []:
                    worker = FakeWorker(role, SECRET, behaviour)
                    worker.url = serve(worker.app())
                    workers[role].append(worker)
            settings: dict[str, Any] = {"short_prompt_len": 4, "poll_interval_s": 0.1}
            settings.update(overrides)
            config = RouterConfig(
                model_dir=str(model_dir),
                prefill_urls=tuple(w.url for w in workers["prefill"]),
                decode_urls=tuple(w.url for w in workers["decode"]),
                mixed_urls=tuple(w.url for w in workers["mixed"]),
                secret=SECRET,
                **settings,
            )
            url = serve(build_app(config))
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                                   timeout=10)
            stack.callback(client.close)
            http = stack.enter_context(httpx.Client(base_url=url, timeout=10))
            return Cluster(url, workers, client, http)

        yield start


def behaviour(**kwargs: Any) -> FakeBehaviour:
    return FakeBehaviour(script=list(SCRIPT), **kwargs)
