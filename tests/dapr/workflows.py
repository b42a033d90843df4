"""Workflows and activities of the Dapr SDK end-to-end tests; conftest.py registers them
all with one worker."""

from __future__ import annotations

import threading
from datetime import timedelta

from durabletask import task


def greet(ctx: task.ActivityContext, name: str) -> dict:
    return {
        "greeting": f"Hello {name}",
        "task_id": ctx.task_id,
        "task_execution_id": ctx.task_execution_id,
    }


def sequence(ctx: task.OrchestrationContext, names: list[str]):
    results = []
    for name in names:
        results.append((yield ctx.call_activity(greet, input=name)))
    return results


def fan_out(ctx: task.OrchestrationContext, count: int):
    results = yield task.when_all([ctx.call_activity(greet, input=str(i)) for i in range(count)])
    return [r["task_execution_id"] for r in results]


def approval(ctx: task.OrchestrationContext, _):
    decision = yield ctx.wait_for_external_event("approval")
    return {"approved": decision}


def nap(ctx: task.OrchestrationContext, seconds: float):
    started = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - started).total_seconds()


def wait_forever(ctx: task.OrchestrationContext, _):
    yield ctx.wait_for_external_event("never")


def parent(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.call_sub_orchestrator(sequence, input=[name]))


# Attempts of `flaky` per key: the task execution id each attempt saw.
_attempts: dict[str, list[str]] = {}
_attempts_lock = threading.Lock()


def flaky(ctx: task.ActivityContext, key: str) -> list[str]:
    """Fails on its first two attempts; returns the execution ids of all attempts."""
    with _attempts_lock:
        seen = _attempts.setdefault(key, [])
        seen.append(ctx.task_execution_id)
        ids = list(seen)
    if len(ids) < 3:
        raise RuntimeError(f"attempt {len(ids)} fails on purpose")
    return ids


def retrying(ctx: task.OrchestrationContext, key: str):
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=5
    )
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


def patched(ctx: task.OrchestrationContext, _):
    if ctx.is_patched("fix-1"):
        return (yield ctx.call_activity(greet, input="patched"))
    return (yield ctx.call_activity(greet, input="unpatched"))


ORCHESTRATORS = [sequence, fan_out, approval, nap, wait_forever, parent, retrying, patched]
ACTIVITIES = [greet, flaky]
