"""Microsoft Agent Framework durable agents (agent-framework-durabletask) through the sidecar.

A durable agent is a durable entity ``dafx-<agent name>`` keyed by the session: its state
is the conversation. The client signals ``run`` on it and polls the entity's state for the
reply; an orchestration calls it (call_entity) and waits for the response. The agent's
model is ScriptedChatClient, whose replies name the turn number and the user messages of
the conversation it was given, so each assertion on a reply checks what the sidecar kept.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from durabletask.client import OrchestrationStatus
from durabletask.task import OrchestrationContext

from agent_framework_durabletask import AgentSessionId, DurableAgentSession, DurableAIAgentOrchestrationContext

from _util import wait_until
from scripted import AGENT_NAME, ScriptedChatClient, expected_reply

ENTITY_NAME = AgentSessionId.to_entity_name(AGENT_NAME)


def say(agent, session, text: str) -> str:
    """One user turn; the reply's text, failing on the error replies the client makes up
    (response_timeout when no reply came) or the entity stored (the agent raised)."""
    response = agent.run(text, session=session)
    errors = [c for m in response.messages for c in m.contents if c.type == "error"]
    assert not errors, f"turn {text!r} got an error reply: {[(e.error_code, e.message) for e in errors]}"
    return response.text


def session_key(session: DurableAgentSession) -> str:
    assert session.durable_session_id is not None
    return session.durable_session_id.key


def entity_state(sidecar, key: str) -> dict[str, Any] | None:
    """The agent entity's state through the sidecar's HTTP API (None while it has none)."""
    url = f"{sidecar.http_base}/runtime/webhooks/durabletask/entities/{ENTITY_NAME}/{key}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def conversation(state: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(role, text) of every message of a stored conversation, in order."""
    if state is None:
        return []
    history = state["data"]["conversationHistory"]
    return [(m["role"], "".join(c.get("text", "") for c in m["contents"]))
            for entry in history for m in entry["messages"]]


def turns(*user_messages: str) -> list[tuple[str, str]]:
    """The stored conversation after these user turns, each answered by the script."""
    out: list[tuple[str, str]] = []
    for i, text in enumerate(user_messages):
        out += [("user", text), ("assistant", expected_reply(user_messages[: i + 1]))]
    return out


def test_multi_turn_conversation_keeps_history_in_the_entity(sidecar, agent_host, agents):
    chat = ScriptedChatClient()
    agent_host(chat)
    agent = agents().get_agent(AGENT_NAME)
    session = agent.create_session()

    messages = ["my name is Ada", "I like tea", "what do you know about me?"]
    for i in range(len(messages)):
        assert say(agent, session, messages[i]) == expected_reply(messages[: i + 1])

    # The model saw the whole conversation each turn, and only once each: the history came
    # from the entity's state in the sidecar.
    assert chat.calls == [messages[:1], messages[:2], messages]
    assert conversation(entity_state(sidecar, session_key(session))) == turns(*messages)


def test_conversation_survives_sidecar_sigkill_and_restart(sidecar, agent_host, agents):
    chat = ScriptedChatClient()
    agent_host(chat)  # this worker outlives the sidecar and reconnects to the new process
    agent = agents().get_agent(AGENT_NAME)
    session = agent.create_session()
    assert say(agent, session, "first") == expected_reply(["first"])
    assert say(agent, session, "second") == expected_reply(["first", "second"])
    saved = session.to_dict()

    sidecar.kill()
    sidecar.start()

    # Read back by the HTTP API of the new process, then continued by a new client with
    # the session rebuilt from its serialized form, as an application would.
    assert conversation(entity_state(sidecar, session_key(session))) == turns("first", "second")
    agent = agents().get_agent(AGENT_NAME)
    resumed = DurableAgentSession.from_dict(saved)
    assert say(agent, resumed, "third") == expected_reply(["first", "second", "third"])
    assert conversation(entity_state(sidecar, session_key(session))) == turns("first", "second", "third")


def test_turn_in_flight_when_the_sidecar_dies_is_answered_once_after_restart(sidecar, agent_host, agents):
    chat = ScriptedChatClient()
    agent_host(chat)
    agent = agents().get_agent(AGENT_NAME)
    session = agent.create_session()
    key = session_key(session)
    assert say(agent, session, "before") == expected_reply(["before"])

    # Fire-and-forget: the signal is committed, then the model call is held open while the
    # sidecar is killed, so the first run's result can never be committed.
    chat.gate_message = "during"
    agent.run("during", session=session, options={"wait_for_response": False})
    assert chat.entered_gate.wait(timeout=30), "the agent never started the held turn"
    sidecar.kill()
    chat.gate.set()
    sidecar.start()

    # The new process redelivers the signal; the turn runs again and is stored once.
    wait_until(lambda: len(conversation(entity_state(sidecar, key))) == 4,
               timeout=30.0, what="the held turn to be answered after the restart")
    assert conversation(entity_state(sidecar, key)) == turns("before", "during")
    # Held once in the killed process, run again in the new one: exactly two model calls.
    assert chat.calls.count(["before", "during"]) == 2, chat.calls
    assert say(agent, session, "after") == expected_reply(["before", "during", "after"])


def test_two_sessions_interleaved_and_concurrent_stay_separate(sidecar, agent_host, agents):
    chat = ScriptedChatClient()
    agent_host(chat)
    agent = agents().get_agent(AGENT_NAME)
    a, b = agent.create_session(), agent.create_session()
    assert session_key(a) != session_key(b)

    sent = {"a": [], "b": []}
    sessions = {"a": a, "b": b}
    for name, text in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3"), ("b", "b3")]:
        sent[name].append(text)
        assert say(agent, sessions[name], text) == expected_reply(sent[name])

    # Both sessions at once, from two threads with a client each.
    def two_more(name: str) -> list[str]:
        own = agents().get_agent(AGENT_NAME)
        return [say(own, sessions[name], f"{name}{i}") for i in (4, 5)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = dict(zip("ab", pool.map(two_more, "ab")))
    for name in "ab":
        history = [f"{name}{i}" for i in range(1, 6)]
        assert replies[name] == [expected_reply(history[:4]), expected_reply(history)]
        assert conversation(entity_state(sidecar, session_key(sessions[name]))) == turns(*history)


def ask_agent_twice(ctx: OrchestrationContext, questions: list[str]):
    agent = DurableAIAgentOrchestrationContext(ctx).get_agent(AGENT_NAME)
    session = agent.create_session()
    replies = []
    for question in questions:
        response = yield agent.run(question, session=session)
        replies.append(response.text)
    return {"replies": replies, "key": session.durable_session_id.key}


def test_orchestration_calls_the_agent_and_gets_each_reply(sidecar, agent_host, hub):
    chat = ScriptedChatClient()
    agent_host(chat, orchestrators=[ask_agent_twice])

    instance_id = hub.schedule_new_orchestration(ask_agent_twice, input=["q1", "q2"])
    state = hub.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, (
        f"{state and state.runtime_status}: {state and state.failure_details}")
    output = json.loads(state.serialized_output)
    assert output["replies"] == [expected_reply(["q1"]), expected_reply(["q1", "q2"])]
    assert conversation(entity_state(sidecar, output["key"])) == turns("q1", "q2")
