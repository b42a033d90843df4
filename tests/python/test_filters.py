"""Work-item filters and versions (PROTOCOL.md §4.1): a filtered worker gets only what it
lists; what no connected worker accepts waits (PENDING) and runs once a worker that takes
it connects; version lists are honoured; entity filters hold entity batches back."""

from __future__ import annotations

import time

import pytest

from durabletask import entities, task, worker

from _util import Status, assert_completed, completed, js, wait_until

pytestmark = pytest.mark.timeout(60)


def flt_echo(ctx: task.ActivityContext, value):
    return value


def flt_known(ctx: task.OrchestrationContext, value):
    result = yield ctx.call_activity(flt_echo, input=value)
    return result


def flt_other(ctx: task.OrchestrationContext, value):
    return f"other {value}"


def flt_counter(ctx: entities.EntityContext, value):
    ctx.set_state((ctx.get_state(int, 0)) + value)


def still_pending(hub, instance_id: str, seconds: float = 1.5) -> bool:
    time.sleep(seconds)
    state = hub.get_orchestration_state(instance_id)
    return state is not None and state.runtime_status == Status.PENDING


def test_auto_filters_leave_unregistered_orchestrations_pending_until_a_worker_takes_them(
        hub, start_worker, iid):
    start_worker([flt_known], [flt_echo], filters="auto")
    other = hub.schedule_new_orchestration(flt_other, input=1, instance_id=iid("other"))
    known = hub.schedule_new_orchestration(flt_known, input=2, instance_id=iid("known"))
    assert_completed(completed(hub, known), 2)
    assert still_pending(hub, other)
    # A worker without filters takes everything, including what was waiting.
    start_worker([flt_other], [])
    assert_completed(completed(hub, other), "other 1")


def test_version_lists_are_honoured(hub, start_worker, iid):
    filters = worker.WorkItemFilters(
        orchestrations=[worker.OrchestrationWorkItemFilter(name="flt_other", versions=["2.0"])],
        activities=[], entities=[])
    start_worker([flt_other], [], filters=filters)
    v1 = hub.schedule_new_orchestration(flt_other, input="a", instance_id=iid("v1"), version="1.0")
    v2 = hub.schedule_new_orchestration(flt_other, input="b", instance_id=iid("v2"), version="2.0")
    assert_completed(completed(hub, v2), "other b")
    assert still_pending(hub, v1)
    start_worker([flt_other], [])
    assert_completed(completed(hub, v1), "other a")


def test_activities_outside_the_filter_wait_for_a_worker_that_lists_them(hub, start_worker, iid):
    orchestrations_only = worker.WorkItemFilters(
        orchestrations=[worker.OrchestrationWorkItemFilter(name="flt_known")],
        activities=[], entities=[])
    start_worker([flt_known], [flt_echo], filters=orchestrations_only)
    id_ = hub.schedule_new_orchestration(flt_known, input=3, instance_id=iid("act"))
    wait_until(lambda: (s := hub.get_orchestration_state(id_)) and s.runtime_status == Status.RUNNING,
               timeout=10, what="orchestration running")
    time.sleep(1.0)
    assert hub.get_orchestration_state(id_).runtime_status == Status.RUNNING
    activities_only = worker.WorkItemFilters(
        orchestrations=[], activities=[worker.ActivityWorkItemFilter(name="flt_echo")], entities=[])
    start_worker([], [flt_echo], filters=activities_only)
    assert_completed(completed(hub, id_), 3)


def test_entity_filters_hold_entity_batches_back(hub, start_worker, iid):
    start_worker([flt_known], [flt_echo], entities=[flt_counter], filters=worker.WorkItemFilters(
        orchestrations=[worker.OrchestrationWorkItemFilter(name="flt_known")],
        activities=[worker.ActivityWorkItemFilter(name="flt_echo")], entities=[]))
    eid = entities.EntityInstanceId("flt_counter", iid("e"))
    hub.signal_entity(eid, "add", 5)
    time.sleep(1.5)
    # Queued, not executed: without state the entity does not exist yet.
    assert hub.get_entity(eid) is None
    start_worker([], [], entities=[flt_counter], filters="auto")
    wait_until(lambda: (m := hub.get_entity(eid)) is not None and m.get_state() == js(5),
               timeout=15, what="entity ran on the matching worker")
