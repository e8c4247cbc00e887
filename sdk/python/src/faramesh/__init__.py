"""faramesh: the Python SDK of the faramesh governance runtime.

Every governed tool call is decided by the faramesh daemon before it runs — permit, defer to a
human, or deny — over the daemon's agent socket. The SDK fails closed: no decision, no call.

    import faramesh

    decision = faramesh.govern("stripe/refund", {"amount": 80}, agent="support-bot")

    @faramesh.governed(tool="stripe/refund", agent="support-bot")
    def refund(amount: int) -> str: ...

See sdk/python/README.md for the whole story.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._client import (
    DEFAULT_APPROVAL_TIMEOUT,
    Client,
    find_stack,
    resolve_socket,
    stack_socket,
)
from ._decision import Approval, Credential, Decision
from ._default import configure, default_client
from ._errors import (
    APPROVAL_TIMEOUT,
    DAEMON_CONNECTION_LOST,
    DAEMON_PROTOCOL_ERROR,
    DAEMON_TIMEOUT,
    DAEMON_UNREACHABLE,
    ApprovalTimeout,
    DaemonUnavailable,
    FarameshError,
    RpcError,
    ToolDeferredException,
    ToolDeniedException,
)
from ._govern import CREDENTIAL_PARAM, Governor, current_credential, current_decision, governed
from ._toolset import GovernedToolSet

__version__ = "0.1.0"


def govern(
    tool: str,
    args: Mapping[str, Any] | None = None,
    *,
    agent: str | None = None,
    session: str | None = None,
    principal: Mapping[str, Any] | None = None,
    call_id: str | None = None,
    defer_token: str | None = None,
) -> Decision:
    """Asks the daemon (through the default client) to decide one call; returns the
    ``Decision``. Raises ``DaemonUnavailable`` when no decision could be had."""
    return default_client().decide(
        tool,
        args,
        agent=agent,
        session=session,
        principal=principal,
        call_id=call_id,
        defer_token=defer_token,
    )


async def agovern(tool: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Decision:
    """``govern`` for asyncio (the socket call runs in a thread)."""
    return await default_client().agovern(tool, args, **kw)


def wait_for_approval(
    token: str,
    timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
    *,
    poll_interval: float = 0.5,
) -> Approval:
    """Waits until the approval ``token`` is no longer pending (default client)."""
    return default_client().wait_for_approval(token, timeout, poll_interval=poll_interval)


async def await_approval(
    token: str,
    timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
    *,
    poll_interval: float = 0.5,
) -> Approval:
    """``wait_for_approval`` for asyncio."""
    return await default_client().await_approval(token, timeout, poll_interval=poll_interval)


__all__ = [
    "APPROVAL_TIMEOUT",
    "CREDENTIAL_PARAM",
    "DAEMON_CONNECTION_LOST",
    "DAEMON_PROTOCOL_ERROR",
    "DAEMON_TIMEOUT",
    "DAEMON_UNREACHABLE",
    "Approval",
    "ApprovalTimeout",
    "Client",
    "Credential",
    "DaemonUnavailable",
    "Decision",
    "FarameshError",
    "GovernedToolSet",
    "Governor",
    "RpcError",
    "ToolDeferredException",
    "ToolDeniedException",
    "agovern",
    "await_approval",
    "configure",
    "current_credential",
    "current_decision",
    "default_client",
    "find_stack",
    "govern",
    "governed",
    "resolve_socket",
    "stack_socket",
    "wait_for_approval",
]
