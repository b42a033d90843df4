package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.DurableTaskClient;
import com.microsoft.durabletask.DurableTaskGrpcClientBuilder;
import com.microsoft.durabletask.DurableTaskGrpcWorker;
import com.microsoft.durabletask.DurableTaskGrpcWorkerBuilder;
import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import com.microsoft.durabletask.TaskActivity;
import com.microsoft.durabletask.TaskActivityFactory;
import com.microsoft.durabletask.TaskOrchestration;
import com.microsoft.durabletask.TaskOrchestrationFactory;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.TestInstance;

import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeoutException;
import java.util.function.Predicate;

import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Common plumbing: one SDK worker and one SDK client per test class, both talking to the
 * sidecar started by run.sh. Subclasses register their orchestrations and activities in
 * {@link #register(Registry)}.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
abstract class SidecarTestBase {
    /** Generous upper bound for anything that should finish "quickly". */
    static final Duration TIMEOUT = Duration.ofSeconds(30);

    protected DurableTaskClient client;
    private DurableTaskGrpcWorker worker;

    /** Port of the sidecar under test: -Dsidecar.port=N or env SIDECAR_PORT. */
    static int sidecarPort() {
        String port = System.getProperty("sidecar.port");
        if (port == null || port.isBlank()) {
            port = System.getenv("SIDECAR_PORT");
        }
        if (port == null || port.isBlank()) {
            throw new IllegalStateException(
                    "sidecar port unknown: run through tests/java/run.sh, or pass -Dsidecar.port=N / SIDECAR_PORT=N");
        }
        return Integer.parseInt(port.trim());
    }

    static DurableTaskClient newClient() {
        return new DurableTaskGrpcClientBuilder().port(sidecarPort()).build();
    }

    /** Collects orchestrations and activities for the class's worker. */
    static final class Registry {
        final DurableTaskGrpcWorkerBuilder builder;

        Registry(DurableTaskGrpcWorkerBuilder builder) {
            this.builder = builder;
        }

        Registry orchestration(String name, TaskOrchestration impl) {
            builder.addOrchestration(new TaskOrchestrationFactory() {
                @Override public String getName() { return name; }
                @Override public TaskOrchestration create() { return impl; }
            });
            return this;
        }

        Registry activity(String name, TaskActivity impl) {
            builder.addActivity(new TaskActivityFactory() {
                @Override public String getName() { return name; }
                @Override public TaskActivity create() { return impl; }
            });
            return this;
        }
    }

    /** Registers this class's orchestrations and activities (worker is started afterwards). */
    abstract void register(Registry registry);

    /** The worker's maximumTimerInterval (longer timers are split); null = SDK default (3 days). */
    Duration maximumTimerInterval() {
        return null;
    }

    @BeforeAll
    void startWorkerAndClient() {
        client = newClient();
        DurableTaskGrpcWorkerBuilder builder = new DurableTaskGrpcWorkerBuilder().port(sidecarPort());
        if (maximumTimerInterval() != null) {
            builder.maximumTimerInterval(maximumTimerInterval());
        }
        register(new Registry(builder));
        worker = builder.build();
        worker.start();
    }

    @AfterAll
    void stopWorkerAndClient() {
        // Leave nothing running for the next class's worker (it would not know the orchestration).
        for (String id : created) {
            try {
                OrchestrationMetadata md = client.getInstanceMetadata(id, false);
                if (md.isInstanceFound() && !md.isCompleted()) {
                    client.terminate(id, "test class finished");
                    client.waitForInstanceCompletion(id, Duration.ofSeconds(10), false);
                }
            } catch (Exception e) {
                System.err.println("cleanup of " + id + " failed: " + e);
            }
        }
        created.clear();
        if (worker != null) {
            worker.stop();
        }
        if (client != null) {
            client.close();
        }
    }

    /** Ids handed out by {@link #newId}; terminated after the class if still live. */
    private final List<String> created = new CopyOnWriteArrayList<>();

    /** A unique instance id that names the test, handy when reading sidecar logs. */
    String newId(TestInfo info) {
        return newId(info, "");
    }

    String newId(TestInfo info, String suffix) {
        String method = info.getTestMethod().map(m -> m.getName()).orElse("test");
        String id = "java-" + method + "-" + UUID.randomUUID().toString().substring(0, 8) + suffix;
        created.add(id);
        return id;
    }

    OrchestrationMetadata awaitCompletion(String instanceId) throws TimeoutException {
        return awaitCompletion(instanceId, TIMEOUT);
    }

    OrchestrationMetadata awaitCompletion(String instanceId, Duration timeout) throws TimeoutException {
        OrchestrationMetadata md = client.waitForInstanceCompletion(instanceId, timeout, true);
        assertNotNull(md, "waitForInstanceCompletion returned null for " + instanceId);
        return md;
    }

    /** Polls GetInstance until the predicate holds (or fails the test after {@code timeout}). */
    OrchestrationMetadata pollUntil(String instanceId, Duration timeout, String what,
                                    Predicate<OrchestrationMetadata> condition) throws InterruptedException {
        Instant deadline = Instant.now().plus(timeout);
        OrchestrationMetadata md = null;
        while (Instant.now().isBefore(deadline)) {
            md = client.getInstanceMetadata(instanceId, true);
            if (md.isInstanceFound() && condition.test(md)) {
                return md;
            }
            Thread.sleep(100);
        }
        fail("timed out after " + timeout + " waiting for " + what + " on " + instanceId + "; last state: " + md);
        return md;
    }

    OrchestrationMetadata pollForStatus(String instanceId, OrchestrationRuntimeStatus status) throws InterruptedException {
        return pollUntil(instanceId, Duration.ofSeconds(10), "status " + status, md -> md.getRuntimeStatus() == status);
    }
}
