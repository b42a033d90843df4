package io.durabletask.sidecar.e2e;

import com.microsoft.durabletask.OrchestrationRuntimeStatus;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

import static org.junit.jupiter.api.Assertions.*;

/**
 * CreateTaskHub / DeleteTaskHub. The sidecar wipes the whole database on DeleteTaskHub
 * (PROTOCOL.md §3.13), so this class relies on test classes running one after another.
 */
class TaskHubAdminTest extends SidecarTestBase {
    @Override
    void register(Registry r) {
        r.orchestration("Hello", ctx -> ctx.complete("hello " + ctx.getInput(String.class)));
    }

    @Test
    void createAndDeleteTaskHub(TestInfo info) throws Exception {
        client.createTaskHub(false);

        String id = newId(info);
        client.scheduleNewOrchestrationInstance("Hello", "hub", id);
        assertEquals("hello hub", awaitCompletion(id).readOutputAs(String.class));

        client.deleteTaskHub();
        assertFalse(client.getInstanceMetadata(id, false).isInstanceFound(), "DeleteTaskHub left the instance behind");

        client.createTaskHub(true);
        // The hub works again afterwards, with the same connected worker.
        String id2 = newId(info);
        client.scheduleNewOrchestrationInstance("Hello", "again", id2);
        var md = awaitCompletion(id2);
        assertEquals(OrchestrationRuntimeStatus.COMPLETED, md.getRuntimeStatus());
        assertEquals("hello again", md.readOutputAs(String.class));
    }
}
