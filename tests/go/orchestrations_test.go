package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microsoft/durabletask-go/api"
)

func TestActivitySequence(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "Sequence", newID(t, "seq"), api.WithInput([]string{"Tokyo", "Seattle", "London"}))

	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, []string{"Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"})
	requireJSON(t, "input", md.SerializedInput, []string{"Tokyo", "Seattle", "London"})
	if md.InstanceID != id || md.Name != "Sequence" {
		t.Fatalf("metadata id/name = %q/%q, want %q/Sequence", md.InstanceID, md.Name, id)
	}
	if md.CreatedAt.IsZero() || md.LastUpdatedAt.Before(md.CreatedAt) {
		t.Fatalf("timestamps: created %v, last updated %v", md.CreatedAt, md.LastUpdatedAt)
	}
	if d := time.Since(md.CreatedAt); d < 0 || d > time.Minute {
		t.Fatalf("createdAt %v is not close to now (%v)", md.CreatedAt, d)
	}
	if fd, err := rawFailureDetails(id); err != nil || fd != nil {
		t.Fatalf("completed instance: failureDetails = %+v (err %v), want absent", fd, err)
	}
}

func TestFanOutFanIn(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "FanOutFanIn", newID(t, "fan"), api.WithInput(10))

	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, 385) // 1²+…+10²
	if n := callCount(string(id)); n != 10 {
		t.Fatalf("Square ran %d times for %s, want exactly 10", n, id)
	}
}

// Many instances at once through one worker stream.
func TestManyConcurrentInstances(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 90*time.Second)
	const n = 25
	ids := make([]api.InstanceID, n)
	for i := range ids {
		ids[i] = schedule(t, ctx, "Sequence", newID(t, fmt.Sprint(i)), api.WithInput([]string{fmt.Sprint("a", i), fmt.Sprint("b", i)}))
	}
	for i, id := range ids {
		md := waitDone(t, ctx, id)
		requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
		requireJSON(t, "output", md.SerializedOutput, []string{fmt.Sprintf("Hello, a%d!", i), fmt.Sprintf("Hello, b%d!", i)})
	}
}

func TestSubOrchestration(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "Parent", newID(t, "parent"))

	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, []string{"child:Hello, Tokyo!", "child:Hello, Paris!"})

	// explicit child id
	child, err := hub.FetchOrchestrationMetadata(ctx, id+"-child")
	if err != nil {
		t.Fatalf("explicit child %s: %v", id+"-child", err)
	}
	requireStatus(t, child, api.RUNTIME_STATUS_COMPLETED)
	if child.Name != "Child" {
		t.Fatalf("child name %q, want Child", child.Name)
	}
	requireJSON(t, "child input", child.SerializedInput, "Tokyo")
	requireJSON(t, "child output", child.SerializedOutput, "child:Hello, Tokyo!")

	// The Go SDK sends an empty instanceId for the second child; the sidecar must generate
	// one (PROTOCOL §2.3: "<parentId>:<actionId as %04x>"). The second child is action id 1.
	defaultID := api.InstanceID(fmt.Sprintf("%s:%04x", id, 1))
	child2, err := hub.FetchOrchestrationMetadata(ctx, defaultID)
	if err != nil {
		t.Fatalf("child with sidecar-generated id %s: %v", defaultID, err)
	}
	requireStatus(t, child2, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "default-id child output", child2.SerializedOutput, "child:Hello, Paris!")
}

func TestSubOrchestrationFailure(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "ParentOfFailingChild", newID(t, "parent"))

	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "caught: task failed with an error: child went boom")

	child := waitDone(t, ctx, id+"-child")
	requireStatus(t, child, api.RUNTIME_STATUS_FAILED)
	fd, err := rawFailureDetails(id + "-child")
	if err != nil || fd == nil {
		t.Fatalf("failed child: failureDetails = %+v, err %v", fd, err)
	}
	if fd.ErrorType != "*e2e.orchestrationError" || fd.ErrorMessage != "child went boom" {
		t.Fatalf("child failureDetails = %s / %q, want *e2e.orchestrationError / \"child went boom\"", fd.ErrorType, fd.ErrorMessage)
	}
}

func TestExternalEvent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "ev"))
	waitStarted(t, ctx, id)

	// still waiting
	time.Sleep(300 * time.Millisecond)
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_RUNNING)

	// event names are case-insensitive in the SDK; the sidecar must keep the name as sent
	if err := hub.RaiseEvent(ctx, id, "approval", api.WithEventPayload(map[string]any{"approved": true, "by": "go"})); err != nil {
		t.Fatalf("RaiseEvent: %v", err)
	}
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, map[string]any{"approved": true, "by": "go"})
}

// Events raised right after scheduling (before the first episode ran) are delivered, in order.
func TestExternalEventsBeforeStart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "ThreeEvents", newID(t, "ev3"))
	for i := 1; i <= 3; i++ {
		if err := hub.RaiseEvent(ctx, id, "item", api.WithEventPayload(i*10)); err != nil {
			t.Fatalf("RaiseEvent %d: %v", i, err)
		}
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, []int{10, 20, 30})
}

func TestExternalEventTimeout(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	start := time.Now()
	id := schedule(t, ctx, "EventWithTimeout", newID(t, "evto"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "timed out")
	if el := time.Since(start); el < time.Second {
		t.Fatalf("1 s event timeout completed after %v", el)
	}
}

func TestRaiseEventUnknownInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	err := hub.RaiseEvent(ctx, newID(t, "nobody"), "x", api.WithEventPayload(1))
	if err == nil {
		t.Fatal("RaiseEvent to an unknown instance succeeded; PROTOCOL §3.4 decides NOT_FOUND")
	}
	if c := grpcCode(err); c.String() != "NotFound" {
		t.Fatalf("RaiseEvent to unknown instance: code %v (%v), want NotFound", c, err)
	}
}

func TestDurableTimer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	start := time.Now()
	id := schedule(t, ctx, "Timer", newID(t, "timer"))
	md := waitDone(t, ctx, id)
	elapsed := time.Since(start)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	var orchMs int64
	if _, err := fmt.Sscan(md.SerializedOutput, &orchMs); err != nil {
		t.Fatalf("output %q: %v", md.SerializedOutput, err)
	}
	// The orchestration clock (OrchestratorStarted timestamps) must advance by at least the
	// timer delay: the timer must not fire early.
	if orchMs < 2000 {
		t.Fatalf("orchestration clock advanced %d ms across a 2 s timer (fired early?)", orchMs)
	}
	if elapsed < 2*time.Second {
		t.Fatalf("2 s timer orchestration completed after %v", elapsed)
	}
	if elapsed > 15*time.Second {
		t.Fatalf("2 s timer orchestration took %v", elapsed)
	}
}

func TestScheduledStart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	startAt := time.Now().Add(2 * time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "later"), api.WithInput("abc"), api.WithStartTime(startAt))

	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_PENDING)
	time.Sleep(time.Second)
	md, err = hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_PENDING)

	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "ABC")
	if now := time.Now(); now.Before(startAt) {
		t.Fatalf("completed at %v, before the scheduled start %v", now, startAt)
	}
}

func TestContinueAsNew(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "Counter", newID(t, "can"), api.WithInput(0))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, 5)
	// the stored input is the last continue-as-new input
	requireJSON(t, "input", md.SerializedInput, 5)
}

// Continue-as-new with carry-over events (WithKeepUnprocessedEvents): three events raised at
// once, one consumed per generation.
func TestContinueAsNewCarryoverEvents(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "EventCounter", newID(t, "cancarry"), api.WithInput(map[string]int{"gen": 0, "sum": 0}))
	waitStarted(t, ctx, id)
	for _, v := range []int{1, 10, 100} {
		if err := hub.RaiseEvent(ctx, id, "add", api.WithEventPayload(v)); err != nil {
			t.Fatalf("RaiseEvent: %v", err)
		}
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, map[string]int{"gen": 3, "sum": 111})
}

func TestCustomStatus(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "CustomStatus", newID(t, "cs"))
	md := pollUntil(t, ctx, id, "custom status step 1", func(m *api.OrchestrationMetadata) bool {
		return m.SerializedCustomStatus != ""
	})
	if md.SerializedCustomStatus != "step 1: waiting" {
		t.Fatalf("custom status mid-run = %q, want %q", md.SerializedCustomStatus, "step 1: waiting")
	}
	requireStatus(t, md, api.RUNTIME_STATUS_RUNNING)

	if err := hub.RaiseEvent(ctx, id, "continue", api.WithEventPayload("x")); err != nil {
		t.Fatal(err)
	}
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	if want := `{"step":2,"got":"x"}`; md.SerializedCustomStatus != want {
		t.Fatalf("final custom status = %q, want %q", md.SerializedCustomStatus, want)
	}
}

// The Go worker sends customStatus "" when the orchestrator never set one: report it absent.
func TestNoCustomStatusIsAbsent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "nocs"), api.WithInput("x"))
	waitDone(t, ctx, id)
	resp, err := rawGetInstance(ctx, id, true)
	if err != nil || !resp.Exists {
		t.Fatalf("GetInstance: %+v, %v", resp, err)
	}
	if cs := resp.OrchestrationState.CustomStatus; cs != nil {
		t.Fatalf("customStatus = %q, want absent (PROTOCOL §3.2: empty string is reported absent)", *cs)
	}
}

func TestActivityFailureFailsOrchestration(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "FailViaActivity", newID(t, "fail"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_FAILED)
	if md.SerializedOutput != "" {
		t.Fatalf("failed orchestration output = %q, want none", md.SerializedOutput)
	}

	// The Go client (v0.6.0) never fills OrchestrationMetadata.FailureDetails, so read them
	// from GetInstance directly.
	fd, err := rawFailureDetails(id)
	if err != nil {
		t.Fatal(err)
	}
	if fd == nil {
		t.Fatal("FAILED instance has no failureDetails")
	}
	if fd.ErrorType != "*e2e.orchestrationError" {
		t.Fatalf("errorType = %q, want *e2e.orchestrationError", fd.ErrorType)
	}
	// The activity's error travelled through TaskFailed.failureDetails into the orchestrator.
	if want := "orchestrator gave up: task failed with an error: kaboom from activity"; fd.ErrorMessage != want {
		t.Fatalf("errorMessage = %q, want %q", fd.ErrorMessage, want)
	}

	// failureDetails are returned even without payloads (PROTOCOL §3.2 SHOULD)
	resp, err := rawGetInstance(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.OrchestrationState == nil || resp.OrchestrationState.FailureDetails == nil {
		t.Fatalf("GetInstance(getInputsAndOutputs=false) of a FAILED instance has no failureDetails: %+v", resp.OrchestrationState)
	}
}

func TestOrchestratorErrorFailureDetails(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "FailsDirectly", newID(t, "faild"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_FAILED)
	fd, err := rawFailureDetails(id)
	if err != nil || fd == nil {
		t.Fatalf("failureDetails = %+v, err %v", fd, err)
	}
	if fd.ErrorType != "*e2e.orchestrationError" || fd.ErrorMessage != "failed directly" {
		t.Fatalf("failureDetails = %q / %q", fd.ErrorType, fd.ErrorMessage)
	}
}

func TestActivityFailureCaught(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "CatchActivityFailure", newID(t, "catch"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, []string{"task failed with an error: recoverable failure", "Hello, compensation!"})
}

func TestUnknownActivity(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "CallUnknownActivity", newID(t, "noact"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "task failed with an error: no task activity named 'NoSuchActivity' was registered")
}

func TestUnknownOrchestrator(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "NoSuchOrchestrator", newID(t, "noorch"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_FAILED)
	fd, err := rawFailureDetails(id)
	if err != nil || fd == nil {
		t.Fatalf("failureDetails = %+v, err %v", fd, err)
	}
	if !strings.Contains(fd.ErrorMessage, "orchestrator named 'NoSuchOrchestrator' is not registered") {
		t.Fatalf("errorMessage = %q", fd.ErrorMessage)
	}
}

func TestActivityRetryPolicy(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "RetryActivity", newID(t, "retry"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "ok after 3 attempts")
	if n := callCount(string(id)); n != 3 {
		t.Fatalf("Flaky ran %d times, want 3", n)
	}
}

// Falsy JSON values round-trip through orchestration input/output and activity input/result.
func TestFalsyPayloads(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	for i, v := range []any{0, "", false, []int{}, map[string]any{}} {
		id := schedule(t, ctx, "EchoOrchestrator", newID(t, fmt.Sprint(i)), api.WithInput(v))
		md := waitDone(t, ctx, id)
		requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
		requireJSON(t, fmt.Sprintf("output for %#v", v), md.SerializedOutput, v)
		requireJSON(t, fmt.Sprintf("input for %#v", v), md.SerializedInput, v)
	}
}

func TestGetUnknownInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	_, err := hub.FetchOrchestrationMetadata(ctx, newID(t, "ghost"))
	if !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("FetchOrchestrationMetadata(unknown) = %v, want ErrInstanceNotFound", err)
	}
	// PROTOCOL §3.3: waiting on an unknown instance answers exists=false at once.
	wctx := testCtx(t, 5*time.Second)
	_, err = hub.WaitForOrchestrationCompletion(wctx, newID(t, "ghost2"))
	if !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("WaitForOrchestrationCompletion(unknown) = %v, want ErrInstanceNotFound", err)
	}
}

func TestDuplicateStartWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "dup"))
	waitStarted(t, ctx, id)
	_, err := hub.ScheduleNewOrchestration(ctx, "WaitForApproval", api.WithInstanceID(id))
	if err == nil {
		t.Fatal("second StartInstance with the id of a running instance succeeded")
	}
	if c := grpcCode(err); c.String() != "AlreadyExists" {
		t.Fatalf("duplicate StartInstance: code %v (%v), want AlreadyExists", c, err)
	}
	if err := hub.TerminateOrchestration(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitDone(t, ctx, id)
}

// StartInstance with the id of a completed instance and no reuse policy replaces it
// (PROTOCOL §3.1 row 1).
func TestReuseIDOfCompletedInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "reuse"), api.WithInput("first"))
	md := waitDone(t, ctx, id)
	requireJSON(t, "first output", md.SerializedOutput, "FIRST")

	schedule(t, ctx, "Quick", id, api.WithInput("second"))
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "second output", md.SerializedOutput, "SECOND")
	requireJSON(t, "second input", md.SerializedInput, "second")
}

// A completion that also schedules activities (fire and forget); actions arrive in random order.
func TestFireAndForgetActivity(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	var ids []api.InstanceID
	for i := 0; i < 6; i++ {
		ids = append(ids, schedule(t, ctx, "FireAndForget", newID(t, fmt.Sprint(i))))
	}
	for _, id := range ids {
		md := waitDone(t, ctx, id)
		requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
		requireJSON(t, "output", md.SerializedOutput, "done")
	}
}

// The event wins over the timeout; the timeout timer fires later for the completed instance
// and must not change it.
func TestEventBeatsTimeoutThenTimerFires(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "EventOrTimeout", newID(t, "race"))
	waitStarted(t, ctx, id)
	if err := hub.RaiseEvent(ctx, id, "e", api.WithEventPayload("event first")); err != nil {
		t.Fatal(err)
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "event first")
	completedAt := md.LastUpdatedAt

	time.Sleep(3500 * time.Millisecond) // the 3 s timer has fired by now
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output after the timer fired", md.SerializedOutput, "event first")
	if !md.LastUpdatedAt.Equal(completedAt) {
		t.Fatalf("completed instance was updated again after its timer fired: %v -> %v", completedAt, md.LastUpdatedAt)
	}
}

// A timer of an old execution must not reach the execution that continued-as-new
// (PROTOCOL §4.4.6 step 3).
func TestContinueAsNewDropsStaleTimer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "StaleTimer", newID(t, "stale"), api.WithInput(0))
	start := time.Now()
	waitStarted(t, ctx, id)
	if err := hub.RaiseEvent(ctx, id, "e", api.WithEventPayload("first")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ctx, id, "generation 1", func(m *api.OrchestrationMetadata) bool {
		return m.SerializedCustomStatus == "gen 1 waiting" || m.IsComplete()
	})
	// wait until the generation-0 timer (2 s) has fired, then send generation 1 its event
	if d := 3500*time.Millisecond - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	if err := hub.RaiseEvent(ctx, id, "e", api.WithEventPayload("second")); err != nil {
		t.Fatal(err)
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "gen 1 got second")
}

// Terminating an instance whose start is scheduled in the future (its ExecutionStarted was
// never delivered): the sidecar terminates it itself (PROTOCOL §3.5).
func TestTerminatePendingScheduledInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "pendterm"), api.WithInput("never"), api.WithStartTime(time.Now().Add(time.Hour)))
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_PENDING)
	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("cancelled before start")); err != nil {
		t.Fatal(err)
	}
	md = waitDone(t, testCtx(t, 10*time.Second), id)
	requireStatus(t, md, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "output", md.SerializedOutput, "cancelled before start")
}

// Payloads above gRPC's default 4 MiB message limit: the 2.5 MiB input appears in
// ExecutionStarted, TaskScheduled and TaskCompleted of the replayed history (> 7 MiB work item).
func TestLargePayload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 90*time.Second)
	big := strings.Repeat("0123456789abcdef", 160*1024) // 2.5 MiB
	id := schedule(t, ctx, "EchoOrchestrator", newID(t, "big"), api.WithInput(big))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	if len(md.SerializedOutput) != len(big)+2 || md.SerializedOutput[1:len(big)+1] != big {
		t.Fatalf("large output: %d bytes, want %d", len(md.SerializedOutput), len(big)+2)
	}
}

func waitGateStarted(t *testing.T, key string, within time.Duration) {
	t.Helper()
	select {
	case <-getGate(key).started:
	case <-time.After(within):
		t.Fatalf("activity Gate(%s) did not start within %v", key, within)
	}
}

// The Go SDK's ActivityResponse has no completion token: the sidecar correlates it by
// (instanceId, taskId). An activity of a replaced execution that finishes late must not
// complete the same-numbered activity of the new execution.
func TestStaleActivityResultAfterReplace(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := newID(t, "replace")
	oldKey, newKey := string(id)+"-old", string(id)+"-new"
	schedule(t, ctx, "GateOrch", id, api.WithInput(oldKey))
	waitGateStarted(t, oldKey, 20*time.Second)

	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("replaced")); err != nil {
		t.Fatal(err)
	}
	requireStatus(t, waitDone(t, ctx, id), api.RUNTIME_STATUS_TERMINATED)
	schedule(t, ctx, "GateOrch", id, api.WithInput(newKey)) // replaces the terminated instance
	// The new execution's activity has the same task id. The sidecar holds it until the
	// old one reports, so a token-less result can only belong to the old one.
	openGate(oldKey) // the old execution's activity (task id 0) reports now
	waitGateStarted(t, newKey, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if md.IsComplete() {
		t.Fatalf("new execution completed with %s %s from the OLD execution's activity result "+
			"(token-less ActivityResponse matched to the new execution's task id 0)",
			statusName(md.RuntimeStatus), md.SerializedOutput)
	}
	openGate(newKey)
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "result of "+newKey)
}

// Same as above across continue-as-new: generation 0's activity (task id 0) finishes while
// generation 1's activity with task id 0 is running.
func TestStaleActivityResultAfterContinueAsNew(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := newID(t, "can")
	oldKey, newKey := string(id)+"-old", string(id)+"-new"
	schedule(t, ctx, "GateCAN", id, api.WithInput(map[string]any{"key": string(id), "gen": 0}))
	waitGateStarted(t, oldKey, 20*time.Second)
	// Generation 1's activity has the same task id and waits until generation 0's reports.
	openGate(oldKey)
	waitGateStarted(t, newKey, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if md.IsComplete() {
		t.Fatalf("generation 1 completed with %s %s from generation 0's activity result "+
			"(token-less ActivityResponse matched to the new execution's task id 0)",
			statusName(md.RuntimeStatus), md.SerializedOutput)
	}
	openGate(newKey)
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, "result of "+newKey)
}
