"""Fixtures for Microsoft Agent Framework durable agents (agent-framework-durabletask)
against the sidecar.

* ``sidecar``    - a sidecar process of this test on its own SQLite file; ``kill()``
                   (SIGKILL) and ``start()`` again on the same port and file.
* ``agent_host`` - ``agent_host(chat_client)`` starts a TaskHubGrpcWorker hosting the
                   scripted agent (DurableAIAgentWorker.add_agent) and any orchestrators
                   given; every host is stopped at the end of the test.
* ``agents``     - ``agents()`` -> a DurableAIAgentClient on a new TaskHubGrpcClient.
* ``hub``        - a plain TaskHubGrpcClient (to start orchestrations).

SIDECAR_BIN names the binary (run.sh sets it; default target/debug then target/release).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import grpc
import pytest
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
from durabletask.client import TaskHubGrpcClient
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.worker import TaskHubGrpcWorker

from agent_framework_durabletask import DurableAIAgentClient, DurableAIAgentWorker

from scripted import ScriptedChatClient, make_agent

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 30.0

# Short gRPC reconnect backoff so the worker and clients find a restarted sidecar within
# about a second (grpc's default backoff grows to two minutes).
FAST_RECONNECT = GrpcChannelOptions(raw_options=[
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
])
FAST_WORKER_RESILIENCY = GrpcWorkerResiliencyOptions(
    reconnect_backoff_base_seconds=0.1,
    reconnect_backoff_cap_seconds=1.0,
)

# The agent client polls the entity's state for the reply: every POLL_INTERVAL_S, at most
# POLL_RETRIES times (30 s in all), then it answers with a response_timeout error message.
POLL_INTERVAL_S = 0.05
POLL_RETRIES = 600


def sidecar_binary() -> Path:
    env = os.environ.get("SIDECAR_BIN")
    candidates = [Path(env)] if env else [
        REPO_ROOT / "target" / profile / "durabletask-sidecar" for profile in ("debug", "release")]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(f"no sidecar binary at {', '.join(map(str, candidates))}: set SIDECAR_BIN "
                "or run `cargo build`", pytrace=False)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_ok(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=0.5)
            return True
        except grpc.RpcError:
            return False


class Sidecar:
    """One sidecar on a fixed gRPC and HTTP port and one SQLite file, restartable."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.db = workdir / "sidecar.sqlite"
        self.log_path = workdir / "sidecar.log"
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/runtime/webhooks/durabletask"

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.is_alive(), "sidecar already running"
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== start #{self.starts} on {self.db.name} =====\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
                     "--http-port", str(self.http_port), "--db", str(self.db), "--log-level", "info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            while time.monotonic() < deadline and self.proc.poll() is None:
                if hello_ok(self.address):
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"the sidecar did not answer Hello within {STARTUP_DEADLINE_S}s\n"
                            f"{self.log_tail()}", pytrace=False)
            # An exit during a restart may be the port not yet released: retry until the deadline.
            if self.starts == 1 or time.monotonic() >= deadline:
                pytest.fail(f"the sidecar exited during start-up with code {self.proc.returncode}\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: nothing beyond what was committed survives."""
        assert self.is_alive(), "sidecar is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.is_alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no sidecar log)"
        return "----- sidecar log (tail) -----\n" + "\n".join(text[-lines:])


@pytest.fixture
def sidecar(tmp_path):
    sc = Sidecar(sidecar_binary(), tmp_path)
    sc.start()
    yield sc
    sc.stop()


class AgentHosts:
    def __init__(self, sidecar: Sidecar):
        self.sidecar = sidecar
        self.workers: list[TaskHubGrpcWorker] = []

    def __call__(self, chat_client: ScriptedChatClient, orchestrators: Iterable[Callable] = ()) -> TaskHubGrpcWorker:
        worker = TaskHubGrpcWorker(host_address=self.sidecar.address, channel_options=FAST_RECONNECT,
                                   resiliency_options=FAST_WORKER_RESILIENCY)
        DurableAIAgentWorker(worker).add_agent(make_agent(chat_client))
        for orchestrator in orchestrators:
            worker.add_orchestrator(orchestrator)
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        while self.workers:
            self.workers.pop().stop()


@pytest.fixture
def agent_host(sidecar):
    hosts = AgentHosts(sidecar)
    yield hosts
    hosts.stop_all()


@pytest.fixture
def agents(sidecar):
    clients: list[TaskHubGrpcClient] = []

    def make() -> DurableAIAgentClient:
        client = TaskHubGrpcClient(host_address=sidecar.address, channel_options=FAST_RECONNECT)
        clients.append(client)
        return DurableAIAgentClient(client, max_poll_retries=POLL_RETRIES, poll_interval_seconds=POLL_INTERVAL_S)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def hub(sidecar):
    client = TaskHubGrpcClient(host_address=sidecar.address, channel_options=FAST_RECONNECT)
    yield client
    client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of its sidecar's log."""
    outcome = yield
    report = outcome.get_result()
    sc = getattr(item, "funcargs", {}).get("sidecar")
    if report.failed and isinstance(sc, Sidecar):
        report.sections.append(("sidecar log", sc.log_tail()))
