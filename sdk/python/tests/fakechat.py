"""A chat model that plays a script, for driving real LangGraph agent loops offline."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Union

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

Step = Union[AIMessage, Callable[[list[BaseMessage]], AIMessage]]
_ids = itertools.count(1)


def calls(*named: tuple[str, dict[str, Any]]) -> AIMessage:
    """An assistant turn asking for these tool calls (each with a fresh call id)."""
    return AIMessage(
        content="",
        tool_calls=[{"name": n, "args": a, "id": f"call_{next(_ids)}"} for n, a in named],
    )


def say(text: str) -> AIMessage:
    return AIMessage(content=text)


def tool_results(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    """The tool messages since the last assistant turn."""
    out: list[ToolMessage] = []
    for m in reversed(messages):
        if not isinstance(m, ToolMessage):
            break
        out.append(m)
    return list(reversed(out))


class ScriptedChatModel(BaseChatModel):
    """Each turn plays the next step: a message, or a function of the conversation so far.
    ``bind_tools`` records the tool schemas the model was offered."""

    script: list[Any]
    turn: int = 0
    offered: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.turn >= len(self.script):
            raise AssertionError(f"the script has only {len(self.script)} turns")
        step = self.script[self.turn]
        self.turn += 1
        message = step(messages) if callable(step) else step
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        self.offered = [convert_to_openai_tool(t) for t in tools]
        return self
