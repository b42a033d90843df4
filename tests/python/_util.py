"""Small helpers shared by the Python end-to-end tests (imported as ``_util``)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, TypeVar

import grpc

from durabletask import client
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

T = TypeVar("T")

# Generous per-call deadline for waits: a healthy sidecar finishes every test
# orchestration in a few seconds; pytest-timeout is the outer guard.
WAIT = 30

Status = client.OrchestrationStatus


def js(value: Any) -> str:
    """The JSON text the SDK's default converter produces for ``value``."""
    return json.dumps(value)


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0,
               interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


def wait_for_status(c: client.TaskHubGrpcClient, instance_id: str, status: Status, *,
                    timeout: float = 10.0) -> client.OrchestrationState:
    def check():
        st = c.get_orchestration_state(instance_id)
        return st if st is not None and st.runtime_status == status else None
    return wait_until(check, timeout=timeout, what=f"{instance_id} to reach {status.name}")


def completed(c: client.TaskHubGrpcClient, instance_id: str, timeout: float = WAIT) -> client.OrchestrationState:
    """wait_for_orchestration_completion that never returns None."""
    state = c.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None, f"instance {instance_id} not found while waiting for completion"
    return state


def assert_completed(state: client.OrchestrationState, output: Any = ..., *, input: Any = ...) -> None:
    """Assert COMPLETED without failure details, and optionally the exact JSON output/input."""
    assert state.runtime_status == Status.COMPLETED, (
        f"expected COMPLETED, got {state.runtime_status.name}; failure={state.failure_details}")
    assert state.failure_details is None
    if output is not ...:
        assert state.serialized_output == (None if output is None else js(output))
    if input is not ...:
        assert state.serialized_input == (None if input is None else js(input))


def rpc_code(excinfo) -> grpc.StatusCode:
    err = excinfo.value
    assert isinstance(err, grpc.RpcError), f"expected grpc.RpcError, got {type(err)!r}: {err}"
    return err.code()  # type: ignore[attr-defined]


# Short gRPC reconnect backoff so clients/workers notice a restarted sidecar within ~1 s
# (grpc's default backoff grows to 120 s).
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

def make_client(address: str) -> client.TaskHubGrpcClient:
    return client.TaskHubGrpcClient(host_address=address, channel_options=FAST_RECONNECT)
