"""Crash safety: SIGKILL the sidecar mid-flight, restart it on the same SQLite file and port,
and check that every orchestration finishes correctly.

Activities are at-least-once: one that was running (or whose completion was not yet
committed) when the sidecar died may execute again. Progress that was committed must not
be lost, so per orchestration at most the one step that was in flight may run twice, and
each orchestration's output must contain every step exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from durabletask import task

from _util import Status, assert_completed, make_client, wait_for_status, wait_until

pytestmark = pytest.mark.timeout(240)

N_ORCHESTRATIONS = 20
STEPS = 5
STEP_SLEEP_S = 0.3

_log_lock = threading.Lock()


def crash_step(ctx: task.ActivityContext, inp: dict) -> str:
    time.sleep(STEP_SLEEP_S)
    record = f"{ctx.orchestration_id}:{inp['step']}"
    with _log_lock, open(inp["log"], "a") as f:
        f.write(record + "\n")
    return record


def crash_sequence(ctx: task.OrchestrationContext, inp: dict):
    results = []
    for step in range(inp["steps"]):
        results.append((yield ctx.call_activity(crash_step, input={"log": inp["log"], "step": step})))
    return results


def crash_timer(ctx: task.OrchestrationContext, seconds: float):
    fire_at = ctx.current_utc_datetime + timedelta(seconds=seconds)
    yield ctx.create_timer(fire_at)
    return {"fire_at": fire_at.isoformat(), "woke_at": ctx.current_utc_datetime.isoformat()}


def crash_wait_event(ctx: task.OrchestrationContext, _):
    payload = yield ctx.wait_for_external_event("resume")
    return {"event": payload}


def _aware(iso: str) -> datetime:
    dt = datetime.fromisoformat(iso)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _records(path) -> list[str]:
    try:
        with _log_lock, open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def test_kill_during_activity_sequences_all_complete_each_step_applied_once(fresh_sidecar, start_worker, iid,
                                                                          tmp_path):
    sc = fresh_sidecar
    log = tmp_path / "executions.log"
    total = N_ORCHESTRATIONS * STEPS
    # The same worker stays up across the crash and must reconnect by itself.
    start_worker([crash_sequence], [crash_step])

    c = make_client(sc.address)
    ids = [c.schedule_new_orchestration(crash_sequence, input={"log": str(log), "steps": STEPS},
                                        instance_id=iid(f"{i:02d}"))
           for i in range(N_ORCHESTRATIONS)]
    c.close()

    # Kill once roughly a third of all activity executions have happened.
    wait_until(lambda: len(_records(log)) >= total // 3, timeout=60, interval=0.01,
               what="a third of the activities to run")
    sc.kill()
    at_kill = len(_records(log))
    assert at_kill < total, "everything finished before the kill; the test proved nothing"

    time.sleep(0.5)
    sc.restart()

    c = make_client(sc.address)
    try:
        for instance_id in ids:
            state = c.wait_for_orchestration_completion(instance_id, timeout=120)
            assert state is not None, f"{instance_id} lost after the crash"
            expected = [f"{instance_id}:{step}" for step in range(STEPS)]
            assert_completed(state, output=expected, input={"log": str(log), "steps": STEPS})
    finally:
        c.close()

    executions = Counter(_records(log))
    for instance_id in ids:
        for step in range(STEPS):
            assert executions[f"{instance_id}:{step}"] >= 1, f"{instance_id} step {step} never executed"
        rerun_steps = [s for s in range(STEPS) if executions[f"{instance_id}:{s}"] > 1]
        assert len(rerun_steps) <= 1, (
            f"{instance_id}: steps {rerun_steps} were executed again after the crash; only the step in "
            f"flight may be (committed completions were lost?)")
    extra = sum(executions.values()) - total
    print(f"activity executions: {sum(executions.values())} for {total} steps "
          f"({extra} re-executions after the crash); {at_kill} recorded at kill time")


def test_kill_during_timer_and_event_wait_then_both_resume(fresh_sidecar, start_worker, iid):
    sc = fresh_sidecar
    w = start_worker([crash_timer, crash_wait_event])
    c = make_client(sc.address)

    started = time.monotonic()
    overdue_id = c.schedule_new_orchestration(crash_timer, input=1.5, instance_id=iid("overdue"))
    later_id = c.schedule_new_orchestration(crash_timer, input=6.0, instance_id=iid("later"))
    event_after_id = c.schedule_new_orchestration(crash_wait_event, instance_id=iid("event-after"))
    event_before_id = c.schedule_new_orchestration(crash_wait_event, instance_id=iid("event-before"))
    for instance_id in (overdue_id, later_id, event_after_id, event_before_id):
        wait_for_status(c, instance_id, Status.RUNNING, timeout=30)

    # With no worker connected, an event raised now only sits in the sidecar's store.
    w.stop()
    c.raise_orchestration_event(event_before_id, "resume", data={"raised": "before crash"})
    time.sleep(0.2)
    c.close()
    sc.kill()
    time.sleep(2.0)  # the 1.5 s timer becomes due while the sidecar is down
    sc.restart()

    start_worker([crash_timer, crash_wait_event], address=sc.address)
    c = make_client(sc.address)
    try:
        c.raise_orchestration_event(event_after_id, "resume", data={"raised": "after restart"})

        state = c.wait_for_orchestration_completion(event_after_id, timeout=60)
        assert_completed(state, output={"event": {"raised": "after restart"}})
        state = c.wait_for_orchestration_completion(event_before_id, timeout=60)
        assert_completed(state, output={"event": {"raised": "before crash"}})

        for instance_id, delay in ((overdue_id, 1.5), (later_id, 6.0)):
            state = c.wait_for_orchestration_completion(instance_id, timeout=60)
            assert_completed(state, input=delay)
            out = state.get_output()
            assert _aware(out["woke_at"]) >= _aware(out["fire_at"]), f"{instance_id} fired early: {out}"
        assert time.monotonic() - started >= 6.0 - 0.05
    finally:
        c.close()
