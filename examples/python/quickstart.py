"""Durable Task quickstart against a local durabletask-sidecar.

Start the sidecar first:
    cargo run --release -- --port 4001 --db quickstart.db
then:
    pip install -r examples/python/requirements.txt
    python examples/python/quickstart.py [host:port]

The address defaults to localhost:4001 and can also be set with DURABLETASK_ADDR.
"""

import os
import sys

from durabletask import client, task, worker


def say_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Hello {city}!"


def greetings(ctx: task.OrchestrationContext, cities: list):
    """Function chaining: call an activity for each city, one after another."""
    results = []
    for city in cities:
        results.append((yield ctx.call_activity(say_hello, input=city)))
    return results


def square(ctx: task.ActivityContext, n: int) -> int:
    return n * n


def sum_of_squares(ctx: task.OrchestrationContext, count: int):
    """Fan-out/fan-in: run the activities in parallel, then aggregate."""
    parts = yield task.when_all([ctx.call_activity(square, input=i) for i in range(1, count + 1)])
    return sum(parts)


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DURABLETASK_ADDR", "localhost:4001")

    with worker.TaskHubGrpcWorker(host_address=address) as w:
        w.add_orchestrator(greetings)
        w.add_orchestrator(sum_of_squares)
        w.add_activity(say_hello)
        w.add_activity(square)
        w.start()

        with client.TaskHubGrpcClient(host_address=address) as c:
            ok = True
            for orchestrator, arg in ((greetings, ["Tokyo", "Seattle", "London"]), (sum_of_squares, 10)):
                instance_id = c.schedule_new_orchestration(orchestrator, input=arg)
                state = c.wait_for_orchestration_completion(instance_id, timeout=60)
                if state is None:
                    print(f"{orchestrator.__name__}: instance {instance_id} not found")
                    ok = False
                elif state.runtime_status != client.OrchestrationStatus.COMPLETED:
                    print(f"{orchestrator.__name__}: {state.runtime_status.name}: {state.failure_details}")
                    ok = False
                else:
                    print(f"{orchestrator.__name__} ({instance_id}): {state.get_output()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
