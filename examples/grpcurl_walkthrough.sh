#!/usr/bin/env bash
# A tour of the sidecar's client API with grpcurl, against a running sidecar:
#
#   cargo run --release &                        # or: docker run -p 4001:4001 durabletask-sidecar
#   go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
#   examples/grpcurl_walkthrough.sh              # ADDR=host:port to point elsewhere
#
# No worker is connected, so nothing ever *runs* the orchestration: it is created, sits
# PENDING, receives an event, and is terminated and purged by the client API alone.
# grpcurl learns the schema from the server's reflection service; JSON field names are the
# proto's lowerCamelCase names, and StringValue wrappers (input, output, ...) are plain
# JSON strings whose content is itself JSON, hence "\"hi\"".
set -euo pipefail

ADDR="${ADDR:-localhost:4001}"
SVC="TaskHubSidecarService"
ID="walkthrough-$(date +%s)-$RANDOM"

if ! command -v grpcurl >/dev/null 2>&1; then
    echo "grpcurl not found. Install it with:" >&2
    echo "  go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4" >&2
    echo "and put \$(go env GOPATH)/bin on your PATH." >&2
    exit 1
fi

step() { printf '\n=== %s\n' "$*"; }
note() { printf -- '--- %s\n' "$*"; }

# rpc METHOD JSON [grpcurl flags...]: echo the command, then run it.
rpc() {
    local method="$1" body="$2"
    shift 2
    printf "\$ grpcurl -plaintext %s-d '%s' %s %s/%s\n" "${*:+$* }" "$body" "$ADDR" "$SVC" "$method"
    grpcurl -plaintext "$@" -d "$body" "$ADDR" "$SVC/$method"
}

step "1. Services exposed (via server reflection)"
echo "\$ grpcurl -plaintext $ADDR list"
grpcurl -plaintext "$ADDR" list

step "2. Hello (what SDK workers call before opening their work-item stream)"
echo "\$ grpcurl -plaintext $ADDR $SVC/Hello"
grpcurl -plaintext "$ADDR" "$SVC/Hello"

step "3. Standard gRPC health check"
echo "\$ grpcurl -plaintext -d '{\"service\":\"$SVC\"}' $ADDR grpc.health.v1.Health/Check"
grpcurl -plaintext -d "{\"service\":\"$SVC\"}" "$ADDR" grpc.health.v1.Health/Check

step "4. StartInstance: schedule orchestration 'Greeting' as $ID"
rpc StartInstance "{\"instanceId\":\"$ID\",\"name\":\"Greeting\",\"input\":\"\\\"hi\\\"\",\"tags\":{\"source\":\"grpcurl\"}}"

step "5. GetInstance (with inputs and outputs)"
rpc GetInstance "{\"instanceId\":\"$ID\",\"getInputsAndOutputs\":true}"
note "ORCHESTRATION_STATUS_PENDING: no worker has picked up the start yet (none is connected)."

step "6. RaiseEvent 'Approval' (accepted while PENDING; delivered with the first episode)"
rpc RaiseEvent "{\"instanceId\":\"$ID\",\"name\":\"Approval\",\"input\":\"true\"}"

step "7. TerminateInstance with a reason"
rpc TerminateInstance "{\"instanceId\":\"$ID\",\"output\":\"\\\"stopped by the walkthrough\\\"\",\"recursive\":true}"

step "8. WaitForInstanceCompletion (long poll, 5 s client deadline)"
if rpc WaitForInstanceCompletion "{\"instanceId\":\"$ID\",\"getInputsAndOutputs\":true}" -max-time 5; then
    terminal=1
    note "The start was never delivered to a worker, so the sidecar terminated the instance itself:"
    note "status TERMINATED, output = the reason."
else
    terminal=0
    note "DeadlineExceeded: still PENDING. The termination is queued behind the start and takes"
    note "effect in the first episode a worker runs (connect one, e.g. examples/python)."
fi

step "9. PurgeInstances by id (only terminal instances are purged)"
rpc PurgeInstances "{\"instanceId\":\"$ID\"}" -emit-defaults
if [ "$terminal" = 1 ]; then
    note "deletedInstanceCount 1: the instance, its history and its inbox are gone."
else
    note "deletedInstanceCount 0: a PENDING instance is not terminal, so it is kept."
fi

step "10. GetInstance after the purge"
rpc GetInstance "{\"instanceId\":\"$ID\"}"
if [ "$terminal" = 1 ]; then
    note "{} means exists=false (grpcurl omits default values)."
else
    note "Still there, PENDING, waiting for a worker; it would finish TERMINATED."
fi

printf '\nDone. Other RPCs: grpcurl -plaintext %s describe %s\n' "$ADDR" "$SVC"
