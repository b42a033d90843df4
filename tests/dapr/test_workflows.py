"""A real Dapr Workflow SDK (durabletask-dapr) against the sidecar: workflows through the
SDK's client and worker, and the Dapr-named RPCs through the SDK's generated stub."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask.client import OrchestrationStatus as Status

WAIT = 30


def completed(client, instance_id: str):
    state = client.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None, f"{instance_id} not found"
    return state


def output(state):
    assert state.runtime_status == Status.COMPLETED, (
        f"{state.instance_id}: {state.runtime_status.name}, failure={state.failure_details}")
    return json.loads(state.serialized_output)


def history(stub, instance_id: str) -> list:
    return list(stub.GetInstanceHistory(pb.GetInstanceHistoryRequest(instanceId=instance_id)).events)


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def test_activity_sequence_with_task_execution_ids(client, stub, iid):
    from workflows import sequence

    id_ = client.schedule_new_orchestration(sequence, input=["a", "b", "c"], instance_id=iid())
    results = output(completed(client, id_))
    assert [r["greeting"] for r in results] == ["Hello a", "Hello b", "Hello c"]
    execution_ids = [r["task_execution_id"] for r in results]
    assert all(is_guid(x) for x in execution_ids), execution_ids
    assert len(set(execution_ids)) == 3

    # GetInstanceHistory (Dapr-named RPC): the fork's TaskScheduledEvent.taskExecutionId.
    events = history(stub, id_)
    scheduled = [e.taskScheduled for e in events if e.HasField("taskScheduled")]
    assert [t.name for t in scheduled] == ["greet"] * 3
    assert [t.taskExecutionId for t in scheduled] == execution_ids
    assert events[-1].HasField("executionCompleted")


def test_fan_out_gives_each_activity_its_own_execution_id(client, iid):
    from workflows import fan_out

    id_ = client.schedule_new_orchestration(fan_out, input=5, instance_id=iid())
    ids = output(completed(client, id_))
    assert len(ids) == 5 and len(set(ids)) == 5, ids


def test_retries_keep_the_task_execution_id(client, iid):
    from workflows import retrying

    id_ = client.schedule_new_orchestration(retrying, input=iid("key"), instance_id=iid())
    attempts = output(completed(client, id_))
    assert len(attempts) == 3
    assert len(set(attempts)) == 1 and is_guid(attempts[0]), attempts


def test_sub_orchestration(client, iid):
    from workflows import parent

    id_ = client.schedule_new_orchestration(parent, input="kid", instance_id=iid())
    results = output(completed(client, id_))
    assert [r["greeting"] for r in results] == ["Hello kid"]


def test_external_event(client, iid):
    from workflows import approval

    id_ = client.schedule_new_orchestration(approval, instance_id=iid())
    client.wait_for_orchestration_start(id_, timeout=WAIT)
    client.raise_orchestration_event(id_, "approval", data=True)
    assert output(completed(client, id_)) == {"approved": True}


def test_suspend_buffers_events_until_resumed(client, iid):
    from workflows import approval

    id_ = client.schedule_new_orchestration(approval, instance_id=iid())
    client.wait_for_orchestration_start(id_, timeout=WAIT)
    client.suspend_orchestration(id_)
    client.raise_orchestration_event(id_, "approval", data="later")
    deadline = time.monotonic() + 10
    while client.get_orchestration_state(id_).runtime_status != Status.SUSPENDED:
        assert time.monotonic() < deadline, "never suspended"
        time.sleep(0.05)
    time.sleep(0.3)
    assert client.get_orchestration_state(id_).runtime_status == Status.SUSPENDED
    client.resume_orchestration(id_)
    assert output(completed(client, id_)) == {"approved": "later"}


def test_timer(client, iid):
    from workflows import nap

    started = time.monotonic()
    id_ = client.schedule_new_orchestration(nap, input=1.0, instance_id=iid())
    slept = output(completed(client, id_))
    assert slept >= 1.0
    assert time.monotonic() - started >= 1.0


def test_terminate(client, iid):
    from workflows import wait_forever

    id_ = client.schedule_new_orchestration(wait_forever, instance_id=iid())
    client.wait_for_orchestration_start(id_, timeout=WAIT)
    client.terminate_orchestration(id_, output="stopped")
    state = completed(client, id_)
    assert state.runtime_status == Status.TERMINATED
    assert json.loads(state.serialized_output) == "stopped"


def test_purge(client, stub, iid):
    from workflows import sequence

    id_ = client.schedule_new_orchestration(sequence, input=["p"], instance_id=iid())
    output(completed(client, id_))
    client.purge_orchestration(id_)
    assert client.get_orchestration_state(id_) is None
    with pytest.raises(grpc.RpcError) as err:
        history(stub, id_)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_purge_with_force(client, stub, iid):
    """The fork's PurgeInstancesRequest.force: live instances are refused, not purged."""
    from workflows import wait_forever

    id_ = client.schedule_new_orchestration(wait_forever, instance_id=iid())
    client.wait_for_orchestration_start(id_, timeout=WAIT)
    with pytest.raises(grpc.RpcError) as err:
        stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=id_, force=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "terminate it first" in err.value.details()
    client.terminate_orchestration(id_)
    completed(client, id_)
    res = stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=id_, force=True))
    assert res.deletedInstanceCount == 1
    assert client.get_orchestration_state(id_) is None


def test_list_instance_ids_pages_through_every_status(client, stub, iid):
    from workflows import sequence, wait_forever

    done = client.schedule_new_orchestration(sequence, input=["x"], instance_id=iid("done"))
    output(completed(client, done))
    live = client.schedule_new_orchestration(wait_forever, instance_id=iid("live"))
    client.wait_for_orchestration_start(live, timeout=WAIT)

    everything = stub.ListInstanceIDs(pb.ListInstanceIDsRequest())
    assert not everything.HasField("continuationToken")
    assert {done, live} <= set(everything.instanceIds)

    paged, token, pages = [], None, 0
    while True:
        req = pb.ListInstanceIDsRequest(pageSize=2)
        if token is not None:
            req.continuationToken = token
        page = stub.ListInstanceIDs(req)
        pages += 1
        assert len(page.instanceIds) <= 2
        paged.extend(page.instanceIds)
        if not page.HasField("continuationToken"):
            break
        token = page.continuationToken
    assert paged == list(everything.instanceIds)
    assert pages == max(1, (len(paged) + 1) // 2)

    client.terminate_orchestration(live)
    completed(client, live)


def test_rerun_workflow_from_event_is_unimplemented(client, stub, iid):
    from workflows import sequence

    id_ = client.schedule_new_orchestration(sequence, input=["r"], instance_id=iid())
    output(completed(client, id_))
    with pytest.raises(grpc.RpcError) as err:
        stub.RerunWorkflowFromEvent(pb.RerunWorkflowFromEventRequest(sourceInstanceID=id_, eventID=2))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "RerunWorkflowFromEvent" in err.value.details()


def test_patching_fails_the_workflow_with_a_reason(client, iid):
    """is_patched needs OrchestratorStartedEvent.version in history, which is not stored."""
    from workflows import patched

    id_ = client.schedule_new_orchestration(patched, instance_id=iid())
    state = completed(client, id_)
    assert state.runtime_status == Status.FAILED
    assert state.failure_details.error_type == "UnsupportedDaprFeature"
    assert "is_patched" in state.failure_details.message
