"""`splitserve serve` as a user runs it: prints the URL, serves, and on SIGTERM / Ctrl-C
stops every process it started (no orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from splitserve.cluster.launcher import free_port


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_every_process_on_signal(model_dir: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve.cli", "serve", str(model_dir), "--port", str(port),
         "--worker-arg=--num-blocks=64", "--worker-arg=--max-model-len=512"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if "serving at" in line:
                break
            assert proc.poll() is None, f"serve exited early: {line}"
        children = _children(proc.pid)
        assert len(children) == 3  # prefill, decode, router
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30, json={
            "model": model_dir.name, "prompt": "hello", "max_tokens": 2})
        assert resp.status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
