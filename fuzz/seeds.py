#!/usr/bin/env python3
"""Writes a few well-formed starting inputs per target into fuzz/seeds/<target>/ (read by
run.sh as a second, read-only corpus), so the fuzzer starts from valid requests and
histories instead of discovering the protobuf and route layout byte by byte. Protobuf is
encoded by hand (varints and length-delimited fields): no protobuf package needed."""

import os
import struct


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, value):
    """Field `num`: an int (varint) or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(field(n, v) for n, v in fields)


def sv(s):  # google.protobuf.StringValue
    return msg((1, s))


def ts(seconds, nanos=0):
    return msg((1, seconds), (2, nanos))


def part(b):
    return struct.pack("<H", len(b)) + b


def call(method, body):
    return bytes([method]) + part(body)


NOW = 1_767_225_600


def write(target, name, data):
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- grpc_requests: method indexes follow grpc::fuzzing::METHODS ----
START, GET, REWIND, RESTART, WAIT_START, WAIT_DONE, RAISE, TERMINATE, SUSPEND, RESUME = range(10)
QUERY, LIST_IDS, PURGE, DONE_ACT, DONE_ORCH, DONE_ENT, HISTORY = range(10, 17)
SIGNAL, GET_ENTITY, QUERY_ENTITIES, CLEAN = range(19, 23)

start = msg((1, "a"), (2, "orch"), (4, sv('"in"')), (8, msg((1, "k"), (2, "v"))))
write("grpc_requests", "start_get", call(START, start) + call(GET, msg((1, "a"), (2, 1))))
write("grpc_requests", "start_raise_terminate",
      call(START, start) + call(RAISE, msg((1, "a"), (2, "ev"), (3, sv("1"))))
      + call(SUSPEND, msg((1, "a"))) + call(RESUME, msg((1, "a")))
      + call(TERMINATE, msg((1, "a"), (2, sv('"bye"')), (3, 1))) + call(HISTORY, msg((1, "a"))))
write("grpc_requests", "scheduled_start",
      call(START, msg((1, "s"), (2, "orch"), (5, ts(NOW + 3600)))) + call(WAIT_START, msg((1, "s"))))
write("grpc_requests", "query",
      call(START, start) + call(QUERY, msg((1, msg((1, 0), (2, ts(NOW)), (3, ts(NOW + 10)),
                                                  (5, 1), (6, sv("token")), (7, sv("a")), (8, 1))))))
write("grpc_requests", "list_purge",
      call(LIST_IDS, msg((1, 1), (2, ts(NOW)), (4, 10), (5, sv("key"))))
      + call(PURGE, msg((2, msg((1, ts(NOW)), (3, 1), (4, msg((1, 5))))), (3, 1)))
      + call(PURGE, msg((1, "a"))) + call(PURGE, msg((4, msg((1, "a"), (1, "b"))))))
write("grpc_requests", "entities",
      call(SIGNAL, msg((1, "@counter@k"), (2, "add"), (3, sv("1")), (4, "r1"), (5, ts(NOW))))
      + call(GET_ENTITY, msg((1, "@counter@k"), (2, 1)))
      + call(QUERY_ENTITIES, msg((1, msg((1, sv("@counter")), (4, 1), (5, 1), (6, msg((1, 2))),
                                        (7, sv("@counter@k"))))))
      + call(CLEAN, msg((1, sv("t")), (2, 1), (3, 1))))
write("grpc_requests", "complete",
      call(DONE_ORCH, msg((1, "a"), (2, msg((1, 0), (6, msg((1, 1), (2, sv("1")))))), (4, "tok")))
      + call(DONE_ACT, msg((1, "a"), (2, 1), (4, sv("r")), (6, "tok")))
      + call(DONE_ENT, msg((3, sv("s")), (5, "tok"))))

# ---- engine: [flags][status][OrchestratorRequest][OrchestratorResponse][EntityBatchResult] ----
def event(eid, kind_field, body):
    return msg((1, eid), (2, ts(NOW)), (kind_field, body))


EXEC_STARTED, TASK_SCHEDULED, TASK_COMPLETED, TIMER_CREATED, TIMER_FIRED = 3, 6, 7, 12, 13
ORCH_STARTED, EVENT_RAISED = 14, 16
past = [event(-1, ORCH_STARTED, b""), event(0, TASK_SCHEDULED, msg((1, "act")))]
new = [event(-1, ORCH_STARTED, b""), event(-1, TASK_COMPLETED, msg((1, 0), (2, sv("1")))),
       event(-1, EVENT_RAISED, msg((1, "ev"), (2, sv("2"))))]
request = msg((1, "i"), (2, sv("e1")), *[(3, e) for e in past], *[(4, e) for e in new])
schedule = msg((1, 1), (2, msg((1, "act2"), (3, sv("x")))))
timer = msg((1, 2), (4, msg((1, ts(NOW + 60)))))
complete = msg((1, 3), (6, msg((1, 1), (2, sv('"done"')))))
response = msg((1, "i"), (2, schedule), (2, timer), (2, complete), (3, sv("status")))
entity_result = msg((1, msg((1, msg((1, sv("r")))))), (3, sv("state")))
write("engine", "episode", bytes([3, 0]) + part(request) + part(response) + part(entity_result))
continue_as_new = msg((1, 4), (6, msg((1, 4), (2, sv("next")), (5, event(-1, EVENT_RAISED, msg((1, "ev")))))))
write("engine", "continue_as_new", bytes([1, 0]) + part(request) + part(msg((2, continue_as_new))) + part(b""))
write("engine", "entity_locked", bytes([0x1B, 0]) + part(request) + part(b"") + part(entity_result))

# ---- http_requests: [route][flags][segment][segment][query][header][body] ----
def request_http(route, flags, seg1=b"", seg2=b"", query=b"", header=b"", body=b""):
    return bytes([route, flags]) + b"".join(part(p) for p in (seg1, seg2, query, header, body))


# Route indexes follow http::ROUTES.
write("http_requests", "start_status",
      request_http(1, 1, b"orch", b"a", b"timeout=0", b"", b'{"x":1}')
      + request_http(5, 0, b"a", b"", b"showHistory=true&showHistoryOutput=true&showInput=true"))
write("http_requests", "list",
      request_http(2, 2, b"", b"", b"runtimeStatus=Running,Pending&createdTimeFrom=2026-01-01T00:00:00Z&top=5&instanceIdPrefix=a",
                   b"token"))
write("http_requests", "counts", request_http(3, 0, b"", b"", b"runtimeStatus=Completed"))
write("http_requests", "purge_where",
      request_http(4, 0, b"", b"", b"createdTimeFrom=2026-01-01T00:00:00Z&runtimeStatus=Terminated"))
write("http_requests", "raise_terminate",
      request_http(0, 1, b"orch", b"", b"", b"", b'"in"')
      + request_http(7, 1, b"a", b"ev", b"", b"", b"[1,2]")
      + request_http(8, 0, b"a", b"", b"reason=stop")
      + request_http(9, 0, b"a", b"", b"reason=x") + request_http(10, 0, b"a", b"", b"reason=y"))
write("http_requests", "entities",
      request_http(16, 1, b"counter", b"k", b"op=add", b"", b"5")
      + request_http(15, 0, b"counter", b"k", b"")
      + request_http(13, 2, b"", b"", b"fetchState=true&top=2&lastOperationTimeFrom=2026-01-01T00:00:00Z", b"t")
      + request_http(14, 0, b"counter", b"", b"fetchState=true"))
print("seeds written")
