//! What operators see of a running daemon: `faramesh explain` on recorded decisions, the
//! Prometheus metrics, and alerts delivered to a real webhook endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use daemon_common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"runtime {
  durability = "interval"
}

agent "ops" {
  default deny
  rules {
    permit logs/read if lines <= 100
    defer  deploy/prod method POST
    deny   db/drop reason "never from an agent"
  }
  alert {
    on     = "deny"
    notify = "webhook://ops-hook"
  }
}
"#;

#[test]
fn explain_walks_a_recorded_decision_through_every_step_and_rule() {
    let stack = stack(POLICY);
    let d = Daemon::start(stack.path());
    let permit = d.decide(call("ops", "logs/read", json!({"lines": 10})));
    let deny = d.decide(call("ops", "db/drop", json!({})));
    let unknown = d.decide(call("nobody", "logs/read", json!({})));
    d.stop();

    let out = faramesh_in(
        stack.path(),
        &["explain", permit["dpr_id"].as_str().unwrap()],
    );
    ok(&out, "explain a permit");
    let text = stdout(&out);
    for step in [
        "1. kill switch",
        "2. phase and agent",
        "3. pre-scanners",
        "7. policy engine",
        "8. decision",
        "9. audit write",
        "11. answer",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    assert!(
        text.contains("matched") && text.contains("permit logs/read if lines <= 100"),
        "the deciding rule, with its text:\n{text}"
    );
    assert!(text.contains("permit RULE_PERMIT"), "{text}");

    // The deny: the rules before it were tried and did not match.
    let out = faramesh_in(
        stack.path(),
        &["explain", deny["dpr_id"].as_str().unwrap(), "--json"],
    );
    ok(&out, "explain a deny");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules.last().unwrap()["outcome"], "matched", "{doc:#}");
    assert!(
        rules.last().unwrap()["rule"]
            .as_str()
            .unwrap()
            .starts_with("deny   db/drop"),
        "{doc:#}"
    );
    assert_eq!(doc["record"]["reason_code"], "RULE_DENY");

    // An unknown agent ends at step 2: the engine is never reached.
    let out = faramesh_in(
        stack.path(),
        &["explain", unknown["dpr_id"].as_str().unwrap()],
    );
    ok(&out, "explain an unknown agent");
    let text = stdout(&out);
    assert!(text.contains("UNKNOWN_AGENT"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("7. policy engine") && l.contains("not reached")),
        "{text}"
    );

    let out = faramesh_in(stack.path(), &["explain", "dpr_does_not_exist"]);
    assert!(!out.status.success(), "an unknown id fails");
    assert!(stderr(&out).contains("no record"), "{}", stderr(&out));
}

/// A plain HTTP server that answers 200 to every request and hands over each body.
fn webhook() -> (u16, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut conn = conn;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (port, rx)
}

#[test]
fn a_deny_alert_reaches_the_webhook_and_metrics_count_decisions() {
    let (port, bodies) = webhook();
    let policy = format!(
        "provider \"ops-hook\" {{\n  type   = \"webhook\"\n  url    = \"http://127.0.0.1:{port}/hook\"\n}}\n\n{POLICY}"
    );
    let stack = stack(&policy);
    let d = Daemon::start(stack.path());
    let deny = d.decide(call("ops", "db/drop", json!({"table": "users"})));
    expect(&deny, "deny", "RULE_DENY");
    d.decide(call("ops", "logs/read", json!({"lines": 5})));
    d.decide(call("ops", "logs/read", json!({"lines": 5000})));

    // Two denies, two alerts (delivered concurrently, in either order); none for the permit.
    let mut alerts = Vec::new();
    for _ in 0..2 {
        let (head, body) = bodies
            .recv_timeout(Duration::from_secs(20))
            .expect("each deny's alert is delivered");
        assert!(head.starts_with("POST /hook "), "{head}");
        alerts.push(serde_json::from_str::<Value>(&body).unwrap());
    }
    let text = serde_json::to_string(&alerts).unwrap();
    assert!(
        alerts.iter().any(|a| a.to_string().contains("db/drop")
            && a.to_string().contains(deny["dpr_id"].as_str().unwrap())),
        "{text}"
    );
    assert!(alerts.iter().all(|a| a["effect"] == "deny"), "{text}");
    assert!(
        !text.contains("users"),
        "no argument values in alerts: {text}"
    );
    assert!(
        bodies.recv_timeout(Duration::from_millis(500)).is_err(),
        "no alert for the permit"
    );

    let metrics = http(&d.info.http, "GET", "/metrics", None, None).body;
    for line in [
        "faramesh_decisions_total{effect=\"deny\",reason_code=\"RULE_DENY\"} 1",
        "faramesh_decisions_total{effect=\"permit\",reason_code=\"RULE_PERMIT\"} 1",
        "faramesh_decisions_total{effect=\"deny\",reason_code=\"DEFAULT_DENY\"} 1",
        "faramesh_decision_latency_seconds_count 3",
        "faramesh_approvals_pending 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    d.stop();
}

#[test]
fn a_permitted_call_is_reported_once_and_nothing_else_can_be() {
    let stack = stack(POLICY);
    let d = Daemon::start(stack.path());
    let permit = d.decide(call("ops", "logs/read", json!({"lines": 10})));
    expect(&permit, "permit", "RULE_PERMIT");
    let deny = d.decide(call("ops", "db/drop", json!({})));
    let mut agent = d.agent();
    let report = |agent: &mut daemon::client::Client, id: &Value| {
        agent.call(
            "report",
            json!({"dpr_id": id, "outcome": "ok", "cost": 0.25}),
        )
    };
    let first = report(&mut agent, &permit["dpr_id"]).unwrap();
    assert_eq!(first["dpr_id"], permit["dpr_id"], "{first}");
    assert_eq!(first["outcome"], "ok", "{first}");
    // Once only; a deny was never permitted; an id of another daemon run is not ours.
    assert_eq!(
        rpc_code(&report(&mut agent, &permit["dpr_id"])),
        Some(-32000)
    );
    assert_eq!(rpc_code(&report(&mut agent, &deny["dpr_id"])), Some(-32000));
    let id = permit["dpr_id"].as_str().unwrap();
    let other_boot = format!("{}{}{}", &id[..16], "00000000", &id[24..]);
    assert_ne!(other_boot, id);
    assert_eq!(
        rpc_code(&report(&mut agent, &json!(other_boot))),
        Some(-32000)
    );
    d.stop();
}

/// SPEC §3.7: spend is reserved at decision time and reconciled by `report`; a call with no
/// `cost` rule costs what its adapter reports.
#[test]
fn a_reported_cost_replaces_what_the_decision_reserved_in_the_budget() {
    let stack = stack(
        r#"runtime {
  durability = "interval"
}

agent "spender" {
  default deny
  rules {
    permit api/charge
    permit api/free
  }
  cost api/charge: amount
  budget daily {
    max       $100
    on_exceed deny
  }
}
"#,
    );
    let d = Daemon::start(stack.path());
    let mut agent = d.agent();
    let mut report = |id: &Value, cost: f64| {
        agent
            .call(
                "report",
                json!({"dpr_id": id, "outcome": "ok", "cost": cost}),
            )
            .unwrap()
    };
    let charge = |amount: i64| d.decide(call("spender", "api/charge", json!({"amount": amount})));

    // $50 reserved, $90 spent: $90 of the $100 is gone, so $20 more is refused.
    let first = charge(50);
    expect(&first, "permit", "RULE_PERMIT");
    report(&first["dpr_id"], 90.0);
    expect(&charge(20), "deny", "BUDGET_EXCEEDED");

    // $10 reserved, nothing spent: back to $90, so the next $10 passes (it would take $110).
    let unspent = charge(10);
    expect(&unspent, "permit", "RULE_PERMIT");
    report(&unspent["dpr_id"], 0.0);
    let last = charge(10);
    expect(&last, "permit", "RULE_PERMIT");
    report(&last["dpr_id"], 0.0);

    // No cost rule: nothing reserved, $5 reported, so $95 is gone and $10 more is refused.
    let free = d.decide(call("spender", "api/free", json!({})));
    expect(&free, "permit", "RULE_PERMIT");
    report(&free["dpr_id"], 5.0);
    expect(&charge(10), "deny", "BUDGET_EXCEEDED");
    expect(&charge(5), "permit", "RULE_PERMIT");
    d.stop();
}
