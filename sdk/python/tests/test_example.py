"""examples/langgraph-support-bot end to end, through its one command (run.sh), so it
cannot rot: the scene's steps in order, and its policy checked and tested by the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO

EXAMPLE = REPO / "examples" / "langgraph-support-bot"


def steps(text: str) -> dict[int, str]:
    """Numbered steps and the lines indented under them."""
    out: dict[int, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^(\d+)\. (.*)$", line)
        if m:
            current = int(m.group(1))
            out[current] = m.group(2)
        elif current is not None and line.startswith("   "):
            out[current] += "\n" + line.strip()
    return out


def test_the_example_plays_the_scene(tmp_path: Path) -> None:
    stack = tmp_path / "stack"
    env = {**os.environ, "FARAMESH_BIN": str(BIN), "FARAMESH_PYTHON": sys.executable,
           "NO_COLOR": "1"}
    run = subprocess.run([str(EXAMPLE / "run.sh"), "--dir", str(stack)], capture_output=True,
                         text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    s = steps(run.stdout)
    assert sorted(s) == [1, 2, 3, 4, 5, 6], run.stdout
    assert "lookup_customer: ran" in s[1]
    assert "refund: ran: refunded $80 of ch_1 (Stripe key lease lease_" in s[1]
    assert "refund: did not run" in s[1] and "approval" in s[1]
    assert "payouts: did not run" in s[1] and "RULE_DENY" in s[1]
    token = re.search(r"approval (dfr_[0-9a-f]+) is pending", s[2])
    assert token, s[2]
    assert f"approvals approve {token.group(1)}" in s[3] and "status approved" in s[3]
    assert "refund: ran: refunded $8000 of ch_2" in s[3]
    assert "permit APPROVED" in s[4]
    assert "refund: did not run" in s[4]
    assert "defer RULE_DEFER" in s[5] and token.group(1) not in s[5]
    assert "verified" in s[6]
    # The daemon is gone and the stack's log verifies from here too.
    assert not (stack / ".faramesh" / "run" / "daemon.json").exists()
    assert "rk_dev_" not in run.stdout, "the example never prints a credential value"


def test_the_example_policy_checks_and_passes_its_tests() -> None:
    env = {**os.environ, "NO_COLOR": "1", "VAULT_TOKEN": "set-for-the-check"}
    check = subprocess.run([str(BIN), "check", "--strict", str(EXAMPLE)], capture_output=True,
                           text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([str(BIN), "test", str(EXAMPLE)], capture_output=True, text=True,
                            env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert re.search(r"^5 passed, 0 failed$", tested.stdout, re.M), tested.stdout
