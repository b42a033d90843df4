package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import com.microsoft.durabletask.RetryPolicy;
import com.microsoft.durabletask.TaskOptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Regressions for sidecar behaviour the Java SDK could not cope with: a completion that the
 * sidecar's own terminate had made moot answered NOT_FOUND (the worker then abandons its
 * stream), and timers fired within the millisecond of fireAt (the SDK compares at
 * millisecond precision and scheduled an extra zero-length timer). Own class, own worker.
 */
class SidecarRegressionTest extends SidecarTestBase {
    static final Map<String, AtomicInteger> ATTEMPTS = new ConcurrentHashMap<>();

    @Override
    Duration maximumTimerInterval() {
        return Duration.ofSeconds(1);
    }

    @Override
    void register(Registry r) {
        r.orchestration("WaitForEvent", ctx -> ctx.complete(ctx.waitForExternalEvent("E", String.class).await()));
        r.orchestration("Quick", ctx -> ctx.complete("quick"));

        r.orchestration("Timers", ctx -> {
            List<String> notAfter = new ArrayList<>();
            for (int i = 0; i < 40; i++) {
                Instant fireAt = ctx.getCurrentInstant().plusMillis(25);
                ctx.createTimer(ZonedDateTime.ofInstant(fireAt, ZoneOffset.UTC)).await();
                // The Java SDK only treats a timer as finished when the (millisecond-truncated)
                // orchestration time is strictly after fireAt; otherwise it schedules another timer.
                if (!ctx.getCurrentInstant().isAfter(fireAt)) {
                    notAfter.add("timer " + i + ": fireAt=" + fireAt + " orchestrationTime=" + ctx.getCurrentInstant());
                }
            }
            ctx.complete(notAfter);
        });

        // Counts every run of the orchestrator function (one per episode). No explicit complete():
        // with SDK 1.5.0 TimerTask.await() returns after the first sub-timer, and only the
        // auto-complete (no pending actions left) waits for the whole chain.
        r.orchestration("LongTimer", ctx -> {
            ATTEMPTS.computeIfAbsent(ctx.getInstanceId(), k -> new AtomicInteger()).incrementAndGet();
            ctx.createTimer(Duration.ofMillis(2500)).await();
        });

        r.activity("AlwaysFails", ctx -> {
            String key = ctx.getInput(String.class);
            int n = ATTEMPTS.computeIfAbsent(key, k -> new AtomicInteger()).incrementAndGet();
            throw new RuntimeException("Error #" + n);
        });
        r.orchestration("RetrySixTimes", ctx -> {
            TaskOptions options = new TaskOptions(new RetryPolicy(6, Duration.ofMillis(50)));
            ctx.callActivity("AlwaysFails", ctx.getInstanceId(), options).await();
        });
    }

    /**
     * Terminate right after StartInstance: the sidecar ends the instance directly although
     * its first episode is already out to the worker, then answers that episode's
     * CompleteOrchestratorTask with NOT_FOUND. The Java worker treats any error from a
     * Complete* call as a connection failure: it stops reading its GetWorkItems stream
     * without cancelling it and opens a new one 5 s later. The sidecar keeps routing work to
     * the abandoned stream, so later instances never start (until the worker's channel closes).
     */
    @Test
    void terminateImmediatelyAfterStartKeepsWorkerUsable(TestInfo info) throws Exception {
        for (int i = 0; i < 10; i++) {
            String id = newId(info, "-" + i);
            client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
            client.terminate(id, "early");
            OrchestrationMetadata md = awaitCompletion(id);
            assertEquals(OrchestrationRuntimeStatus.TERMINATED, md.getRuntimeStatus());
            assertEquals("early", md.readOutputAs(String.class));
        }
        // The worker must still get new work promptly.
        String id = newId(info, "-after");
        client.scheduleNewOrchestrationInstance("Quick", null, id);
        OrchestrationMetadata md = client.waitForInstanceCompletion(id, Duration.ofSeconds(10), true);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
    }

    /**
     * The SDK's own terminateSuspendOrchestration e2e sequence (start, suspend, terminate at
     * once). Same cause as above: the instance is SUSPENDED with an empty history, so the
     * sidecar terminates it directly while the [ExecutionStarted, ExecutionSuspended] episode
     * is out, and the worker's completion gets NOT_FOUND.
     */
    @Test
    void suspendThenTerminateImmediatelyAfterStart(TestInfo info) throws Exception {
        for (int i = 0; i < 10; i++) {
            String id = newId(info, "-" + i);
            client.scheduleNewOrchestrationInstance("WaitForEvent", null, id);
            client.suspendInstance(id, "suspend");
            client.terminate(id, "stop");
            OrchestrationMetadata md = awaitCompletion(id);
            assertEquals(OrchestrationRuntimeStatus.TERMINATED, md.getRuntimeStatus());
            assertEquals("stop", md.readOutputAs(String.class));
        }
        String id = newId(info, "-after");
        client.scheduleNewOrchestrationInstance("Quick", null, id);
        OrchestrationMetadata md = client.waitForInstanceCompletion(id, Duration.ofSeconds(10), true);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
    }

    /**
     * Timers fire within the same millisecond as fireAt. The Java SDK truncates
     * OrchestratorStarted timestamps to milliseconds and only considers a timer done when
     * that time is strictly after fireAt (TaskOrchestrationExecutor.TimerTask#createTimerChain,
     * unchanged up to SDK 1.9), so it schedules an extra zero-length timer: one more episode
     * per timer and shifted task ids.
     */
    @Test
    void timerFiresAfterFireAtMillisecond(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Timers", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("[]", md.getSerializedOutput());
    }

    /**
     * The SDK's own IntegrationTests#longTimer expectation (there: 7 s timer, 3 s interval, 4 runs;
     * against this sidecar it fails with ArrayIndexOutOfBoundsException from a 5th run).
     */
    @Test
    void longTimerRunsOncePerSubTimer(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("LongTimer", null, id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, awaitCompletion(id).getRuntimeStatus());
        // Worker maximumTimerInterval is 1 s: sub-timers of 1 s, 1 s and 0.5 s, so 1 + 3 runs.
        assertEquals(4, ATTEMPTS.get(id).get());
    }

    /** The SDK's own e2e expectation (ErrorHandlingIntegrationTests#retryActivityFailures). */
    @Test
    void retryTaskIdsAsInSdkSuite(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("RetrySixTimes", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.FAILED, md.getRuntimeStatus());
        assertEquals(6, ATTEMPTS.get(id).get());
        // 6 attempts and 5 retry timers: ids 0..10, the last attempt is #10.
        assertEquals("Task 'AlwaysFails' (#10) failed with an unhandled exception: Error #6",
                md.getFailureDetails().getErrorMessage());
    }
}
