"""Start a local cluster (router + prefill/decode/mixed workers) as child processes.

Each worker gets its own CPU cores (`os.sched_setaffinity` in the child, and as many
torch threads as cores), so a 1P1D cluster and a 2-mixed cluster use the same hardware
and their numbers compare. Every child runs in its own process group; `stop()` sends
SIGTERM to each group, waits, then SIGKILLs what is left, so no orphan survives.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from splitserve.cluster.cores import assign_cores, available_cores


@dataclass(frozen=True)
class ClusterSpec:
    """What to start. Workers are listed prefill first, then decode, then mixed."""

    model_dir: str
    num_prefill: int = 1
    num_decode: int = 1
    num_mixed: int = 0
    host: str = "127.0.0.1"
    router_port: int = 8000
    transport: str = "tcp"
    cores: tuple[int, ...] | None = None
    # GPUs to give the workers, one each round-robin (CUDA_VISIBLE_DEVICES); with GPUs,
    # pass --worker-arg=--device=cuda too
    gpus: tuple[int, ...] | None = None
    worker_args: tuple[str, ...] = ()
    router_args: tuple[str, ...] = ()
    ready_timeout_s: float = 300.0
    log_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_prefill", "num_decode", "num_mixed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        disagg = self.num_prefill + self.num_decode
        if disagg == 0 and self.num_mixed == 0:
            raise ValueError("a cluster needs at least one worker (--prefill/--decode/--mixed)")
        if (self.num_prefill == 0) != (self.num_decode == 0):
            raise ValueError(
                "disaggregated serving needs both pools: got "
                f"--prefill {self.num_prefill} --decode {self.num_decode}"
            )
        if self.transport not in ("tcp", "shm"):
            raise ValueError(f"transport must be 'tcp' or 'shm', got {self.transport!r}")

    def roles(self) -> list[str]:
        return (
            ["prefill"] * self.num_prefill
            + ["decode"] * self.num_decode
            + ["mixed"] * self.num_mixed
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, num_lines: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-num_lines:])


@dataclass
class Cluster:
    spec: ClusterSpec
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    children: list[Child] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="splitserve-")))

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.router_port}"

    def workers(self) -> list[Child]:
        return [c for c in self.children if c.name != "router"]

    def _env(self, cores: list[int], gpu: int | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        env["SPLITSERVE_SECRET"] = self.secret
        env["SPLITSERVE_CORES"] = ",".join(str(c) for c in cores)
        env["OMP_NUM_THREADS"] = str(max(1, len(cores)))
        return env

    def _spawn(self, name: str, argv: list[str], url: str, cores: list[int],
               gpu: int | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "splitserve.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(cores, gpu),
            start_new_session=True,
        )
        log.close()
        child = Child(name=name, proc=proc, url=url, log_path=log_path)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start workers, then the router; return once all report ready."""
        if self.spec.log_dir:
            self.log_dir = Path(self.spec.log_dir)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        roles = self.spec.roles()
        cores = list(self.spec.cores) if self.spec.cores else available_cores()
        plan = assign_cores(len(roles), cores)
        # free_port() releases the port it found, so the OS may hand it out again: never
        # give one port twice (the router's was picked before any worker started)
        taken = {self.spec.router_port}

        def unique_port() -> int:
            while (port := free_port(self.spec.host)) in taken:
                pass
            taken.add(port)
            return port

        try:
            for i, (role, worker_cores) in enumerate(zip(roles, plan, strict=True)):
                port = unique_port()
                kv_port = unique_port()
                argv = [
                    "worker", "--role", role, "--model", self.spec.model_dir,
                    "--host", self.spec.host, "--port", str(port),
                    "--kv-port", str(kv_port), "--worker-id", f"{role}-{i}",
                    "--transport", self.spec.transport,
                    "--num-threads", str(len(worker_cores)),
                    *self.spec.worker_args,
                ]
                gpu = self.spec.gpus[i % len(self.spec.gpus)] if self.spec.gpus else None
                self._spawn(f"{role}-{i}", argv, f"http://{self.spec.host}:{port}",
                            worker_cores, gpu)
            for child in self.workers():
                self._wait_ready(child, "/internal/health")
            argv = ["router", "--model", self.spec.model_dir, "--host", self.spec.host,
                    "--port", str(self.spec.router_port)]
            for role in ("prefill", "decode", "mixed"):
                urls = [c.url for c in self.workers() if c.name.split("-")[0] == role]
                if urls:
                    argv += [f"--{role}", *urls]
            argv += list(self.spec.router_args)
            router = self._spawn("router", argv, self.url, cores)
            self._wait_ready(router, "/health")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, child: Child, path: str) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        headers = {"X-Splitserve-Secret": self.secret}
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with code {child.proc.returncode} before it was "
                    f"ready; last lines of {child.log_path}:\n{child.log_tail()}"
                )
            try:
                resp = httpx.get(child.url + path, headers=headers, timeout=2.0)
                if resp.status_code == 200 and resp.json().get("ready", True):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(
            f"{child.name} not ready after {self.spec.ready_timeout_s:.0f} s; "
            f"last lines of {child.log_path}:\n{child.log_tail()}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child's process group, then SIGKILL stragglers. Idempotent."""
        for child in reversed(self.children):
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        self.children.clear()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
