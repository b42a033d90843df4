"""External events, durable timers (incl. when_any races and long-timer chunking) and
scheduled starts."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from durabletask import task

from _util import Status, assert_completed, completed, rpc_code

pytestmark = pytest.mark.timeout(60)


# --- orchestrators / activities --------------------------------------------------------

def ev_wait_one(ctx: task.OrchestrationContext, _):
    payload = yield ctx.wait_for_external_event("approval")
    return payload


def ev_wait_abc(ctx: task.OrchestrationContext, _):
    a = yield ctx.wait_for_external_event("A")
    b = yield ctx.wait_for_external_event("B")
    c = yield ctx.wait_for_external_event("C")
    return [a, b, c]


def ev_wait_same_name_three_times(ctx: task.OrchestrationContext, _):
    received = []
    for _ in range(3):
        received.append((yield ctx.wait_for_external_event("item")))
    return received


def ev_event_or_timeout(ctx: task.OrchestrationContext, seconds: float):
    approval = ctx.wait_for_external_event("approval")
    timeout = ctx.create_timer(timedelta(seconds=seconds))
    winner = yield task.when_any([approval, timeout])
    if winner == approval:
        return {"outcome": "approved", "payload": approval.get_result()}
    return {"outcome": "timed out"}


def ev_timer(ctx: task.OrchestrationContext, seconds: float):
    fire_at = ctx.current_utc_datetime + timedelta(seconds=seconds)
    yield ctx.create_timer(fire_at)
    # current_utc_datetime is the dispatch time of the episode that processed TimerFired.
    return {"fire_at": fire_at.isoformat(), "woke_at": ctx.current_utc_datetime.isoformat()}


def ev_add(ctx: task.ActivityContext, pair):
    return pair[0] + pair[1]


def ev_activity_timer_activity(ctx: task.OrchestrationContext, n: int):
    first = yield ctx.call_activity(ev_add, input=[n, 1])
    yield ctx.create_timer(timedelta(seconds=1))
    second = yield ctx.call_activity(ev_add, input=[first, 10])
    return [first, second]


def ev_report_start_time(ctx: task.OrchestrationContext, _):
    return ctx.current_utc_datetime.isoformat()


def _aware(iso: str) -> datetime:
    dt = datetime.fromisoformat(iso)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# --- external events ---------------------------------------------------------------------

def test_wait_for_external_event_output_equals_payload(hub, start_worker, iid):
    start_worker([ev_wait_one])
    instance_id = hub.schedule_new_orchestration(ev_wait_one, instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    payload = {"approved": True, "by": "Ada", "n": [1, 2, 3]}
    hub.raise_orchestration_event(instance_id, "approval", data=payload)
    assert_completed(completed(hub, instance_id), output=payload)


def test_three_events_raised_right_after_scheduling_are_delivered_in_order(hub, start_worker, iid):
    start_worker([ev_wait_abc])
    instance_id = hub.schedule_new_orchestration(ev_wait_abc, instance_id=iid())
    hub.raise_orchestration_event(instance_id, "A", data="a")
    hub.raise_orchestration_event(instance_id, "B", data="b")
    hub.raise_orchestration_event(instance_id, "C", data="c")
    assert_completed(completed(hub, instance_id), output=["a", "b", "c"])


def test_same_name_events_are_delivered_in_raise_order(hub, start_worker, iid):
    start_worker([ev_wait_same_name_three_times])
    instance_id = hub.schedule_new_orchestration(ev_wait_same_name_three_times, instance_id=iid())
    for i in (1, 2, 3):
        hub.raise_orchestration_event(instance_id, "item", data=i)
    assert_completed(completed(hub, instance_id), output=[1, 2, 3])


def test_when_any_event_wins_over_timer(hub, start_worker, iid):
    start_worker([ev_event_or_timeout])
    instance_id = hub.schedule_new_orchestration(ev_event_or_timeout, input=5, instance_id=iid())
    hub.raise_orchestration_event(instance_id, "approval", data="yes")
    started = time.monotonic()
    state = completed(hub, instance_id)
    assert_completed(state, output={"outcome": "approved", "payload": "yes"}, input=5)
    assert time.monotonic() - started < 5, "event should have won before the 5 s timer"


def test_when_any_timer_wins_without_event(hub, start_worker, iid):
    start_worker([ev_event_or_timeout])
    started = time.monotonic()
    instance_id = hub.schedule_new_orchestration(ev_event_or_timeout, input=1.5, instance_id=iid())
    state = completed(hub, instance_id)
    assert_completed(state, output={"outcome": "timed out"})
    assert time.monotonic() - started >= 1.5 - 0.05


def test_event_after_timer_won_is_ignored(hub, start_worker, iid):
    start_worker([ev_event_or_timeout])
    instance_id = hub.schedule_new_orchestration(ev_event_or_timeout, input=1, instance_id=iid())
    assert_completed(completed(hub, instance_id), output={"outcome": "timed out"})
    hub.raise_orchestration_event(instance_id, "approval", data="late")  # terminal: OK, discarded
    time.sleep(0.5)
    state = hub.get_orchestration_state(instance_id)
    assert_completed(state, output={"outcome": "timed out"})


def test_raise_event_to_unknown_instance_raises_not_found(hub, iid):
    with pytest.raises(grpc.RpcError) as ei:
        hub.raise_orchestration_event(iid("ghost"), "approval", data=1)
    assert rpc_code(ei) == grpc.StatusCode.NOT_FOUND


# --- timers --------------------------------------------------------------------------------

def test_durable_timer_fires_not_early(hub, start_worker, iid):
    start_worker([ev_timer])
    delay = 2.0
    started = time.monotonic()
    instance_id = hub.schedule_new_orchestration(ev_timer, input=delay, instance_id=iid())
    state = completed(hub, instance_id)
    elapsed = time.monotonic() - started
    assert_completed(state, input=delay)
    out = state.get_output()
    assert _aware(out["woke_at"]) >= _aware(out["fire_at"]), f"timer fired early: {out}"
    assert elapsed >= delay - 0.05, f"completed after {elapsed:.3f}s, timer was {delay}s"
    assert elapsed < delay + 10


def test_timer_between_activities(hub, start_worker, iid):
    start_worker([ev_activity_timer_activity], [ev_add])
    started = time.monotonic()
    instance_id = hub.schedule_new_orchestration(ev_activity_timer_activity, input=1, instance_id=iid())
    assert_completed(completed(hub, instance_id), output=[2, 12], input=1)
    assert time.monotonic() - started >= 1.0 - 0.05


def test_long_timer_is_chunked_and_fires_not_early(hub, start_worker, iid):
    # With a 1 s maximum timer interval the SDK splits a 3 s timer into several TimerCreated
    # events; each TimerFired must carry the exact fireAt of its TimerCreated.
    start_worker([ev_timer], maximum_timer_interval=timedelta(seconds=1))
    started = time.monotonic()
    instance_id = hub.schedule_new_orchestration(ev_timer, input=3.0, instance_id=iid())
    state = completed(hub, instance_id)
    assert_completed(state)
    out = state.get_output()
    assert _aware(out["woke_at"]) >= _aware(out["fire_at"])
    assert time.monotonic() - started >= 3.0 - 0.05
    import durabletask.history as history
    timers = [e for e in hub.get_orchestration_history(instance_id) if isinstance(e, history.TimerCreatedEvent)]
    assert len(timers) >= 3, f"expected the 3 s timer in >= 3 chunks, got {len(timers)}"


# --- scheduled start -------------------------------------------------------------------------

def test_scheduled_start_stays_pending_until_start_time(hub, start_worker, iid):
    start_worker([ev_report_start_time])
    start_at = datetime.now(timezone.utc) + timedelta(seconds=2)
    instance_id = hub.schedule_new_orchestration(ev_report_start_time, instance_id=iid(), start_at=start_at)

    state = hub.get_orchestration_state(instance_id)
    assert state is not None
    assert state.runtime_status == Status.PENDING
    time.sleep(0.5)
    state = hub.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == Status.PENDING, "started before start_at"

    state = completed(hub, instance_id)
    assert_completed(state)
    assert datetime.now(timezone.utc) >= start_at
    ran_at = _aware(state.get_output())
    assert ran_at >= start_at - timedelta(milliseconds=5), f"ran at {ran_at}, scheduled for {start_at}"
