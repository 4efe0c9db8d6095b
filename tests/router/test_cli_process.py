"""`splitserve router` as a real process in front of a fake worker."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.router.conftest import SECRET, behaviour, script_text
from tests.router.fake_worker import FakeWorker, ServerThread


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_router_verb_serves_completions(model_dir: Path) -> None:
    worker = FakeWorker("mixed", SECRET, behaviour())
    with ServerThread(worker.app()) as worker_url:
        worker.url = worker_url
        port = _free_port()
        cmd = [sys.executable, "-m", "splitserve.cli", "router", "--model", str(model_dir),
               "--mixed", worker_url, "--port", str(port), "--secret", SECRET,
               "--served-model-name", "demo"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "router did not become healthy in 30 s"
                time.sleep(0.1)
            body = {"model": "demo", "prompt": "one two three four five", "max_tokens": 3}
            out = httpx.post(base + "/v1/completions", json=body, timeout=10).json()
            assert out["choices"][0]["text"] == script_text(3)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
