"""A LangGraph support agent whose Stripe tools are governed by faramesh — offline.

The scene (SPEC §1): a customer was charged twice. The agent looks the customer up, refunds
$80 at once (permitted, with a 30-second Stripe key minted for that call), asks to refund
$8000 (deferred: a human must approve), tries a payout (denied). An operator approves the
$8000 refund with the CLI; the agent's retry is permitted once; a third attempt needs a new
approval. Then the daemon stops and the audit log is verified.

Run it with ./run.sh (it prepares the Python environment and the faramesh binary), or with
a Python that has the SDK and langgraph installed:  FARAMESH_BIN=… python bot.py [--dir DIR]

The chat model is scripted (``SupportModel``) so that the example needs no network and no API
key; replace it with a real one (``ChatOpenAI``, ``ChatAnthropic``, …) and nothing else
changes: ``create_react_agent(model, tools)``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel

import faramesh

# langgraph 1.x points create_react_agent users at langchain.agents; the prebuilt one is the
# one this example (and the SDK's tests) use.
warnings.filterwarnings("ignore", message="create_react_agent has been moved")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AGENT = "support-bot"
EMAIL = "ada@example.com"


# --- the tools: what the agent may try; faramesh decides whether each call runs ----------


class Customer(BaseModel):
    email: str


def stripe_call(what: str) -> str:
    """Where a real tool would call Stripe with the minted key. The key is the call's alone;
    this example shows its lease, never its value."""
    cred = faramesh.current_credential()
    key = f"key lease {cred.lease_id}, {(cred.ttl_ms or 0) // 1000} s" if cred else "no key"
    return f"{what} (Stripe {key})"


@tool
def lookup_customer(email: str) -> str:
    """Find a customer by e-mail address; returns their recent charges."""
    return json.dumps({"customer": "cus_ada", "email": email,
                       "charges": [{"id": "ch_1", "amount": 80}, {"id": "ch_2", "amount": 8000}]})


@tool
def refund(charge: str, amount: int, customer: Customer) -> str:
    """Refund `amount` dollars of a charge to the customer."""
    return stripe_call(f"refunded ${amount} of {charge}")


@tool
def payouts(amount: int) -> str:
    """Pay out `amount` dollars of the platform balance to the bank."""
    return stripe_call(f"paid out ${amount}")


# The names the model uses (no "/": model APIs refuse it) → the tool ids of governance.fms.
TOOL_IDS = {"lookup_customer": "stripe/customers", "refund": "stripe/refund",
            "payouts": "stripe/payouts"}


# --- a scripted chat model, so that the example runs offline --------------------------------


def ask(name: str, **args: Any) -> AIMessage:
    ask.n += 1  # type: ignore[attr-defined]
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{ask.n}"}])  # type: ignore[attr-defined]


ask.n = 0  # type: ignore[attr-defined]
BIG = {"charge": "ch_2", "amount": 8000, "customer": {"email": EMAIL}}


class SupportModel(BaseChatModel):
    """Plays the assistant's side of the scene, one turn per call."""

    turns: list[Any] = [
        ask("lookup_customer", email=EMAIL),
        ask("refund", charge="ch_1", amount=80, customer={"email": EMAIL}),
        ask("refund", **BIG),
        ask("payouts", amount=1200),
        AIMessage(content="I refunded $80. The $8000 refund waits for an operator's approval; "
                          "payouts are not mine to make."),
        ask("refund", **BIG),  # after the operator approved
        AIMessage(content="The $8000 refund went through."),
        ask("refund", **BIG),  # asked to do it once more
        AIMessage(content="Refunding $8000 again needs a new approval."),
    ]
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-support"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        message = self.turns[self.turn]
        self.turn += 1
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> SupportModel:
        return self


# --- the daemon and the operator: the faramesh CLI ------------------------------------------


def faramesh_bin() -> str:
    env = os.environ.get("FARAMESH_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        path = REPO / "target" / profile / "faramesh"
        if path.is_file():
            return str(path)
    sys.exit("no faramesh binary: run ./run.sh, or set FARAMESH_BIN")


def cli(stack: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([faramesh_bin(), *args, "--dir", str(stack)], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, check=True)


def start_daemon(stack: Path) -> subprocess.Popen[bytes]:
    log = open(stack / "daemon.log", "ab")
    proc = subprocess.Popen([faramesh_bin(), "dev", "--dir", str(stack)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "NO_COLOR": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"faramesh dev exited:\n{(stack / 'daemon.log').read_text()}")
        status = subprocess.run([faramesh_bin(), "status", "--dir", str(stack), "--format",
                                 "json"], capture_output=True, text=True)
        if status.returncode == 0 and json.loads(status.stdout).get("state") == "READY":
            return proc
        time.sleep(0.05)
    proc.kill()
    sys.exit("faramesh dev did not become READY")


# --- the scene -------------------------------------------------------------------------------


def say(step: int, text: str) -> None:
    print(f"{step}. {text}", flush=True)


def tool_lines(messages: list[BaseMessage]) -> None:
    """What each tool call of the last agent run came to, and the assistant's last word."""
    for m in messages:
        if isinstance(m, ToolMessage):
            mark = "ran" if m.status == "success" else "did not run"
            print(f"   - {m.name}: {mark}: {m.content}", flush=True)
    print(f"   assistant: {messages[-1].content}", flush=True)


def run(stack: Path) -> None:
    shutil.copy(HERE / "governance.fms", stack / "governance.fms")
    daemon = start_daemon(stack)
    try:
        scene(stack)
    finally:
        if daemon.poll() is None:
            cli(stack, "stop")
            daemon.wait(timeout=30)
    verified = cli(stack, "audit", "verify")
    say(6, f"The daemon stopped. `faramesh audit verify`: {verified.stdout.strip().splitlines()[-1]}")


def scene(stack: Path) -> None:
    client = faramesh.Client(stack=stack)
    tools = faramesh.GovernedToolSet([lookup_customer, refund, payouts], agent=AGENT,
                                     client=client, tool_ids=TOOL_IDS)
    agent = create_react_agent(SupportModel(), tools)

    say(1, f"`faramesh dev` runs on {stack}; the agent gets governed tools {tools.names}.")
    messages: list[Any] = [("user", f"{EMAIL} was charged $80 and $8000 by mistake. Refund "
                                    "both, and pay out our balance while you are at it.")]
    out = agent.invoke({"messages": messages})
    tool_lines(out["messages"])

    [approval] = json.loads(cli(stack, "approvals", "list", "--json").stdout)
    token = approval["token"]
    say(2, f"The $8000 refund is deferred: approval {token} is pending "
           f"({approval['reason']}, {approval['rule_ref']}).")

    approved = json.loads(cli(stack, "approvals", "approve", token, "--comment",
                              "double charge confirmed", "--json").stdout)
    say(3, f"The operator approves: `faramesh approvals approve {token}` "
           f"(status {approved['status']}, by {approved['approver']}).")

    messages = out["messages"] + [("user", "An operator approved the $8000 refund; retry it.")]
    out = agent.invoke({"messages": messages})
    tool_lines(out["messages"][len(messages):])
    retry = _last_decision(stack, "stripe/refund")
    say(4, f"The retry is permitted once: {retry['effect']} {retry['reason_code']} "
           f"(approver {retry['approval']['approver']}).")

    messages = out["messages"] + [("user", "Refund the $8000 once more.")]
    out = agent.invoke({"messages": messages})
    tool_lines(out["messages"][len(messages):])
    again = _last_decision(stack, "stripe/refund")
    say(5, f"A second retry is not: {again['effect']} {again['reason_code']} — the approval "
           f"was used; a new one is pending ({again['defer']['token']}).")
    client.close()


def _last_decision(stack: Path, tool_id: str) -> dict[str, Any]:
    lines = cli(stack, "audit", "export", "--format", "jsonl").stdout.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r.get("tool") == tool_id][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="keep the stack here instead of a temp dir")
    opts = parser.parse_args()
    if opts.dir:
        opts.dir.mkdir(parents=True, exist_ok=True)
        run(opts.dir.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="faramesh-langgraph-") as tmp:
        run(Path(tmp))


if __name__ == "__main__":
    main()
