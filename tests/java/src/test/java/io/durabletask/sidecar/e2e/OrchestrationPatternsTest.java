package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import com.microsoft.durabletask.Task;
import com.microsoft.durabletask.TaskCanceledException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.*;

/** Core orchestration patterns: chaining, fan-out/fan-in, sub-orchestrations, events, timers, continue-as-new. */
class OrchestrationPatternsTest extends SidecarTestBase {
    /** Activity executions per key (keys are unique per test), to detect lost or duplicated work. */
    static final Map<String, AtomicInteger> EXECUTIONS = new ConcurrentHashMap<>();

    static int count(String key) {
        AtomicInteger n = EXECUTIONS.get(key);
        return n == null ? 0 : n.get();
    }

    @Override
    void register(Registry r) {
        r.activity("SayHello", ctx -> "Hello, " + ctx.getInput(String.class) + "!");

        r.activity("Square", ctx -> {
            // input "key:i"
            String in = ctx.getInput(String.class);
            String key = in.substring(0, in.lastIndexOf(':'));
            int i = Integer.parseInt(in.substring(in.lastIndexOf(':') + 1));
            EXECUTIONS.computeIfAbsent(key, k -> new AtomicInteger()).incrementAndGet();
            return i * i;
        });

        r.activity("Increment", ctx -> ctx.getInput(int.class) + 1);

        // Activity chaining: three activities one after another.
        r.orchestration("Sequence", ctx -> {
            String prefix = ctx.getInput(String.class);
            List<String> out = new ArrayList<>();
            for (String city : List.of("Tokyo", "Seattle", "London")) {
                out.add(ctx.callActivity("SayHello", prefix + city, String.class).await());
            }
            ctx.complete(out);
        });

        // Fan-out/fan-in: N activities scheduled in one episode, awaited together.
        r.orchestration("FanOutFanIn", ctx -> {
            int n = ctx.getInput(int.class);
            String key = ctx.getInstanceId();
            List<Task<Integer>> tasks = IntStream.range(0, n)
                    .mapToObj(i -> ctx.callActivity("Square", key + ":" + i, Integer.class))
                    .collect(Collectors.toList());
            List<Integer> results = ctx.allOf(tasks).await();
            ctx.complete(results);
        });

        // Sub-orchestration with an explicit child id, plus a default-id child.
        r.orchestration("Parent", ctx -> {
            int input = ctx.getInput(int.class);
            String childId = ctx.getInstanceId() + "-child";
            int fromNamed = ctx.callSubOrchestrator("Child", input, childId, int.class).await();
            int fromDefault = ctx.callSubOrchestrator("Child", input + 1, int.class).await();
            ctx.complete(List.of(fromNamed, fromDefault));
        });
        r.orchestration("Child", ctx -> {
            int v = ctx.getInput(int.class);
            int inc = ctx.callActivity("Increment", v, int.class).await();
            ctx.complete(inc * 10);
        });

        // Recursive sub-orchestration (same shape as the SDK's own e2e test).
        r.orchestration("Recursive", ctx -> {
            int input = ctx.getInput(int.class);
            int result = 5;
            if (input < 3) {
                result += ctx.callSubOrchestrator("Recursive", input + 1, int.class).await();
            }
            ctx.complete(result);
        });

        // External events: three events, in order.
        r.orchestration("ThreeEvents", ctx -> {
            List<String> got = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                got.add(ctx.waitForExternalEvent("Approval", String.class).await());
            }
            ctx.complete(got);
        });

        // External event with a timeout (timer vs. event race).
        r.orchestration("EventOrTimeout", ctx -> {
            try {
                String v = ctx.waitForExternalEvent("Go", Duration.ofSeconds(2), String.class).await();
                ctx.complete("event:" + v);
            } catch (TaskCanceledException e) {
                ctx.complete("timeout");
            }
        });

        // Durable timer: report orchestration time before and after.
        r.orchestration("Timer", ctx -> {
            Instant before = ctx.getCurrentInstant();
            ctx.createTimer(Duration.ofSeconds(2)).await();
            Instant after = ctx.getCurrentInstant();
            Map<String, Long> out = new HashMap<>();
            out.put("before", before.toEpochMilli());
            out.put("after", after.toEpochMilli());
            ctx.complete(out);
        });

        // Continue-as-new: counter increments through an activity until the target.
        r.orchestration("Counter", ctx -> {
            int n = ctx.getInput(int.class);
            if (n >= 5) {
                ctx.complete(n);
                return;
            }
            int next = ctx.callActivity("Increment", n, int.class).await();
            ctx.continueAsNew(next);
        });

        // Continue-as-new that consumes one external event per generation, keeping the rest.
        r.orchestration("EventCounter", ctx -> {
            int received = ctx.getInput(int.class);
            if (received >= 3) {
                ctx.complete(received);
                return;
            }
            ctx.waitForExternalEvent("Tick", int.class).await();
            ctx.continueAsNew(received + 1, true);
        });

        // Custom status: set, replaced, then cleared.
        r.orchestration("CustomStatus", ctx -> {
            ctx.setCustomStatus("Started!");
            Object status = ctx.waitForExternalEvent("Status", Object.class).await();
            ctx.setCustomStatus(status);
            ctx.waitForExternalEvent("Clear").await();
            ctx.clearCustomStatus();
            ctx.complete("done");
        });
    }

    @Test
    void activitySequence(TestInfo info) throws Exception {
        String id = newId(info);
        Instant start = Instant.now().minusSeconds(1);
        assertEquals(id, client.scheduleNewOrchestrationInstance("Sequence", "dear ", id));

        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(id, md.getInstanceId());
        assertEquals("Sequence", md.getName());
        assertEquals("dear ", md.readInputAs(String.class));
        assertEquals(List.of("Hello, dear Tokyo!", "Hello, dear Seattle!", "Hello, dear London!"),
                md.readOutputAs(List.class));
        assertFalse(md.isCustomStatusFetched(), "no custom status was set");
        assertTrue(md.getCreatedAt().isAfter(start), "createdAt " + md.getCreatedAt());
        assertFalse(md.getLastUpdatedAt().isBefore(md.getCreatedAt()), "lastUpdatedAt before createdAt");
        assertTrue(md.isCompleted());

        // GetInstance agrees with the wait result.
        OrchestrationMetadata again = client.getInstanceMetadata(id, true);
        assertTrue(again.isInstanceFound());
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, again.getRuntimeStatus());
        assertEquals(md.getSerializedOutput(), again.getSerializedOutput());
    }

    @Test
    void fanOutFanIn(TestInfo info) throws Exception {
        String id = newId(info);
        int n = 10;
        client.scheduleNewOrchestrationInstance("FanOutFanIn", n, id);

        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        List<Integer> expected = IntStream.range(0, n).map(i -> i * i).boxed().collect(Collectors.toList());
        assertEquals(expected, md.readOutputAs(List.class));
        assertEquals(n, count(id), "each activity must run exactly once");
    }

    @Test
    void subOrchestration(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Parent", 4, id);

        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(List.of(50, 60), md.readOutputAs(List.class));

        OrchestrationMetadata child = client.getInstanceMetadata(id + "-child", true);
        assertTrue(child.isInstanceFound(), "child with the explicit id must exist");
        assertEquals("Child", child.getName());
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, child.getRuntimeStatus());
        assertEquals(4, child.readInputAs(int.class));
        assertEquals(50, child.readOutputAs(int.class));
    }

    @Test
    void recursiveSubOrchestrations(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Recursive", 1, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(15, md.readOutputAs(int.class));
    }

    @Test
    void externalEventsRaisedBeforeStart(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("ThreeEvents", null, id);
        // Raised immediately: the first two may arrive before the first episode.
        client.raiseEvent(id, "Approval", "first");
        client.raiseEvent(id, "Approval", "second");
        client.raiseEvent(id, "Approval", "third");

        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(List.of("first", "second", "third"), md.readOutputAs(List.class));
    }

    @Test
    void externalEventWhileRunning(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("ThreeEvents", null, id);
        OrchestrationMetadata started = client.waitForInstanceStart(id, TIMEOUT, false);
        assertEquals(OrchestrationRuntimeStatus.RUNNING, started.getRuntimeStatus());
        for (String s : List.of("a", "b", "c")) {
            Thread.sleep(200);
            client.raiseEvent(id, "Approval", s);
        }
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(List.of("a", "b", "c"), md.readOutputAs(List.class));
    }

    @Test
    void externalEventWinsOverTimer(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("EventOrTimeout", null, id);
        client.waitForInstanceStart(id, TIMEOUT, false);
        client.raiseEvent(id, "Go", "now");
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("event:now", md.readOutputAs(String.class));

        // The losing 2 s timer fires later; it must not re-run or change the completed instance.
        Thread.sleep(2500);
        OrchestrationMetadata later = client.getInstanceMetadata(id, true);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, later.getRuntimeStatus());
        assertEquals("event:now", later.readOutputAs(String.class));
    }

    @Test
    void timerWinsOverMissingEvent(TestInfo info) throws Exception {
        String id = newId(info);
        long t0 = System.nanoTime();
        client.scheduleNewOrchestrationInstance("EventOrTimeout", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("timeout", md.readOutputAs(String.class));
        assertTrue(Duration.ofNanos(System.nanoTime() - t0).toMillis() >= 1900, "timer fired early");
    }

    @Test
    void durableTimer(TestInfo info) throws Exception {
        String id = newId(info);
        long t0 = System.nanoTime();
        client.scheduleNewOrchestrationInstance("Timer", null, id);
        OrchestrationMetadata md = awaitCompletion(id);
        long wallMs = Duration.ofNanos(System.nanoTime() - t0).toMillis();
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());

        @SuppressWarnings("unchecked")
        Map<String, Number> out = md.readOutputAs(Map.class);
        long orchestrationMs = out.get("after").longValue() - out.get("before").longValue();
        assertTrue(orchestrationMs >= 2000, "orchestration time advanced only " + orchestrationMs + " ms across a 2 s timer");
        assertTrue(wallMs >= 2000, "completed after " + wallMs + " ms, timer fired early");
        assertTrue(wallMs < 15000, "timer fired far too late: " + wallMs + " ms");
        assertFalse(md.getLastUpdatedAt().isBefore(md.getCreatedAt().plusSeconds(2)),
                "lastUpdatedAt " + md.getLastUpdatedAt() + " vs createdAt " + md.getCreatedAt());
    }

    @Test
    void continueAsNew(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Counter", 0, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(5, md.readOutputAs(int.class));
        // The input of the last generation is what the instance reports.
        assertEquals(5, md.readInputAs(int.class));
        assertEquals(id, md.getInstanceId());
    }

    @Test
    void continueAsNewKeepsUnprocessedEvents(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("EventCounter", 0, id);
        for (int i = 0; i < 3; i++) {
            client.raiseEvent(id, "Tick", i);
        }
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals(3, md.readOutputAs(int.class));
    }

    @Test
    void customStatus(TestInfo info) throws Exception {
        String id = newId(info);
        client.scheduleNewOrchestrationInstance("CustomStatus", null, id);

        OrchestrationMetadata md = client.waitForInstanceStart(id, TIMEOUT, true);
        assertEquals(OrchestrationRuntimeStatus.RUNNING, md.getRuntimeStatus());
        assertTrue(md.isCustomStatusFetched(), "custom status of the first episode must be visible");
        assertEquals("Started!", md.readCustomStatusAs(String.class));

        Map<String, Integer> payload = Map.of("Hello", 45);
        client.raiseEvent(id, "Status", payload);
        md = pollUntil(id, Duration.ofSeconds(10), "custom status replaced",
                m -> m.isCustomStatusFetched() && m.readCustomStatusAs(Object.class) instanceof Map);
        assertEquals(payload, md.readCustomStatusAs(Map.class));

        client.raiseEvent(id, "Clear");
        md = awaitCompletion(id);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertFalse(md.isCustomStatusFetched(), "cleared custom status must be absent");
    }
}
