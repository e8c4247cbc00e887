"""``Client`` and ``faramesh.govern`` against the real daemon (``faramesh dev``)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

import faramesh
from faramesh import Client, DaemonUnavailable

from conftest import AGENT, Daemon, approve, export, make_stack, rpc

EMAIL = "ada@example.com"


def refund(amount: int) -> dict[str, object]:
    return {"amount": amount, "customer": {"email": EMAIL}}


def test_permit_deny_defer_as_the_policy_says(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT, session="s-1") as c:
        small = c.govern("stripe/refund", refund(80))
        big = c.govern("stripe/refund", refund(8000))
        payout = c.govern("stripe/payouts", {"amount": 10})
        other = c.govern("shell/exec", {"cmd": "ls"})

    assert (small.effect, small.reason_code, small.rule_ref) == (
        "permit", "RULE_PERMIT", "governance.fms:34")
    assert small.permitted and not small.deferred
    assert small.dpr_id.startswith("dpr_")

    assert (big.effect, big.reason_code, big.rule_ref) == ("defer", "RULE_DEFER", "governance.fms:35")
    assert big.reason == "refunds of $500 or more need a human"
    assert big.defer_token and big.defer_token.startswith("dfr_")
    assert big.credential is None, "nothing is minted for a deferred call"

    assert (payout.effect, payout.reason_code) == ("deny", "RULE_DENY")
    assert payout.reason == "payouts are the platform team's job"
    assert (other.effect, other.reason_code) == ("deny", "DEFAULT_DENY")

    # Each decision is a record of the audit log, with the session the client sent.
    records = {r["id"]: r for r in export(daemon.stack)}
    for d in (small, big, payout, other):
        assert records[d.dpr_id]["effect"] == d.effect
        assert records[d.dpr_id]["session"] == "s-1"


def test_the_permit_carries_a_credential_that_never_shows(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        d = c.govern("stripe/refund", refund(80))
    cred = d.credential
    assert cred is not None
    assert cred.value.startswith("rk_dev_") and len(cred.value) > 20
    assert (cred.provider, cred.scope, cred.ttl_ms) == ("vault", "stripe/refund", 30_000)
    assert cred.lease_id
    for text in (repr(d), str(d), repr(cred), str(cred), f"{cred}", f"{d}"):
        assert cred.value not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(cred)


def test_an_identical_deferred_call_gets_the_same_token(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        first = c.govern("stripe/refund", refund(8000))
        again = c.govern("stripe/refund", refund(8000))
        assert again.deferred and again.defer_token == first.defer_token
        status = c.approval_status(first.defer_token or "")
    assert (status.status, status.agent, status.tool) == ("pending", AGENT, "stripe/refund")


def test_approved_retry_is_permitted_once(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        token = c.govern("stripe/refund", refund(8000)).defer_token
        assert token
        approved = approve(daemon.stack, token)
        assert approved["status"] == "approved"
        waited = c.wait_for_approval(token, timeout=10)
        assert waited.approved
        retry = c.govern("stripe/refund", refund(8000), defer_token=token)
        second = c.govern("stripe/refund", refund(8000), defer_token=token)
        other = c.govern("stripe/refund", refund(9000), defer_token=token)
    assert (retry.effect, retry.reason_code) == ("permit", "APPROVED")
    assert approved["approver"] in retry.reason, "the answer names the approver"
    assert retry.credential is not None, "an approved refund gets its own credential"
    assert (second.effect, second.reason_code) == ("deny", "APPROVAL_CONSUMED")
    assert other.effect == "deny", "an approval never covers other arguments"


def test_unknown_agent_is_denied(daemon: Daemon) -> None:
    with Client(daemon.socket) as c:
        d = c.govern("search_docs", {"q": "x"}, agent="someone-else")
    assert (d.effect, d.reason_code) == ("deny", "UNKNOWN_AGENT")


def test_module_level_govern_finds_the_stack_from_the_current_directory(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = daemon.stack / "src" / "agent"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    monkeypatch.setenv("FARAMESH_AGENT", AGENT)
    faramesh.configure()
    try:
        d = faramesh.govern("search_docs", {"q": "refund policy"})
    finally:
        faramesh.configure()
    assert (d.effect, d.reason_code) == ("permit", "RULE_PERMIT")


def test_faramesh_socket_wins_over_the_current_directory(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = make_stack(tmp_path / "other")  # a stack with no daemon
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("FARAMESH_SOCKET", str(daemon.socket))
    with Client(agent=AGENT) as c:
        assert c.govern("search_docs", {"q": "x"}).permitted


def test_the_socket_named_in_daemon_json_is_used(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    policy = (stack / "governance.fms").read_text()
    # runtime { socket } moves the agent socket; daemon.json says where it went.
    (stack / "governance.fms").write_text(policy + '\nruntime {\n  socket = "agent.sock"\n}\n')
    d = Daemon(stack)
    try:
        assert Path(d.info["socket"]).name == "agent.sock"
        with Client(stack=stack, agent=AGENT) as c:
            assert c.govern("search_docs", {"q": "x"}).permitted
    finally:
        d.kill()


def _daemon_sockets() -> int:
    """Unix sockets this process holds open."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_one_connection_carries_many_calls(daemon: Daemon) -> None:
    before = _daemon_sockets()
    with Client(daemon.socket, agent=AGENT) as c:
        for i in range(200):
            assert c.govern("search_docs", {"q": f"q{i}"}).permitted
        assert _daemon_sockets() - before == 1, "sequential calls reuse one connection"
    assert _daemon_sockets() == before, "close() closes it"


def test_many_threads_share_one_client(daemon: Daemon) -> None:
    threads, calls = 16, 40
    results: dict[int, list[tuple[str, str, str]]] = {i: [] for i in range(threads)}
    errors: list[BaseException] = []
    c = Client(daemon.socket, agent=AGENT)
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            start.wait()
            for j in range(calls):
                # Even threads ask for what is denied, odd ones for what is permitted, each
                # with arguments of its own: a crossed answer would show.
                tool = "stripe/payouts" if i % 2 == 0 else "search_docs"
                d = c.govern(tool, {"q": f"{i}-{j}"})
                results[i].append((tool, d.effect, d.dpr_id))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    c.close()
    assert not errors, errors
    ids: set[str] = set()
    for i, got in results.items():
        assert len(got) == calls
        want = "deny" if i % 2 == 0 else "permit"
        assert all(effect == want for _, effect, _ in got), (i, got)
        ids.update(dpr for _, _, dpr in got)
    assert len(ids) == threads * calls, "every call got its own decision"
    records = {r["id"]: r for r in export(daemon.stack)}
    for i, got in results.items():
        for j, (tool, _, dpr) in enumerate(got):
            assert records[dpr]["tool"] == tool
            assert records[dpr]["args"] == {"q": f"{i}-{j}"}, "the answer belongs to this call"


def test_a_restarted_daemon_is_reached_again(stack: Path) -> None:
    first = Daemon(stack)
    c = Client(stack=stack, agent=AGENT)
    try:
        assert c.govern("search_docs", {"q": "a"}).permitted
        first.stop()
        with pytest.raises(DaemonUnavailable) as down:
            c.govern("search_docs", {"q": "b"})
        assert down.value.code == "DAEMON_UNREACHABLE"
        second = Daemon(stack)
        try:
            # The pooled connection died with the first daemon; the client notices and
            # connects to the new one.
            assert c.govern("search_docs", {"q": "c"}).permitted
        finally:
            second.kill()
    finally:
        c.close()
        first.kill()


def test_a_big_answer_from_the_daemon_is_read_whole(daemon: Daemon) -> None:
    # The daemon names an unknown method in its error: a 200 KiB name makes a 200 KiB answer,
    # several reads long.
    method = "m" * 200_000
    with Client(daemon.socket, agent=AGENT) as c:
        with pytest.raises(faramesh.RpcError) as e:
            c.call(method)
        assert e.value.code == -32601
        assert method in e.value.message
        # The connection is still in step afterwards.
        assert c.govern("search_docs", {"q": "after"}).permitted


def test_report_after_a_permit(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        d = c.govern("search_docs", {"q": "x"})
        c.report(d.dpr_id, "ok")
        with pytest.raises(faramesh.RpcError) as twice:
            c.report(d.dpr_id, "ok")
    assert twice.value.code == -32000, "a decision is reported once"


def test_status_matches_the_admin_socket(daemon: Daemon) -> None:
    with Client(daemon.socket) as c:
        status = c.status()
    admin = rpc(Path(daemon.info["admin_socket"]), "status")["result"]
    assert status["state"] == "READY"
    assert status["policy_version"] == admin["policy_version"]
    assert json.dumps(status["dev"]) == "true"


def test_a_forked_child_uses_its_own_connection(daemon: Daemon) -> None:
    """Parent and child calling at the same time through the client made before the fork:
    each gets the answers to its own calls (shared connections would cross them)."""
    c = Client(daemon.socket, agent=AGENT)
    assert c.govern("search_docs", {"q": "before"}).permitted  # a pooled connection
    calls = 150
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and its exit code
        try:
            os.close(r)
            got = [(c.govern("search_docs", {"q": f"child-{i}"}).dpr_id, f"child-{i}")
                   for i in range(calls)]
            os.write(w, json.dumps(got).encode())
            os._exit(0)
        except BaseException:
            os._exit(2)
    os.close(w)
    mine = [(c.govern("search_docs", {"q": f"parent-{i}"}).dpr_id, f"parent-{i}")
            for i in range(calls)]
    with os.fdopen(r, "rb") as pipe:
        theirs = [tuple(x) for x in json.loads(pipe.read() or b"[]")]
    _, status = os.waitpid(pid, 0)
    c.close()
    assert os.waitstatus_to_exitcode(status) == 0, "the child got all its decisions"
    records = {rec["id"]: rec for rec in export(daemon.stack)}
    assert len(theirs) == calls
    for dpr, q in mine + theirs:
        assert records[dpr]["args"] == {"q": q}, "each answer belongs to its own call"


def test_a_request_over_the_line_limit_is_refused_before_sending(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        with pytest.raises(ValueError, match="1 MiB"):
            c.govern("search_docs", {"q": "x" * 2_000_000})
        # Nothing was sent, so the connection is still in step.
        assert c.govern("search_docs", {"q": "after"}).permitted


def test_arguments_nested_too_deeply_are_refused_before_sending(daemon: Daemon) -> None:
    deep: dict[str, object] = {}
    for _ in range(5000):
        deep = {"a": deep}
    with Client(daemon.socket, agent=AGENT) as c:
        with pytest.raises(ValueError, match="nested too deeply"):
            c.govern("search_docs", deep)


def test_keys_that_collide_as_json_are_refused_by_the_daemon(daemon: Daemon) -> None:
    with Client(daemon.socket, agent=AGENT) as c:
        d = c.govern("search_docs", {1: "a", "1": "b"})
    assert (d.effect, d.reason_code) == ("deny", "MALFORMED_REQUEST")
    assert "duplicate" in d.reason


def test_integers_beyond_2_to_the_53_are_refused(daemon: Daemon) -> None:
    # As doubles, 2**53 + 1 and 2**53 are one number: an approval for one must not be spent on
    # the other, and the log must not record a value the tool never received.
    with Client(daemon.socket, agent=AGENT) as c:
        big = c.govern("stripe/refund", {"charge": "ch_1", "amount": 2**53 + 1})
        edge = c.govern("search_docs", {"q": "x", "n": 2**53})
    assert (big.effect, big.reason_code) == ("deny", "MALFORMED_REQUEST")
    assert "2^53" in big.reason
    assert edge.permitted, "2**53 itself is exact"
