"""``@governed`` on plain functions, sync and async, against the real daemon: permit, deny,
defer, approvals by the operator's CLI, credentials, and the daemon going away."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import faramesh
from faramesh import (
    ApprovalTimeout,
    Client,
    Credential,
    DaemonUnavailable,
    ToolDeferredException,
    ToolDeniedException,
)

from conftest import AGENT, Daemon, approve, cli, export, reject, wait_pending

EMAIL = "ada@example.com"


class Stripe:
    """Governed stand-ins for the Stripe calls of the scene; ``calls`` is what really ran."""

    def __init__(self, client: Client, **options: Any) -> None:
        self.calls: list[tuple[str, Any, Credential | None]] = []
        gov = {"agent": AGENT, "client": client, **options}

        @faramesh.governed(tool="stripe/refund", **gov)
        def refund(amount: int, customer: dict[str, str], faramesh_credential: Credential | None = None) -> str:
            assert faramesh_credential is faramesh.current_credential()
            self.calls.append(("refund", amount, faramesh_credential))
            return f"re_{amount}"

        @faramesh.governed(tool="stripe/payouts", **gov)
        def payouts(amount: int) -> str:
            self.calls.append(("payouts", amount, faramesh.current_credential()))
            return "po_1"

        @faramesh.governed(tool="stripe/refund", **gov)
        async def arefund(amount: int, customer: dict[str, str]) -> str:
            await asyncio.sleep(0)
            self.calls.append(("arefund", amount, faramesh.current_credential()))
            return f"re_{amount}"

        self.refund, self.payouts, self.arefund = refund, payouts, arefund


@pytest.fixture
def client(daemon: Daemon) -> Any:
    with Client(daemon.socket, timeout=5) as c:
        yield c


CUSTOMER = {"email": EMAIL}


def test_a_permitted_call_runs_with_its_credential(client: Client) -> None:
    s = Stripe(client)
    assert s.refund(80, CUSTOMER) == "re_80"
    assert faramesh.current_credential() is None, "the credential lives only during the call"
    [(name, amount, cred)] = s.calls
    assert (name, amount) == ("refund", 80)
    assert cred is not None and cred.value.startswith("rk_dev_")
    assert cred.scope == "stripe/refund"


def test_a_denied_call_does_not_run(client: Client) -> None:
    s = Stripe(client)
    with pytest.raises(ToolDeniedException) as e:
        s.payouts(10)
    err = e.value
    assert (err.effect, err.code, err.reason_code) == ("deny", "RULE_DENY", "RULE_DENY")
    assert err.reason == "payouts are the platform team's job"
    assert err.rule_ref == "governance.fms:38"
    assert err.dpr_id and err.dpr_id.startswith("dpr_")
    assert not isinstance(err, ToolDeferredException)
    assert "RULE_DENY" in str(err) and "stripe/payouts" in str(err)
    assert s.calls == []


def test_a_deferred_call_does_not_run(client: Client) -> None:
    s = Stripe(client)
    with pytest.raises(ToolDeferredException) as e:
        s.refund(8000, CUSTOMER)
    assert (e.value.effect, e.value.code) == ("defer", "RULE_DEFER")
    assert e.value.defer_token and e.value.defer_token.startswith("dfr_")
    assert e.value.retry_after is None
    assert s.calls == []


def test_async_functions_are_governed_too(client: Client) -> None:
    s = Stripe(client)

    async def scene() -> None:
        assert await s.arefund(80, CUSTOMER) == "re_80"
        with pytest.raises(ToolDeferredException):
            await s.arefund(8000, CUSTOMER)

    asyncio.run(scene())
    [(name, amount, cred)] = s.calls
    assert (name, amount) == ("arefund", 80)
    assert cred is not None and cred.value.startswith("rk_dev_")


def test_defer_then_approval_then_the_same_call_runs_once(daemon: Daemon, client: Client) -> None:
    s = Stripe(client)
    with pytest.raises(ToolDeferredException) as first:
        s.refund(8000, CUSTOMER)
    token = first.value.defer_token or ""
    # Still pending: the identical call is deferred again, with the same token.
    with pytest.raises(ToolDeferredException) as again:
        s.refund(8000, CUSTOMER)
    assert again.value.defer_token == token

    approve(daemon.stack, token)
    assert faramesh.Client(daemon.socket).wait_for_approval(token, 5).approved
    assert s.refund(8000, CUSTOMER) == "re_8000", "the approved call runs"
    assert [c[1] for c in s.calls] == [8000]
    # Once: the next identical call asks afresh.
    with pytest.raises(ToolDeferredException) as third:
        s.refund(8000, CUSTOMER)
    assert third.value.defer_token != token
    assert [c[1] for c in s.calls] == [8000]
    # And the spent token, sent by hand, is refused.
    spent = client.govern("stripe/refund", {"amount": 8000, "customer": CUSTOMER},
                          agent=AGENT, defer_token=token)
    assert (spent.effect, spent.reason_code) == ("deny", "APPROVAL_CONSUMED")


def test_block_on_defer_waits_for_the_operator(daemon: Daemon, client: Client) -> None:
    s = Stripe(client, block_on_defer=True, approval_timeout=30, poll_interval=0.05)
    approved: list[dict[str, Any]] = []

    def operator() -> None:
        approved.append(approve(daemon.stack, wait_pending(daemon.stack)["token"]))

    t = threading.Thread(target=operator)
    t.start()
    assert s.refund(8000, CUSTOMER) == "re_8000"
    t.join()
    assert approved and approved[0]["status"] == "approved"
    [(_, amount, cred)] = s.calls
    assert amount == 8000 and cred is not None, "the approved retry gets its credential"
    records = [r for r in export(daemon.stack) if r.get("reason_code") == "APPROVED"]
    assert len(records) == 1 and records[0]["approval"]["approver"] == approved[0]["approver"]


def test_block_on_defer_async_keeps_the_loop_running(daemon: Daemon, client: Client) -> None:
    s = Stripe(client, block_on_defer=True, approval_timeout=30, poll_interval=0.05)

    async def scene() -> tuple[str, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def operator() -> None:
            pending = await asyncio.to_thread(wait_pending, daemon.stack)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(approve, daemon.stack, pending["token"])

        tick = asyncio.create_task(ticker())
        op = asyncio.create_task(operator())
        result = await s.arefund(8000, CUSTOMER)
        done.set()
        await asyncio.gather(tick, op)
        return result, ticks

    result, ticks = asyncio.run(scene())
    assert result == "re_8000"
    assert ticks >= 20, f"the event loop ran only {ticks} ticks while waiting"
    assert [c[:2] for c in s.calls] == [("arefund", 8000)]


def test_a_rejected_call_never_runs(daemon: Daemon, client: Client) -> None:
    s = Stripe(client, block_on_defer=True, approval_timeout=30, poll_interval=0.05)
    t = threading.Thread(target=lambda: reject(daemon.stack, wait_pending(daemon.stack)["token"]))
    t.start()
    with pytest.raises(ToolDeniedException) as e:
        s.refund(8000, CUSTOMER)
    t.join()
    assert (e.value.effect, e.value.code) == ("deny", "APPROVAL_REJECTED")
    assert s.calls == []


def test_waiting_for_an_approval_times_out(client: Client) -> None:
    s = Stripe(client, block_on_defer=True, approval_timeout=0.3, poll_interval=0.05)
    with pytest.raises(ApprovalTimeout) as e:
        s.refund(8000, CUSTOMER)
    assert isinstance(e.value, ToolDeferredException)
    assert e.value.code == "APPROVAL_TIMEOUT"
    assert e.value.defer_token and e.value.rule_ref == "governance.fms:35"
    assert s.calls == []


def test_the_daemon_stopped_mid_run(daemon: Daemon, client: Client) -> None:
    s = Stripe(client)
    assert s.refund(80, CUSTOMER) == "re_80"
    daemon.stop()
    with pytest.raises(DaemonUnavailable) as e:
        s.refund(80, CUSTOMER)
    assert e.value.code == "DAEMON_UNREACHABLE"
    assert isinstance(e.value, ToolDeniedException) and e.value.effect == "deny"

    async def later() -> None:
        with pytest.raises(DaemonUnavailable):
            await s.arefund(80, CUSTOMER)

    asyncio.run(later())
    assert [c[1] for c in s.calls] == [80], "nothing ran after the daemon went away"


def test_the_daemon_killed_mid_run(daemon: Daemon, client: Client) -> None:
    s = Stripe(client)
    assert s.refund(80, CUSTOMER) == "re_80"
    daemon.kill()
    with pytest.raises(DaemonUnavailable):
        s.refund(80, CUSTOMER)
    assert len(s.calls) == 1


def test_the_daemon_never_started(stack: Path) -> None:
    s = Stripe(Client(stack=stack, connect_timeout=0.5))
    with pytest.raises(DaemonUnavailable) as e:
        s.refund(80, CUSTOMER)
    assert e.value.code == "DAEMON_UNREACHABLE"
    with pytest.raises(DaemonUnavailable):
        asyncio.run(s.arefund(80, CUSTOMER))
    assert s.calls == []


def test_arguments_reach_the_daemon_by_name(daemon: Daemon, client: Client) -> None:
    @dataclass
    class Customer:
        email: str

    @faramesh.governed(tool="stripe/refund", agent=AGENT, client=client)
    def refund(amount: Decimal, customer: Customer, currency: str = "usd", **extra: Any) -> str:
        return "ok"

    assert refund(Decimal("80"), Customer(EMAIL), memo="late delivery") == "ok"
    [record] = [r for r in export(daemon.stack) if r.get("tool") == "stripe/refund"]
    args = record["args"]
    assert args["amount"] == 80 and args["currency"] == "usd" and args["memo"] == "late delivery"
    assert args["customer"]["email"]["redacted"].startswith("hmac-sha256:")

    # What is not JSON is refused before anything runs.
    ran: list[object] = []

    @faramesh.governed(tool="search_docs", agent=AGENT, client=client)
    def search(q: object) -> None:
        ran.append(q)

    with pytest.raises(TypeError):
        search(object())
    assert ran == []

    # args= says what the daemon decides on.
    @faramesh.governed(tool="stripe/refund", agent=AGENT, client=client,
                       args=lambda conn, cents: {"amount": cents / 100})
    def refund_cents(conn: object, cents: int) -> str:
        return "ok"

    assert refund_cents(object(), 8_000) == "ok"
    with pytest.raises(ToolDeferredException):
        refund_cents(object(), 800_000)


def test_the_credential_parameter_is_not_part_of_the_signature(client: Client) -> None:
    s = Stripe(client)
    assert list(inspect.signature(s.refund).parameters) == ["amount", "customer"]
    with pytest.raises(TypeError):
        s.refund(80, CUSTOMER, faramesh_credential=Credential("forged"))
    assert s.calls == []


def test_methods_are_governed_without_self(daemon: Daemon, client: Client) -> None:
    class Docs:
        @faramesh.governed(tool="search_docs", agent=AGENT, client=client)
        def search(self, q: str) -> str:
            return q.upper()

    assert Docs().search("refunds") == "REFUNDS"
    [record] = [r for r in export(daemon.stack) if r.get("tool") == "search_docs"]
    assert record["args"] == {"q": "refunds"}


def test_credentials_never_reach_the_log(
    daemon: Daemon, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = Stripe(client)
    s.refund(80, CUSTOMER)
    asyncio.run(s.arefund(90, CUSTOMER))
    with pytest.raises(ToolDeferredException) as deferred:
        s.refund(8000, CUSTOMER)
    approve(daemon.stack, deferred.value.defer_token or "")
    s.refund(8000, CUSTOMER)
    secrets = [c[2].value for c in s.calls if c[2] is not None]
    assert len(secrets) == 3 and len(set(secrets)) == 3, "each permit mints its own"
    lease_ids = {c[2].lease_id or "" for c in s.calls if c[2] is not None}

    sink = daemon.data_dir / "dev-audit.jsonl"
    deadline = time.monotonic() + 10
    while not all(lease.encode() in _read(sink) for lease in lease_ids):
        assert time.monotonic() < deadline, "the dev audit sink never caught up"
        time.sleep(0.05)
    daemon.stop()
    exported = cli(daemon.stack, "audit", "export", "--format", "jsonl", check=True).stdout
    assert lease_ids <= {r["credential"]["lease_id"] for r in export(daemon.stack) if r.get("credential")}, \
        "the records hold the leases (so the search below means something)"
    places = {"audit export": exported.encode(), "daemon log": daemon.log.read_bytes(),
              "python log": caplog.text.encode()}
    for f in sorted(daemon.data_dir.rglob("*")):
        if f.is_file():
            places[str(f.relative_to(daemon.stack))] = f.read_bytes()
    assert any(name.endswith("faramesh.db") for name in places), places.keys()
    for name, data in places.items():
        for secret in secrets + [EMAIL]:
            assert secret.encode() not in data, f"{secret[:8]}… leaked into {name}"
    # Nor in what the SDK shows of its objects.
    for c in s.calls:
        assert c[2] is not None and c[2].value not in repr(c[2])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_rate_limited_call_says_when_to_retry(client: Client) -> None:
    s = Stripe(client)
    for _ in range(30):  # the policy's `rate_limit "stripe/refund": 30 per hour`
        s.refund(1, CUSTOMER)
    with pytest.raises(ToolDeniedException) as e:
        s.refund(1, CUSTOMER)
    assert (e.value.effect, e.value.code) == ("deny", "RATE_EXCEEDED")
    assert e.value.retry_after_ms is not None and 0 < e.value.retry_after_ms <= 3_600_000
    assert e.value.retry_after == e.value.retry_after_ms / 1000
    assert "retry after" in str(e.value)
    assert len(s.calls) == 30
