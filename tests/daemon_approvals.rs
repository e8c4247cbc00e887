//! Approvals (SPEC §7) against the real daemon: only an operator resolves them (admin socket,
//! CLI, HTTP with the operator token), an approval binds the exact call, identical retries
//! share a token, and rejected, expired and spent approvals deny.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::time::Duration;

use daemon_common::*;
use serde_json::{Value, json};

const AGENT: &str = "bot";

/// Every refund waits for a human.
fn policy(ttl: Option<&str>) -> String {
    let ttl = ttl.map_or(String::new(), |t| format!("  approval_ttl = {t}\n"));
    format!(
        "runtime {{\n  durability = \"interval\"\n{ttl}}}\n\n\
         agent \"{AGENT}\" {{\n  default deny\n  rules {{\n    \
         defer  stripe/refund reason \"every refund needs a human\"\n    \
         permit search_docs\n  }}\n}}\n"
    )
}

fn refund(amount: u64, token: Option<&str>) -> Value {
    let mut p = call(AGENT, "stripe/refund", json!({"amount": amount}));
    if let Some(t) = token {
        p["defer_token"] = json!(t);
    }
    p
}

/// Defers `amount` and returns its token.
#[track_caller]
fn deferred(d: &Daemon, amount: u64) -> String {
    let a = d.decide(refund(amount, None));
    expect(&a, "defer", "RULE_DEFER");
    a["defer_token"]
        .as_str()
        .expect("a defer token")
        .to_string()
}

#[track_caller]
fn approval(d: &Daemon, token: &str) -> Value {
    d.admin_call("approvals.show", json!({"token": token}))
}

#[test]
fn the_agent_socket_cannot_resolve_anything() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let token = deferred(&d, 8000);
    let mut agent = d.agent();
    let with_token = json!({"token": token, "defer_token": token, "comment": "me"});
    for method in [
        "approvals.approve",
        "approvals.reject",
        "approvals.list",
        "approvals.show",
        "approve",
        "reject",
        "approval.approve",
        "kill",
        "unkill",
        "apply",
        "rollback",
        "stop",
    ] {
        let r = agent.call(method, with_token.clone());
        assert_eq!(
            rpc_code(&r),
            Some(-32601),
            "the agent socket must not answer `{method}`: {r:?}"
        );
    }
    // The same connection still works, and sees the approval pending.
    let s = agent
        .call("approval.status", json!({"defer_token": token}))
        .unwrap();
    assert_eq!(s["status"], "pending", "{s}");
    assert_eq!(s["defer_token"], token.as_str(), "{s}");
    let retry = agent.call("decide", refund(8000, Some(&token))).unwrap();
    expect(&retry, "defer", "RULE_DEFER");
    assert_eq!(
        retry["defer_token"],
        token.as_str(),
        "still pending: {retry}"
    );
    drop(agent);
    // Nothing of it reached the operator's side: pending, no kill switch, still running.
    let a = approval(&d, &token);
    assert_eq!(a["status"], "pending", "{a}");
    assert!(a["approver"].is_null(), "{a}");
    expect(
        &d.decide(call(AGENT, "search_docs", json!({}))),
        "permit",
        "RULE_PERMIT",
    );
    assert_eq!(d.status()["state"], "READY");
    d.stop();
}

#[test]
fn an_approval_of_80_cannot_be_spent_on_8000() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let t80 = deferred(&d, 80);
    let t8000 = deferred(&d, 8000);
    assert_ne!(t80, t8000, "different calls, different approvals");
    let a = d.admin_call("approvals.approve", json!({"token": t80}));
    assert_eq!(a["status"], "approved", "{a}");

    let spent = d.decide(refund(8000, Some(&t80)));
    expect(&spent, "deny", "APPROVAL_MISMATCH");
    // Other agents and other tools cannot spend it either.
    let other_tool = d.decide(json!({
        "agent": AGENT, "tool": "search_docs", "args": {"amount": 80}, "defer_token": t80,
    }));
    assert_eq!(
        other_tool["effect"], "permit",
        "search_docs needs no approval"
    );
    assert_eq!(other_tool["reason_code"], "RULE_PERMIT", "{other_tool}");
    // The $8000 call is still waiting for its own approval.
    assert_eq!(approval(&d, &t8000)["status"], "pending");
    let own = d.decide(refund(8000, Some(&t8000)));
    expect(&own, "defer", "RULE_DEFER");
    assert_eq!(own["defer_token"], t8000.as_str(), "{own}");

    // The mismatch did not spend the $80 approval: it works once, then never again.
    assert_eq!(approval(&d, &t80)["status"], "approved");
    let ok80 = d.decide(refund(80, Some(&t80)));
    expect(&ok80, "permit", "APPROVED");
    let twice = d.decide(refund(80, Some(&t80)));
    expect(&twice, "deny", "APPROVAL_CONSUMED");
    assert_eq!(approval(&d, &t80)["status"], "consumed");
    // A token nobody issued.
    let forged = d.decide(refund(80, Some("dfr_00000000000000000000000000000000")));
    expect(&forged, "deny", "APPROVAL_MISMATCH");
    d.stop();

    // The log holds every one of those decisions and verifies.
    verify(dir.path());
    let approved = show(dir.path(), ok80["dpr_id"].as_str().unwrap());
    assert_eq!(approved["approval"]["approver"], operator_label().as_str());
    let mismatch = show(dir.path(), spent["dpr_id"].as_str().unwrap());
    assert_eq!(mismatch["reason_code"], "APPROVAL_MISMATCH", "{mismatch}");
    assert!(mismatch["approval"].is_null(), "{mismatch}");
}

#[test]
fn identical_retries_share_one_pending_approval_and_the_cli_lists_it() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let first = deferred(&d, 8000);
    for _ in 0..3 {
        assert_eq!(
            deferred(&d, 8000),
            first,
            "an identical retry reuses the token"
        );
    }
    // Key order and spacing do not make a call different (canonical JSON).
    let reordered = d.decide(json!({
        "tool": "stripe/refund", "args": {"amount": 8000}, "agent": AGENT,
    }));
    assert_eq!(reordered["defer_token"], first.as_str(), "{reordered}");
    let other = deferred(&d, 9000);
    assert_ne!(other, first);

    let out = faramesh_in(dir.path(), &["approvals", "list", "--json"]);
    ok(&out, "faramesh approvals list --json");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
    let mut tokens: Vec<&str> = list.iter().map(|a| a["token"].as_str().unwrap()).collect();
    tokens.sort_unstable();
    let mut want = vec![first.as_str(), other.as_str()];
    want.sort_unstable();
    assert_eq!(tokens, want, "exactly the two pending approvals: {list:?}");
    for a in &list {
        assert_eq!(a["status"], "pending", "{a}");
        assert_eq!(a["agent"], AGENT, "{a}");
        assert_eq!(a["tool"], "stripe/refund", "{a}");
        assert_eq!(a["reason"], "every refund needs a human", "{a}");
    }
    let first_row = list.iter().find(|a| a["token"] == first.as_str()).unwrap();
    assert_eq!(first_row["args"], json!({"amount": 8000}), "{first_row}");

    // The text form names them too, and `show` finds one.
    let text = faramesh_in(dir.path(), &["approvals", "list"]);
    ok(&text, "faramesh approvals list");
    assert!(stdout(&text).contains(&first) && stdout(&text).contains(&other));
    let shown_one = faramesh_in(dir.path(), &["approvals", "show", &first]);
    ok(&shown_one, "faramesh approvals show");
    assert!(
        stdout(&shown_one).contains("pending"),
        "{}",
        shown(&shown_one)
    );
    // Status counts them.
    assert_eq!(d.status()["pending_approvals"], 2);
    d.stop();
}

#[test]
fn a_rejected_approval_denies_the_retry() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let token = deferred(&d, 8000);
    let out = faramesh_in(
        dir.path(),
        &[
            "approvals",
            "reject",
            &token,
            "--comment",
            "not this one",
            "--json",
        ],
    );
    ok(&out, "faramesh approvals reject");
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["status"], "rejected", "{a}");
    assert_eq!(a["approver"], operator_label().as_str(), "{a}");
    assert_eq!(a["comment"], "not this one", "{a}");

    let retry = d.decide(refund(8000, Some(&token)));
    expect(&retry, "deny", "APPROVAL_REJECTED");
    let again = d.decide(refund(8000, Some(&token)));
    expect(&again, "deny", "APPROVAL_REJECTED");
    let status = d
        .agent()
        .call("approval.status", json!({"defer_token": token}))
        .unwrap();
    assert_eq!(status["status"], "rejected", "{status}");
    // A resolved approval cannot be resolved again, either way.
    for verb in ["approve", "reject"] {
        let twice = faramesh_in(dir.path(), &["approvals", verb, &token]);
        assert!(
            !twice.status.success(),
            "{verb} of a rejected approval must fail:\n{}",
            shown(&twice)
        );
    }
    assert_eq!(approval(&d, &token)["status"], "rejected");
    // An unknown token is an error too.
    let unknown = faramesh_in(dir.path(), &["approvals", "approve", "dfr_nope"]);
    assert!(!unknown.status.success(), "{}", shown(&unknown));
    d.stop();
}

#[test]
fn an_approval_expires_after_approval_ttl() {
    let dir = stack(&policy(Some("1s")));
    let d = Daemon::start(dir.path());
    let token = deferred(&d, 8000);
    let expires: jiff::Timestamp = approval(&d, &token)["expires"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = expires.duration_since(jiff::Timestamp::now()).as_secs_f64();
    assert!(left <= 1.0, "approval_ttl = 1s: expires in {left} s");
    std::thread::sleep(Duration::from_millis(1_300));

    let retry = d.decide(refund(8000, Some(&token)));
    expect(&retry, "deny", "APPROVAL_EXPIRED");
    let status = d
        .agent()
        .call("approval.status", json!({"defer_token": token}))
        .unwrap();
    assert_eq!(status["status"], "expired", "{status}");
    let late = faramesh_in(dir.path(), &["approvals", "approve", &token]);
    assert!(
        !late.status.success(),
        "an expired approval cannot be approved:\n{}",
        shown(&late)
    );
    let after = d.decide(refund(8000, Some(&token)));
    expect(&after, "deny", "APPROVAL_EXPIRED");
    // Asking again without the token opens a new approval.
    let fresh = deferred(&d, 8000);
    assert_ne!(fresh, token, "an expired approval is not reused");
    let list = d.admin_call("approvals.list", json!({"status": "expired"}));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["token"] == token.as_str()),
        "{list}"
    );
    d.stop();
}

#[test]
fn http_approvals_need_the_operator_token() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let addr = d.info.http.clone();
    let token = deferred(&d, 8000);
    let operator = operator_token(dir.path());
    assert!(operator.starts_with("fmo_"), "{operator}");
    let approve_path = format!("/v1/approvals/{token}/approve");
    let body = r#"{"approver":"alice","comment":"ok by me"}"#;

    for (what, bearer) in [
        ("no token", None),
        ("a wrong token", Some("fmo_0000")),
        (
            "a token one byte short",
            Some(&operator[..operator.len() - 1]),
        ),
    ] {
        for (method, path, b) in [
            ("POST", approve_path.as_str(), Some(body)),
            ("POST", &format!("/v1/approvals/{token}/reject"), Some(body)),
            ("GET", "/v1/approvals", None),
            ("GET", &format!("/v1/approvals/{token}"), None),
            ("GET", "/v1/audit", None),
        ] {
            let r = http(&addr, method, path, bearer, b);
            assert_eq!(r.status, 401, "{method} {path} with {what}: {r:?}");
        }
    }
    assert_eq!(approval(&d, &token)["status"], "pending", "still pending");
    let retry = d.decide(refund(8000, Some(&token)));
    expect(&retry, "defer", "RULE_DEFER");

    // The operator lists it, then approves it.
    let list = http(
        &addr,
        "GET",
        "/v1/approvals?status=pending",
        Some(&operator),
        None,
    );
    assert_eq!(list.status, 200, "{list:?}");
    assert!(
        list.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["token"] == token.as_str()),
        "{list:?}"
    );
    let ok = http(&addr, "POST", &approve_path, Some(&operator), Some(body));
    assert_eq!(ok.status, 200, "{ok:?}");
    let a = ok.json();
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["approver"], "http:alice", "{a}");
    assert_eq!(a["comment"], "ok by me", "{a}");
    // Approving twice is a conflict, not a second approval.
    let twice = http(&addr, "POST", &approve_path, Some(&operator), Some(body));
    assert_eq!(twice.status, 409, "{twice:?}");
    let one = http(
        &addr,
        "GET",
        &format!("/v1/approvals/{token}"),
        Some(&operator),
        None,
    );
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json()["approver"], "http:alice");

    // The agent's retry over HTTP is permitted once and records the HTTP approver.
    let retry = http(
        &addr,
        "POST",
        "/v1/decide",
        None,
        Some(&refund(8000, Some(&token)).to_string()),
    );
    assert_eq!(retry.status, 200, "{retry:?}");
    let retry = retry.json();
    expect(&retry, "permit", "APPROVED");
    let again = d.decide(refund(8000, Some(&token)));
    expect(&again, "deny", "APPROVAL_CONSUMED");

    // The log, over HTTP with the token: the approved record names http:alice.
    let id = retry["dpr_id"].as_str().unwrap();
    // (`durability = "interval"`: an answered record reaches the readers within ~10 ms.)
    let mut rec = Value::Null;
    let mut last = String::new();
    let found = wait_for(Duration::from_secs(5), || {
        let audit = http(&addr, "GET", "/v1/audit?limit=50", Some(&operator), None);
        assert_eq!(audit.status, 200, "{audit:?}");
        if let Some(r) = audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
        {
            rec = r.clone();
        }
        last = audit.body;
        !rec.is_null()
    });
    assert!(found, "{id} in /v1/audit: {last}");
    assert_eq!(rec["approval"]["approver"], "http:alice", "{rec}");
    assert_eq!(rec["adapter"], "http", "{rec}");

    // A decide body that is not a call is a recorded deny, not an HTTP error.
    for bad in ["", "{", "[]", r#"{"agent":"bot"}"#] {
        let r = http(&addr, "POST", "/v1/decide", None, Some(bad));
        assert_eq!(r.status, 200, "{bad:?}: {r:?}");
        expect(&r.json(), "deny", "MALFORMED_REQUEST");
    }

    // Unauthenticated routes: health, status and metrics.
    let health = http(&addr, "GET", "/healthz", None, None);
    assert_eq!(health.status, 200, "{health:?}");
    let status = http(&addr, "GET", "/v1/status", None, None);
    assert_eq!(status.json()["state"], "READY", "{status:?}");
    let metrics = http(&addr, "GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    for name in [
        "faramesh_decisions_total",
        "faramesh_decision_latency_seconds",
        "faramesh_approvals_pending",
    ] {
        assert!(
            metrics.body.contains(name),
            "{name} in /metrics:\n{}",
            metrics.body
        );
    }
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("faramesh_decisions_total")
                && l.contains("effect=\"permit\"")
                && l.contains("reason_code=\"APPROVED\"")),
        "the approved permit is counted:\n{}",
        metrics.body
    );
    d.stop();
    verify(dir.path());
    let rec = show(dir.path(), id);
    assert_eq!(rec["approval"]["approver"], "http:alice", "{rec}");
}

#[test]
fn concurrent_retries_spend_an_approval_exactly_once() {
    const N: usize = 8;
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());

    // N agents ask for the same call at the same moment: one approval, one token.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
    let ask = |token: Option<String>| {
        (0..N)
            .map(|_| {
                let mut agent = d.agent();
                let (barrier, token) = (barrier.clone(), token.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    agent
                        .call("decide", refund(8000, token.as_deref()))
                        .unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<Value>>()
    };
    let first = ask(None);
    let tokens: std::collections::HashSet<&str> = first
        .iter()
        .map(|a| {
            expect(a, "defer", "RULE_DEFER");
            a["defer_token"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "one pending approval for identical calls: {first:#?}"
    );
    let token = tokens.into_iter().next().unwrap().to_string();
    let pending = d.admin_call("approvals.list", json!({}));
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");

    d.admin_call("approvals.approve", json!({"token": token}));
    let retries = ask(Some(token.clone()));
    let permits = retries.iter().filter(|a| a["effect"] == "permit").count();
    assert_eq!(permits, 1, "permitted exactly once: {retries:#?}");
    for a in &retries {
        if a["effect"] == "permit" {
            expect(a, "permit", "APPROVED");
        } else {
            expect(a, "deny", "APPROVAL_CONSUMED");
        }
    }
    assert_eq!(approval(&d, &token)["status"], "consumed");
    d.stop();
    verify(dir.path());
    let approved = export(dir.path())
        .into_iter()
        .filter(|r| r["reason_code"] == "APPROVED")
        .count();
    assert_eq!(approved, 1, "one APPROVED record");
}

#[test]
fn an_approval_does_not_override_a_rule_that_now_denies() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let token = deferred(&d, 8000);
    d.admin_call("approvals.approve", json!({"token": token}));

    // The operator tightens the policy: refunds are denied outright now.
    let strict = policy(None).replace(
        "defer  stripe/refund reason \"every refund needs a human\"",
        "deny   stripe/refund reason \"refunds are frozen\"",
    );
    assert_ne!(strict, policy(None));
    write_policy(dir.path(), &strict);
    ok(
        &faramesh_in(dir.path(), &["apply"]),
        "apply the strict policy",
    );
    let retry = d.decide(refund(8000, Some(&token)));
    expect(&retry, "deny", "RULE_DENY");
    assert_eq!(
        approval(&d, &token)["status"],
        "approved",
        "a deny does not spend the approval"
    );

    // Back to deferring: the approval is still good, once.
    write_policy(dir.path(), &policy(None));
    ok(
        &faramesh_in(dir.path(), &["apply"]),
        "apply the deferring policy",
    );
    expect(&d.decide(refund(8000, Some(&token))), "permit", "APPROVED");
    expect(
        &d.decide(refund(8000, Some(&token))),
        "deny",
        "APPROVAL_CONSUMED",
    );
    d.stop();
}

#[test]
fn kill_switches_are_the_operators() {
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let docs = || call(AGENT, "search_docs", json!({}));
    expect(&d.decide(docs()), "permit", "RULE_PERMIT");

    ok(
        &faramesh_in(dir.path(), &["kill", AGENT]),
        "faramesh kill bot",
    );
    expect(&d.decide(docs()), "deny", "KILL_SWITCH");
    // Even an approved call does not get through a kill switch.
    ok(
        &faramesh_in(dir.path(), &["unkill", AGENT]),
        "faramesh unkill bot",
    );
    let token = deferred(&d, 8000);
    d.admin_call("approvals.approve", json!({"token": token}));
    ok(
        &faramesh_in(dir.path(), &["kill", "--all"]),
        "faramesh kill --all",
    );
    expect(&d.decide(refund(8000, Some(&token))), "deny", "KILL_SWITCH");
    expect(&d.decide(docs()), "deny", "KILL_SWITCH");
    // The agent cannot lift it.
    let r = d.agent().call("unkill", json!({}));
    assert_eq!(rpc_code(&r), Some(-32601), "{r:?}");
    ok(
        &faramesh_in(dir.path(), &["unkill", "--all"]),
        "faramesh unkill --all",
    );
    expect(&d.decide(docs()), "permit", "RULE_PERMIT");
    expect(&d.decide(refund(8000, Some(&token))), "permit", "APPROVED");
    let out = faramesh_in(dir.path(), &["kill"]);
    assert!(
        !out.status.success(),
        "kill needs an agent or --all:\n{}",
        shown(&out)
    );
    d.stop();
}

#[test]
fn sockets_and_secrets_have_owner_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = stack(&policy(None));
    let d = Daemon::start(dir.path());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.info.socket), 0o660, "agent socket");
    assert_eq!(mode(&d.info.admin_socket), 0o600, "admin socket");
    let keys = daemon::stack::keys_dir(&data_dir(dir.path()));
    for f in ["operator.token", "redaction.key", "audit.key"] {
        assert_eq!(mode(&keys.join(f)), 0o600, "{f}");
    }
    assert!(
        d.info.http.starts_with("127.0.0.1:"),
        "the HTTP API is on loopback: {}",
        d.info.http
    );
    d.stop();
    for p in [
        d_socket(dir.path()),
        daemon::stack::admin_socket(dir.path()),
    ] {
        assert!(!p.exists(), "{} is removed at stop", p.display());
    }
}

fn d_socket(stack: &std::path::Path) -> std::path::PathBuf {
    daemon::stack::default_socket(stack)
}
