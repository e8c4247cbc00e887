"""What the Python SDK adds to a governed call: latency per decision, SDK against a bare socket.

Starts ``faramesh daemon`` (release build) on a temporary stack with ``durability =
"interval"`` and the policy of the daemon's own load driver (crates/daemon/examples/load.rs),
or uses a running daemon (``--socket``, whose policy must permit the request). Then, one
client, one call at a time, in interleaved rounds so that load from elsewhere hits every mode
alike, it times:

* ``raw``: the same ``decide`` line, pre-encoded, written to a bare Unix socket and its answer
  read up to the newline (no JSON encoding or decoding in Python): the daemon's round trip as
  Python sees it;
* ``client``: ``Client.decide(...)`` returning a ``Decision`` (encode, pooled connection,
  send, read, decode, validate);
* ``governed``: a ``@governed`` function (``report=False``): argument binding, the decision,
  the credential context, the call.

Besides the latency percentiles it prints each mode's CPU time per call in this process (the
client's own work, system calls included): the SDK's cost without the daemon's. The latency
difference is larger than the CPU difference: a client that spends longer between two calls
finds the daemon's threads parked more often, and waking them costs tens of µs on this kind
of machine (docs/performance.md, "The daemon").

    python sdk/python/bench/overhead.py [--calls 20000] [--warmup 2000] [--bin PATH]
                                        [--pace-us 500] [--socket PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faramesh

REPO = Path(__file__).resolve().parents[3]

POLICY = """
runtime {
  durability = "interval"
}

agent "support-bot" {
  default deny
  rules {
    permit search_docs
    permit stripe/refund if amount < $500 and currency in ["usd", "eur"]
    defer  stripe/refund if amount >= $500
    deny   stripe/payouts
  }
  rate_limit "stripe/refund": 1000000000 per second
  redact stripe/refund args: ["customer.email"]
}
"""

AGENT, SESSION, TOOL = "support-bot", "s-1", "stripe/refund"
ARGS: dict[str, Any] = {
    "amount": 80,
    "currency": "usd",
    "customer": {"email": "ada@example.com", "id": "cus_123"},
    "reason": "duplicate charge",
}


def start_daemon(binary: Path, stack: Path) -> subprocess.Popen[bytes]:
    (stack / "governance.fms").write_text(POLICY)
    log = open(stack / "daemon.log", "wb")
    proc = subprocess.Popen([str(binary), "daemon", "--dir", str(stack)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    run_file = stack / ".faramesh" / "run" / "daemon.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"faramesh daemon exited:\n{(stack / 'daemon.log').read_text()}")
        try:
            if json.loads(run_file.read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    proc.kill()
    sys.exit("faramesh daemon did not start")


def raw_caller(path: Path) -> Callable[[], None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "decide", "params": {
        "agent": AGENT, "session": SESSION, "tool": TOOL, "args": ARGS}},
        separators=(",", ":")).encode() + b"\n"
    send, recv = sock.sendall, sock.recv

    def call() -> None:
        send(line)
        data = recv(65536)
        while not data.endswith(b"\n"):
            data += recv(65536)
        if b'"effect":"permit"' not in data:
            raise SystemExit(f"unexpected answer: {data[:300]!r}")

    return call


def client_caller(client: faramesh.Client) -> Callable[[], None]:
    def call() -> None:
        d = client.decide(TOOL, ARGS, agent=AGENT, session=SESSION)
        if not d.permitted:
            raise SystemExit(f"unexpected decision: {d}")

    return call


def governed_caller(client: faramesh.Client) -> Callable[[], None]:
    @faramesh.governed(tool=TOOL, agent=AGENT, session=SESSION, client=client, report=False)
    def refund(amount: int, currency: str, customer: dict[str, str], reason: str) -> None:
        pass

    def call() -> None:
        refund(**ARGS)

    return call


def measure(callers: dict[str, Callable[[], None]], calls: int, warmup: int,
            rounds: int, pace_us: int = 0) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Per-call wall times (ns) of each mode, and each mode's CPU time per call (µs) in this
    thread: the client's own work, system calls included, without the daemon's. With
    ``pace_us``, each call starts that long after the previous one ended (a busy wait, so
    this thread stays on its core while the daemon's threads go idle, as between the tool
    calls of a real agent); the pause is neither timed nor counted as CPU."""
    for call in callers.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[int]] = {name: [] for name in callers}
    cpu_ns: dict[str, int] = {name: 0 for name in callers}
    per_round = max(1, calls // rounds)
    now, cpu = time.perf_counter_ns, time.thread_time_ns
    pace = pace_us * 1000
    for _ in range(rounds):
        for name, call in callers.items():
            out = samples[name]
            for _ in range(per_round):
                if pace:
                    until = now() + pace
                    while now() < until:
                        pass
                c0 = cpu()
                t0 = now()
                call()
                t1 = now()
                cpu_ns[name] += cpu() - c0
                out.append(t1 - t0)
    return samples, {n: cpu_ns[n] / len(samples[n]) / 1000.0 for n in callers}


def pct(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, round((len(sorted_ns) - 1) * p))] / 1000.0


def report(samples: dict[str, list[int]], cpu: dict[str, float]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    print(f"{'':10} {'n':>7} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} "
          f"{'mean µs':>9} {'CPU µs':>8}")
    for name, ns in samples.items():
        s = sorted(ns)
        row = {"n": len(s), "p50": pct(s, 0.50), "p90": pct(s, 0.90), "p99": pct(s, 0.99),
               "p999": pct(s, 0.999), "mean": statistics.fmean(s) / 1000.0, "cpu": cpu[name]}
        table[name] = row
        print(f"{name:10} {row['n']:>7} {row['p50']:>9.1f} {row['p90']:>9.1f} "
              f"{row['p99']:>9.1f} {row['p999']:>9.1f} {row['mean']:>9.1f} {row['cpu']:>8.1f}")
    if "raw" in table:
        for name in table:
            if name != "raw":
                d = {k: table[name][k] - table["raw"][k] for k in ("p50", "p90", "p99", "cpu")}
                print(f"{name} − raw: p50 {d['p50']:+.1f} µs, p90 {d['p90']:+.1f} µs, "
                      f"p99 {d['p99']:+.1f} µs; CPU {d['cpu']:+.1f} µs per call")
    return table


def default_bin() -> Path:
    env = os.environ.get("FARAMESH_BIN")
    return Path(env) if env else REPO / "target" / "release" / "faramesh"


def main() -> None:
    ap = argparse.ArgumentParser(description="SDK overhead per governed call")
    ap.add_argument("--calls", type=int, default=20_000, help="measured calls per mode")
    ap.add_argument("--warmup", type=int, default=2_000, help="calls per mode before measuring")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--pace-us", type=int, default=0,
                    help="busy-wait this long between calls (the daemon goes idle between them)")
    ap.add_argument("--bin", type=Path, default=default_bin(), help="the faramesh binary")
    ap.add_argument("--socket", type=Path, help="a running daemon's agent socket instead")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    opts = ap.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="faramesh-sdk-bench-") as tmp:
        proc = None
        path = opts.socket
        if path is None:
            if not opts.bin.is_file():
                sys.exit(f"{opts.bin} not found: cargo build --release -p faramesh")
            proc = start_daemon(opts.bin, Path(tmp))
            path = Path(tmp) / ".faramesh" / "run" / "faramesh.sock"
        try:
            client = faramesh.Client(path, timeout=10)
            callers = {"raw": raw_caller(path), "client": client_caller(client),
                       "governed": governed_caller(client)}
            print(f"daemon: {'running at ' + str(opts.socket) if opts.socket else opts.bin} "
                  f"(durability interval); Python {sys.version.split()[0]}; "
                  f"{opts.calls} calls per mode after {opts.warmup} warm-up, "
                  f"{opts.rounds} interleaved rounds"
                  + (f", {opts.pace_us} µs between calls" if opts.pace_us else ""))
            samples, cpu = measure(callers, opts.calls, opts.warmup, opts.rounds, opts.pace_us)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    load_after = os.getloadavg()
    table = report(samples, cpu)
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if opts.json:
        opts.json.write_text(json.dumps({"modes": table, "load_before": load_before,
                                         "load_after": load_after}, indent=2))


if __name__ == "__main__":
    main()
