"""Durable entities with the real SDK: client signals (also delayed), get with and without
state, orchestration calls and signals, entity-to-entity signals, entities starting
orchestrations, locks (critical sections, release on completion), operation failures,
queries with paging, and storage cleaning (PROTOCOL.md §5)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask import client, entities, task

from _util import WAIT, Status, assert_completed, completed, js, wait_until

pytestmark = pytest.mark.timeout(90)


# --- entities ----------------------------------------------------------------------------

def counter(ctx: entities.EntityContext, value):
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(state + value)
    elif ctx.operation == "get":
        return state
    elif ctx.operation == "fail":
        raise ValueError(f"counter refuses {value}")
    elif ctx.operation == "forward":
        # entity -> entity signal
        ctx.signal_entity(entities.EntityInstanceId("counter", value), "add", 10)
    elif ctx.operation == "start":
        ctx.schedule_new_orchestration("ent_started_by_entity", input=value, instance_id=value)
    elif ctx.operation == "delete":
        ctx.set_state(None)
    return None


class Account(entities.DurableEntity):
    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def balance(self, _=None) -> int:
        return self.get_state(int, 0)


# --- orchestrators -------------------------------------------------------------------------

def ent_started_by_entity(ctx: task.OrchestrationContext, value):
    return f"started {value}"


def ent_call_and_signal(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    ctx.signal_entity(eid, "add", 5)
    first = yield ctx.call_entity(eid, "get")
    yield ctx.call_entity(eid, "add", 2)
    second = yield ctx.call_entity(eid, "get")
    return [first, second]


def ent_call_failing(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    try:
        yield ctx.call_entity(eid, "fail", 7)
    except task.TaskFailedError as e:
        after = yield ctx.call_entity(eid, "get")
        return {"caught": str(e.details.message), "after": after}
    return "not failed"


def ent_critical_section(ctx: task.OrchestrationContext, keys: list[str]):
    ids = [entities.EntityInstanceId("counter", k) for k in keys]
    with (yield ctx.lock_entities(ids)):
        total = 0
        for eid in ids:
            total += yield ctx.call_entity(eid, "get")
        yield ctx.create_timer(timedelta(seconds=1))
        for eid in ids:
            yield ctx.call_entity(eid, "add", 1)
    return total


def ent_lock_and_finish(ctx: task.OrchestrationContext, key: str):
    # Never leaves the critical section: the lock must go when the orchestration ends.
    yield ctx.lock_entities([entities.EntityInstanceId("counter", key)])
    return "done"


def ent_delayed_signal(ctx: task.OrchestrationContext, key: str):
    eid = entities.EntityInstanceId("counter", key)
    ctx.signal_entity(eid, "add", 1, signal_time=ctx.current_utc_datetime + timedelta(seconds=2))
    return None


ENTITIES = [counter, Account]
ORCHESTRATORS = [ent_started_by_entity, ent_call_and_signal, ent_call_failing, ent_critical_section,
                 ent_lock_and_finish, ent_delayed_signal]


@pytest.fixture
def ent_worker(start_worker):
    return start_worker(ORCHESTRATORS, [], entities=ENTITIES)


def state_of(hub, eid: entities.EntityInstanceId):
    # An entity without state (only queued operations or a lock) does not exist yet:
    # GetEntity answers none.
    meta = hub.get_entity(eid)
    raw = None if meta is None else meta.get_state()
    return json.loads(raw) if raw else None


def counter_state(hub, key: str):
    return state_of(hub, entities.EntityInstanceId("counter", key))


def wait_counter(hub, key: str, value: int, timeout: float = 15.0):
    wait_until(lambda: counter_state(hub, key) == value, timeout=timeout,
               what=f"counter {key} == {value}")


# --- tests ---------------------------------------------------------------------------------

def test_client_signals_update_state_and_get_entity_reports_it(hub, ent_worker, iid):
    key = iid("k")
    eid = entities.EntityInstanceId("counter", key)
    assert hub.get_entity(eid) is None
    for n in (1, 2, 3):
        hub.signal_entity(eid, "add", n)
    wait_counter(hub, key, 6)
    meta = hub.get_entity(eid, include_state=False)
    assert meta is not None and meta.id == eid
    assert meta.get_state() is None  # state not requested
    assert meta.last_modified is not None


def test_class_entity_with_custom_operations(hub, ent_worker, iid):
    eid = entities.EntityInstanceId("Account", iid("acct"))
    hub.signal_entity(eid, "deposit", 40)
    hub.signal_entity(eid, "deposit", 2)
    wait_until(lambda: state_of(hub, eid) == 42, timeout=15, what="account balance 42")


def test_falsy_state_zero_is_kept(hub, ent_worker, iid):
    key = iid("zero")
    eid = entities.EntityInstanceId("counter", key)
    hub.signal_entity(eid, "add", 0)
    wait_until(lambda: state_of(hub, eid) == 0, timeout=15, what="state 0 stored")
    assert hub.get_entity(eid).get_state() == "0"


def test_orchestration_calls_and_signals_an_entity(hub, ent_worker, iid):
    key = iid("calls")
    id_ = hub.schedule_new_orchestration(ent_call_and_signal, input=key, instance_id=iid("o"))
    state = completed(hub, id_)
    # The signal was sent before the first call, so the call sees it.
    assert_completed(state, [5, 7])


def test_entity_operation_failure_reaches_the_caller_and_state_rolls_back(hub, ent_worker, iid):
    key = iid("fail")
    eid = entities.EntityInstanceId("counter", key)
    hub.signal_entity(eid, "add", 3)
    wait_counter(hub, key, 3)
    id_ = hub.schedule_new_orchestration(ent_call_failing, input=key, instance_id=iid("o"))
    state = completed(hub, id_)
    assert state.runtime_status == Status.COMPLETED, state.failure_details
    out = state.serialized_output
    assert "counter refuses 7" in out and '"after": 3' in out


def test_entity_signals_entity_and_starts_orchestration(hub, ent_worker, iid):
    src, dst = iid("src"), iid("dst")
    hub.signal_entity(entities.EntityInstanceId("counter", src), "forward", dst)
    wait_counter(hub, dst, 10)
    orch = iid("started")
    hub.signal_entity(entities.EntityInstanceId("counter", src), "start", orch)
    state = wait_until(lambda: hub.get_orchestration_state(orch), timeout=15, what="started orchestration")
    state = completed(hub, orch)
    assert_completed(state, "started " + orch)


def test_delayed_signals_are_not_delivered_early(hub, ent_worker, iid):
    key = iid("late")
    eid = entities.EntityInstanceId("counter", key)
    sent = time.monotonic()
    hub.signal_entity(eid, "add", 1, signal_time=datetime.now(timezone.utc) + timedelta(seconds=2))
    wait_counter(hub, key, 1)
    assert time.monotonic() - sent >= 1.9

    key2 = iid("late-orch")
    sent = time.monotonic()
    id_ = hub.schedule_new_orchestration(ent_delayed_signal, input=key2, instance_id=iid("o"))
    completed(hub, id_)
    wait_counter(hub, key2, 1)
    assert time.monotonic() - sent >= 1.9


def test_critical_section_serializes_orchestrations_and_shows_locked_by(hub, ent_worker, raw_stub, iid):
    keys = sorted([iid("a"), iid("b")])
    for k in keys:
        hub.signal_entity(entities.EntityInstanceId("counter", k), "add", 1)
    for k in keys:
        wait_counter(hub, k, 1)
    first = hub.schedule_new_orchestration(ent_critical_section, input=keys, instance_id=iid("o1"))
    target = str(entities.EntityInstanceId("counter", keys[0]))

    def locked_by():
        r = raw_stub.GetEntity(pb.GetEntityRequest(instanceId=target, includeState=True))
        return r.entity.lockedBy.value if r.entity.HasField("lockedBy") else None

    assert wait_until(locked_by, timeout=15, what="lock held") == first
    # A client signal during the critical section waits until the lock is released.
    hub.signal_entity(entities.EntityInstanceId("counter", keys[0]), "add", 100)
    second = hub.schedule_new_orchestration(ent_critical_section, input=keys, instance_id=iid("o2"))
    s1 = completed(hub, first)
    s2 = completed(hub, second)
    assert_completed(s1, 2)
    # The second section saw the first one's increments and the signal that waited.
    assert_completed(s2, 2 + 100 + 2)
    wait_until(lambda: locked_by() is None, timeout=15, what="lock released")


def test_lock_is_released_when_the_owner_completes_inside_the_section(hub, ent_worker, raw_stub, iid):
    key = iid("held")
    id_ = hub.schedule_new_orchestration(ent_lock_and_finish, input=key, instance_id=iid("o"))
    assert_completed(completed(hub, id_), "done")
    hub.signal_entity(entities.EntityInstanceId("counter", key), "add", 4)
    wait_counter(hub, key, 4)
    r = raw_stub.GetEntity(pb.GetEntityRequest(instanceId=f"@counter@{key}"))
    assert not r.entity.HasField("lockedBy")


def test_query_entities_by_prefix_with_paging_and_clean_storage(hub, ent_worker, iid):
    prefix = iid("q")
    for i in range(5):
        hub.signal_entity(entities.EntityInstanceId("counter", f"{prefix}-{i}"), "add", i + 1)
    for i in range(5):
        wait_counter(hub, f"{prefix}-{i}", i + 1)
    found = hub.get_all_entities(client.EntityQuery(
        instance_id_starts_with=f"@counter@{prefix}", include_state=True, page_size=2))
    assert [m.id.key for m in found] == [f"{prefix}-{i}" for i in range(5)]
    assert [m.get_state(int) for m in found] == [1, 2, 3, 4, 5]
    none = hub.get_all_entities(client.EntityQuery(
        instance_id_starts_with=f"@counter@{prefix}",
        last_modified_from=datetime.now(timezone.utc) + timedelta(hours=1)))
    assert none == []

    # Deleting the state leaves an empty entity that cleaning removes.
    eid = entities.EntityInstanceId("counter", f"{prefix}-0")
    hub.signal_entity(eid, "delete")
    wait_until(lambda: hub.get_entity(eid) is None, timeout=15, what="state deleted")
    result = hub.clean_entity_storage()
    assert result.empty_entities_removed >= 1


def test_invalid_entity_ids_are_rejected(raw_stub):
    import grpc
    with pytest.raises(grpc.RpcError) as e:
        raw_stub.SignalEntity(pb.SignalEntityRequest(instanceId="no-at-sign", name="add"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
