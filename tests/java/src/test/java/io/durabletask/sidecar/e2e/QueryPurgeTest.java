package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.OrchestrationMetadata;
import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import com.microsoft.durabletask.OrchestrationStatusQuery;
import com.microsoft.durabletask.OrchestrationStatusQueryResult;
import com.microsoft.durabletask.PurgeInstanceCriteria;
import com.microsoft.durabletask.PurgeResult;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.*;

/** QueryInstances (filters, payloads, paging) and PurgeInstances (by id, by filter). */
class QueryPurgeTest extends SidecarTestBase {
    @Override
    void register(Registry r) {
        r.orchestration("Double", ctx -> ctx.complete(ctx.getInput(int.class) * 2));
        r.orchestration("Waiter", ctx -> ctx.complete(ctx.waitForExternalEvent("Go", String.class).await()));
    }

    private static String prefix(String what) {
        return "java-" + what + "-" + UUID.randomUUID().toString().substring(0, 8) + "-";
    }

    private static Set<String> ids(List<OrchestrationMetadata> list) {
        return list.stream().map(OrchestrationMetadata::getInstanceId).collect(Collectors.toSet());
    }

    @Test
    void queryInstances() throws Exception {
        String p = prefix("query");
        Instant before = Instant.now().minusSeconds(1);
        List<String> done = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            String id = p + "done-" + i;
            client.scheduleNewOrchestrationInstance("Double", i + 1, id);
            done.add(id);
        }
        String running = p + "running";
        client.scheduleNewOrchestrationInstance("Waiter", "in", running);
        for (String id : done) {
            assertEquals(OrchestrationRuntimeStatus.COMPLETED, awaitCompletion(id).getRuntimeStatus());
        }
        client.waitForInstanceStart(running, TIMEOUT, false);
        Instant after = Instant.now().plusSeconds(1);

        // Prefix only, with payloads.
        OrchestrationStatusQueryResult all = client.queryInstances(
                new OrchestrationStatusQuery().setInstanceIdPrefix(p).setFetchInputsAndOutputs(true));
        assertEquals(4, all.getOrchestrationState().size(), "prefix query: " + all.getOrchestrationState());
        assertEquals(new HashSet<>(List.of(done.get(0), done.get(1), done.get(2), running)), ids(all.getOrchestrationState()));
        for (OrchestrationMetadata md : all.getOrchestrationState()) {
            if (md.getInstanceId().equals(running)) {
                assertEquals(OrchestrationRuntimeStatus.RUNNING, md.getRuntimeStatus());
                assertEquals("Waiter", md.getName());
                assertEquals("in", md.readInputAs(String.class));
            } else {
                int n = Integer.parseInt(md.getInstanceId().substring(md.getInstanceId().length() - 1)) + 1;
                assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
                assertEquals("Double", md.getName());
                assertEquals(n, md.readInputAs(int.class));
                assertEquals(2 * n, md.readOutputAs(int.class));
            }
        }

        // Status filter.
        OrchestrationStatusQueryResult completed = client.queryInstances(new OrchestrationStatusQuery()
                .setInstanceIdPrefix(p)
                .setRuntimeStatusList(List.of(OrchestrationRuntimeStatus.COMPLETED)));
        assertEquals(new HashSet<>(done), ids(completed.getOrchestrationState()));
        OrchestrationStatusQueryResult runningOnly = client.queryInstances(new OrchestrationStatusQuery()
                .setInstanceIdPrefix(p)
                .setRuntimeStatusList(List.of(OrchestrationRuntimeStatus.RUNNING, OrchestrationRuntimeStatus.PENDING)));
        assertEquals(Set.of(running), ids(runningOnly.getOrchestrationState()));

        // Without payloads the input/output are absent.
        OrchestrationStatusQueryResult noPayloads = client.queryInstances(
                new OrchestrationStatusQuery().setInstanceIdPrefix(p).setFetchInputsAndOutputs(false));
        assertEquals(4, noPayloads.getOrchestrationState().size());
        for (OrchestrationMetadata md : noPayloads.getOrchestrationState()) {
            assertTrue(md.getSerializedInput() == null || md.getSerializedInput().isEmpty(),
                    "input returned although not requested: " + md.getSerializedInput());
            assertTrue(md.getSerializedOutput() == null || md.getSerializedOutput().isEmpty(),
                    "output returned although not requested: " + md.getSerializedOutput());
        }

        // Created-time window.
        OrchestrationStatusQueryResult inWindow = client.queryInstances(new OrchestrationStatusQuery()
                .setInstanceIdPrefix(p).setCreatedTimeFrom(before).setCreatedTimeTo(after));
        assertEquals(4, inWindow.getOrchestrationState().size());
        OrchestrationStatusQueryResult afterWindow = client.queryInstances(new OrchestrationStatusQuery()
                .setInstanceIdPrefix(p).setCreatedTimeFrom(after));
        assertEquals(0, afterWindow.getOrchestrationState().size());

        // Paging with 2 per page over 4 instances.
        Set<String> seen = new HashSet<>();
        String token = null;
        int pages = 0;
        do {
            OrchestrationStatusQueryResult page = client.queryInstances(new OrchestrationStatusQuery()
                    .setInstanceIdPrefix(p).setMaxInstanceCount(2).setContinuationToken(token));
            pages++;
            assertTrue(page.getOrchestrationState().size() <= 2, "page larger than requested: " + page.getOrchestrationState().size());
            assertFalse(page.getOrchestrationState().isEmpty(), "empty page " + pages + " (token " + token + ")");
            for (OrchestrationMetadata md : page.getOrchestrationState()) {
                assertTrue(seen.add(md.getInstanceId()), "instance returned twice: " + md.getInstanceId());
            }
            token = page.getContinuationToken();
            if (token != null && token.isEmpty()) {
                token = null;
            }
            assertTrue(pages <= 3, "too many pages");
        } while (token != null);
        assertEquals(4, seen.size());
        assertEquals(2, pages);

        client.terminate(running, "cleanup");
        awaitCompletion(running);
    }

    @Test
    void purgeById() throws Exception {
        String id = prefix("purge") + "one";
        client.scheduleNewOrchestrationInstance("Double", 21, id);
        OrchestrationMetadata md = awaitCompletion(id);
        assertEquals(42, md.readOutputAs(int.class));

        PurgeResult result = client.purgeInstance(id);
        assertEquals(1, result.getDeletedInstanceCount());
        assertFalse(client.getInstanceMetadata(id, true).isInstanceFound(), "purged instance still found");

        // Purging again (or an unknown id) deletes nothing.
        assertEquals(0, client.purgeInstance(id).getDeletedInstanceCount());

        // The id is free again.
        client.scheduleNewOrchestrationInstance("Double", 1, id);
        assertEquals(2, awaitCompletion(id).readOutputAs(int.class));
    }

    @Test
    void purgeOfRunningInstanceDeletesNothing() throws Exception {
        String id = prefix("purge-running") + "one";
        client.scheduleNewOrchestrationInstance("Waiter", null, id);
        client.waitForInstanceStart(id, TIMEOUT, false);

        assertEquals(0, client.purgeInstance(id).getDeletedInstanceCount());
        OrchestrationMetadata md = client.getInstanceMetadata(id, false);
        assertTrue(md.isInstanceFound());
        assertEquals(OrchestrationRuntimeStatus.RUNNING, md.getRuntimeStatus());

        client.raiseEvent(id, "Go", "finished");
        assertEquals("finished", awaitCompletion(id).readOutputAs(String.class));
        assertEquals(1, client.purgeInstance(id).getDeletedInstanceCount());
    }

    @Test
    void purgeByFilter() throws Exception {
        String p = prefix("purge-filter");
        Instant from = Instant.now();
        Thread.sleep(50);
        String a = p + "a", b = p + "b", running = p + "running";
        client.scheduleNewOrchestrationInstance("Double", 1, a);
        client.scheduleNewOrchestrationInstance("Double", 2, b);
        client.scheduleNewOrchestrationInstance("Waiter", null, running);
        awaitCompletion(a);
        awaitCompletion(b);
        client.waitForInstanceStart(running, TIMEOUT, false);
        Thread.sleep(50);
        Instant to = Instant.now();

        PurgeResult result = client.purgeInstances(new PurgeInstanceCriteria()
                .setCreatedTimeFrom(from)
                .setCreatedTimeTo(to)
                .setRuntimeStatusList(List.of(OrchestrationRuntimeStatus.COMPLETED))
                .setTimeout(Duration.ofSeconds(30)));
        assertEquals(2, result.getDeletedInstanceCount());
        assertFalse(client.getInstanceMetadata(a, false).isInstanceFound());
        assertFalse(client.getInstanceMetadata(b, false).isInstanceFound());
        assertTrue(client.getInstanceMetadata(running, false).isInstanceFound(), "running instance must survive");

        client.terminate(running, "cleanup");
        assertEquals(OrchestrationRuntimeStatus.TERMINATED, awaitCompletion(running).getRuntimeStatus());
        // A TERMINATED instance matches a TERMINATED filter.
        PurgeResult terminated = client.purgeInstances(new PurgeInstanceCriteria()
                .setCreatedTimeFrom(from)
                .setCreatedTimeTo(to)
                .setRuntimeStatusList(List.of(OrchestrationRuntimeStatus.TERMINATED)));
        assertEquals(1, terminated.getDeletedInstanceCount());
        assertFalse(client.getInstanceMetadata(running, false).isInstanceFound());
    }
}
