"""Calls on one sidecar about an instance that another sidecar's worker runs: the change
feed carries completions and events between processes sharing the database."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta, timezone

import pytest

from durabletask import client, task

pytestmark = pytest.mark.timeout(90)

WAIT_S = 30.0


def mn_echo(ctx: task.ActivityContext, value: int) -> int:
    return value * 2


def mn_await_ping(ctx: task.OrchestrationContext, _):
    payload = yield ctx.wait_for_external_event("ping")
    doubled = yield ctx.call_activity(mn_echo, input=payload["value"])
    # Completes a second after the event, so the wait on B is surely in place by then.
    yield ctx.create_timer(timedelta(seconds=1))
    return {"value": payload["value"], "doubled": doubled}


def test_wait_on_b_returns_when_worker_on_a_completes_an_event_raised_on_b(cluster, workers, report):
    a, b = cluster(2)
    workers(a, [mn_await_ping], [mn_echo])  # no worker on b at all
    ca, cb = a.client(), b.client()
    try:
        for starter, value in ((ca, 21), (cb, 34)):  # started on A, then on B
            iid = f"xnode-{uuid.uuid4().hex[:8]}"
            starter.schedule_new_orchestration(mn_await_ping, instance_id=iid)
            # B sees the instance RUNNING: A's worker ran its first episode.
            running = cb.wait_for_orchestration_start(iid, timeout=WAIT_S)
            assert running is not None and running.runtime_status == client.OrchestrationStatus.RUNNING

            waited: dict = {}

            def wait_on_b():
                try:
                    waited["state"] = cb.wait_for_orchestration_completion(iid, timeout=WAIT_S)
                except Exception as e:  # reported by the assertion below
                    waited["error"] = e
                waited["returned_at"] = time.time()

            waiter = threading.Thread(target=wait_on_b, daemon=True)
            waiter.start()
            # RaiseEvent goes to B; the only worker is on A.
            raised_at = time.time()
            cb.raise_orchestration_event(iid, "ping", data={"value": value})
            waiter.join(WAIT_S + 5)
            assert not waiter.is_alive(), f"WaitForInstanceCompletion on B did not return within {WAIT_S}s"
            assert "error" not in waited, f"WaitForInstanceCompletion on B failed: {waited['error']!r}"
            state = waited["state"]
            assert state is not None and state.runtime_status == client.OrchestrationStatus.COMPLETED, (
                f"{iid}: {state}")
            assert state.get_output() == {"value": value, "doubled": value * 2}
            updated = state.last_updated_at
            if updated.tzinfo is None:  # the SDK converts the proto timestamp to naive UTC
                updated = updated.replace(tzinfo=timezone.utc)
            completed_at = updated.timestamp()
            report(f"{iid} (started on {'A' if starter is ca else 'B'}, worker on A, event via B): "
                  f"WaitForInstanceCompletion on B returned {waited['returned_at'] - completed_at:.3f}s "
                  f"after the completion was committed, {waited['returned_at'] - raised_at:.3f}s after "
                  f"RaiseEvent on B")
    finally:
        ca.close()
        cb.close()


def mn_only_on_a(ctx: task.ActivityContext, value: int) -> str:
    return f"a{value}"


def mn_only_on_b(ctx: task.ActivityContext, value: int) -> str:
    return f"b{value}"


def mn_runs_on_a(ctx: task.OrchestrationContext, value: int):
    # Registered on A's worker only; its activity on B's worker only.
    got = yield ctx.call_activity(mn_only_on_b, input=value)
    return f"A:{got}"


def mn_runs_on_b(ctx: task.OrchestrationContext, value: int):
    got = yield ctx.call_activity(mn_only_on_a, input=value)
    return f"B:{got}"


def test_filtered_workers_on_different_sidecars_get_the_work_they_accept(cluster, workers, report):
    """Each sidecar's worker accepts only what it registered, so every orchestration and
    activity here must cross to the other sidecar at least once: work waits for no
    particular sidecar, only for a worker that accepts it."""
    a, b = cluster(2)
    workers(a, [mn_runs_on_a], [mn_only_on_a], auto_filters=True)
    workers(b, [mn_runs_on_b], [mn_only_on_b], auto_filters=True)
    ca, cb = a.client(), b.client()
    try:
        started = []
        for starter in (ca, cb):
            for orchestrator, value in ((mn_runs_on_a, 1), (mn_runs_on_b, 2)):
                iid = f"xfilter-{uuid.uuid4().hex[:8]}"
                starter.schedule_new_orchestration(orchestrator, input=value, instance_id=iid)
                started.append((iid, orchestrator, value, time.time()))
        for iid, orchestrator, value, at in started:
            state = cb.wait_for_orchestration_completion(iid, timeout=WAIT_S)
            assert state is not None and state.runtime_status == client.OrchestrationStatus.COMPLETED, (
                f"{iid}: {state}")
            want = f"A:b{value}" if orchestrator is mn_runs_on_a else f"B:a{value}"
            assert state.get_output() == want, f"{iid}: {state.get_output()!r} != {want!r}"
            report(f"{iid} ({orchestrator.__name__}): completed {time.time() - at:.3f}s after start")
    finally:
        ca.close()
        cb.close()
