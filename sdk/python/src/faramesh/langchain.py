"""LangChain / LangGraph integration: ``GovernedTool`` wraps a ``BaseTool``.

Imported only when a LangChain tool is governed, so the SDK itself needs nothing but the
standard library.

The wrapper is itself a ``BaseTool`` with the inner tool's name, description and schemas, so
``bind_tools``, ``ToolNode`` and ``create_react_agent`` see the same tool. Each run:

1. parses the input exactly as the inner tool will (its own schema and validators), so the
   daemon decides on the values the tool will receive, not on what the model typed;
2. asks the daemon, with the tool's name (or the id given in ``tool_ids``) as tool id and the
   arguments the model controls (injected arguments such as graph state are left out);
3. on a permit, runs the inner tool unchanged (its callbacks, error handling, artifacts),
   with the credential available from ``faramesh.current_credential()``;
4. otherwise does not run it: with ``on_deny="message"`` (default) the model gets an error
   ``ToolMessage`` saying why (and, for a defer, the approval token), so the agent loop goes
   on; with ``on_deny="raise"`` the ``ToolDeniedException`` propagates out of the graph.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import PrivateAttr

from ._errors import DaemonUnavailable, ToolDeferredException, ToolDeniedException
from ._govern import Governor, _Running
from ._jsonargs import to_json_args

ON_DENY = ("message", "raise")
_FILTERED = ("run_manager", "callbacks")


class GovernedTool(BaseTool):
    """A LangChain tool whose every run is decided by the faramesh daemon first."""

    _inner: BaseTool = PrivateAttr()
    _governor: Governor = PrivateAttr()
    _tool_id: str = PrivateAttr()
    _on_deny: str = PrivateAttr()

    def __init__(
        self,
        inner: BaseTool,
        governor: Governor,
        *,
        tool_id: str | None = None,
        on_deny: str = "message",
    ) -> None:
        if on_deny not in ON_DENY:
            raise ValueError(f"on_deny must be one of {ON_DENY}")
        super().__init__(
            name=inner.name,
            description=inner.description,
            args_schema=inner.args_schema,
            return_direct=inner.return_direct,
            response_format=inner.response_format,
            tags=inner.tags,
            metadata=inner.metadata,
        )
        self._inner = inner
        self._governor = governor
        self._tool_id = tool_id or inner.name
        self._on_deny = on_deny

    # --- what frameworks read: the inner tool's ------------------------------------------

    @property
    def inner(self) -> BaseTool:
        return self._inner

    @property
    def tool_id(self) -> str:
        return self._tool_id

    @property
    def func(self) -> Any:
        # ToolNode reads the function's annotations to find injected arguments.
        return getattr(self._inner, "func", None)

    @property
    def coroutine(self) -> Any:
        return getattr(self._inner, "coroutine", None)

    @property
    def tool_call_schema(self) -> Any:
        return self._inner.tool_call_schema

    def get_input_schema(self, config: Any = None) -> Any:
        return self._inner.get_input_schema(config)

    # --- running -------------------------------------------------------------------------

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a GovernedTool runs through run/invoke, which govern the call")

    def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        call_args = self._governed_args(tool_input, kwargs.get("tool_call_id"))
        try:
            decision = self._governor.check(self._tool_id, call_args)
        except ToolDeniedException as e:
            return self._denied(e, kwargs.get("tool_call_id"))
        with _Running(decision):
            try:
                out = self._inner.run(tool_input, *args, **kwargs)
            except Exception:
                self._governor.ran(decision, False)
                raise
        self._governor.ran(decision, not _is_error(out))
        return out

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        call_args = self._governed_args(tool_input, kwargs.get("tool_call_id"))
        try:
            decision = await self._governor.acheck(self._tool_id, call_args)
        except ToolDeniedException as e:
            return self._denied(e, kwargs.get("tool_call_id"))
        with _Running(decision):
            try:
                out = await self._inner.arun(tool_input, *args, **kwargs)
            except Exception:
                await self._governor.aran(decision, False)
                raise
        await self._governor.aran(decision, not _is_error(out))
        return out

    def _governed_args(self, tool_input: Any, tool_call_id: str | None) -> dict[str, Any]:
        """The arguments the inner tool will receive, as JSON, less the injected ones."""
        inner = self._inner
        if isinstance(tool_input, str):
            return {_first_field(inner): tool_input}
        if not isinstance(tool_input, dict):
            raise TypeError(f"tool input must be a str or a dict, not {type(tool_input).__name__}")
        parse = getattr(inner, "_parse_input", None)
        drop = getattr(inner, "_filter_injected_args", None)
        if callable(parse) and callable(drop):
            # The inner tool's own parsing (validators included): what it will run with.
            parsed = parse(dict(tool_input), tool_call_id)
            if isinstance(parsed, str):
                return {_first_field(inner): parsed}
            return to_json_args(drop(dict(parsed)))
        return self._by_schema(tool_input)

    def _by_schema(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        # Older langchain-core without the private helpers: the model-facing schema.
        schema: Any = self._inner.tool_call_schema
        if isinstance(schema, dict):
            props = schema.get("properties")
            keep = {k: v for k, v in tool_input.items() if props is None or k in props}
            return to_json_args(keep)
        fields = _fields(schema)
        names = set(fields) | {a for f in fields.values() if (a := getattr(f, "alias", None))}
        given = {k: v for k, v in tool_input.items() if k in names}
        if hasattr(schema, "model_validate"):  # pydantic 2
            dumped = schema.model_validate(given).model_dump(mode="json", by_alias=True)
        else:  # pydantic 1 models, which LangChain still accepts
            dumped = json.loads(schema.parse_obj(given).json(by_alias=True))
        return to_json_args(dumped)

    def _denied(self, e: ToolDeniedException, tool_call_id: str | None) -> Any:
        if self._on_deny == "raise":
            raise e
        content = denial_message(e)
        if tool_call_id is None:
            return content
        return ToolMessage(
            content=content, name=self.name, tool_call_id=tool_call_id, status="error"
        )


def denial_message(e: ToolDeniedException) -> str:
    """What the model is told when a call did not run."""
    where = f", {e.rule_ref}" if e.rule_ref else ""
    if isinstance(e, DaemonUnavailable):
        return (
            f"This call did not run: faramesh could not decide it ({e.code}: {e.reason}). "
            "Nothing was executed."
        )
    if isinstance(e, ToolDeferredException):
        return (
            f"This call did not run yet: it needs an operator's approval ({e.reason}; "
            f"{e.code}{where}). Approval token: {e.defer_token}. Once an operator has "
            "approved it, make the identical call again and it will run once."
        )
    text = f"This call was denied by policy and did not run ({e.code}{where}): {e.reason}."
    if e.retry_after is not None:
        text += f" It may succeed after {e.retry_after:g} s."
    return text


def _first_field(tool: BaseTool) -> str:
    schema: Any = tool.tool_call_schema
    if isinstance(schema, dict):
        props = schema.get("properties") or {}
        return next(iter(props), "input")
    return next(iter(_fields(schema)), "input")


def _fields(schema: Any) -> dict[str, Any]:
    """A pydantic model's fields, v2 or v1."""
    fields = getattr(schema, "model_fields", None)
    if fields is None:
        fields = getattr(schema, "__fields__", {})
    return dict(fields)


def _is_error(out: Any) -> bool:
    return isinstance(out, ToolMessage) and out.status == "error"
