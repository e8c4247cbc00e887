"""The agent-socket client: newline-delimited JSON-RPC 2.0 over a Unix socket (SPEC §8).

One ``Client`` is safe to share between threads: each call borrows a connection from a small
pool for its whole round trip, so calls from many threads run side by side on separate
connections and answers can never be crossed.

Resending (why a call is sent at most twice, and when):

* A ``decide`` is resent only when the daemon cannot have read it: the pooled connection was
  found closed before anything was written (a non-blocking peek, for connections idle over
  half a second), or the write failed before a single byte was accepted (a Unix socket whose
  peer has closed refuses the first byte with ``EPIPE``). Once a byte of a ``decide`` may
  have reached the daemon, a broken connection is *not* retried: the daemon may already have decided it, and a
  decision has effects (it is recorded, counts against rate limits and budgets, mints a
  credential, and a retry carrying an approved ``defer_token`` consumes the approval). The
  call then fails closed with ``DaemonUnavailable(DAEMON_CONNECTION_LOST)``; calling again is
  the caller's choice.
* Read-only methods (``status``, ``approval.status``) are resent once after any broken
  connection.
* A timeout is never retried.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket as _socket
import struct
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._decision import Approval, Decision
from ._errors import (
    APPROVAL_TIMEOUT,
    DAEMON_CONNECTION_LOST,
    DAEMON_PROTOCOL_ERROR,
    DAEMON_TIMEOUT,
    DAEMON_UNREACHABLE,
    ApprovalTimeout,
    DaemonUnavailable,
    RpcError,
)
from ._jsonargs import json_default

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_APPROVAL_TIMEOUT = 300.0
#: Answers larger than this are refused.
MAX_ANSWER_BYTES = 16 << 20
#: The daemon reads request lines of at most this many bytes (newline excluded) and answers a
#: longer one with an error it cannot tie to the request: the client refuses it before sending.
MAX_REQUEST_BYTES = 1 << 20
_RECV = 1 << 16
# EPIPE as an error, never as SIGPIPE (which a host program may not ignore, as Python does).
_NOSIGNAL = getattr(_socket, "MSG_NOSIGNAL", 0)
# A pooled connection idle longer than this is checked before use (seconds).
_IDLE_CHECK = 0.5
_POLICY_FILES = ("governance.fms", "governance.fms.yaml", "governance.fms.json")
_READ_ONLY = frozenset({"status", "approval.status"})
_ids = itertools.count(1)
# One compact line; NaN and infinities are not JSON; Decimals, dates, dataclasses, … through
# json_default. Made once: json.dumps with options builds a new encoder on every call.
_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_default
).encode
_decode = json.JSONDecoder().decode


def find_stack(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: the current directory) that
    holds a policy file or a ``.faramesh/run`` directory."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for d in (here, *here.parents):
        if any((d / f).is_file() for f in _POLICY_FILES) or (d / ".faramesh" / "run").is_dir():
            return d
    return None


def stack_socket(stack: str | os.PathLike[str]) -> Path:
    """The agent socket of a stack: the one its running daemon names in
    ``.faramesh/run/daemon.json``, else ``<stack>/.faramesh/run/faramesh.sock``."""
    root = Path(stack)
    run = root / ".faramesh" / "run"
    try:
        info = json.loads((run / "daemon.json").read_text(encoding="utf-8"))
        named = info.get("socket") if isinstance(info, dict) else None
        if isinstance(named, str) and named:
            return root / named  # an absolute path stays as it is
    except (OSError, ValueError):
        pass
    return run / "faramesh.sock"


def resolve_socket(
    socket: str | os.PathLike[str] | None = None,
    stack: str | os.PathLike[str] | None = None,
) -> Path:
    """Where to connect: ``socket``, else ``stack``'s socket, else ``$FARAMESH_SOCKET``, else
    the socket of the stack found from the current directory."""
    if socket is not None:
        return Path(socket)
    if stack is not None:
        return stack_socket(stack)
    env = os.environ.get("FARAMESH_SOCKET")
    if env:
        return Path(env)
    found = find_stack()
    if found is None:
        raise DaemonUnavailable(
            DAEMON_UNREACHABLE,
            "no faramesh socket: set FARAMESH_SOCKET, pass socket= or stack=, "
            "or run inside a stack directory",
        )
    return stack_socket(found)


class _Broken(Exception):
    """The connection broke; ``delivered`` says whether the daemon may have read the request."""

    def __init__(self, delivered: bool, why: str) -> None:
        super().__init__(why)
        self.delivered = delivered


class _Connection:
    """One connection to the agent socket. The socket stays in blocking mode with the kernel's
    own send/receive timeouts (``SO_SNDTIMEO``/``SO_RCVTIMEO``), so a call costs two system
    calls (send, receive) and no ``poll``."""

    __slots__ = ("sock", "timeout", "used")

    def __init__(self, path: Path, connect_timeout: float, timeout: float) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(max(connect_timeout, 0.001))
            sock.connect(str(path))
            sock.settimeout(None)
            self.sock = sock
            self._set_timeout(timeout)
        except BaseException:
            sock.close()
            raise
        self.used = time.monotonic()

    def _set_timeout(self, timeout: float) -> None:
        sec = max(timeout, 0.001)
        tv = struct.pack("ll", int(sec), int((sec - int(sec)) * 1e6))
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, tv)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)
        self.timeout = timeout

    def ready(self, timeout: float) -> bool:
        """Whether this pooled connection can carry a call. One that sat idle is checked with
        a non-blocking peek: EOF (the daemon closed it: idle timeout, restart) or unasked data
        means it cannot. A connection closed in the last instant shows as a failed send."""
        if time.monotonic() - self.used > _IDLE_CHECK:
            try:
                self.sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
                return False  # EOF (b"") or data nobody asked for
            except BlockingIOError:
                pass  # nothing to read: alive
            except OSError:
                return False
        if timeout != self.timeout:
            self._set_timeout(timeout)
        return True

    def send_line(self, data: bytes) -> None:
        sent = 0
        n = len(data)
        while sent < n:
            try:
                sent += self.sock.send(data[sent:] if sent else data, _NOSIGNAL)
            except BlockingIOError:
                raise TimeoutError("the daemon does not read") from None
            except (BrokenPipeError, ConnectionResetError) as e:
                raise _Broken(sent > 0, f"the connection broke while sending: {e}") from None

    def read_line(self, deadline: float, limit: int) -> bytes:
        recv = self.sock.recv
        try:
            chunk = recv(_RECV)
        except BlockingIOError:
            raise TimeoutError("no answer") from None
        except ConnectionResetError as e:
            raise _Broken(True, f"the connection broke before the answer: {e}") from None
        if chunk.endswith(b"\n") and chunk.find(b"\n") == len(chunk) - 1 and len(chunk) <= limit:
            return chunk  # the usual case: the whole answer in one read
        chunks: list[bytes] = []
        size = 0
        while True:
            if not chunk:
                raise _Broken(True, "the daemon closed the connection before answering")
            size += len(chunk)
            if size > limit:
                raise ValueError(f"the answer is longer than {limit} bytes")
            chunks.append(chunk)
            end = chunk.find(b"\n")
            if end >= 0:
                if end != len(chunk) - 1:
                    # One request in flight: nothing may follow its answer.
                    raise ValueError("the daemon sent more than one answer")
                return b"".join(chunks)
            if time.monotonic() > deadline:
                raise TimeoutError("the answer did not arrive in time")
            try:
                chunk = recv(_RECV)
            except BlockingIOError:
                raise TimeoutError("no answer") from None
            except ConnectionResetError as e:
                raise _Broken(True, f"the connection broke before the answer: {e}") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """A client of the daemon's agent socket.

    ``socket``/``stack`` say where the daemon is (see ``resolve_socket``; resolved at each new
    connection, so a daemon started later is found). ``agent``, ``session`` and ``principal``
    are defaults for every call (``agent`` falls back to ``$FARAMESH_AGENT``).
    ``connect_timeout`` bounds connecting; ``timeout`` bounds each wait on the daemon (the
    send, the answer), and a call whose answer trickles in gives up at the first read past it.
    ``max_idle`` connections are kept for reuse.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        stack: str | os.PathLike[str] | None = None,
        agent: str | None = None,
        session: str | None = None,
        principal: Mapping[str, Any] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        max_idle: int = 8,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._socket = socket
        self._stack = stack
        self.agent = agent
        self.session = session
        self.principal = dict(principal) if principal is not None else None
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_answer_bytes = max_answer_bytes
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        _clients.add(self)

    # --- the methods of the agent socket -------------------------------------------------

    def decide(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        agent: str | None = None,
        session: str | None = None,
        principal: Mapping[str, Any] | None = None,
        call_id: str | None = None,
        defer_token: str | None = None,
    ) -> Decision:
        """Asks the daemon to decide one call. Returns the decision (permit, deny or defer);
        raises ``DaemonUnavailable`` when no decision could be had."""
        params = self._decide_params(tool, args, agent, session, principal, call_id, defer_token)
        try:
            result = self._request("decide", params, tool=tool)
        except RpcError as e:
            raise DaemonUnavailable(
                DAEMON_PROTOCOL_ERROR, f"the daemon refused decide: {e.message}", tool=tool
            ) from None
        try:
            return Decision.from_json(result)
        except DaemonUnavailable as e:
            raise DaemonUnavailable(e.code, e.reason, tool=tool) from None

    #: ``govern`` is ``decide`` (SPEC §9 calls it ``faramesh.govern``).
    govern = decide

    async def agovern(self, tool: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Decision:
        """``decide`` without blocking the event loop (the socket call runs in a thread)."""
        return await asyncio.to_thread(self.decide, tool, args, **kw)

    adecide = agovern

    def approval_status(self, defer_token: str) -> Approval:
        """``approval.status``: raises ``RpcError`` for a token the daemon does not know."""
        return Approval.from_json(self._request("approval.status", {"defer_token": defer_token}))

    def wait_for_approval(
        self,
        defer_token: str,
        timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
        *,
        poll_interval: float = 0.5,
    ) -> Approval:
        """Polls ``approval.status`` until the approval is no longer pending and returns it
        (``approved``, ``rejected``, ``expired`` or ``consumed``); raises ``ApprovalTimeout``
        after ``timeout`` seconds (``None``: wait indefinitely)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.05, poll_interval)
        while True:
            approval = self.approval_status(defer_token)
            if not approval.pending:
                return approval
            delay = _next_delay(delay, poll_interval, deadline, defer_token)
            time.sleep(delay)

    async def await_approval(
        self,
        defer_token: str,
        timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
        *,
        poll_interval: float = 0.5,
    ) -> Approval:
        """``wait_for_approval`` for asyncio: sleeps with ``asyncio.sleep``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.05, poll_interval)
        while True:
            approval = await asyncio.to_thread(self.approval_status, defer_token)
            if not approval.pending:
                return approval
            delay = _next_delay(delay, poll_interval, deadline, defer_token)
            await asyncio.sleep(delay)

    def report(self, dpr_id: str, outcome: str = "ok", cost: float | None = None) -> Any:
        """``report``: tells the daemon how a permitted call went (``ok`` or ``error``)."""
        params: dict[str, Any] = {"dpr_id": dpr_id, "outcome": outcome}
        if cost is not None:
            params["cost"] = cost
        return self._request("report", params)

    def status(self) -> dict[str, Any]:
        """The daemon's status document (as ``faramesh status --format json``)."""
        result = self._request("status", {})
        if not isinstance(result, dict):
            raise DaemonUnavailable(DAEMON_PROTOCOL_ERROR, "status answered with a non-object")
        return result

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Any agent-socket method, raw: returns ``result`` or raises ``RpcError``."""
        return self._request(method, dict(params or {}))

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Closes the pooled connections; calls after this open new ones."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket={self._socket!r}, stack={self._stack!r}, agent={self.agent!r})"

    # --- the round trip ------------------------------------------------------------------

    def _decide_params(
        self,
        tool: str,
        args: Mapping[str, Any] | None,
        agent: str | None,
        session: str | None,
        principal: Mapping[str, Any] | None,
        call_id: str | None,
        defer_token: str | None,
    ) -> dict[str, Any]:
        if not isinstance(tool, str) or not tool:
            raise ValueError("tool must be a non-empty string")
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"args must be a mapping, not {type(args).__name__}")
        who = agent or self.agent or os.environ.get("FARAMESH_AGENT")
        if not who:
            raise ValueError("no agent: pass agent=, set Client(agent=…) or FARAMESH_AGENT")
        params: dict[str, Any] = {"agent": who, "tool": tool, "args": dict(args or {})}
        sess = session or self.session
        if sess:
            params["session"] = sess
        prin = principal if principal is not None else self.principal
        if prin is not None:
            params["principal"] = dict(prin)
        if call_id:
            params["call_id"] = call_id
        if defer_token:
            params["defer_token"] = defer_token
        return params

    def _request(self, method: str, params: dict[str, Any], tool: str | None = None) -> Any:
        rid = next(_ids)
        try:
            text = _encode({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            line = text.encode("utf-8") + b"\n"
        except (TypeError, ValueError) as e:
            raise TypeError(f"the {method} params are not JSON: {e}") from None
        except RecursionError:
            raise ValueError(f"the {method} params are nested too deeply to encode") from None
        if len(line) - 1 > MAX_REQUEST_BYTES:
            raise ValueError(
                f"the {method} request is {len(line) - 1:,} bytes of JSON; the daemon reads at "
                f"most {MAX_REQUEST_BYTES:,} (1 MiB) per request: pass large data by reference"
            )
        deadline = time.monotonic() + self.timeout
        raw = self._round_trip(line, deadline, method in _READ_ONLY, tool)
        return self._answer(raw, rid, tool)

    def _round_trip(self, line: bytes, deadline: float, read_only: bool, tool: str | None) -> bytes:
        retried = False
        while True:
            conn = self._take(deadline, tool)
            try:
                conn.send_line(line)
                raw = conn.read_line(deadline, self.max_answer_bytes)
            except _Broken as e:
                conn.close()
                if not retried and (read_only or not e.delivered):
                    retried = True
                    continue
                code = DAEMON_CONNECTION_LOST if e.delivered else DAEMON_UNREACHABLE
                raise DaemonUnavailable(code, f"{e} (not resent)", tool=tool) from None
            except (TimeoutError, _socket.timeout):
                conn.close()
                raise DaemonUnavailable(
                    DAEMON_TIMEOUT, f"no answer within {self.timeout:g} s", tool=tool
                ) from None
            except ValueError as e:
                conn.close()
                raise DaemonUnavailable(DAEMON_PROTOCOL_ERROR, str(e), tool=tool) from None
            except OSError as e:
                conn.close()
                raise DaemonUnavailable(
                    DAEMON_CONNECTION_LOST, f"socket error: {e}", tool=tool
                ) from None
            except BaseException:
                # KeyboardInterrupt and the like: the connection's state is unknown.
                conn.close()
                raise
            self._give(conn)
            return raw

    def _answer(self, raw: bytes, rid: int, tool: str | None) -> Any:
        try:
            msg = _decode(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise DaemonUnavailable(
                DAEMON_PROTOCOL_ERROR, "the daemon's answer is not JSON", tool=tool
            ) from None
        if isinstance(msg, dict) and msg.get("id") is None and isinstance(msg.get("error"), dict):
            # The daemon could not read the request far enough to know its id.
            raise DaemonUnavailable(
                DAEMON_PROTOCOL_ERROR,
                f"the daemon refused the request: {msg['error'].get('message', '')}",
                tool=tool,
            )
        if not isinstance(msg, dict) or msg.get("id") != rid:
            raise DaemonUnavailable(
                DAEMON_PROTOCOL_ERROR, "the answer does not match the request", tool=tool
            )
        if "result" in msg:
            return msg["result"]
        err = msg.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            raise RpcError(code if isinstance(code, int) else 0, str(err.get("message", "")))
        raise DaemonUnavailable(
            DAEMON_PROTOCOL_ERROR, "the answer has neither result nor error", tool=tool
        )

    def _take(self, deadline: float, tool: str | None) -> _Connection:
        """An open connection: a pooled one that is still usable, else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(deadline, tool)
            if conn.ready(self.timeout):
                return conn
            conn.close()

    def _give(self, conn: _Connection) -> None:
        conn.used = time.monotonic()
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _forked(self) -> None:
        # In a child after fork: the parent's connections are the parent's. Closing our copies
        # of the descriptors leaves the parent's connections open.
        idle, self._idle, self._lock = self._idle, [], threading.Lock()
        for c in idle:
            c.close()

    def _connect(self, deadline: float, tool: str | None) -> _Connection:
        path = resolve_socket(self._socket, self._stack)
        wait = min(self.connect_timeout, max(deadline - time.monotonic(), 0))
        try:
            return _Connection(path, wait, self.timeout)
        except (TimeoutError, _socket.timeout):
            raise DaemonUnavailable(
                DAEMON_TIMEOUT, f"connecting to {path} timed out", tool=tool
            ) from None
        except OSError as e:
            raise DaemonUnavailable(
                DAEMON_UNREACHABLE,
                f"cannot connect to {path}: {e.strerror or e} (is the daemon running?)",
                tool=tool,
            ) from None


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork() -> None:
    for client in list(_clients):
        client._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _next_delay(delay: float, cap: float, deadline: float | None, token: str) -> float:
    """The next polling pause (growing to ``cap``), or ``ApprovalTimeout`` past the deadline."""
    nxt = min(delay * 2, cap)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApprovalTimeout(
                effect="defer",
                code=APPROVAL_TIMEOUT,
                reason="the approval is still pending",
                defer_token=token,
            )
        nxt = min(nxt, left)
    return max(nxt, 0.001)
