"""Rewind (PROTOCOL.md §3.7, §4.10): a FAILED instance is rewound server-side, failed
activities run again while successful ones are replayed from history, failed (or purged)
children come back, an instance can be rewound more than once, and only FAILED instances
can be rewound."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import grpc
import pytest

from durabletask import task

from _util import Status, assert_completed, completed, js, rpc_code, wait_until

pytestmark = pytest.mark.timeout(90)

# Calls per (orchestration instance id, activity name); activities run in this process.
_calls: dict[tuple[str, str], int] = defaultdict(int)
_calls_lock = threading.Lock()


def _count(ctx: task.ActivityContext, name: str) -> int:
    with _calls_lock:
        _calls[(ctx.orchestration_id, name)] += 1
        return _calls[(ctx.orchestration_id, name)]


def calls(instance_id: str, name: str) -> int:
    with _calls_lock:
        return _calls[(instance_id, name)]


# --- orchestrators / activities --------------------------------------------------------

def rw_ok(ctx: task.ActivityContext, _) -> str:
    return f"ok-{_count(ctx, 'ok')}"


def rw_flaky(ctx: task.ActivityContext, fail_times: int) -> str:
    n = _count(ctx, "flaky")
    if n <= fail_times:
        raise RuntimeError(f"flaky failure #{n}")
    return f"flaky-{n}"


def rw_slow(ctx: task.ActivityContext, _) -> str:
    time.sleep(1.0)
    return f"slow-{_count(ctx, 'slow')}"


def rw_two_steps(ctx: task.OrchestrationContext, fail_times: int):
    a = yield ctx.call_activity(rw_ok)
    b = yield ctx.call_activity(rw_flaky, input=fail_times)
    return [a, b]


def rw_child(ctx: task.OrchestrationContext, fail_times: int):
    result = yield ctx.call_activity(rw_flaky, input=fail_times)
    return result


def rw_parent(ctx: task.OrchestrationContext, fail_times: int):
    before = yield ctx.call_activity(rw_ok)
    child = yield ctx.call_sub_orchestrator(rw_child, input=fail_times,
                                            instance_id=f"{ctx.instance_id}-child")
    return [before, child]


def rw_parallel(ctx: task.OrchestrationContext, _):
    # "flaky" fails while "slow" is still running: the instance fails with "slow" open,
    # and its result arrives (and is dropped) while the instance is FAILED.
    slow = ctx.call_activity(rw_slow)
    bad = ctx.call_activity(rw_flaky, input=1)
    b = yield bad
    s = yield slow
    return [s, b]


def rw_done(ctx: task.OrchestrationContext, _):
    return "done"


ALL = [rw_two_steps, rw_child, rw_parent, rw_parallel, rw_done]
ACTIVITIES = [rw_ok, rw_flaky, rw_slow]


def failed(hub, instance_id: str):
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.FAILED, state
    return state


def rewind_and_check_not_failed(hub, instance_id: str, reason: str | None = None) -> None:
    hub.rewind_orchestration(instance_id, reason=reason)
    # The RPC returns with the instance already non-terminal (the worker may even have
    # finished it by now); WaitForInstanceCompletion must not read the old FAILED state.
    state = hub.get_orchestration_state(instance_id)
    assert state is not None
    assert state.runtime_status in (Status.RUNNING, Status.COMPLETED), state.runtime_status
    assert state.failure_details is None


# --- tests -------------------------------------------------------------------------------

def test_failed_activity_reruns_and_successful_activity_does_not(hub, start_worker, iid):
    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_two_steps, input=1, instance_id=iid())
    state = failed(hub, instance_id)
    assert "flaky failure #1" in state.failure_details.message

    rewind_and_check_not_failed(hub, instance_id, reason="the service is back")
    assert_completed(completed(hub, instance_id), ["ok-1", "flaky-2"])
    assert calls(instance_id, "ok") == 1, "the successful activity was not re-run"
    assert calls(instance_id, "flaky") == 2, "the failed activity ran exactly once more"


def test_failed_child_orchestration_is_rewound_with_its_parent(hub, start_worker, iid):
    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_parent, input=1, instance_id=iid())
    child_id = f"{instance_id}-child"
    failed(hub, instance_id)
    failed(hub, child_id)

    rewind_and_check_not_failed(hub, instance_id)
    assert_completed(completed(hub, instance_id), ["ok-1", "flaky-2"])
    assert_completed(completed(hub, child_id), "flaky-2")
    assert calls(instance_id, "ok") == 1
    assert calls(child_id, "flaky") == 2


def test_purged_child_is_recreated_when_the_parent_is_rewound(hub, start_worker, iid):
    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_parent, input=1, instance_id=iid())
    child_id = f"{instance_id}-child"
    failed(hub, instance_id)
    failed(hub, child_id)
    assert hub.purge_orchestration(child_id, recursive=False).deleted_instance_count == 1
    assert hub.get_orchestration_state(child_id) is None

    rewind_and_check_not_failed(hub, instance_id, reason="child purged")
    assert_completed(completed(hub, instance_id), ["ok-1", "flaky-2"])
    assert_completed(completed(hub, child_id), "flaky-2", input=1)


def test_rewind_twice(hub, start_worker, iid):
    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_two_steps, input=2, instance_id=iid())
    failed(hub, instance_id)

    rewind_and_check_not_failed(hub, instance_id)  # no reason
    state = failed(hub, instance_id)
    assert "flaky failure #2" in state.failure_details.message

    rewind_and_check_not_failed(hub, instance_id, reason="second try")
    assert_completed(completed(hub, instance_id), ["ok-1", "flaky-3"])
    assert calls(instance_id, "ok") == 1
    assert calls(instance_id, "flaky") == 3


def test_activity_result_lost_while_failed_runs_again(hub, start_worker, iid):
    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_parallel, instance_id=iid())
    failed(hub, instance_id)
    wait_until(lambda: calls(instance_id, "slow") == 1, what="the slow activity to finish")

    rewind_and_check_not_failed(hub, instance_id)
    state = completed(hub, instance_id)
    assert state.runtime_status == Status.COMPLETED, state.failure_details
    # "slow" ran again if its result was dropped before the rewind, not if the rewind
    # caught it still running; either way the instance does not wait forever.
    assert calls(instance_id, "slow") in (1, 2)
    assert state.serialized_output == js([f"slow-{calls(instance_id, 'slow')}", "flaky-2"])


def test_only_failed_instances_can_be_rewound(hub, start_worker, iid):
    with pytest.raises(grpc.RpcError) as e:
        hub.rewind_orchestration(iid("unknown"))
    assert rpc_code(e) == grpc.StatusCode.NOT_FOUND

    start_worker(ALL, ACTIVITIES)
    instance_id = hub.schedule_new_orchestration(rw_done, instance_id=iid())
    assert_completed(completed(hub, instance_id), "done")
    with pytest.raises(grpc.RpcError) as e:
        hub.rewind_orchestration(instance_id, reason="no")
    assert rpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in e.value.details() and "does not allow" in e.value.details()
    assert_completed(hub.get_orchestration_state(instance_id), "done")
