"""Failover across sidecars sharing one PostgreSQL database (STYLE.md §15).

Three sidecars, one SDK worker on each, a few hundred orchestrations of a mixed workload
(activity sequence, fan-out/fan-in, counter entity signal and call, durable timer,
sub-orchestration, an external event raised through another sidecar than the one that
started the instance). Mid-flight one sidecar is SIGKILLed; later another is SIGSTOPped
while its worker holds an episode that sidecar claimed (a "gate" orchestration), stays
frozen for twice the lease and until a survivor has completed that instance, and is then
continued, so it presents a completion whose claim has lapsed. Then:

* every orchestration COMPLETED with the output its input determines;
* every history is well formed: each scheduled task, timer, sub-orchestration and entity
  call answered exactly once, no scheduling event id twice, one ExecutionCompleted, last;
* every activity ran at least once, its result was applied exactly once, and repeated
  executions only involve the killed or paused node;
* each counter entity's value equals the number of operations sent to it;
* the paused sidecar refused to commit the work it held when its lease lapsed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict

import pytest

from durabletask import client, entities

from conftest import LEASE_SECONDS, wait_until
from histories import kind, read_history, seconds, violations
from workload import (ENTITIES, EVENT, FAN_OUT, GATE, OPS_PER_WORKFLOW, ORCHESTRATORS,
                      SEQ_STEPS, WORKFLOW, ExecutionLog, Gate, counter_key, event_payload,
                      expected_output, gate_output, make_step, workflow_input)

pytestmark = pytest.mark.timeout(300)

INSTANCES = int(os.environ.get("MULTINODE_INSTANCES", "300"))
COMPLETION_DEADLINE_S = 120.0
PAUSE_S = 2 * LEASE_SECONDS
ACTIVITIES_PER_WORKFLOW = SEQ_STEPS + FAN_OUT + 1  # + the child's
# What the paused node logs when a commit presents a lapsed claim
# (src/engine/dispatcher/orchestration.rs, StoreError::LeaseLost).
COMPLETION_DROPPED = "instance changed while its episode was out; completion dropped"


def summarize(problems: list[str], limit: int = 15) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n  {shown}{more}"


def test_kill_one_pause_one_every_orchestration_completes_exactly_once(cluster, workers, run_dir):
    nodes = cluster(3)
    killed, paused, steady = nodes
    log = ExecutionLog(run_dir / "executions.jsonl")
    gate = Gate()
    for node in nodes:
        workers(node, (*ORCHESTRATORS, gate.orchestrator(node.name)), [make_step(node.name, log)],
                ENTITIES)
    clients = [node.client() for node in nodes]
    channel, stub = steady.stub()
    try:
        run = uuid.uuid4().hex[:6]
        ids = [f"mn-{run}-{n:03d}" for n in range(INSTANCES)]
        started_at = time.time()
        for n, iid in enumerate(ids):
            clients[n % 3].schedule_new_orchestration(WORKFLOW, input=workflow_input(n), instance_id=iid)
        # Half of the events now, through the next node (before any fault) ...
        for n, iid in enumerate(ids):
            if n % 2 == 0:
                clients[(n + 1) % 3].raise_orchestration_event(iid, EVENT, data=event_payload(n))
        print(f"\nstarted {INSTANCES} orchestrations in {time.time() - started_at:.1f}s "
              f"(lease {LEASE_SECONDS}s, nodes {[n.address for n in nodes]})")

        # Fault 1: SIGKILL a node while its worker runs activities for it.
        total = INSTANCES * ACTIVITIES_PER_WORKFLOW
        wait_until(lambda: len(log.read()) >= total // 5, timeout=60,
                   what=f"{total // 5} activity executions before the kill")
        killed.kill()
        kill_at = time.time()
        executions_at_kill = len(log.read())
        print(f"killed {killed.name} after {kill_at - started_at:.1f}s, "
              f"{executions_at_kill}/{total} activity executions")

        # Fault 2: once the others made progress, SIGSTOP a node past its lease while its
        # worker holds an episode the node claimed (the gate), and continue it only after a
        # survivor has taken that instance over and completed it.
        wait_until(lambda: len(log.read()) >= executions_at_kill + total // 10, timeout=60,
                   what="progress after the kill")
        gate.holding_node = paused.name
        gate_ids: list[str] = []

        def held_on_paused_node():
            if not gate.held():
                gate_ids.append(f"mn-{run}-gate{len(gate_ids)}")
                clients[2].schedule_new_orchestration(GATE, input=len(gate_ids) - 1,
                                                      instance_id=gate_ids[-1])
            return gate.held()

        wait_until(held_on_paused_node, timeout=30, interval=0.2,
                   what=f"{paused.name}'s worker to hold a gate episode")
        paused_log_offset = len(paused.log_text())
        paused.pause()
        pause_at = time.time()
        held = gate.held()
        time.sleep(PAUSE_S)  # the fault itself: the node is frozen past its lease

        def taken_over():
            states = [clients[2].get_orchestration_state(iid) for iid in held]
            return all(st is not None and st.runtime_status == client.OrchestrationStatus.COMPLETED
                       for st in states)

        wait_until(taken_over, timeout=30, interval=0.2,
                   what=f"a survivor to complete the gate instances {held} held on {paused.name}")
        taken_over_s = time.time() - pause_at
        gate.opened.set()  # the held episodes now complete towards the frozen node
        paused.resume()
        print(f"paused {paused.name} {pause_at - started_at:.1f}s after the first start for "
              f"{time.time() - pause_at:.1f}s; the {len(held)} gate instance(s) its worker held "
              f"were completed elsewhere {taken_over_s:.1f}s into the pause")

        # ... the other half of the events now, through the next node other than the starter
        # that is alive (the paused one instead of the killed one).
        for n, iid in enumerate(ids):
            if n % 2 == 1:
                via = (n + 1) % 3 if (n + 1) % 3 != 0 else (n + 2) % 3
                clients[via].raise_orchestration_event(iid, EVENT, data=event_payload(n))

        # Every orchestration completes with its expected output (read via the survivors).
        deadline = time.monotonic() + COMPLETION_DEADLINE_S
        survivors = [clients[1], clients[2]]
        states: dict[str, client.OrchestrationState | None] = {}
        for n, iid in enumerate(ids):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                states[iid] = survivors[n % 2].wait_for_orchestration_completion(iid, timeout=remaining)
            except TimeoutError:
                states[iid] = survivors[n % 2].get_orchestration_state(iid)
        finished_at = time.time()
        wrong = []
        for n, iid in enumerate(ids):
            st = states[iid]
            if st is None:
                wrong.append(f"{iid}: not found")
            elif st.runtime_status != client.OrchestrationStatus.COMPLETED:
                wrong.append(f"{iid}: {st.runtime_status.name} failure={st.failure_details}")
            elif st.get_output() != expected_output(n):
                wrong.append(f"{iid}: output {st.serialized_output} != expected {expected_output(n)}")
        for k, iid in enumerate(gate_ids):
            st = survivors[k % 2].wait_for_orchestration_completion(
                iid, timeout=max(1.0, deadline - time.monotonic()))
            if st is None or st.runtime_status != client.OrchestrationStatus.COMPLETED or \
                    st.get_output() != gate_output(k):
                wrong.append(f"{iid}: {st and st.runtime_status.name} output "
                             f"{st and st.serialized_output}, expected {gate_output(k)}")
        assert not wrong, "orchestrations not COMPLETED as expected: " + summarize(wrong)
        print(f"all {INSTANCES} (and {len(gate_ids)} gate) orchestrations COMPLETED with the expected output "
              f"{finished_at - started_at:.1f}s after the first start")

        # Histories: every scheduled thing answered exactly once, ids unique.
        histories = {}
        for iid in ids:
            histories[iid] = read_history(stub, iid)
            histories[f"{iid}-child"] = read_history(stub, f"{iid}-child")
        for iid in gate_ids:
            histories[iid] = read_history(stub, iid)
        problems = []
        for iid, events in histories.items():
            problems += violations(iid, events)
        for iid in ids:
            raised = [e for e in histories[iid] if kind(e) == "eventRaised" and e.eventRaised.name == EVENT]
            if len(raised) != 1:
                problems.append(f"{iid}: {len(raised)} '{EVENT}' events raised, expected 1")
        assert not problems, "malformed histories: " + summarize(problems)

        # Executions (at least once) against applied results (exactly once).
        scheduled = {(iid, e.eventId) for iid, events in histories.items()
                     for e in events if kind(e) == "taskScheduled"}
        assert len(scheduled) == INSTANCES * ACTIVITIES_PER_WORKFLOW
        runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for record in log.read():
            runs[(record["instance"], record["task"])].append(record)
        never_ran = sorted(scheduled - runs.keys())
        assert not never_ran, f"{len(never_ran)} applied results without an execution: {never_ran[:10]}"
        unknown = sorted(runs.keys() - scheduled)
        assert not unknown, f"{len(unknown)} executions of tasks never scheduled: {unknown[:10]}"
        repeated = {key: rs for key, rs in runs.items() if len(rs) > 1}
        disrupted = {killed.name, paused.name}
        unexplained = [f"{key}: ran on {[r['node'] for r in rs]}" for key, rs in repeated.items()
                       if not disrupted & {r["node"] for r in rs}]
        assert not unexplained, ("activities ran more than once without a node failing: "
                                 + summarize(unexplained))
        by_node = defaultdict(int)
        for rs in runs.values():
            for r in rs:
                by_node[r["node"]] += 1
        print(f"activity executions: {sum(by_node.values())} for {len(scheduled)} applied results; "
              f"{len(repeated)} ran more than once; per node {dict(by_node)}")

        # Activities the killed node's worker was running when it died: their results went
        # nowhere, so another node must have run them again, and that result is the one applied.
        in_flight = {key: rs for key, rs in runs.items()
                     if any(r["node"] == killed.name and r["end"] >= kill_at for r in rs)}
        not_redone = [key for key, rs in in_flight.items()
                      if not any(r["node"] != killed.name for r in rs)]
        assert not not_redone, f"in-flight activities of {killed.name} never ran elsewhere: {not_redone[:10]}"
        if in_flight:
            completed_at = {}
            for (iid, task_id) in in_flight:
                for e in histories[iid]:
                    if kind(e) == "taskCompleted" and e.taskCompleted.taskScheduledId == task_id:
                        completed_at[(iid, task_id)] = seconds(e)
            redone_at = min(r["start"] for rs in in_flight.values() for r in rs if r["node"] != killed.name)
            instances = {iid.removesuffix("-child") for iid, _ in in_flight}
            first_done = min(seconds(histories[iid][-1]) for iid in instances)
            print(f"takeover after SIGKILL of {killed.name} ({len(in_flight)} activities in flight "
                  f"in {len(instances)} instances): first re-execution elsewhere "
                  f"{redone_at - kill_at:.2f}s, first of their results committed "
                  f"{min(completed_at.values()) - kill_at:.2f}s, first of those instances "
                  f"completed {first_done - kill_at:.2f}s after the kill")
        else:
            print(f"no activity was running on {killed.name} when it was killed")

        # Entities: every operation applied exactly once.
        sent = defaultdict(int)
        for n in range(INSTANCES):
            sent[counter_key(n)] += OPS_PER_WORKFLOW

        def counters() -> dict[str, int]:
            values = {}
            for key in sent:
                meta = clients[2].get_entity(entities.EntityInstanceId("counter", key))
                values[key] = meta.get_state(int) if meta is not None else None
            return values

        def settled():
            values = counters()
            over = {k: v for k, v in values.items() if v is not None and v > sent[k]}
            assert not over, f"counter entities applied more operations than sent: {over} > {dict(sent)}"
            return values == sent

        try:
            wait_until(settled, timeout=30, interval=0.2, what="counter entities to settle")
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}: expected {dict(sent)}, have {counters()}") from None
        print(f"counter entities: {dict(sent)} ({sum(sent.values())} operations, each applied once)")

        # The paused node's claims lapsed: it must have refused to commit the episodes its
        # worker completed meanwhile (they were already committed by a survivor).
        after_pause = paused.log_text()[paused_log_offset:].splitlines()
        dropped = [line for line in after_pause if COMPLETION_DROPPED in line]
        print(f"{paused.name} log after the pause: {len(dropped)} x '{COMPLETION_DROPPED}'")
        others = {n.name: n.log_text().count(COMPLETION_DROPPED) for n in (killed, steady)}
        print(f"same line on the other nodes: {others}; logs in {run_dir}")
        not_refused = [iid for iid in held if not any(iid in line for line in dropped)]
        assert not not_refused, (
            f"{paused.name} was frozen {PAUSE_S}s with a {LEASE_SECONDS}s lease while its worker "
            f"held {held}; its log shows no refused commit ('{COMPLETION_DROPPED}') for "
            f"{not_refused}")
        assert counters() == sent, "a counter changed after it had settled"
    finally:
        gate.opened.set()
        channel.close()
        for c in clients:
            c.close()
