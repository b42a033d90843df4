package e2e

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/microsoft/durabletask-go/api"
)

func TestTerminate(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "term"))
	waitStarted(t, ctx, id)

	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("stopped by test")); err != nil {
		t.Fatalf("TerminateOrchestration: %v", err)
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "output", md.SerializedOutput, "stopped by test")
	if fd, err := rawFailureDetails(id); err != nil || fd != nil {
		t.Fatalf("terminated instance: failureDetails = %+v (err %v), want absent", fd, err)
	}

	// terminating a terminal instance is a no-op
	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("again")); err != nil {
		t.Fatalf("second TerminateOrchestration: %v", err)
	}
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "output after second terminate", md.SerializedOutput, "stopped by test")
}

// The Go client sends recursive=true by default: the child must be terminated too.
func TestTerminateRecursive(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "ParentWaiting", newID(t, "termrec"))
	child := id + "-child"
	pollUntil(t, ctx, id, "child started", func(m *api.OrchestrationMetadata) bool {
		return m.SerializedCustomStatus == "child started"
	})
	waitStarted(t, ctx, child)

	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("bye")); err != nil {
		t.Fatal(err)
	}
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "parent output", md.SerializedOutput, "bye")

	cmd := waitDone(t, ctx, child)
	requireStatus(t, cmd, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "child output", cmd.SerializedOutput, "bye")
}

func TestTerminateNonRecursive(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "ParentWaiting", newID(t, "termnr"))
	child := id + "-child"
	pollUntil(t, ctx, id, "child started", func(m *api.OrchestrationMetadata) bool {
		return m.SerializedCustomStatus == "child started"
	})
	waitStarted(t, ctx, child)

	if err := hub.TerminateOrchestration(ctx, id, api.WithRecursiveTerminate(false)); err != nil {
		t.Fatal(err)
	}
	requireStatus(t, waitDone(t, ctx, id), api.RUNTIME_STATUS_TERMINATED)
	time.Sleep(500 * time.Millisecond)
	cmd, err := hub.FetchOrchestrationMetadata(ctx, child)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, cmd, api.RUNTIME_STATUS_RUNNING)
	// clean up
	if err := hub.TerminateOrchestration(ctx, child); err != nil {
		t.Fatal(err)
	}
	requireStatus(t, waitDone(t, ctx, child), api.RUNTIME_STATUS_TERMINATED)
}

func TestSuspendResume(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "susp"))
	waitStarted(t, ctx, id)

	if err := hub.SuspendOrchestration(ctx, id, "pause for test"); err != nil {
		t.Fatalf("SuspendOrchestration: %v", err)
	}
	pollUntil(t, testCtx(t, 10*time.Second), id, "SUSPENDED", func(m *api.OrchestrationMetadata) bool {
		return m.RuntimeStatus == api.RUNTIME_STATUS_SUSPENDED
	})

	// An event raised while suspended is held: the instance must not complete.
	if err := hub.RaiseEvent(ctx, id, "Approval", api.WithEventPayload(map[string]string{"v": "while suspended"})); err != nil {
		t.Fatalf("RaiseEvent while suspended: %v", err)
	}
	time.Sleep(2 * time.Second)
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_SUSPENDED)

	if err := hub.ResumeOrchestration(ctx, id, "go on"); err != nil {
		t.Fatalf("ResumeOrchestration: %v", err)
	}
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md.SerializedOutput, map[string]string{"v": "while suspended"})
}

// Terminate while suspended. The Go SDK (v0.6.0) processes ExecutionTerminated while suspended
// but returns no actions at all while its history says "suspended" (task/orchestrator.go,
// OrchestrationContext.actions: `if ctx.isSuspended { return nil }`), so the sidecar receives
// an empty completion and the instance stays SUSPENDED; the same happens with the GO backend.
// Only after a resume does the SDK send the TERMINATED completion. The test checks that the
// sidecar keeps the delivered termination in history and that resume then ends the instance
// as TERMINATED with the termination output.
func TestTerminateWhileSuspended(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "suspterm"))
	waitStarted(t, ctx, id)
	if err := hub.SuspendOrchestration(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, testCtx(t, 10*time.Second), id, "SUSPENDED", func(m *api.OrchestrationMetadata) bool {
		return m.RuntimeStatus == api.RUNTIME_STATUS_SUSPENDED
	})
	if err := hub.TerminateOrchestration(ctx, id, api.WithOutput("terminated while suspended")); err != nil {
		t.Fatal(err)
	}
	// Give the sidecar time to deliver the termination to the (suspended) worker episode.
	time.Sleep(time.Second)
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	switch md.RuntimeStatus {
	case api.RUNTIME_STATUS_TERMINATED:
		// a sidecar that terminates suspended instances itself is fine too
	case api.RUNTIME_STATUS_SUSPENDED:
		if err := hub.ResumeOrchestration(ctx, id, ""); err != nil {
			t.Fatalf("ResumeOrchestration: %v", err)
		}
	default:
		t.Fatalf("after terminate while suspended: status %s", statusName(md.RuntimeStatus))
	}
	md = waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_TERMINATED)
	requireJSON(t, "output", md.SerializedOutput, "terminated while suspended")
}

func TestPurge(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "purge"), api.WithInput("p"))
	requireStatus(t, waitDone(t, ctx, id), api.RUNTIME_STATUS_COMPLETED)

	if err := hub.PurgeOrchestrationState(ctx, id); err != nil {
		t.Fatalf("PurgeOrchestrationState: %v", err)
	}
	if _, err := hub.FetchOrchestrationMetadata(ctx, id); !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("FetchOrchestrationMetadata after purge = %v, want ErrInstanceNotFound", err)
	}
	// purging again: deletedInstanceCount 0, which the Go client reports as ErrInstanceNotFound
	if err := hub.PurgeOrchestrationState(ctx, id); !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("second purge = %v, want ErrInstanceNotFound", err)
	}
	// the id can be used again after a purge
	schedule(t, ctx, "Quick", id, api.WithInput("again"))
	requireJSON(t, "output after reuse", waitDone(t, ctx, id).SerializedOutput, "AGAIN")
}

func TestPurgeRunningInstanceRefused(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "WaitForApproval", newID(t, "purgerun"))
	waitStarted(t, ctx, id)

	err := hub.PurgeOrchestrationState(ctx, id)
	if err == nil {
		t.Fatal("purging a RUNNING instance succeeded")
	}
	// PROTOCOL §3.11: a non-terminal instance is not purged (count 0 -> ErrInstanceNotFound
	// in the Go client).
	if !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("purge of running instance: %v, want deletedInstanceCount=0 (ErrInstanceNotFound)", err)
	}
	md, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatalf("running instance gone after refused purge: %v", err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_RUNNING)
	if err := hub.RaiseEvent(ctx, id, "Approval", api.WithEventPayload(map[string]int{"ok": 1})); err != nil {
		t.Fatal(err)
	}
	requireStatus(t, waitDone(t, ctx, id), api.RUNTIME_STATUS_COMPLETED)
}

func TestPurgeRecursive(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "Parent", newID(t, "purgerec"))
	requireStatus(t, waitDone(t, ctx, id), api.RUNTIME_STATUS_COMPLETED)
	children := []api.InstanceID{id + "-child", api.InstanceID(fmt.Sprintf("%s:%04x", id, 1))}
	for _, c := range children {
		if _, err := hub.FetchOrchestrationMetadata(ctx, c); err != nil {
			t.Fatalf("child %s before purge: %v", c, err)
		}
	}

	var resp struct {
		DeletedInstanceCount int `json:"deletedInstanceCount"`
	}
	// Use the raw RPC to see the count (the Go client only reports 0 vs. non-zero).
	if err := rawCall(ctx, sharedConn, "PurgeInstances", "PurgeInstancesRequest", "PurgeInstancesResponse",
		map[string]any{"instanceId": string(id), "recursive": true}, &resp); err != nil {
		t.Fatalf("PurgeInstances(recursive): %v", err)
	}
	if resp.DeletedInstanceCount != 3 {
		t.Fatalf("recursive purge deletedInstanceCount = %d, want 3 (parent + 2 children)", resp.DeletedInstanceCount)
	}
	for _, x := range append(children, id) {
		if _, err := hub.FetchOrchestrationMetadata(ctx, x); !errors.Is(err, api.ErrInstanceNotFound) {
			t.Fatalf("%s after recursive purge: %v, want ErrInstanceNotFound", x, err)
		}
	}
}

// The Go client (v0.6.0) has no QueryInstances method; call the RPC directly with the SDK's
// own generated request type.
func TestQueryInstancesRaw(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	prefix := string(newID(t, "q"))
	var done []string
	for i := 0; i < 3; i++ {
		id := schedule(t, ctx, "Quick", api.InstanceID(fmt.Sprintf("%s-%d", prefix, i)), api.WithInput(fmt.Sprint("in", i)))
		waitDone(t, ctx, id)
		done = append(done, string(id))
	}
	running := schedule(t, ctx, "WaitForApproval", api.InstanceID(prefix+"-running"))
	waitStarted(t, ctx, running)
	t.Cleanup(func() { _ = hub.TerminateOrchestration(testCtx(t, 10*time.Second), running) })

	type queryResp struct {
		OrchestrationState []orchestrationState `json:"orchestrationState"`
		ContinuationToken  *string              `json:"continuationToken"`
	}
	query := func(q map[string]any) queryResp {
		t.Helper()
		var r queryResp
		if err := rawCall(ctx, sharedConn, "QueryInstances", "QueryInstancesRequest", "QueryInstancesResponse",
			map[string]any{"query": q}, &r); err != nil {
			t.Fatalf("QueryInstances(%v): %v", q, err)
		}
		return r
	}
	ids := func(r queryResp) []string {
		var out []string
		for _, s := range r.OrchestrationState {
			out = append(out, s.InstanceID)
		}
		sort.Strings(out)
		return out
	}

	// prefix only: all four
	all := query(map[string]any{"instanceIdPrefix": prefix})
	if got := ids(all); len(got) != 4 {
		t.Fatalf("prefix query returned %v, want 4 instances", got)
	}
	if all.ContinuationToken != nil && *all.ContinuationToken != "" {
		t.Fatalf("complete result carries continuationToken %q", *all.ContinuationToken)
	}

	// prefix + status COMPLETED, with payloads
	completed := query(map[string]any{
		"instanceIdPrefix":      prefix,
		"runtimeStatus":         []string{"ORCHESTRATION_STATUS_COMPLETED"},
		"fetchInputsAndOutputs": true,
	})
	if got := ids(completed); fmt.Sprint(got) != fmt.Sprint(done) {
		t.Fatalf("COMPLETED query = %v, want %v", got, done)
	}
	for _, s := range completed.OrchestrationState {
		if s.Input == nil || s.Output == nil || s.Name != "Quick" || s.OrchestrationStatus != "ORCHESTRATION_STATUS_COMPLETED" {
			t.Fatalf("query item without payloads/name/status: %+v", s)
		}
	}
	// without payloads
	bare := query(map[string]any{"instanceIdPrefix": prefix, "runtimeStatus": []string{"ORCHESTRATION_STATUS_COMPLETED"}})
	for _, s := range bare.OrchestrationState {
		if s.Input != nil || s.Output != nil {
			t.Fatalf("query without fetchInputsAndOutputs returned payloads: %+v", s)
		}
	}
	// RUNNING only
	if got := ids(query(map[string]any{"instanceIdPrefix": prefix, "runtimeStatus": []string{"ORCHESTRATION_STATUS_RUNNING"}})); fmt.Sprint(got) != fmt.Sprint([]string{string(running)}) {
		t.Fatalf("RUNNING query = %v", got)
	}

	// paging: page size 2 over 4 instances
	seen := map[string]bool{}
	var token *string
	for page := 0; ; page++ {
		if page > 4 {
			t.Fatalf("paging did not terminate (seen %v)", seen)
		}
		q := map[string]any{"instanceIdPrefix": prefix, "maxInstanceCount": 2}
		if token != nil {
			q["continuationToken"] = *token
		}
		r := query(q)
		if len(r.OrchestrationState) == 0 || len(r.OrchestrationState) > 2 {
			t.Fatalf("page %d has %d items (token %v)", page, len(r.OrchestrationState), token)
		}
		for _, s := range r.OrchestrationState {
			if seen[s.InstanceID] {
				t.Fatalf("instance %s returned twice while paging", s.InstanceID)
			}
			seen[s.InstanceID] = true
		}
		if r.ContinuationToken == nil || *r.ContinuationToken == "" {
			break
		}
		token = r.ContinuationToken
	}
	if len(seen) != 4 {
		t.Fatalf("paging returned %d distinct instances, want 4", len(seen))
	}
}

// Purge by filter (raw RPC; the Go client only purges by id). Runs on a private sidecar so the
// filter cannot touch other tests' instances.
func TestPurgeByFilterRaw(t *testing.T) {
	t.Parallel()
	sc, c := privateSidecar(t, "purgefilter")
	ctx := testCtx(t, 60*time.Second)
	wctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	if err := c.StartWorkItemListener(wctx, newRegistry()); err != nil {
		t.Fatal(err)
	}
	conn, err := dial(sc.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	before := time.Now().Add(-time.Second)
	var completed []api.InstanceID
	for i := 0; i < 3; i++ {
		id, err := c.ScheduleNewOrchestration(ctx, "Quick", api.WithInstanceID(newID(t, fmt.Sprint("c", i))), api.WithInput("x"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitForOrchestrationCompletion(ctx, id); err != nil {
			t.Fatal(err)
		}
		completed = append(completed, id)
	}
	failed, err := c.ScheduleNewOrchestration(ctx, "FailsDirectly", api.WithInstanceID(newID(t, "f")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForOrchestrationCompletion(ctx, failed); err != nil {
		t.Fatal(err)
	}
	running, err := c.ScheduleNewOrchestration(ctx, "WaitForApproval", api.WithInstanceID(newID(t, "r")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForOrchestrationStart(ctx, running); err != nil {
		t.Fatal(err)
	}

	var resp struct {
		DeletedInstanceCount int `json:"deletedInstanceCount"`
	}
	purge := func(filter map[string]any) int {
		t.Helper()
		resp.DeletedInstanceCount = 0
		if err := rawCall(ctx, conn, "PurgeInstances", "PurgeInstancesRequest", "PurgeInstancesResponse",
			map[string]any{"purgeInstanceFilter": filter}, &resp); err != nil {
			t.Fatalf("PurgeInstances(%v): %v", filter, err)
		}
		return resp.DeletedInstanceCount
	}
	window := map[string]any{
		"createdTimeFrom": before.UTC().Format(time.RFC3339Nano),
		"createdTimeTo":   time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano),
	}
	// status COMPLETED only
	f := map[string]any{"runtimeStatus": []string{"ORCHESTRATION_STATUS_COMPLETED"}}
	for k, v := range window {
		f[k] = v
	}
	if n := purge(f); n != 3 {
		t.Fatalf("purge COMPLETED: deletedInstanceCount %d, want 3", n)
	}
	for _, id := range completed {
		if _, err := c.FetchOrchestrationMetadata(ctx, id); !errors.Is(err, api.ErrInstanceNotFound) {
			t.Fatalf("%s after purge: %v", id, err)
		}
	}
	// a window in the past matches nothing
	if n := purge(map[string]any{"createdTimeTo": before.Add(-time.Hour).UTC().Format(time.RFC3339Nano)}); n != 0 {
		t.Fatalf("purge of an empty window deleted %d", n)
	}
	// window only (all statuses): the FAILED one goes, the RUNNING one stays
	if n := purge(window); n != 1 {
		t.Fatalf("purge by window: deletedInstanceCount %d, want 1 (the FAILED instance)", n)
	}
	if _, err := c.FetchOrchestrationMetadata(ctx, failed); !errors.Is(err, api.ErrInstanceNotFound) {
		t.Fatalf("failed instance after purge: %v", err)
	}
	md, err := c.FetchOrchestrationMetadata(ctx, running)
	if err != nil {
		t.Fatalf("running instance was purged by a filter purge: %v", err)
	}
	requireStatus(t, md, api.RUNTIME_STATUS_RUNNING)
}

// A child terminated on its own fails the parent's CallSubOrchestrator (PROTOCOL §4.4.5:
// SubOrchestrationInstanceFailed with synthesized failure details). Without failure details
// the Go SDK would treat the failed child call as a success.
func TestChildTerminatedFailsParent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 60*time.Second)
	id := schedule(t, ctx, "ParentWaiting", newID(t, "childterm"))
	child := id + "-child"
	pollUntil(t, ctx, id, "child started", func(m *api.OrchestrationMetadata) bool {
		return m.SerializedCustomStatus == "child started"
	})
	waitStarted(t, ctx, child)

	if err := hub.TerminateOrchestration(ctx, child, api.WithOutput("child stopped")); err != nil {
		t.Fatal(err)
	}
	requireStatus(t, waitDone(t, ctx, child), api.RUNTIME_STATUS_TERMINATED)
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_FAILED)
	fd, err := rawFailureDetails(id)
	if err != nil || fd == nil {
		t.Fatalf("parent failureDetails = %+v, err %v", fd, err)
	}
	if fd.ErrorMessage == "task failed with an error: " || fd.ErrorMessage == "" {
		t.Fatalf("parent failure message %q carries no detail about the terminated child", fd.ErrorMessage)
	}
	t.Logf("parent failure: %s: %s", fd.ErrorType, fd.ErrorMessage)
}

// RPCs on terminal instances are accepted no-ops.
func TestOperationsOnCompletedInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := schedule(t, ctx, "Quick", newID(t, "done"), api.WithInput("z"))
	md := waitDone(t, ctx, id)
	requireStatus(t, md, api.RUNTIME_STATUS_COMPLETED)

	if err := hub.RaiseEvent(ctx, id, "late", api.WithEventPayload(1)); err != nil {
		t.Fatalf("RaiseEvent on a completed instance: %v (want OK, event discarded)", err)
	}
	if err := hub.SuspendOrchestration(ctx, id, "late"); err != nil {
		t.Fatalf("SuspendOrchestration on a completed instance: %v (want OK no-op)", err)
	}
	if err := hub.ResumeOrchestration(ctx, id, "late"); err != nil {
		t.Fatalf("ResumeOrchestration on a completed instance: %v (want OK no-op)", err)
	}
	time.Sleep(300 * time.Millisecond)
	md2, err := hub.FetchOrchestrationMetadata(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	requireStatus(t, md2, api.RUNTIME_STATUS_COMPLETED)
	requireJSON(t, "output", md2.SerializedOutput, "Z")
}

// Management RPCs on unknown instances (PROTOCOL §3.4–3.6, §3.11 decisions).
func TestOperationsOnUnknownInstance(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 30*time.Second)
	id := newID(t, "ghost")
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s on an unknown instance succeeded, want NotFound", what)
		} else if c := grpcCode(err); c.String() != "NotFound" {
			t.Errorf("%s on an unknown instance: code %v (%v), want NotFound", what, c, err)
		}
	}
	check("TerminateOrchestration", hub.TerminateOrchestration(ctx, id))
	check("SuspendOrchestration", hub.SuspendOrchestration(ctx, id, ""))
	check("ResumeOrchestration", hub.ResumeOrchestration(ctx, id, ""))
	if err := hub.PurgeOrchestrationState(ctx, id); !errors.Is(err, api.ErrInstanceNotFound) {
		t.Errorf("PurgeOrchestrationState(unknown) = %v, want deletedInstanceCount 0 (ErrInstanceNotFound)", err)
	}
	// none of these may have created the instance
	if _, err := hub.FetchOrchestrationMetadata(ctx, id); !errors.Is(err, api.ErrInstanceNotFound) {
		t.Errorf("unknown instance exists after management RPCs: %v", err)
	}
}
