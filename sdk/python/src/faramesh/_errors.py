"""The exceptions of the SDK.

Every exception that means "the tool did not run" is a ``ToolDeniedException``, so one
``except ToolDeniedException`` covers policy denials, deferrals and an unreachable daemon
alike. Messages and reprs carry codes, reasons and tokens, never a credential value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._decision import Decision

# Codes the SDK itself produces when no daemon decision could be had. They name client-side
# conditions, so they never collide with the daemon's reason codes (SPEC §3.12).
DAEMON_UNREACHABLE = "DAEMON_UNREACHABLE"
DAEMON_TIMEOUT = "DAEMON_TIMEOUT"
DAEMON_CONNECTION_LOST = "DAEMON_CONNECTION_LOST"
DAEMON_PROTOCOL_ERROR = "DAEMON_PROTOCOL_ERROR"
APPROVAL_TIMEOUT = "APPROVAL_TIMEOUT"


class FarameshError(Exception):
    """Base class of every error the SDK raises."""


class RpcError(FarameshError):
    """The daemon answered a JSON-RPC error (e.g. ``approval.status`` of an unknown token)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message


class ToolDeniedException(FarameshError):
    """The governed tool did not run.

    ``effect`` is ``"deny"`` or ``"defer"``; ``code`` is the reason code (``RULE_DENY``,
    ``RATE_EXCEEDED``, ``DAEMON_UNREACHABLE``, …); ``retry_after`` is in seconds (``None``
    when the daemon gave no hint); ``decision`` is the daemon's answer, when there was one.
    """

    def __init__(
        self,
        *,
        effect: str,
        code: str,
        reason: str,
        tool: str | None = None,
        rule_ref: str | None = None,
        defer_token: str | None = None,
        retry_after_ms: int | None = None,
        dpr_id: str | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.effect = effect
        self.code = code
        self.reason_code = code
        self.reason = reason
        self.tool = tool
        self.rule_ref = rule_ref
        self.defer_token = defer_token
        self.retry_after_ms = retry_after_ms
        self.dpr_id = dpr_id
        self.decision = decision
        super().__init__(self._message())

    @property
    def retry_after(self) -> float | None:
        """Seconds until a retry can succeed, when the daemon said (rate limits, not ready)."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000.0

    @classmethod
    def from_decision(cls, tool: str, decision: Decision) -> ToolDeniedException:
        """The exception for a non-permit answer: ``ToolDeferredException`` for a defer."""
        kind = ToolDeferredException if decision.effect == "defer" else ToolDeniedException
        return kind(
            effect=decision.effect,
            code=decision.reason_code,
            reason=decision.reason,
            tool=tool,
            rule_ref=decision.rule_ref,
            defer_token=decision.defer_token,
            retry_after_ms=decision.retry_after_ms,
            dpr_id=decision.dpr_id,
            decision=decision,
        )

    def _message(self) -> str:
        what = f"`{self.tool}` " if self.tool else ""
        verb = "deferred" if self.effect == "defer" else "denied"
        text = f"faramesh {verb} {what}({self.code}): {self.reason}"
        if self.rule_ref:
            text += f" [{self.rule_ref}]"
        if self.defer_token:
            text += f"; approval {self.defer_token}"
        if self.retry_after_ms is not None:
            text += f"; retry after {self.retry_after_ms} ms"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(effect={self.effect!r}, code={self.code!r}, "
            f"reason={self.reason!r}, tool={self.tool!r}, rule_ref={self.rule_ref!r}, "
            f"defer_token={self.defer_token!r}, retry_after_ms={self.retry_after_ms!r}, "
            f"dpr_id={self.dpr_id!r})"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Exceptions pickle through their args by default, which would lose the fields.
        return (_rebuild, (type(self), self._fields()))

    def _fields(self) -> dict[str, object]:
        return {
            "effect": self.effect,
            "code": self.code,
            "reason": self.reason,
            "tool": self.tool,
            "rule_ref": self.rule_ref,
            "defer_token": self.defer_token,
            "retry_after_ms": self.retry_after_ms,
            "dpr_id": self.dpr_id,
        }


def _rebuild(kind: type[ToolDeniedException], fields: dict[str, object]) -> ToolDeniedException:
    return kind(**fields)  # type: ignore[arg-type]


class ToolDeferredException(ToolDeniedException):
    """The call waits for an operator's approval (``effect == "defer"``).

    Retry the identical call with ``defer_token`` once it is approved (``wait_for_approval``),
    or let the SDK do it (``block_on_defer=True``).
    """


class ApprovalTimeout(ToolDeferredException):
    """Waiting for an approval ran out of time; the approval may still be granted later."""


class DaemonUnavailable(ToolDeniedException):
    """No decision could be had from the daemon, so the tool did not run (fail closed).

    ``code`` says why: ``DAEMON_UNREACHABLE`` (no socket, connection refused),
    ``DAEMON_TIMEOUT`` (no answer in time), ``DAEMON_CONNECTION_LOST`` (the connection broke
    after the request was sent; it is not resent, see the README) or
    ``DAEMON_PROTOCOL_ERROR`` (an answer that is not a valid decision).
    """

    def __init__(self, code: str, reason: str, *, tool: str | None = None) -> None:
        super().__init__(effect="deny", code=code, reason=reason, tool=tool)

    def _fields(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason, "tool": self.tool}

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_unavailable, (type(self), self.code, self.reason, self.tool))


def _rebuild_unavailable(
    kind: type[DaemonUnavailable], code: str, reason: str, tool: str | None
) -> DaemonUnavailable:
    return kind(code, reason, tool=tool)
