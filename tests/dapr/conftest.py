"""Fixtures for end-to-end tests of the sidecar with a real Dapr Workflow SDK
(durabletask-dapr). run.sh starts the sidecar and passes its address in DAPR_E2E_ADDRESS.

* ``address``  - the sidecar's host:port.
* ``worker``   - one TaskHubGrpcWorker for the session, registering everything in
                 ``workflows.py``.
* ``client``   - TaskHubGrpcClient.
* ``stub``     - the SDK's generated gRPC stub, for the Dapr-named RPCs its client does
                 not wrap (ListInstanceIDs, GetInstanceHistory, RerunWorkflowFromEvent) and
                 for fields it does not expose (PurgeInstancesRequest.force).
* ``iid``      - unique instance-id maker per test.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Callable

import grpc
import pytest

import durabletask.client as dt_client
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import durabletask.worker as dt_worker

import workflows


@pytest.fixture(scope="session")
def address() -> str:
    value = os.environ.get("DAPR_E2E_ADDRESS")
    if not value:
        pytest.fail("DAPR_E2E_ADDRESS is not set: run tests/dapr/run.sh", pytrace=False)
    return value


@pytest.fixture(scope="session")
def worker(address):
    w = dt_worker.TaskHubGrpcWorker(host_address=address)
    for fn in workflows.ORCHESTRATORS:
        w.add_orchestrator(fn)
    for fn in workflows.ACTIVITIES:
        w.add_activity(fn)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def client(address, worker):
    c = dt_client.TaskHubGrpcClient(host_address=address)
    yield c
    c.close()


@pytest.fixture
def stub(address):
    channel = grpc.insecure_channel(address)
    yield stubs.TaskHubSidecarServiceStub(channel)
    channel.close()


@pytest.fixture
def iid(request) -> Callable[[str], str]:
    """Unique, readable instance ids: ``<test name>-<8 hex>-<suffix>``."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:40]
    run = uuid.uuid4().hex[:8]

    def make(suffix: str = "") -> str:
        return f"{base}-{run}-{suffix}" if suffix else f"{base}-{run}"

    return make
