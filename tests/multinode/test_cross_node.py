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
