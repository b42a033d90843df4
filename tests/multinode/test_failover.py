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
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from durabletask import client, entities

from conftest import LEASE_SECONDS, database_activity, wait_until
from histories import dump_histories, kind, read_history, seconds, violations
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


def test_kill_one_pause_one_every_orchestration_completes_exactly_once(cluster, workers, run_dir,
                                                                        report):
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
        # Clients start instances and raise events from several threads: one at a time, a
        # busy debug sidecar would still be starting them when the workload is done.
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(lambda n: clients[n % 3].schedule_new_orchestration(
                WORKFLOW, input=workflow_input(n), instance_id=ids[n]), range(INSTANCES)))
            # Half of the events now, through the next node (before any fault) ...
            list(pool.map(lambda n: clients[(n + 1) % 3].raise_orchestration_event(
                ids[n], EVENT, data=event_payload(n)), range(0, INSTANCES, 2)))
        report(f"started {INSTANCES} orchestrations in {time.time() - started_at:.1f}s "
              f"(lease {LEASE_SECONDS}s, nodes {[n.address for n in nodes]})")

        # Fault 1: SIGKILL a node while its worker runs activities for it.
        total = INSTANCES * ACTIVITIES_PER_WORKFLOW
        wait_until(lambda: len(log.read()) >= total * 15 // 100, timeout=60,
                   what="15% of the activity executions before the kill")
        killed.kill()
        kill_at = time.time()
        executions_at_kill = len(log.read())
        report(f"killed {killed.name} after {kill_at - started_at:.1f}s, "
              f"{executions_at_kill}/{total} activity executions")

        # Fault 2: once the others made progress, SIGSTOP a node past its lease while its
        # worker holds an episode the node claimed (the gate), and continue it only after a
        # survivor has taken that instance over and completed it.
        wait_until(lambda: len(log.read()) >= executions_at_kill + total * 15 // 100, timeout=60,
                   what="another 15% of the activity executions after the kill")
        gate.holding_node = paused.name
        gate_ids: list[str] = []

        def held_on_paused_node():
            if not gate.held():
                gate_ids.append(f"mn-{run}-gate{len(gate_ids)}")
                # Through the node to pause: the sidecar that writes a ready instance
                # usually dispatches it before the others hear of it.
                clients[1].schedule_new_orchestration(GATE, input=len(gate_ids) - 1,
                                                      instance_id=gate_ids[-1])
            return gate.held()

        wait_until(held_on_paused_node, timeout=30, interval=0.2,
                   what=f"{paused.name}'s worker to hold a gate episode")
        paused_log_offset = len(paused.log_text())
        paused.pause()
        pause_at = time.time()
        held = gate.held()
        executions_at_pause = len(log.read())
        time.sleep(PAUSE_S)  # the fault itself: the node is frozen past its lease

        def taken_over():
            try:
                states = [clients[2].get_orchestration_state(iid) for iid in held]
            except grpc.RpcError as e:  # keep asking; a timeout below reports it
                return f"{steady.name} answered {e.code().name}: {e.details()}"
            return all(st is not None and st.runtime_status == client.OrchestrationStatus.COMPLETED
                       for st in states)

        try:
            wait_until(lambda: taken_over() is True, timeout=30, interval=0.2,
                       what=f"a survivor to complete the gate instances {held} held on {paused.name}")
        except AssertionError as stuck:
            activity = database_activity(paused.db_url, nodes)
            (run_dir / "pg_activity.txt").write_text(activity)
            raise AssertionError(
                f"{stuck}; last answer: {taken_over()}. While {paused.name} is frozen, the others "
                f"must go on. PostgreSQL sessions now (also in {run_dir / 'pg_activity.txt'}):\n"
                f"{activity}") from None
        taken_over_s = time.time() - pause_at
        gate.opened.set()  # the held episodes now complete towards the frozen node
        paused.resume()
        report(f"paused {paused.name} {pause_at - started_at:.1f}s after the first start "
              f"({executions_at_pause}/{total} activity executions) for "
              f"{time.time() - pause_at:.1f}s; the {len(held)} gate instance(s) its worker held "
              f"were completed elsewhere {taken_over_s:.1f}s into the pause")

        # ... the other half of the events now, through the next node other than the starter
        # that is alive (the paused one instead of the killed one).
        def raise_later(n: int) -> None:
            via = (n + 1) % 3 if (n + 1) % 3 != 0 else (n + 2) % 3
            clients[via].raise_orchestration_event(ids[n], EVENT, data=event_payload(n))

        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(raise_later, range(1, INSTANCES, 2)))

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
        # Every check below runs and adds what it finds here; the test fails at the end with
        # all of it, so one run shows every symptom.
        failures: dict[str, list[str]] = defaultdict(list)
        for n, iid in enumerate(ids):
            st = states[iid]
            if st is None:
                failures["not COMPLETED as expected"].append(f"{iid}: not found")
            elif st.runtime_status != client.OrchestrationStatus.COMPLETED:
                failures["not COMPLETED as expected"].append(
                    f"{iid}: {st.runtime_status.name} failure={st.failure_details}")
            elif st.get_output() != expected_output(n):
                failures["not COMPLETED as expected"].append(
                    f"{iid}: output {st.serialized_output} != expected {expected_output(n)}")
        for k, iid in enumerate(gate_ids):
            try:
                st = survivors[k % 2].wait_for_orchestration_completion(
                    iid, timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                st = survivors[k % 2].get_orchestration_state(iid)
            if st is None or st.runtime_status != client.OrchestrationStatus.COMPLETED or \
                    st.get_output() != gate_output(k):
                failures["not COMPLETED as expected"].append(
                    f"{iid}: {st and st.runtime_status.name} output {st and st.serialized_output}, "
                    f"expected {gate_output(k)}")
        if not failures:
            report(f"all {INSTANCES} (and {len(gate_ids)} gate) orchestrations COMPLETED with the "
                   f"expected output {finished_at - started_at:.1f}s after the first start")

        # Histories: every scheduled thing answered exactly once, ids unique.
        histories = {}
        for iid in ids:
            histories[iid] = read_history(stub, iid)
            histories[f"{iid}-child"] = read_history(stub, f"{iid}-child")
        for iid in gate_ids:
            histories[iid] = read_history(stub, iid)
        for iid, events in histories.items():
            failures["malformed histories"] += violations(iid, events)
        for iid in ids:
            raised = [e for e in histories[iid] if kind(e) == "eventRaised" and e.eventRaised.name == EVENT]
            if len(raised) != 1:
                failures["malformed histories"].append(f"{iid}: {len(raised)} '{EVENT}' events, expected 1")

        # Executions (at least once) against applied results (exactly once).
        applied = {(iid, e.taskCompleted.taskScheduledId) for iid, events in histories.items()
                   for e in events if kind(e) == "taskCompleted"}
        runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for record in log.read():
            runs[(record["instance"], record["task"])].append(record)
        if len(applied) != INSTANCES * ACTIVITIES_PER_WORKFLOW:
            failures["executions"].append(
                f"{len(applied)} activity results applied, expected {INSTANCES * ACTIVITIES_PER_WORKFLOW}")
        failures["executions"] += [f"{key}: result applied, never executed"
                                   for key in sorted(applied - runs.keys())]
        failures["executions"] += [f"{key}: executed, result never applied"
                                   for key in sorted(runs.keys() - applied)]
        repeated = {key: rs for key, rs in runs.items() if len(rs) > 1}
        disrupted = {killed.name, paused.name}
        failures["activities ran more than once without a node failing"] += [
            f"{key}: ran on {[r['node'] for r in rs]}" for key, rs in repeated.items()
            if not disrupted & {r["node"] for r in rs}]
        by_node: dict[str, int] = defaultdict(int)
        for rs in runs.values():
            for r in rs:
                by_node[r["node"]] += 1
        report(f"activity executions: {sum(by_node.values())} for {len(applied)} applied results; "
               f"{len(repeated)} ran more than once; per node {dict(by_node)}")

        # Activities the killed node's worker was running when it died: their results went
        # nowhere, so another node must have run them again, and that result is the one applied.
        in_flight = {key: rs for key, rs in runs.items()
                     if any(r["node"] == killed.name and r["end"] >= kill_at for r in rs)}
        failures["executions"] += [
            f"{key}: in flight on {killed.name} when it was killed, never ran elsewhere"
            for key, rs in in_flight.items() if not any(r["node"] != killed.name for r in rs)]
        completed_at = [seconds(e) for (iid, task_id) in in_flight for e in histories[iid]
                        if kind(e) == "taskCompleted" and e.taskCompleted.taskScheduledId == task_id]
        redone_at = [r["start"] for rs in in_flight.values() for r in rs if r["node"] != killed.name]
        instances = {iid.removesuffix("-child") for iid, _ in in_flight}
        done_at = [seconds(histories[iid][-1]) for iid in instances
                   if histories[iid] and kind(histories[iid][-1]) == "executionCompleted"]
        if completed_at and redone_at and done_at:
            report(f"takeover after SIGKILL of {killed.name} ({len(in_flight)} activities in flight "
                   f"in {len(instances)} instances): first re-execution elsewhere "
                   f"{min(redone_at) - kill_at:.2f}s, first of their results committed "
                   f"{min(completed_at) - kill_at:.2f}s, first of those instances completed "
                   f"{min(done_at) - kill_at:.2f}s after the kill")
        else:
            report(f"takeover not measured: {len(in_flight)} activities were in flight on {killed.name}")

        # Entities: every operation applied exactly once.
        sent: dict[str, int] = defaultdict(int)
        for n in range(INSTANCES):
            sent[counter_key(n)] += OPS_PER_WORKFLOW

        def counters() -> dict[str, int | None]:
            values = {}
            for key in sent:
                meta = clients[2].get_entity(entities.EntityInstanceId("counter", key))
                values[key] = meta.get_state(int) if meta is not None else None
            return values

        def settled_or_over() -> bool:
            values = counters()
            return values == sent or any(v is not None and v > sent[k] for k, v in values.items())

        try:
            wait_until(settled_or_over, timeout=30, interval=0.2, what="counter entities to settle")
        except AssertionError:
            pass
        values = counters()
        if values == sent:
            report(f"counter entities: {dict(sent)} ({sum(sent.values())} operations, each applied once)")
        else:
            failures["counter entities"].append(f"expected {dict(sent)}, have {values}")

        # The paused node's claims lapsed: it must have refused to commit the episodes its
        # worker completed meanwhile (they were already committed by a survivor).
        def refusals() -> list[str]:
            after_pause = paused.log_text()[paused_log_offset:].splitlines()
            return [line for line in after_pause if COMPLETION_DROPPED in line]

        def all_held_refused() -> bool:
            lines = refusals()
            return all(any(iid in line for line in lines) for iid in held)

        try:  # the held completions reached the paused node when it was continued, long ago
            wait_until(all_held_refused, timeout=10, interval=0.2, what="the refused commits")
        except AssertionError:
            pass  # reported below
        dropped = refusals()
        report(f"{paused.name} log after the pause: {len(dropped)} x '{COMPLETION_DROPPED}'")
        others = {n.name: n.log_text().count(COMPLETION_DROPPED) for n in (killed, steady)}
        stale = (run_dir / "sdk.log").read_text(errors="replace").count(
            'details = "no outstanding work item matches')
        report(f"same line on the other nodes: {others}; completions the workers saw refused as "
               f"stale (NOT_FOUND, mostly activities of the paused node): {stale}")
        failures["stale commits"] += [
            f"{paused.name} was frozen {PAUSE_S}s with a {LEASE_SECONDS}s lease while its worker held "
            f"{iid}; its log shows no refused commit ('{COMPLETION_DROPPED}') for it"
            for iid in held if not any(iid in line for line in dropped)]
        if counters() != values:
            failures["counter entities"].append(f"changed after the check: {values} -> {counters()}")

        failures = {k: v for k, v in failures.items() if v}
        if failures:
            suspects = sorted({p.split(":")[0].removesuffix("-child")
                               for v in failures.values() for p in v if p.startswith("mn-")})[:20]
            dumped = dump_histories(stub, suspects, run_dir / "histories")
            raise AssertionError("\n".join(f"{k}: {summarize(v)}" for k, v in failures.items())
                                 + f"\nhistories of {len(dumped)} affected instances in "
                                   f"{run_dir / 'histories'}")
    finally:
        gate.opened.set()
        channel.close()
        for c in clients:
            c.close()
