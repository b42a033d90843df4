"""Failures: activity errors (caught and uncaught), orchestrator errors, sub-orchestration
failures surfacing in the parent, retry policies."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

import pytest

from durabletask import task

from _util import Status, assert_completed, completed

pytestmark = pytest.mark.timeout(90)

# Attempt counters for retry tests, keyed by orchestration instance id (activities run in
# this process, on the worker's thread pool).
_attempts: dict[str, int] = defaultdict(int)
_attempts_lock = threading.Lock()


def _count_attempt(ctx: task.ActivityContext) -> int:
    with _attempts_lock:
        _attempts[ctx.orchestration_id] += 1
        return _attempts[ctx.orchestration_id]


# --- orchestrators / activities --------------------------------------------------------

def fl_explode(ctx: task.ActivityContext, what: str):
    raise RuntimeError(f"Kah-BOOOOM: {what}")


def fl_compensate(ctx: task.ActivityContext, what: str) -> str:
    return f"undid {what}"


def fl_catch_and_compensate(ctx: task.OrchestrationContext, what: str):
    try:
        yield ctx.call_activity(fl_explode, input=what)
        return {"unexpected": True}
    except task.TaskFailedError as e:
        undone = yield ctx.call_activity(fl_compensate, input=what)
        return {"error": e.details.message, "error_type": e.details.error_type, "compensation": undone}


def fl_uncaught(ctx: task.OrchestrationContext, what: str):
    yield ctx.call_activity(fl_explode, input=what)
    return "never"


def fl_orchestrator_raises(ctx: task.OrchestrationContext, n: int):
    raise ValueError(f"bad input {n}")


def fl_failing_child(ctx: task.OrchestrationContext, what: str):
    yield ctx.call_activity(fl_explode, input=what)
    return "never"


def fl_parent_uncaught_child(ctx: task.OrchestrationContext, what: str):
    result = yield ctx.call_sub_orchestrator(fl_failing_child, input=what, instance_id=f"{ctx.instance_id}-child")
    return result


def fl_parent_catches_child(ctx: task.OrchestrationContext, what: str):
    try:
        yield ctx.call_sub_orchestrator(fl_failing_child, input=what, instance_id=f"{ctx.instance_id}-child")
        return {"unexpected": True}
    except task.TaskFailedError as e:
        return {"child_failed": e.details.message}


def fl_flaky(ctx: task.ActivityContext, fail_times: int) -> int:
    attempt = _count_attempt(ctx)
    if attempt <= fail_times:
        raise RuntimeError(f"transient failure #{attempt}")
    return attempt


def fl_retry(ctx: task.OrchestrationContext, fail_times: int):
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.5), max_number_of_attempts=3,
                              backoff_coefficient=1.0)
    attempt = yield ctx.call_activity(fl_flaky, input=fail_times, retry_policy=policy)
    return {"succeeded_on_attempt": attempt}


def fl_call_missing_activity(ctx: task.OrchestrationContext, _):
    yield ctx.call_activity("fl_not_registered_anywhere", input=1)
    return "never"


# --- tests -------------------------------------------------------------------------------

def test_activity_failure_caught_runs_compensation(hub, start_worker, iid):
    start_worker([fl_catch_and_compensate], [fl_explode, fl_compensate])
    instance_id = hub.schedule_new_orchestration(fl_catch_and_compensate, input="payment", instance_id=iid())
    state = completed(hub, instance_id)
    assert_completed(state, input="payment")
    out = state.get_output()
    assert "Kah-BOOOOM: payment" in out["error"]
    assert "RuntimeError" in out["error_type"]
    assert out["compensation"] == "undid payment"


def test_activity_failure_uncaught_fails_orchestration_with_message(hub, start_worker, iid):
    start_worker([fl_uncaught], [fl_explode])
    instance_id = hub.schedule_new_orchestration(fl_uncaught, input="disk", instance_id=iid())
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.FAILED
    assert state.serialized_output is None
    assert state.serialized_input == '"disk"'
    assert state.failure_details is not None
    assert "Kah-BOOOOM: disk" in state.failure_details.message
    assert "TaskFailedError" in state.failure_details.error_type
    # failure details are returned even without payloads
    light = hub.get_orchestration_state(instance_id, fetch_payloads=False)
    assert light.runtime_status == Status.FAILED
    assert light.serialized_input is None
    assert light.failure_details is not None and "Kah-BOOOOM: disk" in light.failure_details.message


def test_orchestrator_exception_fails_orchestration(hub, start_worker, iid):
    start_worker([fl_orchestrator_raises])
    instance_id = hub.schedule_new_orchestration(fl_orchestrator_raises, input=42, instance_id=iid())
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.FAILED
    assert state.failure_details is not None
    assert "bad input 42" in state.failure_details.message
    assert "ValueError" in state.failure_details.error_type
    assert state.serialized_output is None


def test_child_failure_surfaces_in_parent(hub, start_worker, iid):
    start_worker([fl_parent_uncaught_child, fl_failing_child], [fl_explode])
    parent_id = hub.schedule_new_orchestration(fl_parent_uncaught_child, input="child-work", instance_id=iid("p"))
    parent = completed(hub, parent_id)
    assert parent.runtime_status == Status.FAILED
    assert parent.failure_details is not None
    assert "Kah-BOOOOM: child-work" in parent.failure_details.message

    child = completed(hub, f"{parent_id}-child")
    assert child.runtime_status == Status.FAILED
    assert child.failure_details is not None
    assert "Kah-BOOOOM: child-work" in child.failure_details.message


def test_child_failure_can_be_caught_by_parent(hub, start_worker, iid):
    start_worker([fl_parent_catches_child, fl_failing_child], [fl_explode])
    parent_id = hub.schedule_new_orchestration(fl_parent_catches_child, input="c2", instance_id=iid("p"))
    parent = completed(hub, parent_id)
    assert_completed(parent)
    assert "Kah-BOOOOM: c2" in parent.get_output()["child_failed"]
    assert completed(hub, f"{parent_id}-child").runtime_status == Status.FAILED


def test_retry_policy_activity_succeeds_on_third_attempt(hub, start_worker, iid):
    start_worker([fl_retry], [fl_flaky])
    instance_id = hub.schedule_new_orchestration(fl_retry, input=2, instance_id=iid())
    state = completed(hub, instance_id)
    assert_completed(state, output={"succeeded_on_attempt": 3}, input=2)
    assert _attempts[instance_id] == 3


def test_retry_policy_exhausted_fails_after_max_attempts(hub, start_worker, iid):
    start_worker([fl_retry], [fl_flaky])
    instance_id = hub.schedule_new_orchestration(fl_retry, input=10, instance_id=iid())
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.FAILED
    assert state.failure_details is not None
    assert "transient failure #3" in state.failure_details.message
    assert _attempts[instance_id] == 3


def test_unregistered_activity_fails_orchestration(hub, start_worker, iid):
    start_worker([fl_call_missing_activity])
    instance_id = hub.schedule_new_orchestration(fl_call_missing_activity, instance_id=iid())
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.FAILED
    assert state.failure_details is not None
    assert "fl_not_registered_anywhere" in state.failure_details.message
