package e2e

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microsoft/durabletask-go/api"
	"github.com/microsoft/durabletask-go/client"
	"github.com/microsoft/durabletask-go/task"
)

// privateSidecar starts a sidecar only this test talks to (with its own SQLite file) and a
// client connected to it; both are stopped at the end of the test.
func privateSidecar(t *testing.T, name string) (*sidecar, *client.TaskHubGrpcClient) {
	t.Helper()
	bin, err := sidecarBinary()
	if err != nil {
		t.Fatal(err)
	}
	sc := newSidecar(bin, t.TempDir(), name)
	if err := sc.start(); err != nil {
		sc.printLogTail(os.Stderr)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Fprintf(os.Stderr, "%s: sidecar %s log tail:\n", t.Name(), name)
			sc.printLogTail(os.Stderr)
		}
		sc.stop()
	})
	conn, err := dial(sc.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return sc, client.NewTaskHubGrpcClient(conn, newSDKLogger(name))
}

// A durable timer and the committed progress survive a sidecar crash (SIGKILL) and restart on
// the same database; the worker reconnects by itself; completed activities are not re-run.
func TestSidecarCrashRestart(t *testing.T) {
	t.Parallel()
	sc, c := privateSidecar(t, "crash")
	ctx := testCtx(t, 90*time.Second)

	r := task.NewTaskRegistry()
	calls := make(chan int, 10)
	_ = r.AddActivityN("Step", func(actx task.ActivityContext) (any, error) {
		var n int
		if err := actx.GetInput(&n); err != nil {
			return nil, err
		}
		calls <- n
		return n * 10, nil
	})
	_ = r.AddOrchestratorN("Durable", func(octx *task.OrchestrationContext) (any, error) {
		var a, b int
		if err := octx.CallActivity("Step", task.WithActivityInput(1)).Await(&a); err != nil {
			return nil, err
		}
		octx.SetCustomStatus("timer")
		if err := octx.CreateTimer(3 * time.Second).Await(nil); err != nil {
			return nil, err
		}
		if err := octx.CallActivity("Step", task.WithActivityInput(2)).Await(&b); err != nil {
			return nil, err
		}
		return a + b, nil
	})
	wctx, stopWorker := context.WithCancel(context.Background())
	t.Cleanup(stopWorker)
	if err := c.StartWorkItemListener(wctx, r); err != nil {
		t.Fatal(err)
	}

	id := newID(t, "durable")
	if _, err := c.ScheduleNewOrchestration(ctx, "Durable", api.WithInstanceID(id)); err != nil {
		t.Fatal(err)
	}
	// wait until the episode that created the timer is committed
	for {
		md, err := c.FetchOrchestrationMetadata(ctx, id)
		if err == nil && md.SerializedCustomStatus == "timer" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("orchestration never reached the timer (last: %+v, %v)", md, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := sc.restart(); err != nil {
		t.Fatalf("restart sidecar: %v", err)
	}

	md, err := c.WaitForOrchestrationCompletion(ctx, id)
	if err != nil {
		t.Fatalf("WaitForOrchestrationCompletion after restart: %v", err)
	}
	if md.RuntimeStatus != api.RUNTIME_STATUS_COMPLETED || md.SerializedOutput != "30" {
		t.Fatalf("after restart: status %s output %q, want COMPLETED 30", md.RuntimeStatus, md.SerializedOutput)
	}
	close(calls)
	var got []int
	for n := range calls {
		got = append(got, n)
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("activity calls %v, want [1 2] (committed activity re-run after restart?)", got)
	}
}

// When a worker's stream goes away while it runs an activity, the sidecar hands the activity
// to the next worker (PROTOCOL §4.8 "stream loss").
func TestWorkerLossRedeliversActivity(t *testing.T) {
	t.Parallel()
	_, c := privateSidecar(t, "workerloss")
	ctx := testCtx(t, 90*time.Second)

	started := make(chan int, 10)
	release := make(chan struct{})
	var attempts atomic.Int32
	r := task.NewTaskRegistry()
	_ = r.AddActivityN("Blocking", func(actx task.ActivityContext) (any, error) {
		n := int(attempts.Add(1))
		started <- n
		if n == 1 {
			<-release
		}
		return fmt.Sprintf("done attempt %d", n), nil
	})
	_ = r.AddOrchestratorN("BlockingOrch", func(octx *task.OrchestrationContext) (any, error) {
		var s string
		err := octx.CallActivity("Blocking").Await(&s)
		return s, err
	})

	ctxA, stopA := context.WithCancel(context.Background())
	t.Cleanup(stopA)
	if err := c.StartWorkItemListener(ctxA, r); err != nil {
		t.Fatal(err)
	}
	id := newID(t, "loss")
	if _, err := c.ScheduleNewOrchestration(ctx, "BlockingOrch", api.WithInstanceID(id)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-started:
		if n != 1 {
			t.Fatalf("first activity attempt numbered %d", n)
		}
	case <-ctx.Done():
		t.Fatal("activity never started on worker A")
	}

	stopA() // worker A's stream ends while its activity is still running
	ctxB, stopB := context.WithCancel(context.Background())
	t.Cleanup(stopB)
	if err := c.StartWorkItemListener(ctxB, r); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-started:
		if n != 2 {
			t.Fatalf("second activity attempt numbered %d", n)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("activity was not redelivered to worker B within 30 s after worker A's stream ended")
	}
	close(release) // worker A's late result cannot be sent (its context is cancelled)

	md, err := c.WaitForOrchestrationCompletion(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if md.RuntimeStatus != api.RUNTIME_STATUS_COMPLETED || md.SerializedOutput != `"done attempt 2"` {
		t.Fatalf("status %s output %q, want COMPLETED \"done attempt 2\"", md.RuntimeStatus, md.SerializedOutput)
	}
}

// The sidecar crashes while an activity runs; the activity's result cannot be delivered (the
// Go SDK does not retry CompleteActivityTask). After the restart the sidecar must hand the
// activity out again, and the orchestration completes.
func TestSidecarCrashDuringActivity(t *testing.T) {
	t.Parallel()
	sc, c := privateSidecar(t, "crashact")
	ctx := testCtx(t, 90*time.Second)

	started := make(chan int, 10)
	release := make(chan struct{})
	var attempts atomic.Int32
	r := task.NewTaskRegistry()
	_ = r.AddActivityN("Slow", func(actx task.ActivityContext) (any, error) {
		n := int(attempts.Add(1))
		started <- n
		<-release
		return fmt.Sprintf("attempt %d", n), nil
	})
	_ = r.AddOrchestratorN("SlowOrch", func(octx *task.OrchestrationContext) (any, error) {
		var s string
		err := octx.CallActivity("Slow").Await(&s)
		return s, err
	})
	wctx, stopWorker := context.WithCancel(context.Background())
	t.Cleanup(stopWorker)
	if err := c.StartWorkItemListener(wctx, r); err != nil {
		t.Fatal(err)
	}
	id := newID(t, "crashact")
	if _, err := c.ScheduleNewOrchestration(ctx, "SlowOrch", api.WithInstanceID(id)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("activity never started")
	}

	sc.kill()
	close(release) // attempt 1 finishes while the sidecar is down: its result is lost
	time.Sleep(300 * time.Millisecond)
	if err := sc.restart(); err != nil {
		t.Fatalf("restart sidecar: %v", err)
	}
	select {
	case n := <-started:
		if n != 2 {
			t.Fatalf("redelivered attempt numbered %d", n)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("activity was not redelivered within 45 s after the sidecar restart")
	}
	md, err := c.WaitForOrchestrationCompletion(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if md.RuntimeStatus != api.RUNTIME_STATUS_COMPLETED || md.SerializedOutput != `"attempt 2"` {
		t.Fatalf("status %s output %q, want COMPLETED \"attempt 2\"", md.RuntimeStatus, md.SerializedOutput)
	}
}
