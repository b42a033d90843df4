package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.FailureDetails;
import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import com.microsoft.durabletask.RetryPolicy;
import com.microsoft.durabletask.TaskFailedException;
import com.microsoft.durabletask.TaskOptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;

/** Failure details of failed activities, orchestrators and sub-orchestrations; retries. */
class FailureTest extends SidecarTestBase {
    static final String BOOM = "Kah-BOOOOOM!!!";
    static final Map<String, AtomicInteger> ATTEMPTS = new ConcurrentHashMap<>();

    @Override
    void register(Registry r) {
        r.activity("Throw", ctx -> {
            throw new IllegalStateException(BOOM);
        });
        // Fails until the given number of attempts for its key is reached: input "key:failures".
        r.activity("Flaky", ctx -> {
            String in = ctx.getInput(String.class);
            String key = in.substring(0, in.lastIndexOf(':'));
            int failures = Integer.parseInt(in.substring(in.lastIndexOf(':') + 1));
            int attempt = ATTEMPTS.computeIfAbsent(key, k -> new AtomicInteger()).incrementAndGet();
            if (attempt <= failures) {
                throw new RuntimeException("attempt " + attempt + " failed");
            }
            return "ok after " + attempt;
        });

        r.orchestration("UnhandledActivityFailure", ctx -> {
            ctx.callActivity("Throw").await();
            ctx.complete("unreachable");
        });
        r.orchestration("HandledActivityFailure", ctx -> {
            try {
                ctx.callActivity("Throw").await();
                ctx.complete("unreachable");
            } catch (TaskFailedException e) {
                FailureDetails d = e.getErrorDetails();
                ctx.complete(Map.of(
                        "task", e.getTaskName(),
                        "type", d.getErrorType(),
                        "message", d.getErrorMessage(),
                        "hasStack", d.getStackTrace() != null && !d.getStackTrace().isEmpty()));
            }
        });
        r.orchestration("OrchestratorThrows", ctx -> {
            throw new UnsupportedOperationException(BOOM);
        });
        r.orchestration("FailingChild", ctx -> {
            throw new IllegalArgumentException("child says " + ctx.getInput(String.class));
        });
        r.orchestration("ParentOfFailingChild", ctx -> {
            ctx.callSubOrchestrator("FailingChild", "no", ctx.getInstanceId() + "-child", String.class).await();
        });
        r.orchestration("Retry", ctx -> {
            String key = ctx.getInstanceId();
            int failures = ctx.getInput(int.class);
            TaskOptions options = new TaskOptions(new RetryPolicy(3, Duration.ofMillis(200)));
            ctx.complete(ctx.callActivity("Flaky", key + ":" + failures, options, String.class).await());
        });
    }

    @Test
    void unhandledActivityFailure(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("UnhandledActivityFailure", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.FAILED, md.getRuntimeStatus());

        FailureDetails d = md.getFailureDetails();
        assertNotNull(d);
        assertEquals("com.microsoft.durabletask.TaskFailedException", d.getErrorType());
        assertEquals("Task 'Throw' (#0) failed with an unhandled exception: " + BOOM, d.getErrorMessage());
        assertNotNull(d.getStackTrace());
        assertFalse(d.getStackTrace().isEmpty(), "stack trace lost");
        assertTrue(md.getSerializedOutput() == null || md.getSerializedOutput().isEmpty(),
                "failed instance has output " + md.getSerializedOutput());

        // Failure details SHOULD come back even without getInputsAndOutputs (PROTOCOL.md §3.2).
        OrchestrationMetadata lean = client.getInstanceMetadata(id, false);
        assertEquals(OrchestrationRuntimeStatus.FAILED, lean.getRuntimeStatus());
        assertEquals("com.microsoft.durabletask.TaskFailedException", lean.getFailureDetails().getErrorType());
    }

    @Test
    void handledActivityFailureCarriesActivityException(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("HandledActivityFailure", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        @SuppressWarnings("unchecked")
        Map<String, Object> out = md.readOutputAs(Map.class);
        assertEquals("Throw", out.get("task"));
        assertEquals("java.lang.IllegalStateException", out.get("type"));
        assertEquals(BOOM, out.get("message"));
        assertEquals(Boolean.TRUE, out.get("hasStack"), "TaskFailed.failureDetails.stackTrace lost");
        assertFalse(md.getFailureDetails() != null && !md.getFailureDetails().getErrorType().isEmpty(),
                "completed instance reports failure details");
    }

    @Test
    void orchestratorException(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("OrchestratorThrows", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.FAILED, md.getRuntimeStatus());
        FailureDetails d = md.getFailureDetails();
        assertEquals("java.lang.UnsupportedOperationException", d.getErrorType());
        assertTrue(d.getErrorMessage().contains(BOOM), d.getErrorMessage());
        assertTrue(d.isCausedBy(UnsupportedOperationException.class));
    }

    @Test
    void subOrchestrationFailure(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("ParentOfFailingChild", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.FAILED, md.getRuntimeStatus());
        FailureDetails d = md.getFailureDetails();
        assertEquals("com.microsoft.durabletask.TaskFailedException", d.getErrorType());
        assertEquals("Task 'FailingChild' (#0) failed with an unhandled exception: child says no", d.getErrorMessage());

        OrchestrationMetadata child = client.getInstanceMetadata(id + "-child", true);
        assertEquals(OrchestrationRuntimeStatus.FAILED, child.getRuntimeStatus());
        assertEquals("java.lang.IllegalArgumentException", child.getFailureDetails().getErrorType());
        assertEquals("child says no", child.getFailureDetails().getErrorMessage());
    }

    @Test
    void retryPolicySucceedsOnThirdAttempt(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Retry", 2, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("ok after 3", md.readOutputAs(String.class));
        assertEquals(3, ATTEMPTS.get(id).get());
    }

    @Test
    void retryPolicyGivesUp(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Retry", 10, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.FAILED, md.getRuntimeStatus());
        assertEquals(3, ATTEMPTS.get(id).get(), "RetryPolicy(3) must make exactly 3 attempts");
        assertEquals("com.microsoft.durabletask.TaskFailedException", md.getFailureDetails().getErrorType());
        // The task id is #4 (attempt 0, timer 1, attempt 2, timer 3, attempt 4) unless the SDK
        // adds a zero-length timer; see SidecarRegressionTest.retryTaskIdsAsInSdkSuite.
        assertTrue(md.getFailureDetails().getErrorMessage().matches(
                        "Task 'Flaky' \\(#\\d+\\) failed with an unhandled exception: attempt 3 failed"),
                md.getFailureDetails().getErrorMessage());
    }
}
