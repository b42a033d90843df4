"""Large payloads with the real SDK (PROTOCOL.md §1.2): a 16 MiB input, event and output
round-trip when the client and worker raise gRPC's 4 MiB default; a request over the
sidecar's limit is RESOURCE_EXHAUSTED and creates nothing."""

from __future__ import annotations

import json

import grpc
import pytest

from durabletask import client, task, worker
from durabletask.grpc_options import GrpcChannelOptions

from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY, Status

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
BIG = GrpcChannelOptions(max_receive_message_length=64 * MIB, max_send_message_length=128 * MIB,
                         raw_options=list(FAST_RECONNECT.raw_options))


def pay_big(ctx: task.OrchestrationContext, payload: str):
    event = yield ctx.wait_for_external_event("big")
    return {"input": len(payload), "event": len(event), "same": payload == event, "out": payload}


@pytest.fixture
def big_client(sidecar):
    c = client.TaskHubGrpcClient(host_address=sidecar.address, channel_options=BIG)
    yield c
    c.close()


def test_sixteen_mib_input_event_and_output_round_trip(sidecar, big_client, iid):
    w = worker.TaskHubGrpcWorker(host_address=sidecar.address, channel_options=BIG,
                                 resiliency_options=FAST_WORKER_RESILIENCY)
    w.add_orchestrator(pay_big)
    w.start()
    try:
        payload = "x" * (16 * MIB)
        id_ = big_client.schedule_new_orchestration(pay_big, input=payload, instance_id=iid("big"))
        big_client.raise_orchestration_event(id_, "big", data=payload)
        state = big_client.wait_for_orchestration_completion(id_, timeout=90)
        assert state is not None and state.runtime_status == Status.COMPLETED, state
        out = json.loads(state.serialized_output)
        assert (out["input"], out["event"], out["same"]) == (16 * MIB, 16 * MIB, True)
        assert out["out"] == payload
    finally:
        w.stop()


def test_request_over_the_limit_is_resource_exhausted_and_creates_nothing(big_client, hub, iid):
    id_ = iid("too-big")
    with pytest.raises(grpc.RpcError) as e:
        big_client.schedule_new_orchestration(pay_big, input="x" * (70 * MIB), instance_id=id_)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "--max-message-size-mb" in e.value.details()
    assert hub.get_orchestration_state(id_) is None
