"""The failover workload: orchestrators, the activity and the counter entity that every
worker registers, plus the pure functions the test uses to compute expected outputs.

Every activity execution is appended (one JSON line) to ``ExecutionLog.path`` with the node
whose worker ran it, so the test can tell executions (at least once) from applied results
(exactly once, read from the histories).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from durabletask import entities, task

STEP = "mn_step"
WORKFLOW = "mn_workflow"
CHILD = "mn_child"
EVENT = "go"
COUNTERS = 5
SEQ_STEPS = 3
FAN_OUT = 5
# Long enough that every node has activities running at any moment of the run, so the
# killed and the paused node both hold work in flight.
STEP_SECONDS = 0.1


# --- pure functions: the expected output is computed from the input alone ----------------

def step_result(x: int) -> int:
    return x * x + 1


def event_payload(n: int) -> dict:
    return {"n": n, "token": n * 7 + 3}


def counter_key(n: int) -> str:
    return f"c{n % COUNTERS}"


def timer_seconds(n: int) -> int:
    return 1 + n % 3


def expected_output(n: int) -> dict:
    seq = [step_result(n + k) for k in range(SEQ_STEPS)]
    fan = sum(step_result(n * 10 + j) for j in range(FAN_OUT))
    child = step_result(n + 1000) + 1
    return {"n": n, "seq": seq, "fan": fan, "child": child, "event": event_payload(n),
            "counter": counter_key(n)}


def workflow_input(n: int) -> dict:
    return {"n": n}


# Entity operations each workflow instance sends: one signal and one call, both "add 1".
OPS_PER_WORKFLOW = 2


# --- execution log ---------------------------------------------------------------------

class ExecutionLog:
    """Append-only JSON-lines file of activity executions (thread-safe within a process;
    each record is one O_APPEND write)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)

    def read(self) -> list[dict]:
        with self._lock:
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_step(node: str, log: ExecutionLog) -> Callable[[task.ActivityContext, dict], int]:
    """The ``mn_step`` activity (registered under its function name) as run by the worker
    of ``node``: records start and end."""

    def mn_step(ctx: task.ActivityContext, inp: dict) -> int:
        started = time.time()
        time.sleep(STEP_SECONDS)
        result = step_result(inp["x"])
        log.append({"node": node, "instance": ctx.orchestration_id, "task": ctx.task_id,
                    "tag": inp["tag"], "start": started, "end": time.time()})
        return result

    return mn_step


# --- orchestrators and entity ----------------------------------------------------------

def mn_workflow(ctx: task.OrchestrationContext, inp: dict):
    n = inp["n"]
    seq = []
    for k in range(SEQ_STEPS):
        seq.append((yield ctx.call_activity(STEP, input={"tag": f"seq{k}", "x": n + k})))
    fan = yield task.when_all([
        ctx.call_activity(STEP, input={"tag": f"fan{j}", "x": n * 10 + j}) for j in range(FAN_OUT)])
    counter = entities.EntityInstanceId("counter", counter_key(n))
    ctx.signal_entity(counter, "add", 1)
    yield ctx.call_entity(counter, "add", 1)
    yield ctx.create_timer(timedelta(seconds=timer_seconds(n)))
    child = yield ctx.call_sub_orchestrator(CHILD, input={"n": n}, instance_id=f"{ctx.instance_id}-child")
    event = yield ctx.wait_for_external_event(EVENT)
    return {"n": n, "seq": seq, "fan": sum(fan), "child": child, "event": event,
            "counter": counter_key(n)}


def mn_child(ctx: task.OrchestrationContext, inp: dict):
    value = yield ctx.call_activity(STEP, input={"tag": "child", "x": inp["n"] + 1000})
    return value + 1


def counter(ctx: entities.EntityContext, value: Any):
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += value
        ctx.set_state(state)
    return state


ORCHESTRATORS = (mn_workflow, mn_child)
ENTITIES = (counter,)


# --- the gate: an episode held by one node's worker across that node's pause -------------

GATE = "mn_gate"


def gate_output(n: int) -> int:
    return n * 2 + 1


class Gate:
    """Makes one node's worker hold the (only) episode of ``mn_gate`` orchestrations until
    the gate opens; the other nodes' workers run it at once. The test closes the gate on the
    node it will pause, so that node surely has an episode out when its lease lapses, and a
    stale completion to present after it is continued."""

    def __init__(self) -> None:
        self.holding_node: str | None = None
        self.opened = threading.Event()
        self._held: list[str] = []
        self._lock = threading.Lock()

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def orchestrator(self, node: str) -> Callable[[task.OrchestrationContext, int], int]:
        def mn_gate(ctx: task.OrchestrationContext, n: int) -> int:
            if node == self.holding_node and not ctx.is_replaying:
                with self._lock:
                    self._held.append(ctx.instance_id)
                self.opened.wait(timeout=120)
            return gate_output(n)

        return mn_gate
