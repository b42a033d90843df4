"""Lifecycle: terminate (incl. recursive), suspend/resume, continue-as-new, restart,
instance-id reuse (with and without an OrchestrationIdReusePolicy)."""

from __future__ import annotations

import time

import grpc
import pytest

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask import task

from _util import Status, assert_completed, completed, js, rpc_code, wait_for_status

pytestmark = pytest.mark.timeout(90)

ALL_STATUSES = [
    pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CANCELED, pb.ORCHESTRATION_STATUS_PENDING, pb.ORCHESTRATION_STATUS_RUNNING,
    pb.ORCHESTRATION_STATUS_SUSPENDED,
]


# --- orchestrators / activities --------------------------------------------------------

def lc_wait_event(ctx: task.OrchestrationContext, inp):
    payload = yield ctx.wait_for_external_event("my_event")
    return {"input": inp, "event": payload}


def lc_parent_of_waiting_child(ctx: task.OrchestrationContext, _):
    result = yield ctx.call_sub_orchestrator(lc_wait_event, input="child", instance_id=f"{ctx.instance_id}-child")
    return result


def lc_increment(ctx: task.ActivityContext, n: int) -> int:
    return n + 1


def lc_counter(ctx: task.OrchestrationContext, state):
    # state = {"count": n, "limit": m}; one activity per generation, then continue-as-new.
    count = yield ctx.call_activity(lc_increment, input=state["count"])
    if count < state["limit"]:
        ctx.continue_as_new({"count": count, "limit": state["limit"]})
        return None
    return {"final": count, "generation_input": state}


def lc_collect_events(ctx: task.OrchestrationContext, received: list):
    value = yield ctx.wait_for_external_event("my_event")
    received = received + [value]
    if len(received) < 5:
        ctx.continue_as_new(received, save_events=True)
        return None
    return received


def lc_say_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def lc_hello(ctx: task.OrchestrationContext, name: str):
    greeting = yield ctx.call_activity(lc_say_hello, input=name)
    return greeting


# --- terminate ---------------------------------------------------------------------------

def test_terminate_sets_terminated_with_reason_as_output(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input=1, instance_id=iid())
    state = hub.wait_for_orchestration_start(instance_id, timeout=30)
    assert state is not None and state.runtime_status == Status.RUNNING

    hub.terminate_orchestration(instance_id, output="some reason for termination")
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.TERMINATED
    assert state.serialized_output == js("some reason for termination")
    assert state.serialized_input == js(1)
    assert state.failure_details is None

    # Terminating a terminal instance is a no-op.
    hub.terminate_orchestration(instance_id, output="again")
    state = hub.get_orchestration_state(instance_id)
    assert state.runtime_status == Status.TERMINATED
    assert state.serialized_output == js("some reason for termination")


def test_terminate_with_structured_output(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    reason = {"why": "operator", "code": 7}
    hub.terminate_orchestration(instance_id, output=reason)
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.TERMINATED
    assert state.serialized_output == js(reason)


def test_terminate_recursive_also_terminates_child(hub, start_worker, iid):
    start_worker([lc_parent_of_waiting_child, lc_wait_event])
    parent_id = hub.schedule_new_orchestration(lc_parent_of_waiting_child, instance_id=iid("p"))
    child_id = f"{parent_id}-child"
    wait_for_status(hub, child_id, Status.RUNNING, timeout=30)

    hub.terminate_orchestration(parent_id, output="stop all")  # recursive=True is the default
    parent = completed(hub, parent_id)
    assert parent.runtime_status == Status.TERMINATED
    assert parent.serialized_output == js("stop all")
    child = completed(hub, child_id)
    assert child.runtime_status == Status.TERMINATED
    assert child.serialized_output == js("stop all")


def test_terminate_non_recursive_leaves_child_running(hub, start_worker, iid):
    start_worker([lc_parent_of_waiting_child, lc_wait_event])
    parent_id = hub.schedule_new_orchestration(lc_parent_of_waiting_child, instance_id=iid("p"))
    child_id = f"{parent_id}-child"
    wait_for_status(hub, child_id, Status.RUNNING, timeout=30)

    hub.terminate_orchestration(parent_id, output="parent only", recursive=False)
    assert completed(hub, parent_id).runtime_status == Status.TERMINATED
    time.sleep(1.0)
    child = hub.get_orchestration_state(child_id)
    assert child is not None and child.runtime_status == Status.RUNNING

    # The child can still complete on its own; its parent is terminal, so nothing breaks.
    hub.raise_orchestration_event(child_id, "my_event", data="done")
    assert_completed(completed(hub, child_id), output={"input": "child", "event": "done"})
    assert hub.get_orchestration_state(parent_id).runtime_status == Status.TERMINATED


def test_terminate_while_suspended(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    hub.suspend_orchestration(instance_id)
    wait_for_status(hub, instance_id, Status.SUSPENDED)
    hub.terminate_orchestration(instance_id, output="terminated while suspended")
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.TERMINATED
    assert state.serialized_output == js("terminated while suspended")


# --- suspend / resume ----------------------------------------------------------------------

def test_suspend_holds_events_until_resume(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input="in", instance_id=iid())
    state = hub.wait_for_orchestration_start(instance_id, timeout=30)
    assert state is not None

    hub.suspend_orchestration(instance_id, reason="maintenance")
    wait_for_status(hub, instance_id, Status.SUSPENDED, timeout=10)
    hub.suspend_orchestration(instance_id)  # idempotent

    hub.raise_orchestration_event(instance_id, "my_event", data=42)
    with pytest.raises(TimeoutError):
        hub.wait_for_orchestration_completion(instance_id, timeout=3)
    assert hub.get_orchestration_state(instance_id).runtime_status == Status.SUSPENDED

    hub.resume_orchestration(instance_id, reason="done")
    state = completed(hub, instance_id)
    assert_completed(state, output={"input": "in", "event": 42}, input="in")
    hub.resume_orchestration(instance_id)  # resume of a terminal instance: no-op
    assert hub.get_orchestration_state(instance_id).runtime_status == Status.COMPLETED


def test_suspend_unknown_instance_raises_not_found(hub, iid):
    with pytest.raises(grpc.RpcError) as ei:
        hub.suspend_orchestration(iid("ghost"))
    assert rpc_code(ei) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        hub.resume_orchestration(iid("ghost"))
    assert rpc_code(ei) == grpc.StatusCode.NOT_FOUND


# --- continue-as-new -------------------------------------------------------------------------

def test_continue_as_new_counter_loop_reaches_final_generation(hub, start_worker, iid):
    start_worker([lc_counter], [lc_increment])
    instance_id = hub.schedule_new_orchestration(lc_counter, input={"count": 0, "limit": 6}, instance_id=iid())
    state = completed(hub, instance_id)
    last_input = {"count": 5, "limit": 6}
    assert_completed(state, output={"final": 6, "generation_input": last_input}, input=last_input)


def test_continue_as_new_save_events_keeps_unprocessed_events(hub, start_worker, iid):
    start_worker([lc_collect_events])
    instance_id = hub.schedule_new_orchestration(lc_collect_events, input=[], instance_id=iid())
    for i in range(1, 6):
        hub.raise_orchestration_event(instance_id, "my_event", data=i)
    state = completed(hub, instance_id)
    assert_completed(state, output=[1, 2, 3, 4, 5], input=[1, 2, 3, 4])


# --- restart -----------------------------------------------------------------------------------

def test_restart_same_id_replaces_and_completes_again(hub, start_worker, iid):
    start_worker([lc_hello], [lc_say_hello])
    instance_id = hub.schedule_new_orchestration(lc_hello, input="World", instance_id=iid())
    first = completed(hub, instance_id)
    assert_completed(first, output="Hello, World!", input="World")

    restarted = hub.restart_orchestration(instance_id)
    assert restarted == instance_id
    # The replacement is visible synchronously: never the old COMPLETED state.
    state = hub.get_orchestration_state(instance_id)
    assert state is not None
    assert state.runtime_status in (Status.PENDING, Status.RUNNING, Status.COMPLETED)
    state = completed(hub, instance_id)
    assert_completed(state, output="Hello, World!", input="World")
    assert state.created_at >= first.created_at


def test_restart_with_new_instance_id_creates_new_instance(hub, start_worker, iid):
    start_worker([lc_hello], [lc_say_hello])
    instance_id = hub.schedule_new_orchestration(lc_hello, input="Mars", instance_id=iid())
    assert_completed(completed(hub, instance_id), output="Hello, Mars!")

    new_id = hub.restart_orchestration(instance_id, restart_with_new_instance_id=True)
    assert new_id and new_id != instance_id
    state = completed(hub, new_id)
    assert_completed(state, output="Hello, Mars!", input="Mars")
    assert state.name == "lc_hello"
    original = hub.get_orchestration_state(instance_id)
    assert_completed(original, output="Hello, Mars!", input="Mars")


def test_restart_unknown_instance_raises_not_found(hub, iid):
    with pytest.raises(grpc.RpcError) as ei:
        hub.restart_orchestration(iid("ghost"))
    assert rpc_code(ei) == grpc.StatusCode.NOT_FOUND


def test_restart_running_instance_same_id_raises_failed_precondition(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input="x", instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    with pytest.raises(grpc.RpcError) as ei:
        hub.restart_orchestration(instance_id)
    assert rpc_code(ei) == grpc.StatusCode.FAILED_PRECONDITION
    # The running instance is untouched.
    hub.raise_orchestration_event(instance_id, "my_event", data="still here")
    assert_completed(completed(hub, instance_id), output={"input": "x", "event": "still here"})


def test_restart_running_instance_with_new_id_is_allowed(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input="y", instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    new_id = hub.restart_orchestration(instance_id, restart_with_new_instance_id=True)
    assert new_id != instance_id
    for target in (instance_id, new_id):
        hub.raise_orchestration_event(target, "my_event", data=target)
        assert_completed(completed(hub, target), output={"input": "y", "event": target}, input="y")


# --- instance-id reuse ---------------------------------------------------------------------------

def test_start_same_id_while_running_raises_already_exists(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input="first", instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    with pytest.raises(grpc.RpcError) as ei:
        hub.schedule_new_orchestration(lc_wait_event, input="second", instance_id=instance_id)
    assert rpc_code(ei) == grpc.StatusCode.ALREADY_EXISTS
    hub.raise_orchestration_event(instance_id, "my_event", data=1)
    assert_completed(completed(hub, instance_id), output={"input": "first", "event": 1}, input="first")


def test_start_same_id_while_pending_raises_already_exists(hub, iid):
    # No worker for this name: the instance stays PENDING.
    instance_id = hub.schedule_new_orchestration("lc_never_registered", input=1, instance_id=iid())
    assert hub.get_orchestration_state(instance_id).runtime_status == Status.PENDING
    with pytest.raises(grpc.RpcError) as ei:
        hub.schedule_new_orchestration("lc_never_registered", input=2, instance_id=instance_id)
    assert rpc_code(ei) == grpc.StatusCode.ALREADY_EXISTS
    hub.terminate_orchestration(instance_id, output="cleanup")
    assert completed(hub, instance_id).runtime_status == Status.TERMINATED


def test_start_same_id_after_completion_without_policy_replaces(hub, start_worker, iid):
    start_worker([lc_hello], [lc_say_hello])
    instance_id = hub.schedule_new_orchestration(lc_hello, input="one", instance_id=iid())
    assert_completed(completed(hub, instance_id), output="Hello, one!")
    again = hub.schedule_new_orchestration(lc_hello, input="two", instance_id=instance_id)
    assert again == instance_id
    state = hub.get_orchestration_state(instance_id)
    assert state is not None and state.serialized_output != js("Hello, one!"), "old state still visible"
    assert_completed(completed(hub, instance_id), output="Hello, two!", input="two")


def test_reuse_policy_replaces_running_instance_when_running_is_replaceable(hub, start_worker, iid):
    start_worker([lc_wait_event])
    instance_id = hub.schedule_new_orchestration(lc_wait_event, input="old", instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=ALL_STATUSES)
    hub.schedule_new_orchestration(lc_wait_event, input="new", instance_id=instance_id, reuse_id_policy=policy)
    state = hub.get_orchestration_state(instance_id)
    assert state.serialized_input == js("new")
    assert state.runtime_status in (Status.PENDING, Status.RUNNING)
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    hub.raise_orchestration_event(instance_id, "my_event", data="go")
    assert_completed(completed(hub, instance_id), output={"input": "new", "event": "go"}, input="new")


def test_reuse_policy_with_status_not_replaceable_raises_already_exists(hub, start_worker, iid):
    start_worker([lc_hello], [lc_say_hello])
    instance_id = hub.schedule_new_orchestration(lc_hello, input="a", instance_id=iid())
    assert_completed(completed(hub, instance_id))
    only_failed = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_FAILED])
    with pytest.raises(grpc.RpcError) as ei:
        hub.schedule_new_orchestration(lc_hello, input="b", instance_id=instance_id, reuse_id_policy=only_failed)
    assert rpc_code(ei) == grpc.StatusCode.ALREADY_EXISTS
    empty = pb.OrchestrationIdReusePolicy(replaceableStatus=[])  # present but empty: nothing replaceable
    with pytest.raises(grpc.RpcError) as ei:
        hub.schedule_new_orchestration(lc_hello, input="c", instance_id=instance_id, reuse_id_policy=empty)
    assert rpc_code(ei) == grpc.StatusCode.ALREADY_EXISTS
    assert_completed(hub.get_orchestration_state(instance_id), output="Hello, a!", input="a")

    completed_ok = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    hub.schedule_new_orchestration(lc_hello, input="d", instance_id=instance_id, reuse_id_policy=completed_ok)
    assert_completed(completed(hub, instance_id), output="Hello, d!", input="d")


def test_reuse_policy_running_without_terminated_raises_invalid_argument(hub, iid):
    bad = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_RUNNING,
                                                           pb.ORCHESTRATION_STATUS_COMPLETED])
    with pytest.raises(grpc.RpcError) as ei:
        hub.schedule_new_orchestration("lc_hello", input="z", instance_id=iid(), reuse_id_policy=bad)
    assert rpc_code(ei) == grpc.StatusCode.INVALID_ARGUMENT
    assert hub.get_orchestration_state(iid()) is None
