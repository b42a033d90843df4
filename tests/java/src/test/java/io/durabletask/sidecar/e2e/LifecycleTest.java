package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.NewOrchestrationInstanceOptions;
import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;

/** Instance management: terminate, suspend/resume, restart, id reuse, scheduled start, unknown ids. */
class LifecycleTest extends SidecarTestBase {
    /** Orchestrator executions (non-replay first episodes) per instance id. */
    static final Map<String, AtomicInteger> RUNS = new ConcurrentHashMap<>();

    @Override
    void register(Registry r) {
        // Waits for one event and returns its payload.
        r.orchestration("WaitForEvent", ctx -> {
            String payload = ctx.waitForExternalEvent("MyEvent", String.class).await();
            ctx.complete(payload);
        });

        // Returns its input decorated; counts fresh (non-replay) starts per instance id.
        r.orchestration("Echo", ctx -> {
            if (!ctx.getIsReplaying()) {
                RUNS.computeIfAbsent(ctx.getInstanceId(), k -> new AtomicInteger()).incrementAndGet();
            }
            ctx.complete("echo:" + ctx.getInput(String.class));
        });

        // Reports when it first ran (orchestration time).
        r.orchestration("WhenDidIStart", ctx -> ctx.complete(ctx.getCurrentInstant().toEpochMilli()));
    }

    private void assertStatusCode(Status.Code expected, Runnable call) {
        StatusRuntimeException e = assertThrows(StatusRuntimeException.class, call::run);
        assertEquals(expected, e.getStatus().getCode(), "gRPC status: " + e.getStatus());
    }

    @Test
    void terminateRunningInstance(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        OrchestrationMetadata started = client.waitForInstanceStart(id, TIMEOUT, false);
        assertEquals(OrchestrationRuntimeStatus.RUNNING, started.getRuntimeStatus());

        client.terminate(id, "stopped by test");
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, md.getRuntimeStatus());
        assertEquals("stopped by test", md.readOutputAs(String.class));
        assertEquals("\"stopped by test\"", md.getSerializedOutput());

        // A later event must not revive it.
        client.raiseEvent(id, "MyEvent", "too late");
        Thread.sleep(500);
        OrchestrationMetadata later = client.getInstanceMetadata(id, true);
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, later.getRuntimeStatus());
        assertEquals("stopped by test", later.readOutputAs(String.class));
    }

    @Test
    void terminateBeforeScheduledStart(TestInfo info) throws Exception {
        // Not yet started (future start time): the sidecar terminates it by itself.
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent",
                new NewOrchestrationInstanceOptions().setInstanceId(id).setStartTime(Instant.now().plusSeconds(60)));
        assertEquals(OrchestrationRuntimeStatus.PENDING, client.getInstanceMetadata(id, false).getRuntimeStatus());
        client.terminate(id, Map.of("reason", "early"));
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, md.getRuntimeStatus());
        assertEquals(Map.of("reason", "early"), md.readOutputAs(Map.class));
    }

    @Test
    void suspendAndResume(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        client.waitForInstanceStart(id, TIMEOUT, false);

        client.suspendInstance(id, "pause for test");
        pollForStatus(id, OrchestrationRuntimeStatus.SUSPENDED);

        // The event is held while suspended: no completion within 3 s.
        client.raiseEvent(id, "MyEvent", "payload");
        assertThrows(TimeoutException.class,
                () -> client.waitForInstanceCompletion(id, Duration.ofSeconds(3), false),
                "a suspended instance completed");
        assertEquals(OrchestrationRuntimeStatus.SUSPENDED, client.getInstanceMetadata(id, false).getRuntimeStatus());

        client.resumeInstance(id, "go on");
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("payload", md.readOutputAs(String.class));
    }

    @Test
    void suspendImmediatelyAfterStart(TestInfo info) throws Exception {
        // Same sequence as the SDK's own suspendResumeOrchestration e2e test.
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        client.suspendInstance(id);
        OrchestrationMetadata md = client.waitForInstanceStart(id, TIMEOUT, false);
        assertEquals(OrchestrationRuntimeStatus.SUSPENDED, md.getRuntimeStatus());

        client.raiseEvent(id, "MyEvent", "held");
        assertThrows(TimeoutException.class,
                () -> client.waitForInstanceCompletion(id, Duration.ofSeconds(2), false));
        assertEquals(OrchestrationRuntimeStatus.SUSPENDED, client.getInstanceMetadata(id, false).getRuntimeStatus());

        client.resumeInstance(id, "resume");
        md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("held", md.readOutputAs(String.class));
    }

    @Test
    void terminateSuspendedInstance(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        client.waitForInstanceStart(id, TIMEOUT, false);
        client.suspendInstance(id, "pause");
        pollForStatus(id, OrchestrationRuntimeStatus.SUSPENDED);

        client.terminate(id, "terminated while suspended");
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, md.getRuntimeStatus());
        assertEquals("terminated while suspended", md.readOutputAs(String.class));
    }

    @Test
    void restartWithSameId(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Echo", "restart me", id);
        OrchestrationMetadata first = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, first.getRuntimeStatus());
        assertEquals("echo:restart me", first.readOutputAs(String.class));

        // Java's restartInstance reads the instance and calls StartInstance with the same id
        // (no reuse policy): the completed instance must be replaced.
        String restarted = client.restartInstance(id, false);
        assertEquals(id, restarted);
        OrchestrationMetadata second = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, second.getRuntimeStatus());
        assertEquals("\"restart me\"", second.getSerializedInput());
        assertEquals("echo:restart me", second.readOutputAs(String.class));
        assertEquals(2, RUNS.get(id).get(), "the orchestration must have run twice");
        assertFalse(second.getCreatedAt().isBefore(first.getCreatedAt()), "restart must create a new execution");
    }

    @Test
    void restartWithNewId(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Echo", "copy me", id);
        awaitCompletion(id);

        String copyId = client.restartInstance(id, true);
        assertNotEquals(id, copyId);
        OrchestrationMetadata md = awaitCompletion(copyId);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("Echo", md.getName());
        assertEquals("echo:copy me", md.readOutputAs(String.class));
    }

    @Test
    void restartUnknownInstanceFails() {
        assertThrows(IllegalArgumentException.class,
                () -> client.restartInstance("java-no-such-instance-" + System.nanoTime(), false));
    }

    @Test
    void startWithIdOfRunningInstanceIsRejected(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        client.waitForInstanceStart(id, TIMEOUT, false);

        assertStatusCode(Status.Code.ALREADY_EXISTS,
                () -> client.scheduleNewOrchestrationInstance("WaitForEvent", null, id));

        // The running instance is untouched and still completes normally.
        client.raiseEvent(id, "MyEvent", "still here");
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals("still here", md.readOutputAs(String.class));
    }

    @Test
    void scheduledStart(TestInfo info) throws Exception {
        String id = newId(info);
        Instant startAt = Instant.now().plusSeconds(3);
        client.scheduleNewOrchestrationInstance("WhenDidIStart",
                new NewOrchestrationInstanceOptions().setInstanceId(id).setStartTime(startAt));

        OrchestrationMetadata pending = client.getInstanceMetadata(id, false);
        assertTrue(pending.isInstanceFound());
        assertEquals(OrchestrationRuntimeStatus.PENDING, pending.getRuntimeStatus());

        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        long ranAt = md.readOutputAs(long.class);
        assertTrue(ranAt >= startAt.toEpochMilli() - 50,
                "orchestration ran at " + Instant.ofEpochMilli(ranAt) + ", before its scheduled start " + startAt);
    }

    @Test
    void unknownInstance() throws Exception {
        String id = "java-unknown-" + System.nanoTime();
        OrchestrationMetadata md = client.getInstanceMetadata(id, true);
        assertFalse(md.isInstanceFound());

        // Raise/Suspend/Resume/Terminate of an unknown id: NOT_FOUND (PROTOCOL.md §3.4-3.6).
        assertStatusCode(Status.Code.NOT_FOUND, () -> client.raiseEvent(id, "MyEvent", "x"));
        assertStatusCode(Status.Code.NOT_FOUND, () -> client.suspendInstance(id, "x"));
        assertStatusCode(Status.Code.NOT_FOUND, () -> client.resumeInstance(id, "x"));
        assertStatusCode(Status.Code.NOT_FOUND, () -> client.terminate(id, "x"));

        // WaitForInstanceCompletion of an unknown id answers at once with "not found".
        OrchestrationMetadata waited = client.waitForInstanceCompletion(id, Duration.ofSeconds(5), false);
        assertFalse(waited.isInstanceFound());
    }

    @Test
    void waitForCompletionTimesOut(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
        long t0 = System.nanoTime();
        assertThrows(TimeoutException.class, () -> client.waitForInstanceCompletion(id, Duration.ofSeconds(2), false));
        long ms = Duration.ofNanos(System.nanoTime() - t0).toMillis();
        assertTrue(ms >= 1500, "timed out after only " + ms + " ms");
        client.terminate(id, "cleanup");
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, awaitCompletion(id).getRuntimeStatus());
    }
}
