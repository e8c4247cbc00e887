"""The daemon's answers as Python objects: ``Decision``, ``Credential``, ``Approval``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._errors import DAEMON_PROTOCOL_ERROR, DaemonUnavailable

EFFECTS = ("permit", "deny", "defer")


class Credential:
    """A short-lived credential the daemon minted for one permitted call (SPEC §10).

    ``value`` is the secret. It is deliberately absent from ``repr``/``str``, and the object
    refuses to be pickled, so that it does not end up in logs, tracebacks or checkpoints.
    """

    __slots__ = ("_value", "provider", "scope", "lease_id", "ttl_ms", "expires_at")

    def __init__(
        self,
        value: str,
        *,
        provider: str | None = None,
        scope: str | None = None,
        lease_id: str | None = None,
        ttl_ms: int | None = None,
        expires_at: str | None = None,
    ) -> None:
        self._value = value
        self.provider = provider
        self.scope = scope
        self.lease_id = lease_id
        self.ttl_ms = ttl_ms
        self.expires_at = expires_at

    @property
    def value(self) -> str:
        """The secret itself: hand it to the API the tool calls, nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return (
            f"Credential(provider={self.provider!r}, scope={self.scope!r}, "
            f"lease_id={self.lease_id!r}, ttl_ms={self.ttl_ms!r}, "
            f"expires_at={self.expires_at!r}, value=<redacted>)"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a faramesh Credential cannot be pickled (it holds a secret)")

    @classmethod
    def from_json(cls, raw: Any) -> Credential:
        if not isinstance(raw, dict) or not isinstance(raw.get("value"), str):
            raise DaemonUnavailable(DAEMON_PROTOCOL_ERROR, "the credential in the answer is malformed")
        ttl = raw.get("ttl_ms")
        return cls(
            raw["value"],
            provider=_opt_str(raw.get("provider")),
            scope=_opt_str(raw.get("scope")),
            lease_id=_opt_str(raw.get("lease_id")),
            ttl_ms=ttl if isinstance(ttl, int) else None,
            expires_at=_opt_str(raw.get("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The daemon's answer to one ``decide`` (see docs/protocol.md).

    Only ``effect == "permit"`` lets the tool run. ``credential`` is set on a permit of a tool
    bound by a ``credential`` block; its value never shows in ``repr``.
    """

    effect: str
    reason_code: str
    reason: str
    dpr_id: str
    rule_ref: str | None = None
    defer_token: str | None = None
    retry_after_ms: int | None = None
    latency_us: int | None = None
    credential: Credential | None = field(default=None, repr=False, compare=False)
    identity: str | None = None
    mode: str | None = None

    @property
    def permitted(self) -> bool:
        return self.effect == "permit"

    @property
    def deferred(self) -> bool:
        return self.effect == "defer"

    @property
    def denied(self) -> bool:
        return self.effect == "deny"

    @property
    def retry_after(self) -> float | None:
        """Seconds until a retry can succeed, when the daemon said."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000.0

    @classmethod
    def from_json(cls, raw: Any) -> Decision:
        """Reads a ``decide`` result; anything that is not a well-formed decision is refused."""
        if not isinstance(raw, dict):
            raise _bad("the decision is not an object")
        effect = raw.get("effect")
        if effect not in EFFECTS:
            raise _bad(f"unknown effect {effect!r}")
        code, reason, dpr = raw.get("reason_code"), raw.get("reason"), raw.get("dpr_id")
        if not (isinstance(code, str) and isinstance(reason, str) and isinstance(dpr, str)):
            raise _bad("the decision lacks reason_code, reason or dpr_id")
        token = _opt_str(raw.get("defer_token"))
        if effect == "defer" and not token:
            raise _bad("a defer without a defer_token")
        cred = raw.get("credential")
        return cls(
            effect=effect,
            reason_code=code,
            reason=reason,
            dpr_id=dpr,
            rule_ref=_opt_str(raw.get("rule_ref")),
            defer_token=token,
            retry_after_ms=_opt_int(raw.get("retry_after_ms")),
            latency_us=_opt_int(raw.get("latency_us")),
            credential=None if cred is None else Credential.from_json(cred),
            identity=_opt_str(raw.get("identity")),
            mode=_opt_str(raw.get("mode")),
        )


@dataclass(frozen=True, slots=True)
class Approval:
    """``approval.status``: where a deferred call's approval stands.

    ``status`` is ``pending``, ``approved``, ``rejected``, ``expired`` or ``consumed``.
    """

    defer_token: str
    status: str
    agent: str | None = None
    tool: str | None = None
    expires: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @classmethod
    def from_json(cls, raw: Any) -> Approval:
        if not isinstance(raw, dict) or not isinstance(raw.get("status"), str):
            raise _bad("approval.status answered without a status")
        return cls(
            defer_token=str(raw.get("defer_token", "")),
            status=raw["status"],
            agent=_opt_str(raw.get("agent")),
            tool=_opt_str(raw.get("tool")),
            expires=_opt_str(raw.get("expires")),
        )


def _bad(why: str) -> DaemonUnavailable:
    return DaemonUnavailable(DAEMON_PROTOCOL_ERROR, f"the daemon's answer is not valid: {why}")


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _opt_int(v: Any) -> int | None:
    # bool is an int in Python; it is never a valid count here.
    return v if isinstance(v, int) and not isinstance(v, bool) else None
