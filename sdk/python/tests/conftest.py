"""Fixtures: the real ``faramesh`` binary running ``faramesh dev`` on a temporary copy of the
reference stack (examples/support-stack), and the CLI as the operator.

The binary is ``$FARAMESH_BIN``, else ``target/{debug,release}/faramesh`` of this repository
(built with cargo when neither exists). Nothing here talks to the daemon through the SDK: the
readiness check and the operator use the admin socket and the CLI, as a person would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Offline: LangChain must not try to send traces anywhere.
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"

REPO = Path(__file__).resolve().parents[3]
SCENE = REPO / "examples" / "support-stack" / "governance.fms"
AGENT = "support-bot"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 20.0


def faramesh_bin() -> Path:
    env = os.environ.get("FARAMESH_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            raise RuntimeError(f"FARAMESH_BIN={env} does not exist")
        return path
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "faramesh"
        if path.is_file():
            return path
    subprocess.run(["cargo", "build", "-p", "faramesh", "--locked"], cwd=REPO, check=True)
    return REPO / "target" / "debug" / "faramesh"


BIN = faramesh_bin()


def rpc(path: Path, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One raw JSON-RPC call on a fresh connection (independent of the SDK under test)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CALL_TIMEOUT)
        s.connect(str(path))
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before answering")
            buf += chunk
    return json.loads(buf)


class Daemon:
    """A ``faramesh dev`` (or ``faramesh daemon``) child process, READY once constructed."""

    def __init__(self, stack: Path, command: str = "dev", env: dict[str, str] | None = None):
        self.stack = stack
        self.log = stack / f"test-{command}.log"
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        full_env.pop("FARAMESH_SOCKET", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN), command, "--dir", str(stack)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        run_file = self.stack / ".faramesh" / "run" / "daemon.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faramesh exited during start:\n{self.log_text()}")
            try:
                info = json.loads(run_file.read_text())
            except (OSError, ValueError):
                info = None
            if info and info.get("pid") == self.proc.pid:
                try:
                    if rpc(Path(info["admin_socket"]), "status")["result"]["state"] == "READY":
                        return info
                except (OSError, KeyError, ValueError):
                    pass
            time.sleep(0.01)
        raise RuntimeError(f"faramesh never became READY:\n{self.log_text()}")

    @property
    def socket(self) -> Path:
        return Path(self.info["socket"])

    @property
    def data_dir(self) -> Path:
        return Path(self.info["data_dir"])

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """``faramesh stop``, then wait for a clean exit."""
        out = cli(self.stack, "stop")
        assert out.returncode == 0, out.stderr
        assert self.proc.wait(timeout=START_TIMEOUT) == 0, self.log_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=START_TIMEOUT)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def cli(stack: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``faramesh ARGS… --dir STACK`` run to completion."""
    out = subprocess.run(
        [str(BIN), *args, "--dir", str(stack)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"faramesh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def approve(stack: Path, token: str, comment: str = "checked") -> dict[str, Any]:
    """The operator approves with the CLI."""
    out = cli(stack, "approvals", "approve", token, "--comment", comment, "--json", check=True)
    return json.loads(out.stdout)


def reject(stack: Path, token: str) -> dict[str, Any]:
    out = cli(stack, "approvals", "reject", token, "--json", check=True)
    return json.loads(out.stdout)


def pending(stack: Path) -> list[dict[str, Any]]:
    out = cli(stack, "approvals", "list", "--json", check=True)
    listed = json.loads(out.stdout)
    return listed if isinstance(listed, list) else listed.get("approvals", [])


def wait_pending(stack: Path, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """The first pending approval, once there is one (the operator watching the queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pending(stack)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no approval became pending")


def export(stack: Path) -> list[dict[str, Any]]:
    """The audit log as ``faramesh audit export --format jsonl`` writes it."""
    out = cli(stack, "audit", "export", "--format", "jsonl", check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def make_stack(root: Path, policy: str | None = None) -> Path:
    stack = root / "stack"
    stack.mkdir(parents=True)
    if policy is None:
        shutil.copy(SCENE, stack / "governance.fms")
    else:
        (stack / "governance.fms").write_text(policy)
    return stack


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A temporary copy of the reference stack (no daemon)."""
    return make_stack(tmp_path)


@pytest.fixture
def daemon(stack: Path) -> Iterator[Daemon]:
    """``faramesh dev`` on a temporary copy of the reference stack."""
    d = Daemon(stack)
    try:
        yield d
    finally:
        d.kill()


@pytest.fixture(autouse=True)
def _no_ambient_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    # A FARAMESH_SOCKET of the developer's shell must not point the tests elsewhere.
    monkeypatch.delenv("FARAMESH_SOCKET", raising=False)
    monkeypatch.delenv("FARAMESH_AGENT", raising=False)


def python() -> str:
    return sys.executable
