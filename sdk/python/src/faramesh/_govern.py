"""Governing a call: ask the daemon, run the tool only on a permit, hand it the credential.

``Governor`` holds what every governed call of one agent shares (client, identity, defer
handling); ``governed`` and ``GovernedToolSet`` are built on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from ._client import DEFAULT_APPROVAL_TIMEOUT, Client
from ._decision import Approval, Credential, Decision
from ._default import default_client
from ._errors import (
    APPROVAL_TIMEOUT,
    DAEMON_PROTOCOL_ERROR,
    ApprovalTimeout,
    DaemonUnavailable,
    FarameshError,
    RpcError,
    ToolDeniedException,
)
from ._jsonargs import canonical, to_json_args

log = logging.getLogger("faramesh")

F = TypeVar("F", bound=Callable[..., Any])

#: The keyword a governed function declares to receive its credential.
CREDENTIAL_PARAM = "faramesh_credential"

# A retry that ends in one of these used its token up: the next identical call asks afresh.
_SPENT = frozenset(
    {"APPROVAL_CONSUMED", "APPROVAL_REJECTED", "APPROVAL_EXPIRED", "APPROVAL_MISMATCH"}
)
_MAX_REMEMBERED = 1024

_credential: contextvars.ContextVar[Credential | None] = contextvars.ContextVar(
    "faramesh_credential", default=None
)
_decision: contextvars.ContextVar[Decision | None] = contextvars.ContextVar(
    "faramesh_decision", default=None
)


def current_credential() -> Credential | None:
    """The credential minted for the governed call running in this context, or ``None``
    (outside a governed call, or when the policy binds no credential to the tool)."""
    return _credential.get()


def current_decision() -> Decision | None:
    """The permit under which the governed call running in this context runs."""
    return _decision.get()


class _Running:
    """Sets the current decision and credential for the duration of one tool call."""

    __slots__ = ("_d", "_c", "_decision")

    def __init__(self, decision: Decision) -> None:
        self._decision = decision

    def __enter__(self) -> None:
        self._d = _decision.set(self._decision)
        self._c = _credential.set(self._decision.credential)

    def __exit__(self, *exc: object) -> None:
        _credential.reset(self._c)
        _decision.reset(self._d)


class Governor:
    """What the governed calls of one agent share.

    ``block_on_defer``: on a defer, wait (up to ``approval_timeout`` seconds) for the
    operator, then retry with the defer token; an approved retry is permitted once.
    ``remember_defers``: after a defer, the next identical call (same tool and arguments)
    carries the defer token, so once the operator has approved, calling again runs it.
    ``report``: after a permitted call ran, tell the daemon whether it succeeded.
    """

    def __init__(
        self,
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
    ) -> None:
        self.agent = agent
        self.session = session
        self.principal = dict(principal) if principal is not None else None
        self._client = client
        self.block_on_defer = block_on_defer
        self.approval_timeout = approval_timeout
        self.poll_interval = poll_interval
        self.remember_defers = remember_defers
        self.report = report
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else default_client()

    def check(self, tool: str, args: dict[str, Any]) -> Decision:
        """The permit for this call, or ``ToolDeniedException`` (its subclasses for defer and
        an unavailable daemon)."""
        client = self.client
        key, token = self._recall(tool, args)
        d = client.decide(tool, args, defer_token=token, **self._who())
        if d.deferred and self.block_on_defer:
            key = self._remember(tool, args, key, d)
            self._waited(d, tool, lambda: client.wait_for_approval(
                d.defer_token or "", self.approval_timeout, poll_interval=self.poll_interval))
            token = d.defer_token
            d = client.decide(tool, args, defer_token=token, **self._who())
        return self._settle(tool, args, key, token, d)

    async def acheck(self, tool: str, args: dict[str, Any]) -> Decision:
        """``check`` for asyncio: the socket calls run in a thread, waits use asyncio."""
        client = self.client
        key, token = self._recall(tool, args)
        d = await client.agovern(tool, args, defer_token=token, **self._who())
        if d.deferred and self.block_on_defer:
            key = self._remember(tool, args, key, d)
            try:
                await client.await_approval(
                    d.defer_token or "", self.approval_timeout, poll_interval=self.poll_interval
                )
            except ApprovalTimeout:
                raise self._timed_out(d, tool) from None
            except RpcError as e:
                raise _status_refused(e, tool) from None
            token = d.defer_token
            d = await client.agovern(tool, args, defer_token=token, **self._who())
        return self._settle(tool, args, key, token, d)

    def ran(self, decision: Decision, ok: bool) -> None:
        """Reports the outcome of a permitted call; a failed report is logged, not raised
        (the tool has already run)."""
        if not self.report:
            return
        try:
            self.client.report(decision.dpr_id, "ok" if ok else "error")
        except FarameshError as e:
            log.warning("faramesh: report of %s failed: %s", decision.dpr_id, type(e).__name__)

    async def aran(self, decision: Decision, ok: bool) -> None:
        if self.report:
            await asyncio.to_thread(self.ran, decision, ok)

    # --- internals -----------------------------------------------------------------------

    def _who(self) -> dict[str, Any]:
        return {"agent": self.agent, "session": self.session, "principal": self.principal}

    def _waited(self, d: Decision, tool: str, wait: Callable[[], Approval]) -> None:
        try:
            wait()
        except ApprovalTimeout:
            raise self._timed_out(d, tool) from None
        except RpcError as e:
            raise _status_refused(e, tool) from None

    def _timed_out(self, d: Decision, tool: str) -> ApprovalTimeout:
        return ApprovalTimeout(
            effect="defer",
            code=APPROVAL_TIMEOUT,
            reason=f"no operator answered within {self.approval_timeout:g} s ({d.reason})",
            tool=tool,
            rule_ref=d.rule_ref,
            defer_token=d.defer_token,
            dpr_id=d.dpr_id,
            decision=d,
        )

    def _settle(
        self, tool: str, args: dict[str, Any], key: str | None, token: str | None, d: Decision
    ) -> Decision:
        if d.permitted:
            if token:
                self._forget(key, token)
            return d
        if d.deferred:
            self._remember(tool, args, key, d)
        elif token and d.reason_code in _SPENT:
            self._forget(key, token)
        raise ToolDeniedException.from_decision(tool, d)

    @staticmethod
    def _key(tool: str, args: dict[str, Any]) -> str:
        return hashlib.sha256(canonical([tool, args]).encode("utf-8")).hexdigest()

    def _recall(self, tool: str, args: dict[str, Any]) -> tuple[str | None, str | None]:
        """The call's key and remembered token; nothing to compute while none is remembered
        (the usual case, so the hot path does not hash every call)."""
        if not self.remember_defers or not self._tokens:
            return None, None
        key = self._key(tool, args)
        with self._lock:
            return key, self._tokens.get(key)

    def _remember(
        self, tool: str, args: dict[str, Any], key: str | None, d: Decision
    ) -> str | None:
        if not self.remember_defers or not d.defer_token:
            return key
        key = key or self._key(tool, args)
        with self._lock:
            self._tokens[key] = d.defer_token
            self._tokens.move_to_end(key)
            while len(self._tokens) > _MAX_REMEMBERED:
                self._tokens.popitem(last=False)
        return key

    def _forget(self, key: str | None, token: str) -> None:
        if key is None:
            return
        with self._lock:
            if self._tokens.get(key) == token:
                del self._tokens[key]


def _status_refused(e: RpcError, tool: str) -> DaemonUnavailable:
    # The daemon refused to say where an approval it just issued stands: nothing can be
    # decided, and a governed call must fail as one that did not run.
    return DaemonUnavailable(
        DAEMON_PROTOCOL_ERROR, f"approval.status was refused: {e.message}", tool=tool
    )


# --- @governed -----------------------------------------------------------------------------


@overload
def governed(func: F, /) -> F: ...


@overload
def governed(
    func: None = None,
    /,
    *,
    tool: str | None = None,
    agent: str | None = None,
    session: str | None = None,
    principal: Mapping[str, Any] | None = None,
    client: Client | None = None,
    args: Callable[..., Mapping[str, Any]] | None = None,
    block_on_defer: bool = False,
    approval_timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
    poll_interval: float = 0.5,
    remember_defers: bool = True,
    report: bool = True,
    credential_param: str = CREDENTIAL_PARAM,
) -> Callable[[F], F]: ...


def governed(
    func: Callable[..., Any] | None = None,
    /,
    *,
    tool: str | None = None,
    agent: str | None = None,
    session: str | None = None,
    principal: Mapping[str, Any] | None = None,
    client: Client | None = None,
    args: Callable[..., Mapping[str, Any]] | None = None,
    block_on_defer: bool = False,
    approval_timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
    poll_interval: float = 0.5,
    remember_defers: bool = True,
    report: bool = True,
    credential_param: str = CREDENTIAL_PARAM,
) -> Any:
    """Decorates a function (sync or ``async``) so that every call is decided by the daemon
    first; it runs only on a permit, else ``ToolDeniedException`` is raised.

    The tool id is ``tool`` or the function's ``__name__``; the arguments the daemon decides
    on are the call's arguments by parameter name (defaults included), or what ``args``
    returns when given (called with the same arguments). A function that declares a
    ``faramesh_credential`` parameter receives the permit's credential there (hidden from its
    visible signature); ``faramesh.current_credential()`` gives it too.
    """
    gov = Governor(
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

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        return govern_callable(f, gov, tool=tool, args=args, credential_param=credential_param)

    return wrap(func) if func is not None else wrap


def govern_callable(
    f: Callable[..., Any],
    gov: Governor,
    *,
    tool: str | None = None,
    args: Callable[..., Mapping[str, Any]] | None = None,
    credential_param: str = CREDENTIAL_PARAM,
) -> Callable[..., Any]:
    """``f`` wrapped so that the daemon decides each call under ``gov``."""
    if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
        raise TypeError("governed does not wrap generator functions: govern a plain function")
    tool_id = tool or getattr(f, "__name__", None)
    if not tool_id:
        raise ValueError("cannot name the tool: pass tool=")
    sig = inspect.signature(f)
    inject = credential_param in sig.parameters
    visible = _visible_signature(sig, credential_param)
    build = _arguments(visible, args)

    if inspect.iscoroutinefunction(f):

        @functools.wraps(f)
        async def agoverned(*a: Any, **kw: Any) -> Any:
            decision = await gov.acheck(tool_id, build(a, kw))
            if inject:
                kw[credential_param] = decision.credential
            with _Running(decision):
                try:
                    result = await f(*a, **kw)
                except Exception:
                    await gov.aran(decision, False)
                    raise
            await gov.aran(decision, True)
            return result

        wrapper: Callable[..., Any] = agoverned
    else:

        @functools.wraps(f)
        def sgoverned(*a: Any, **kw: Any) -> Any:
            decision = gov.check(tool_id, build(a, kw))
            if inject:
                kw[credential_param] = decision.credential
            with _Running(decision):
                try:
                    result = f(*a, **kw)
                except Exception:
                    gov.ran(decision, False)
                    raise
            gov.ran(decision, True)
            return result

        wrapper = sgoverned
    _expose(wrapper, visible, credential_param, tool_id, gov)
    return wrapper


def _visible_signature(sig: inspect.Signature, hidden: str) -> inspect.Signature:
    params = [p for n, p in sig.parameters.items() if n != hidden]
    return sig.replace(parameters=params)


def _expose(
    wrapper: Any, visible: inspect.Signature, hidden: str, tool_id: str, gov: Governor
) -> None:
    # Frameworks that read the signature (LangChain's @tool, ToolNode) must not offer the
    # credential parameter to the model: the wrapper shows the signature without it.
    wrapper.__signature__ = visible
    notes = dict(getattr(wrapper, "__annotations__", {}) or {})
    notes.pop(hidden, None)
    wrapper.__annotations__ = notes
    wrapper.faramesh_tool = tool_id
    wrapper.faramesh_governor = gov


def _arguments(
    sig: inspect.Signature, custom: Callable[..., Mapping[str, Any]] | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """How a call's Python arguments become the JSON object the daemon decides on."""
    if custom is not None:
        return lambda a, kw: to_json_args(custom(*a, **kw))
    params = sig.parameters
    names = list(params)
    skip = {names[0]} if names and names[0] in ("self", "cls") else set()
    P = inspect.Parameter
    simple = all(p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) for p in params.values())
    positional = [n for n, p in params.items() if p.kind is P.POSITIONAL_OR_KEYWORD]
    defaults = {n: p.default for n, p in params.items() if p.default is not P.empty}
    required = frozenset(n for n, p in params.items() if p.default is P.empty)

    def slow(a: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
        bound = sig.bind(*a, **kw)  # raises TypeError as the call itself would
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = params[name].kind
            if name in skip:
                continue
            if kind is P.VAR_KEYWORD:
                out.update(value)
            elif kind is P.VAR_POSITIONAL:
                out[name] = list(value)
            else:
                out[name] = value
        return out

    def build(a: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
        # The common shape (named parameters, no *args/**kwargs), without Signature.bind.
        if not simple or len(a) > len(positional):
            return slow(a, kw)
        out = dict(defaults)
        out.update(zip(positional, a))
        for k, v in kw.items():
            if k not in params or (a and k in positional[: len(a)]):
                return slow(a, kw)  # unknown, or given twice: let bind raise the TypeError
            out[k] = v
        if not required.issubset(out):
            return slow(a, kw)
        for n in skip:
            out.pop(n, None)
        return out  # converted to JSON as it is encoded (json_default)

    return build
