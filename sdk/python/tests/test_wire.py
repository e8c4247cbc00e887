"""The client's wire handling against local Unix-socket servers that misbehave on purpose:
answers in fragments, oversized, garbage, silence, connections dropped before or after the
request. Real sockets; the daemon itself never misbehaves like this, which is why these are
not run against it. Whatever happens, a governed function must not run without a permit."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import faramesh
from faramesh import Client, DaemonUnavailable, ToolDeniedException

Handler = Callable[[socket.socket, dict[str, Any], int], bool]


def decision(**over: Any) -> dict[str, Any]:
    d = {
        "effect": "permit",
        "reason_code": "RULE_PERMIT",
        "reason": "ok",
        "rule_ref": "governance.fms:1",
        "dpr_id": "dpr_test",
        "latency_us": 1,
    }
    d.update(over)
    return d


def answer(req: dict[str, Any], result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}).encode() + b"\n"


def replying(make: Callable[[dict[str, Any]], bytes]) -> Handler:
    """A handler that writes ``make(request)`` and keeps the connection open."""

    def handle(conn: socket.socket, req: dict[str, Any], n: int) -> bool:
        conn.sendall(make(req))
        return True

    return handle


class Server:
    """A Unix-socket server on a thread; ``handler(conn, request, n)`` answers the n-th
    request (0-based, over all connections) and returns False to close the connection."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(10)
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    self.requests.append(req)
                    if not self.handler(conn, req, len(self.requests) - 1):
                        return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Handler], Server]]:
    servers: list[Server] = []

    def start(handler: Handler) -> Server:
        s = Server(tmp_path / f"s{len(servers)}.sock", handler)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def governed_probe(client: Client) -> tuple[Callable[[], str], list[str]]:
    """A governed function and the list it appends to when it actually runs."""
    ran: list[str] = []

    @faramesh.governed(tool="probe", agent="a", client=client, report=False)
    def probe() -> str:
        ran.append("ran")
        return "ran"

    return probe, ran


def test_an_answer_in_small_fragments_is_put_together(serve: Callable[[Handler], Server]) -> None:
    reason = "r" * 300_000  # several reads' worth

    def fragments(conn: socket.socket, req: dict[str, Any], n: int) -> bool:
        data = answer(req, decision(reason=reason))
        for i in range(0, len(data) - 1, 4096):
            conn.sendall(data[i : min(i + 4096, len(data) - 1)])
            if i % (16 * 4096) == 0:
                time.sleep(0.005)
        conn.sendall(data[-1:])  # the newline alone, last
        return True

    s = serve(fragments)
    with Client(s.path, agent="a") as c:
        d = c.govern("t", {})
        assert d.permitted and d.reason == reason
        assert c.govern("t", {}).reason == reason, "the connection stays in step"
    assert s.connections == 1


def test_an_oversized_answer_is_refused(serve: Callable[[Handler], Server]) -> None:
    s = serve(replying(lambda req: answer(req, decision(reason="x" * 5000))))
    client = Client(s.path, agent="a", max_answer_bytes=1000)
    probe, ran = governed_probe(client)
    with pytest.raises(DaemonUnavailable) as e:
        probe()
    assert e.value.code == "DAEMON_PROTOCOL_ERROR"
    assert ran == []


GARBAGE: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not json": lambda req: b"hello\n",
    "not an object": lambda req: b"[1,2]\n",
    "another id": lambda req: json.dumps(
        {"jsonrpc": "2.0", "id": req["id"] + 1, "result": decision()}).encode() + b"\n",
    "unknown effect": lambda req: answer(req, decision(effect="allow")),
    "upper-case effect": lambda req: answer(req, decision(effect="PERMIT")),
    "no dpr_id": lambda req: answer(req, {"effect": "permit", "reason_code": "X", "reason": ""}),
    "defer without token": lambda req: answer(req, decision(effect="defer")),
    "bad credential": lambda req: answer(req, decision(credential={"value": 5})),
    "a JSON-RPC error": lambda req: json.dumps(
        {"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "no"}}
    ).encode() + b"\n",
    "two answers at once": lambda req: answer(req, decision()) * 2,
    "neither result nor error": lambda req: json.dumps(
        {"jsonrpc": "2.0", "id": req["id"]}).encode() + b"\n",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_fails_closed(kind: str, serve: Callable[[Handler], Server]) -> None:
    s = serve(replying(GARBAGE[kind]))
    probe, ran = governed_probe(Client(s.path, agent="a"))
    with pytest.raises(DaemonUnavailable) as e:
        probe()
    assert e.value.code == "DAEMON_PROTOCOL_ERROR", e.value
    assert e.value.effect == "deny"
    assert ran == []


def test_silence_times_out_and_is_not_resent(serve: Callable[[Handler], Server]) -> None:
    s = serve(lambda conn, req, n: True)  # reads, never answers
    probe, ran = governed_probe(Client(s.path, agent="a", timeout=0.3))
    t0 = time.monotonic()
    with pytest.raises(DaemonUnavailable) as e:
        probe()
    assert e.value.code == "DAEMON_TIMEOUT"
    assert 0.25 < time.monotonic() - t0 < 3
    assert ran == []
    assert len(s.requests) == 1


def test_a_decide_is_not_resent_once_the_daemon_may_have_read_it(
    serve: Callable[[Handler], Server],
) -> None:
    s = serve(lambda conn, req, n: False)  # reads the request, closes without answering
    probe, ran = governed_probe(Client(s.path, agent="a"))
    with pytest.raises(DaemonUnavailable) as e:
        probe()
    assert e.value.code == "DAEMON_CONNECTION_LOST"
    assert ran == []
    assert [r["method"] for r in s.requests] == ["decide"], "sent once, never resent"


def test_a_read_only_call_is_resent_once(serve: Callable[[Handler], Server]) -> None:
    def first_dropped(conn: socket.socket, req: dict[str, Any], n: int) -> bool:
        if n == 0:
            return False
        conn.sendall(answer(req, {"state": "READY"}))
        return True

    s = serve(first_dropped)
    with Client(s.path) as c:
        assert c.status() == {"state": "READY"}
    assert [r["method"] for r in s.requests] == ["status", "status"]
    assert s.connections == 2


def test_a_pooled_connection_the_daemon_closed_is_replaced(
    serve: Callable[[Handler], Server],
) -> None:
    def one_per_connection(conn: socket.socket, req: dict[str, Any], n: int) -> bool:
        conn.sendall(answer(req, decision(dpr_id=f"dpr_{n}")))
        return False  # then close, as an idle timeout or a restart would

    s = serve(one_per_connection)
    with Client(s.path, agent="a") as c:
        assert c.govern("t", {}).dpr_id == "dpr_0"
        time.sleep(0.05)  # the close reaches the client's side
        assert c.govern("t", {}).dpr_id == "dpr_1"
    assert len(s.requests) == 2, "each decide was sent exactly once"
    assert s.connections == 2


def test_no_socket_and_a_dead_socket_file(tmp_path: Path) -> None:
    probe, ran = governed_probe(Client(tmp_path / "missing.sock", agent="a"))
    with pytest.raises(DaemonUnavailable) as missing:
        probe()
    assert missing.value.code == "DAEMON_UNREACHABLE"

    # A socket file left behind by a daemon that died: connection refused.
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    probe2, ran2 = governed_probe(Client(dead, agent="a"))
    with pytest.raises(ToolDeniedException) as refused:
        probe2()
    assert refused.value.code == "DAEMON_UNREACHABLE"
    assert "is the daemon running" in str(refused.value)
    assert ran == [] and ran2 == []


def test_no_stack_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    probe, ran = governed_probe(Client(agent="a"))
    with pytest.raises(DaemonUnavailable) as e:
        probe()
    assert e.value.code == "DAEMON_UNREACHABLE"
    assert "FARAMESH_SOCKET" in e.value.reason
    assert ran == []


def test_async_calls_do_not_block_the_event_loop(serve: Callable[[Handler], Server]) -> None:
    def slow(conn: socket.socket, req: dict[str, Any], n: int) -> bool:
        time.sleep(0.3)
        conn.sendall(answer(req, decision()))
        return True

    s = serve(slow)
    client = Client(s.path, agent="a")

    @faramesh.governed(tool="probe", client=client, report=False)
    async def probe() -> str:
        return "ran"

    async def main() -> tuple[str, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        result = await probe()
        done.set()
        await t
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == "ran"
    assert ticks >= 10, f"the loop ran only {ticks} times during a 0.3 s call"


def test_the_arguments_sent_for_each_way_of_calling(serve: Callable[[Handler], Server]) -> None:
    s = serve(replying(lambda req: answer(req, decision())))
    client = Client(s.path, agent="a")

    def sent() -> dict[str, Any]:
        return dict(s.requests[-1]["params"]["args"])

    @faramesh.governed(client=client, report=False)
    def f(a: int, b: str = "x", *, c: float = 1.5) -> tuple[int, str, float]:
        return a, b, c

    assert f(1) == (1, "x", 1.5) and sent() == {"a": 1, "b": "x", "c": 1.5}
    assert f(2, "y") == (2, "y", 1.5) and sent() == {"a": 2, "b": "y", "c": 1.5}
    assert f(b="z", a=3, c=2.0) == (3, "z", 2.0) and sent() == {"a": 3, "b": "z", "c": 2.0}
    n = len(s.requests)
    for bad_args, bad_kw in (((), {}), ((1,), {"a": 1}), ((1, "y", 2.0), {}), ((1,), {"d": 4})):
        with pytest.raises(TypeError):
            f(*bad_args, **bad_kw)
    assert len(s.requests) == n, "a call Python refuses is never sent"

    @faramesh.governed(client=client, report=False)
    def g(a: int, *rest: int, **extra: str) -> int:
        return a + sum(rest)

    assert g(1, 2, 3, note="hi") == 6
    assert sent() == {"a": 1, "rest": [2, 3], "note": "hi"}
    assert s.requests[-1]["params"]["tool"] == "g"
