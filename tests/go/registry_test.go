package e2e

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/microsoft/durabletask-go/task"
)

// Every orchestrator and activity the shared worker knows. Names are explicit (AddOrchestratorN /
// AddActivityN); orchestrators refer to activities and children by those names.

// activityCalls counts activity executions per key (tests use the instance id as key) so tests
// can assert that the sidecar delivered each activity exactly once / the expected number of times.
var activityCalls sync.Map // string -> *int64 guarded by callsMu

var callsMu sync.Mutex

func countCall(key string) int {
	callsMu.Lock()
	defer callsMu.Unlock()
	v, _ := activityCalls.LoadOrStore(key, new(int))
	p := v.(*int)
	*p++
	return *p
}

func callCount(key string) int {
	callsMu.Lock()
	defer callsMu.Unlock()
	if v, ok := activityCalls.Load(key); ok {
		return *v.(*int)
	}
	return 0
}

// orchestrationError is returned by orchestrators that fail on purpose; its Go type name is
// what the SDK reports as TaskFailureDetails.errorType ("*e2e.orchestrationError").
type orchestrationError struct{ msg string }

func (e *orchestrationError) Error() string { return e.msg }

// activityError is returned by the failing activity ("*e2e.activityError").
type activityError struct{ msg string }

func (e *activityError) Error() string { return e.msg }

// Gates: the "Gate" activity announces that it started (gateStarted(key)) and then blocks until
// the test calls openGate(key). Tests use them to control when an activity's result reaches the
// sidecar.
var (
	gatesMu sync.Mutex
	gates   = map[string]*gate{}
)

type gate struct {
	started chan struct{}
	release chan struct{}
}

func getGate(key string) *gate {
	gatesMu.Lock()
	defer gatesMu.Unlock()
	g, ok := gates[key]
	if !ok {
		g = &gate{started: make(chan struct{}, 16), release: make(chan struct{})}
		gates[key] = g
	}
	return g
}

func openGate(key string) { close(getGate(key).release) }

type keyed struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

func newRegistry() *task.TaskRegistry {
	r := task.NewTaskRegistry()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}

	// ---- activities ----
	must(r.AddActivityN("SayHello", func(ctx task.ActivityContext) (any, error) {
		var name string
		if err := ctx.GetInput(&name); err != nil {
			return nil, err
		}
		return fmt.Sprintf("Hello, %s!", name), nil
	}))
	must(r.AddActivityN("Square", func(ctx task.ActivityContext) (any, error) {
		var in keyed
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		countCall(in.Key)
		return in.N * in.N, nil
	}))
	must(r.AddActivityN("Fail", func(ctx task.ActivityContext) (any, error) {
		var msg string
		if err := ctx.GetInput(&msg); err != nil {
			return nil, err
		}
		return nil, &activityError{msg: msg}
	}))
	// FlakyActivity fails until it has been called in.N times for in.Key.
	must(r.AddActivityN("Flaky", func(ctx task.ActivityContext) (any, error) {
		var in keyed
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		n := countCall(in.Key)
		if n < in.N {
			return nil, fmt.Errorf("flaky attempt %d", n)
		}
		return fmt.Sprintf("ok after %d attempts", n), nil
	}))
	must(r.AddActivityN("Gate", func(ctx task.ActivityContext) (any, error) {
		var key string
		if err := ctx.GetInput(&key); err != nil {
			return nil, err
		}
		g := getGate(key)
		g.started <- struct{}{}
		select {
		case <-g.release:
		case <-time.After(60 * time.Second):
			return nil, errors.New("gate " + key + " never opened")
		}
		return "result of " + key, nil
	}))
	must(r.AddActivityN("Echo", func(ctx task.ActivityContext) (any, error) {
		var v any
		if err := ctx.GetInput(&v); err != nil {
			return nil, err
		}
		return v, nil
	}))

	// ---- orchestrators ----
	must(r.AddOrchestratorN("Sequence", func(ctx *task.OrchestrationContext) (any, error) {
		var cities []string
		if err := ctx.GetInput(&cities); err != nil {
			return nil, err
		}
		var out []string
		for _, c := range cities {
			var s string
			if err := ctx.CallActivity("SayHello", task.WithActivityInput(c)).Await(&s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}))

	must(r.AddOrchestratorN("FanOutFanIn", func(ctx *task.OrchestrationContext) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		tasks := make([]task.Task, 0, n)
		for i := 1; i <= n; i++ {
			tasks = append(tasks, ctx.CallActivity("Square", task.WithActivityInput(keyed{Key: string(ctx.ID), N: i})))
		}
		sum := 0
		for _, t := range tasks {
			var v int
			if err := t.Await(&v); err != nil {
				return nil, err
			}
			sum += v
		}
		return sum, nil
	}))

	// Parent calls the child twice: once with an explicit child id, once with the SDK's default
	// (empty) id, which the sidecar must fill in.
	must(r.AddOrchestratorN("Parent", func(ctx *task.OrchestrationContext) (any, error) {
		var a, b string
		if err := ctx.CallSubOrchestrator("Child",
			task.WithSubOrchestratorInput("Tokyo"),
			task.WithSubOrchestrationInstanceID(string(ctx.ID)+"-child")).Await(&a); err != nil {
			return nil, err
		}
		if err := ctx.CallSubOrchestrator("Child", task.WithSubOrchestratorInput("Paris")).Await(&b); err != nil {
			return nil, err
		}
		return []string{a, b}, nil
	}))
	must(r.AddOrchestratorN("Child", func(ctx *task.OrchestrationContext) (any, error) {
		var city string
		if err := ctx.GetInput(&city); err != nil {
			return nil, err
		}
		var s string
		err := ctx.CallActivity("SayHello", task.WithActivityInput(city)).Await(&s)
		return "child:" + s, err
	}))
	must(r.AddOrchestratorN("ParentOfFailingChild", func(ctx *task.OrchestrationContext) (any, error) {
		err := ctx.CallSubOrchestrator("FailingChild",
			task.WithSubOrchestrationInstanceID(string(ctx.ID)+"-child")).Await(nil)
		if err == nil {
			return nil, errors.New("child did not fail")
		}
		return "caught: " + err.Error(), nil
	}))
	must(r.AddOrchestratorN("FailingChild", func(ctx *task.OrchestrationContext) (any, error) {
		return nil, &orchestrationError{msg: "child went boom"}
	}))
	// ParentWaiting starts a child that waits forever, then waits forever itself.
	must(r.AddOrchestratorN("ParentWaiting", func(ctx *task.OrchestrationContext) (any, error) {
		t := ctx.CallSubOrchestrator("WaitForever", task.WithSubOrchestrationInstanceID(string(ctx.ID)+"-child"))
		ctx.SetCustomStatus("child started")
		return nil, t.Await(nil)
	}))
	must(r.AddOrchestratorN("WaitForever", func(ctx *task.OrchestrationContext) (any, error) {
		return nil, ctx.WaitForSingleEvent("never", -1).Await(nil)
	}))

	must(r.AddOrchestratorN("WaitForApproval", func(ctx *task.OrchestrationContext) (any, error) {
		var payload map[string]any
		if err := ctx.WaitForSingleEvent("Approval", -1).Await(&payload); err != nil {
			return nil, err
		}
		return payload, nil
	}))
	// ThreeEvents collects three events with the same name, in arrival order.
	must(r.AddOrchestratorN("ThreeEvents", func(ctx *task.OrchestrationContext) (any, error) {
		var got []int
		for i := 0; i < 3; i++ {
			var v int
			if err := ctx.WaitForSingleEvent("item", -1).Await(&v); err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	}))
	must(r.AddOrchestratorN("EventWithTimeout", func(ctx *task.OrchestrationContext) (any, error) {
		err := ctx.WaitForSingleEvent("never", time.Second).Await(nil)
		if errors.Is(err, task.ErrTaskCanceled) {
			return "timed out", nil
		}
		return fmt.Sprintf("unexpected: %v", err), nil
	}))

	// Timer returns the orchestration-clock time that passed across a 2 s durable timer.
	must(r.AddOrchestratorN("Timer", func(ctx *task.OrchestrationContext) (any, error) {
		before := ctx.CurrentTimeUtc
		if err := ctx.CreateTimer(2 * time.Second).Await(nil); err != nil {
			return nil, err
		}
		return ctx.CurrentTimeUtc.Sub(before).Milliseconds(), nil
	}))

	must(r.AddOrchestratorN("Counter", func(ctx *task.OrchestrationContext) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		if n < 5 {
			var echoed int
			if err := ctx.CallActivity("Echo", task.WithActivityInput(n)).Await(&echoed); err != nil {
				return nil, err
			}
			ctx.ContinueAsNew(echoed + 1)
			return nil, nil
		}
		return n, nil
	}))
	// EventCounter: each generation consumes one "add" event, then continues as new keeping the
	// events it has not consumed yet (carryover events); finishes after 3 generations.
	must(r.AddOrchestratorN("EventCounter", func(ctx *task.OrchestrationContext) (any, error) {
		var st struct {
			Gen int `json:"gen"`
			Sum int `json:"sum"`
		}
		if err := ctx.GetInput(&st); err != nil {
			return nil, err
		}
		var v int
		if err := ctx.WaitForSingleEvent("add", -1).Await(&v); err != nil {
			return nil, err
		}
		st.Gen++
		st.Sum += v
		if st.Gen < 3 {
			ctx.ContinueAsNew(st, task.WithKeepUnprocessedEvents())
			return nil, nil
		}
		return st, nil
	}))

	must(r.AddOrchestratorN("FailViaActivity", func(ctx *task.OrchestrationContext) (any, error) {
		err := ctx.CallActivity("Fail", task.WithActivityInput("kaboom from activity")).Await(nil)
		if err == nil {
			return "activity did not fail", nil
		}
		return nil, &orchestrationError{msg: "orchestrator gave up: " + err.Error()}
	}))
	must(r.AddOrchestratorN("CatchActivityFailure", func(ctx *task.OrchestrationContext) (any, error) {
		err := ctx.CallActivity("Fail", task.WithActivityInput("recoverable failure")).Await(nil)
		if err == nil {
			return nil, errors.New("activity did not fail")
		}
		var s string
		if err2 := ctx.CallActivity("SayHello", task.WithActivityInput("compensation")).Await(&s); err2 != nil {
			return nil, err2
		}
		return []string{err.Error(), s}, nil
	}))
	must(r.AddOrchestratorN("CallUnknownActivity", func(ctx *task.OrchestrationContext) (any, error) {
		err := ctx.CallActivity("NoSuchActivity").Await(nil)
		if err == nil {
			return "no error", nil
		}
		return err.Error(), nil
	}))
	must(r.AddOrchestratorN("FailsDirectly", func(ctx *task.OrchestrationContext) (any, error) {
		return nil, &orchestrationError{msg: "failed directly"}
	}))

	must(r.AddOrchestratorN("RetryActivity", func(ctx *task.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallActivity("Flaky",
			task.WithActivityInput(keyed{Key: string(ctx.ID), N: 3}),
			task.WithActivityRetryPolicy(&task.RetryPolicy{
				MaxAttempts:          4,
				InitialRetryInterval: 300 * time.Millisecond,
				BackoffCoefficient:   1.5,
			})).Await(&s)
		return s, err
	}))

	must(r.AddOrchestratorN("CustomStatus", func(ctx *task.OrchestrationContext) (any, error) {
		ctx.SetCustomStatus("step 1: waiting")
		var v string
		if err := ctx.WaitForSingleEvent("continue", -1).Await(&v); err != nil {
			return nil, err
		}
		ctx.SetCustomStatus(`{"step":2,"got":"` + v + `"}`)
		return "done", nil
	}))

	must(r.AddOrchestratorN("EchoOrchestrator", func(ctx *task.OrchestrationContext) (any, error) {
		var in any
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		var out any
		if err := ctx.CallActivity("Echo", task.WithActivityInput(in)).Await(&out); err != nil {
			return nil, err
		}
		return out, nil
	}))
	must(r.AddOrchestratorN("Quick", func(ctx *task.OrchestrationContext) (any, error) {
		var in string
		_ = ctx.GetInput(&in)
		return strings.ToUpper(in), nil
	}))
	// GateOrch calls Gate(input) and returns its result.
	must(r.AddOrchestratorN("GateOrch", func(ctx *task.OrchestrationContext) (any, error) {
		var key string
		if err := ctx.GetInput(&key); err != nil {
			return nil, err
		}
		var s string
		err := ctx.CallActivity("Gate", task.WithActivityInput(key)).Await(&s)
		return s, err
	}))
	// GateCAN: generation 0 starts Gate(<key>-old) (task id 0) without awaiting it, waits for a
	// 300 ms timer and continues as new; generation 1 calls Gate(<key>-new), again task id 0.
	must(r.AddOrchestratorN("GateCAN", func(ctx *task.OrchestrationContext) (any, error) {
		var in struct {
			Key string `json:"key"`
			Gen int    `json:"gen"`
		}
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		if in.Gen == 0 {
			ctx.CallActivity("Gate", task.WithActivityInput(in.Key+"-old"))
			if err := ctx.CreateTimer(300 * time.Millisecond).Await(nil); err != nil {
				return nil, err
			}
			in.Gen = 1
			ctx.ContinueAsNew(in)
			return nil, nil
		}
		var s string
		err := ctx.CallActivity("Gate", task.WithActivityInput(in.Key+"-new")).Await(&s)
		return s, err
	}))
	// FireAndForget schedules an activity and completes without awaiting it: the response holds
	// a scheduleTask and the completeOrchestration action (in random order: the Go SDK iterates
	// a map).
	must(r.AddOrchestratorN("FireAndForget", func(ctx *task.OrchestrationContext) (any, error) {
		ctx.CallActivity("SayHello", task.WithActivityInput("nobody waits"))
		ctx.CallActivity("SayHello", task.WithActivityInput("nobody waits either"))
		return "done", nil
	}))
	// EventOrTimeout waits up to 3 s for "e"; the losing timer fires after completion.
	must(r.AddOrchestratorN("EventOrTimeout", func(ctx *task.OrchestrationContext) (any, error) {
		var v string
		if err := ctx.WaitForSingleEvent("e", 3*time.Second).Await(&v); err != nil {
			return "timed out", nil
		}
		return v, nil
	}))
	// StaleTimer: generation 0 waits for "e" with a 2 s timeout (timer action id 0) and continues
	// as new as soon as the event arrives; generation 1 waits for "e" with a 6 s timeout, again
	// timer id 0. The generation-0 timer fires at ~2 s, during generation 1; if the sidecar
	// delivered it to the new execution it would cancel generation 1's wait early.
	must(r.AddOrchestratorN("StaleTimer", func(ctx *task.OrchestrationContext) (any, error) {
		var gen int
		if err := ctx.GetInput(&gen); err != nil {
			return nil, err
		}
		if gen == 0 {
			if err := ctx.WaitForSingleEvent("e", 2*time.Second).Await(nil); err != nil {
				return "gen 0 timed out", nil
			}
			ctx.ContinueAsNew(1)
			return nil, nil
		}
		ctx.SetCustomStatus("gen 1 waiting")
		var v string
		if err := ctx.WaitForSingleEvent("e", 6*time.Second).Await(&v); err != nil {
			return "gen 1 timed out", nil
		}
		return "gen 1 got " + v, nil
	}))
	return r
}
