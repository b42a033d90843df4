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

from typing import Callable, Iterable

import pytest

from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from agent_framework_durabletask import DurableAIAgentClient, DurableAIAgentWorker

# tests/python/_sidecar.py and _util.py (pytest.ini puts tests/python on the path).
from _sidecar import Sidecar, add_log_tails, find_sidecar_binary
from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY

from scripted import ScriptedChatClient, make_agent

# The agent client polls the entity's state for the reply: every POLL_INTERVAL_S, at most
# POLL_RETRIES times (30 s in all), then it answers with a response_timeout error message.
POLL_INTERVAL_S = 0.05
POLL_RETRIES = 600


@pytest.fixture
def sidecar(tmp_path):
    sc = Sidecar(find_sidecar_binary(("debug", "release")), tmp_path, "sidecar", sqlite_suffix=".sqlite")
    sc.start()
    yield sc
    sc.close()


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
    add_log_tails(item, outcome.get_result())
