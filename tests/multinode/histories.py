"""Reading histories over raw gRPC (StreamInstanceHistory) and the invariants every
history of the failover workload must satisfy, whoever committed its episodes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
from google.protobuf import text_format

import durabletask.internal.orchestrator_service_pb2 as pb

# Events a worker's actions create: each carries a sequence number unique in its execution.
NUMBERED = {"taskScheduled", "timerCreated", "subOrchestrationInstanceCreated", "eventSent",
            "entityOperationSignaled", "entityOperationCalled", "entityLockRequested",
            "entityUnlockSent"}


def read_history(stub, instance_id: str, timeout: float = 30.0) -> list[pb.HistoryEvent]:
    """The instance's history; empty if there is no such instance (the checks say so)."""
    events: list[pb.HistoryEvent] = []
    request = pb.StreamInstanceHistoryRequest(instanceId=instance_id)
    try:
        for chunk in stub.StreamInstanceHistory(request, timeout=timeout):
            events.extend(chunk.events)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return []
    return events


def kind(event: pb.HistoryEvent) -> str:
    return event.WhichOneof("eventType") or "?"


def seconds(event: pb.HistoryEvent) -> float:
    return event.timestamp.seconds + event.timestamp.nanos / 1e9


def violations(instance_id: str, events: list[pb.HistoryEvent]) -> list[str]:
    """Everything wrong with one history, as readable lines (empty = fine)."""
    if not events:
        return [f"{instance_id}: no such instance"]
    problems: list[str] = []
    kinds = Counter(kind(e) for e in events)
    if kinds["executionStarted"] != 1:
        problems.append(f"{kinds['executionStarted']} ExecutionStarted events")
    if kinds["executionCompleted"] != 1:
        problems.append(f"{kinds['executionCompleted']} ExecutionCompleted events")
    elif kind(events[-1]) != "executionCompleted":
        problems.append(f"ExecutionCompleted is not the last event (last: {kind(events[-1])})")

    numbered = Counter(e.eventId for e in events if kind(e) in NUMBERED)
    for event_id, count in numbered.items():
        if count > 1:
            problems.append(f"event id {event_id} used by {count} scheduling events")
    if any(e.eventId < 0 for e in events if kind(e) in NUMBERED):
        problems.append("a scheduling event without an event id")

    def answered(scheduled_kind: str, answers: dict[str, str]) -> None:
        scheduled = [e.eventId for e in events if kind(e) == scheduled_kind]
        replies = Counter(getattr(getattr(e, k), field) for e in events
                          for k, field in answers.items() if kind(e) == k)
        for event_id in scheduled:
            if replies[event_id] != 1:
                problems.append(f"{scheduled_kind} {event_id} answered {replies[event_id]} times")
        for event_id, count in replies.items():
            if event_id not in scheduled:
                problems.append(f"{count} answer(s) to {scheduled_kind} {event_id}, which was never scheduled")

    answered("taskScheduled", {"taskCompleted": "taskScheduledId", "taskFailed": "taskScheduledId"})
    answered("timerCreated", {"timerFired": "timerId"})
    answered("subOrchestrationInstanceCreated", {
        "subOrchestrationInstanceCompleted": "taskScheduledId",
        "subOrchestrationInstanceFailed": "taskScheduledId"})

    calls = [e.entityOperationCalled.requestId for e in events if kind(e) == "entityOperationCalled"]
    call_replies = Counter(
        e.entityOperationCompleted.requestId if kind(e) == "entityOperationCompleted"
        else e.entityOperationFailed.requestId
        for e in events if kind(e) in ("entityOperationCompleted", "entityOperationFailed"))
    for request_id in calls:
        if call_replies[request_id] != 1:
            problems.append(f"entity call {request_id} answered {call_replies[request_id]} times")
    if sum(call_replies.values()) != len(calls):
        problems.append(f"{sum(call_replies.values())} entity responses for {len(calls)} calls")
    return [f"{instance_id}: {p}" for p in problems]


def dump_histories(stub, instance_ids: list[str], directory: Path) -> list[Path]:
    """Writes each instance's history, and its child's, as protobuf text, for diagnosis."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for iid in instance_ids:
        for target in (iid, f"{iid}-child"):
            try:
                events = read_history(stub, target)
            except Exception as e:  # a diagnosis aid must not hide the real failure
                events, error = [], repr(e)
            else:
                error = None
            path = directory / f"{target}.txt"
            with open(path, "w") as f:
                if error:
                    f.write(f"# could not read: {error}\n")
                for e in events:
                    f.write(f"# {kind(e)} eventId={e.eventId}\n")
                    f.write(text_format.MessageToString(e))
                    f.write("\n")
            written.append(path)
    return written
