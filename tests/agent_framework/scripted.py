"""A chat client with scripted replies (no network, no model) and the agents built on it.

The reply to each call is computed from the messages the framework passes in, which for a
durable agent is the whole conversation the entity keeps in the sidecar. So a reply names
its turn number, the last user message and every earlier user message of that session:
if the sidecar lost, mixed up or duplicated state, the text shows it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import Any

from agent_framework import Agent, BaseChatClient, ChatResponse, ChatResponseUpdate, Content, Message

AGENT_NAME = "echo"


def expected_reply(user_messages: Sequence[str]) -> str:
    """What the scripted client answers when the conversation's user turns are these."""
    *earlier, last = user_messages
    history = " | ".join(earlier) if earlier else "none"
    return f"turn {len(user_messages)}: you said {last!r}; earlier: {history}"


class ScriptedChatClient(BaseChatClient):
    """Implements the framework's chat client interface (``_inner_get_response``).

    ``gate``: while a user message equal to ``gate_message`` is the last one, the client
    blocks until the event is set, so a test can hold a turn in flight (and kill the
    sidecar meanwhile). ``calls`` counts model calls, to see a turn re-run after a crash.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate_message: str | None = None
        self.gate = threading.Event()
        self.entered_gate = threading.Event()
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def _reply_for(self, messages: Sequence[Message]) -> str:
        user_texts = [m.text for m in messages if m.role == "user"]
        if not user_texts:
            raise ValueError("the scripted client needs at least one user message")
        with self._lock:
            self.calls.append(user_texts)
        if self.gate_message is not None and user_texts[-1] == self.gate_message:
            self.entered_gate.set()
            # Bounded so a broken test cannot hang the worker thread for good.
            self.gate.wait(timeout=60)
        return expected_reply(user_texts)

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Any:
        if stream:
            async def updates() -> AsyncIterable[ChatResponseUpdate]:
                text = self._reply_for(messages)
                # Two chunks, so the entity's streaming path really joins updates.
                half = len(text) // 2
                for part in (text[:half], text[half:]):
                    yield ChatResponseUpdate(role="assistant", contents=[Content.from_text(part)])

            return self._build_response_stream(updates())

        async def response() -> ChatResponse:
            text = self._reply_for(messages)
            return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])])

        return response()


def make_agent(chat_client: ScriptedChatClient, name: str = AGENT_NAME) -> Agent:
    return Agent(client=chat_client, name=name, instructions="Answer from the script.")
