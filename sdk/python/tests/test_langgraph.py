"""``GovernedToolSet`` inside real LangGraph agent loops (``create_react_agent`` and
``ToolNode``), driven offline by a scripted chat model, against the real daemon."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any

import pytest
from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, create_react_agent, tools_condition

import faramesh
from faramesh import Client, DaemonUnavailable, GovernedToolSet, ToolDeniedException
from faramesh.langchain import GovernedTool

from conftest import AGENT, Daemon, approve, export, pending, wait_pending
from fakechat import ScriptedChatModel, calls, say, tool_results

EMAIL = "ada@example.com"


class Tools:
    """Stripe-like LangChain tools (sync and async) that record what really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any], str | None]] = []
        ran = self.ran

        def seen(name: str, args: dict[str, Any]) -> None:
            cred = faramesh.current_credential()
            ran.append((name, args, cred.value if cred else None))

        @tool("stripe/refund")
        def refund(amount: int, customer_email: str = "") -> str:
            """Refund a customer's charge, in dollars."""
            seen("refund", {"amount": amount})
            return f"refunded ${amount}"

        @tool("stripe/payouts")
        def payouts(amount: int) -> str:
            """Pay out the platform balance."""
            seen("payouts", {"amount": amount})
            return "paid out"

        @tool
        def search_docs(q: str) -> str:
            """Search the help center."""
            seen("search_docs", {"q": q})
            return f"3 articles about {q}"

        @tool("stripe/refund")
        async def arefund(amount: int, customer_email: str = "") -> str:
            """Refund a customer's charge, in dollars."""
            await asyncio.sleep(0)
            seen("arefund", {"amount": amount})
            return f"refunded ${amount}"

        @tool("stripe/payouts")
        async def apayouts(amount: int) -> str:
            """Pay out the platform balance."""
            seen("apayouts", {"amount": amount})
            return "paid out"

        self.sync: list[BaseTool] = [refund, payouts, search_docs]
        self.async_: list[BaseTool] = [arefund, apayouts, search_docs]


@pytest.fixture
def client(daemon: Daemon) -> Any:
    with Client(daemon.socket, timeout=5) as c:
        yield c


def toolset(tools: list[Any], client: Client, **kw: Any) -> GovernedToolSet:
    return GovernedToolSet(tools, agent=AGENT, client=client, **kw)


def by_call(messages: list[BaseMessage]) -> dict[str, ToolMessage]:
    """Tool messages by the tool call they answer."""
    return {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}


def scene_script() -> tuple[list[Any], dict[str, str]]:
    """$80 refund; then $8000 refund and a payout in one turn; then a closing line."""
    first = calls(("stripe/refund", {"amount": 80, "customer_email": EMAIL}))
    second = calls(("stripe/refund", {"amount": 8000}), ("stripe/payouts", {"amount": 5}))
    ids = {
        "small": str(first.tool_calls[0]["id"]),
        "big": str(second.tool_calls[0]["id"]),
        "payout": str(second.tool_calls[1]["id"]),
    }
    return [first, second, say("Done: $80 refunded, $8000 awaits approval.")], ids


def check_scene(daemon: Daemon, t: Tools, out: dict[str, Any], ids: dict[str, str], prefix: str) -> None:
    msgs = by_call(out["messages"])
    small, big, payout = msgs[ids["small"]], msgs[ids["big"]], msgs[ids["payout"]]
    assert small.status == "success" and small.content == "refunded $80"
    assert big.status == "error"
    token = pending(daemon.stack)[0]["token"]
    assert "approval" in str(big.content) and token in str(big.content)
    assert payout.status == "error"
    assert "RULE_DENY" in str(payout.content) and "platform team" in str(payout.content)
    assert out["messages"][-1].content.startswith("Done")
    # Only the permitted refund ran, with its credential.
    assert [(n, a) for n, a, _ in t.ran] == [(f"{prefix}refund", {"amount": 80})]
    assert (t.ran[0][2] or "").startswith("rk_dev_")


def test_create_react_agent_permit_defer_deny(daemon: Daemon, client: Client) -> None:
    t = Tools()
    script, ids = scene_script()
    model = ScriptedChatModel(script=script)
    agent = create_react_agent(model, toolset(t.sync, client))
    out = agent.invoke({"messages": [("user", "Refund order 1 and order 2, then pay out.")]})
    check_scene(daemon, t, out, ids, "")
    # The model was offered the tools exactly as LangChain describes them.
    offered = {f["function"]["name"]: f["function"] for f in model.offered}
    assert set(offered) == {"stripe/refund", "stripe/payouts", "search_docs"}
    assert offered["stripe/refund"]["parameters"]["required"] == ["amount"]
    # The daemon decided on the names the framework knows, without an /invoke suffix.
    tools_seen = {r.get("tool") for r in export(daemon.stack)} - {None}
    assert tools_seen == {"stripe/refund", "stripe/payouts"}


def test_create_react_agent_async(daemon: Daemon, client: Client) -> None:
    t = Tools()
    script, ids = scene_script()
    agent = create_react_agent(ScriptedChatModel(script=script), toolset(t.async_, client))
    out = asyncio.run(agent.ainvoke({"messages": [("user", "Refund both, pay out.")]}))
    check_scene(daemon, t, out, ids, "a")


def graph_with_tool_node(model: ScriptedChatModel, tools: Any) -> Any:
    node = tools if isinstance(tools, ToolNode) else ToolNode(list(tools))
    bound = model.bind_tools(list(node.tools_by_name.values()))
    g = StateGraph(MessagesState)
    g.add_node("agent", lambda state: {"messages": [bound.invoke(state["messages"])]})
    g.add_node("tools", node)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile()


def test_tool_node_defer_approve_retry_once(daemon: Daemon, client: Client) -> None:
    """In one agent loop: deferred; the operator approves with the CLI; the model makes the
    identical call again and it runs; a third identical call is deferred anew."""
    t = Tools()
    big = ("stripe/refund", {"amount": 8000})
    tokens: list[str] = []

    def after_defer(messages: list[BaseMessage]) -> Any:
        [deferred] = tool_results(messages)
        assert deferred.status == "error"
        token = pending(daemon.stack)[0]["token"]
        assert token in str(deferred.content)
        tokens.append(token)
        approve(daemon.stack, token)  # the operator, while the agent waits
        return calls(big)

    def after_retry(messages: list[BaseMessage]) -> Any:
        [ran] = tool_results(messages)
        assert (ran.status, ran.content) == ("success", "refunded $8000")
        return calls(big)

    def after_second(messages: list[BaseMessage]) -> Any:
        [again] = tool_results(messages)
        assert again.status == "error" and "approval" in str(again.content)
        assert tokens[0] not in str(again.content), "a used approval is not offered again"
        return say("The second refund of $8000 needs its own approval.")

    model = ScriptedChatModel(script=[calls(big), after_defer, after_retry, after_second])
    graph = graph_with_tool_node(model, toolset(t.sync, client))
    out = graph.invoke({"messages": [("user", "Refund $8000 to order 9.")]})
    assert model.turn == 4 and "own approval" in out["messages"][-1].content
    assert [(n, a) for n, a, _ in t.ran] == [("refund", {"amount": 8000})], "ran exactly once"
    approved = [r for r in export(daemon.stack) if r.get("reason_code") == "APPROVED"]
    assert len(approved) == 1 and approved[0]["defer"]["token"] == tokens[0]


def test_tool_node_blocks_on_defer_until_approved(daemon: Daemon, client: Client) -> None:
    t = Tools()
    operator = threading.Thread(
        target=lambda: approve(daemon.stack, wait_pending(daemon.stack)["token"])
    )
    operator.start()
    model = ScriptedChatModel(script=[calls(("stripe/refund", {"amount": 8000})), say("ok")])
    tools = toolset(t.sync, client, block_on_defer=True, approval_timeout=30, poll_interval=0.05)
    out = graph_with_tool_node(model, tools).invoke({"messages": [("user", "refund")]})
    operator.join()
    [result] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert (result.status, result.content) == ("success", "refunded $8000")
    assert len(t.ran) == 1 and (t.ran[0][2] or "").startswith("rk_dev_")


def test_on_deny_raise_ends_the_run(client: Client) -> None:
    t = Tools()
    model = ScriptedChatModel(script=[calls(("stripe/payouts", {"amount": 5})), say("never")])
    agent = create_react_agent(model, toolset(t.sync, client, on_deny="raise"))
    with pytest.raises(ToolDeniedException) as e:
        agent.invoke({"messages": [("user", "pay out")]})
    assert (e.value.code, e.value.tool) == ("RULE_DENY", "stripe/payouts")
    assert t.ran == []


def test_daemon_down_nothing_runs(daemon: Daemon, client: Client) -> None:
    t = Tools()
    ask = calls(("stripe/refund", {"amount": 80}))
    model = ScriptedChatModel(script=[ask, say("could not")])
    agent = create_react_agent(model, toolset(t.sync, client))
    daemon.stop()
    out = agent.invoke({"messages": [("user", "refund")]})
    [msg] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msg.status == "error" and "DAEMON_UNREACHABLE" in str(msg.content)
    assert t.ran == []

    raising = create_react_agent(
        ScriptedChatModel(script=[ask, say("no")]), toolset(t.sync, client, on_deny="raise")
    )
    with pytest.raises(DaemonUnavailable):
        raising.invoke({"messages": [("user", "refund")]})
    assert t.ran == []


def test_the_daemon_decides_on_the_values_the_tool_receives(daemon: Daemon, client: Client) -> None:
    # The model writes "8000" as a string; the tool's schema makes it the integer 8000. The
    # daemon must decide on 8000 (defer), not on a string that no amount rule matches.
    t = Tools()
    model = ScriptedChatModel(script=[calls(("stripe/refund", {"amount": "8000"})), say("ok")])
    out = create_react_agent(model, toolset(t.sync, client)).invoke({"messages": [("user", "x")]})
    [msg] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msg.status == "error" and "approval" in str(msg.content)
    assert pending(daemon.stack)[0]["args"]["amount"] == 8000
    assert t.ran == []


def test_injected_arguments_are_not_sent(daemon: Daemon, client: Client) -> None:
    seen: list[tuple[int, int, str]] = []

    @tool("stripe/refund")
    def refund(
        amount: int,
        state: Annotated[dict[str, Any], InjectedState],
        call_id: Annotated[str, InjectedToolCallId],
    ) -> str:
        """Refund."""
        seen.append((amount, len(state["messages"]), call_id))
        return "refunded"

    ask = calls(("stripe/refund", {"amount": 80}))
    model = ScriptedChatModel(script=[ask, say("ok")])
    create_react_agent(model, toolset([refund], client)).invoke({"messages": [("user", "x")]})
    assert seen == [(80, 2, ask.tool_calls[0]["id"])], "the tool got its injected arguments"
    [record] = [r for r in export(daemon.stack) if r.get("tool") == "stripe/refund"]
    assert record["args"] == {"amount": 80}, "graph state and call ids are not the daemon's"
    offered = model.offered[0]["function"]["parameters"]["properties"]
    assert list(offered) == ["amount"]


def test_plain_functions_and_tool_ids(daemon: Daemon, client: Client) -> None:
    ran: list[tuple[str, int, str | None]] = []

    def refund(amount: int) -> str:
        """Refund a charge."""
        cred = faramesh.current_credential()
        ran.append(("refund", amount, cred.value if cred else None))
        return f"refunded ${amount}"

    def payouts(amount: int) -> str:
        """Pay out."""
        ran.append(("payouts", amount, None))
        return "paid"

    # Names the model can use (no "/"), mapped to the policy's tool ids.
    ids = {"refund": "stripe/refund", "payouts": "stripe/payouts"}
    tools = toolset([refund, payouts], client, tool_ids=ids)
    assert tools.names == ["refund", "payouts"]
    model = ScriptedChatModel(script=[calls(("refund", {"amount": 80})), say("ok")])
    out = graph_with_tool_node(model, tools).invoke({"messages": [("user", "x")]})
    [msg] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msg.content == "refunded $80"
    assert ran[0][:2] == ("refund", 80) and (ran[0][2] or "").startswith("rk_dev_")
    assert {f["function"]["name"] for f in model.offered} == {"refund", "payouts"}

    # ToolNode turns plain functions into tools that do not handle errors: a denial ends
    # the run with the exception (LangChain tools get a message instead).
    model2 = ScriptedChatModel(script=[calls(("payouts", {"amount": 5})), say("no")])
    with pytest.raises(ToolDeniedException) as e:
        graph_with_tool_node(model2, tools).invoke({"messages": [("user", "x")]})
    assert e.value.code == "RULE_DENY"
    assert [r[0] for r in ran] == ["refund"]


def test_a_misspelled_tool_id_key_is_refused(client: Client) -> None:
    def refund(amount: int) -> str:
        return "refunded"

    with pytest.raises(ValueError, match="'refnd'.*not among the tools .*'refund'"):
        toolset([refund], client, tool_ids={"refnd": "stripe/refund"})


def test_governed_tools_look_like_the_originals(client: Client) -> None:
    t = Tools()
    governed = toolset(t.sync, client)
    for inner, wrapped in zip(t.sync, governed):
        assert isinstance(wrapped, GovernedTool) and wrapped.inner is inner
        assert wrapped.name == inner.name and wrapped.description == inner.description
        assert convert_to_openai_tool(wrapped) == convert_to_openai_tool(inner)
    # Governing twice would decide every call twice: an already governed tool is kept.
    assert list(GovernedToolSet(governed, agent=AGENT, client=client)) == list(governed)


def test_arguments_the_schema_refuses_never_reach_the_daemon(daemon: Daemon, client: Client) -> None:
    t = Tools()
    model = ScriptedChatModel(script=[calls(("stripe/refund", {"amount": "lots"})), say("sorry")])
    out = create_react_agent(model, toolset(t.sync, client)).invoke({"messages": [("user", "x")]})
    [msg] = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msg.status == "error" and "amount" in str(msg.content), "the model hears why"
    assert t.ran == []
    assert not [r for r in export(daemon.stack) if r.get("tool")], "nothing to decide"
