"""``GovernedToolSet``: the tools of one agent, each governed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from ._client import DEFAULT_APPROVAL_TIMEOUT, Client
from ._govern import Governor, govern_callable


class GovernedToolSet(Sequence[Any]):
    """The tools of one agent, each governed by the daemon.

    ``tools`` is an iterable of plain callables (sync or ``async``) and LangChain tools
    (``BaseTool``, e.g. from ``@tool``), or a mapping of names to callables. Each item comes
    back as the same kind of thing: a LangChain tool as a ``faramesh.langchain.GovernedTool``
    (a ``BaseTool``), a callable as a governed callable. Pass the set wherever the tools went:
    ``ToolNode(toolset)``, ``create_react_agent(model, toolset)``, ``model.bind_tools(toolset)``.

    The tool id the daemon decides on is the tool's name as the framework knows it (a
    ``BaseTool``'s ``name``, a function's ``__name__``), or ``tool_ids[name]`` when given.
    ``on_deny`` applies to LangChain tools: ``"message"`` turns a denial into an error
    ``ToolMessage`` for the model, ``"raise"`` lets ``ToolDeniedException`` propagate.
    Governed callables always raise. The other options are ``Governor``'s.
    """

    def __init__(
        self,
        tools: Iterable[Any] | Mapping[str, Callable[..., Any]],
        *,
        agent: str | None = None,
        session: str | None = None,
        principal: Mapping[str, Any] | None = None,
        client: Client | None = None,
        block_on_defer: bool = False,
        approval_timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
        poll_interval: float = 0.5,
        remember_defers: bool = True,
        report: bool = True,
        on_deny: str = "message",
        tool_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.governor = Governor(
            agent=agent,
            session=session,
            principal=principal,
            client=client,
            block_on_defer=block_on_defer,
            approval_timeout=approval_timeout,
            poll_interval=poll_interval,
            remember_defers=remember_defers,
            report=report,
        )
        self.on_deny = on_deny
        self.tool_ids = dict(tool_ids or {})
        items = tools.items() if isinstance(tools, Mapping) else ((None, t) for t in tools)
        self._tools = [self._wrap(name, t) for name, t in items]
        self._check_tool_ids()

    def _check_tool_ids(self) -> None:
        """A ``tool_ids`` key that names no tool is a typo whose tool would otherwise be
        decided under its model-facing name (and, most likely, denied by default)."""
        names = self.names
        unknown = sorted(set(self.tool_ids) - set(names))
        if unknown:
            raise ValueError(
                f"tool_ids names {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not among the tools "
                f"({', '.join(map(repr, names))})"
            )

    def _wrap(self, name: str | None, tool: Any) -> Any:
        if getattr(tool, "faramesh_governor", None) is not None or _is_governed_tool(tool):
            return tool  # already governed: never decide one call twice
        if _is_langchain_tool(tool):
            from .langchain import GovernedTool

            return GovernedTool(
                tool, self.governor, tool_id=self.tool_ids.get(tool.name), on_deny=self.on_deny
            )
        if callable(tool):
            label = name or getattr(tool, "__name__", None)
            if not label:
                raise ValueError(f"cannot name the tool {tool!r}: pass a mapping of names")
            wrapped = govern_callable(tool, self.governor, tool=self.tool_ids.get(label, label))
            wrapped.__name__ = label
            return wrapped
        raise TypeError(f"not a tool: {tool!r}")

    @property
    def names(self) -> list[str]:
        """The tools' names as the framework knows them."""
        return [_name(t) for t in self._tools]

    def get(self, name: str) -> Any:
        """The governed tool called ``name``; ``KeyError`` if none."""
        for t in self._tools:
            if _name(t) == name:
                return t
        raise KeyError(name)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        return self._tools[i]

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tools)

    def __repr__(self) -> str:
        return f"GovernedToolSet({self.names!r}, agent={self.governor.agent!r})"


def _is_langchain_tool(tool: Any) -> bool:
    # No import of LangChain just to ask: if it is not loaded, nothing is a BaseTool.
    tools = sys.modules.get("langchain_core.tools")
    return tools is not None and isinstance(tool, tools.BaseTool)


def _is_governed_tool(tool: Any) -> bool:
    mod = sys.modules.get("faramesh.langchain")
    return mod is not None and isinstance(tool, mod.GovernedTool)


def _name(tool: Any) -> str:
    return str(getattr(tool, "name", None) or getattr(tool, "__name__", ""))
