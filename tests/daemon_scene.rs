//! The reference scene of SPEC §1 end to end, against the real binary: `faramesh demo`, then
//! the same scene by hand with `faramesh dev`, the CLI as the operator and the audit log
//! checked offline afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::path::Path;
use std::time::Duration;

use daemon_common::*;
use serde_json::{Value, json};

const AGENT: &str = "support-bot";
const EMAIL: &str = "ada@example.com";

fn support_stack() -> tempfile::TempDir {
    let policy = std::fs::read_to_string(repo_root().join("examples/support-stack/governance.fms"))
        .expect("examples/support-stack/governance.fms");
    stack(&policy)
}

fn refund(amount: u64, token: Option<&str>) -> Value {
    let mut p = json!({
        "agent": AGENT,
        "session": "e2e",
        "tool": "stripe/refund",
        "args": {"amount": amount, "customer": {"email": EMAIL}},
    });
    if let Some(t) = token {
        p["defer_token"] = json!(t);
    }
    p
}

/// The numbered steps of the narration: each step's number and text (its line and the lines
/// that continue it, up to a blank line or the next step).
fn steps(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let numbered = line
            .split_once(". ")
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
        if let Some((n, rest)) = numbered {
            out.push((n, rest.to_string()));
            open = true;
        } else if line.trim().is_empty() {
            open = false;
        } else if open && let Some((_, step)) = out.last_mut() {
            step.push('\n');
            step.push_str(line);
        }
    }
    out
}

#[test]
fn demo_narrates_the_five_steps_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene");
    let out = faramesh(&["demo", "--dir", scene.to_str().unwrap()]);
    ok(&out, "faramesh demo");
    let text = stdout(&out);
    let steps = steps(&text);
    let numbers: Vec<usize> = steps.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4, 5],
        "five numbered steps in order:\n{text}"
    );
    let step = |i: usize| steps[i - 1].1.as_str();
    let has = |i: usize, phrases: &[&str]| {
        for p in phrases {
            assert!(
                step(i).contains(p),
                "step {i} should mention {p:?}: {}\n--- whole output\n{text}",
                step(i)
            );
        }
    };
    let approver = operator_label();
    has(
        1,
        &[
            "$80",
            "Permitted",
            "credential",
            "30-second",
            "never in the log",
        ],
    );
    has(2, &["$8000", "Deferred", "dfr_"]);
    has(3, &["approves", &approver]);
    has(4, &["permitted once", "APPROVAL_CONSUMED"]);
    has(5, &["verify", "verified", "names the approver", &approver]);
    // The e-mail address reaches the record only as a keyed hash.
    assert!(step(5).contains("hmac-sha256:"), "{text}");
    assert!(
        !text.contains(EMAIL),
        "the demo never shows the redacted e-mail:\n{text}"
    );
    // The demo's daemon is gone: no run file, and its log verifies again from here.
    assert!(
        daemon::server::RunInfo::read(&scene).is_none(),
        "the demo stopped its daemon"
    );
    verify(&scene);
}

#[test]
fn the_scene_by_hand_with_faramesh_dev() {
    let dir = support_stack();
    let stack = dir.path();
    let daemon = Daemon::dev(stack);
    assert!(daemon.info.dev, "faramesh dev says so in daemon.json");
    let mut agent = daemon.agent();
    let mut credentials = Vec::new();

    // 1. $80: permitted, with a 30-second credential for this call alone.
    let small = agent.call("decide", refund(80, None)).unwrap();
    let now = jiff::Timestamp::now();
    expect(&small, "permit", "RULE_PERMIT");
    assert_eq!(small["rule_ref"], "governance.fms:34", "{small}");
    let cred = &small["credential"];
    assert_eq!(cred["ttl_ms"], 30_000, "a 30 s credential: {small}");
    assert_eq!(cred["provider"], "vault", "{small}");
    assert_eq!(cred["scope"], "stripe/refund", "{small}");
    let value = cred["value"].as_str().expect("a credential value");
    assert!(value.starts_with("rk_dev_") && value.len() > 20, "{small}");
    assert!(
        cred["lease_id"].as_str().is_some_and(|l| !l.is_empty()),
        "{small}"
    );
    let expires: jiff::Timestamp = cred["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("expires_at is RFC 3339");
    let left = expires.duration_since(now).as_secs_f64();
    assert!(
        (25.0..=31.0).contains(&left),
        "the credential expires ~30 s from now, not in {left} s: {small}"
    );
    credentials.push(value.to_string());

    // 2. $8000: deferred with an unguessable token; nothing is minted.
    let big = agent.call("decide", refund(8000, None)).unwrap();
    expect(&big, "defer", "RULE_DEFER");
    assert!(
        big.get("credential").is_none(),
        "no credential on a defer: {big}"
    );
    let token = big["defer_token"]
        .as_str()
        .expect("a defer token")
        .to_string();
    let hex = token.strip_prefix("dfr_").expect("dfr_ token");
    assert!(
        hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "≥ 128 random bits: {token}"
    );
    let pending = faramesh_in(stack, &["approvals", "list", "--json"]);
    ok(&pending, "approvals list");
    assert!(stdout(&pending).contains(&token), "{}", shown(&pending));

    // 3. The operator approves with the CLI (the admin socket).
    let approved = faramesh_in(
        stack,
        &[
            "approvals",
            "approve",
            &token,
            "--comment",
            "checked",
            "--json",
        ],
    );
    ok(&approved, "faramesh approvals approve");
    let a: Value = serde_json::from_slice(&approved.stdout).expect("approve --json");
    let approver = operator_label();
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["approver"], approver.as_str(), "{a}");

    // 4. The retry with the token is permitted once, with a fresh credential; then not again.
    let retry = agent.call("decide", refund(8000, Some(&token))).unwrap();
    expect(&retry, "permit", "APPROVED");
    assert!(
        retry["reason"].as_str().unwrap().contains(&approver),
        "the answer names the approver: {retry}"
    );
    let fresh = retry["credential"]["value"]
        .as_str()
        .expect("a fresh credential");
    assert_ne!(
        fresh, credentials[0],
        "each permit mints its own credential"
    );
    credentials.push(fresh.to_string());
    let retry_id = retry["dpr_id"].as_str().unwrap().to_string();
    let again = agent.call("decide", refund(8000, Some(&token))).unwrap();
    expect(&again, "deny", "APPROVAL_CONSUMED");
    assert!(again.get("credential").is_none(), "{again}");
    drop(agent);

    // 5. Stop; the log verifies offline and names the operator.
    let stopped = faramesh_in(stack, &["stop"]);
    ok(&stopped, "faramesh stop");
    let mut daemon = daemon;
    assert!(daemon.wait().success(), "{}", daemon.log_text());
    let status = faramesh_in(stack, &["status"]);
    assert_eq!(status.status.code(), Some(3), "stopped: {}", shown(&status));
    let verified = verify(stack);
    assert!(verified.contains("verified"), "{verified}");
    let record = show(stack, &retry_id);
    assert_eq!(
        record["approval"]["approver"],
        approver.as_str(),
        "{record}"
    );
    assert_eq!(record["approval"]["comment"], "checked", "{record}");
    assert_eq!(record["reason_code"], "APPROVED", "{record}");
    assert_eq!(record["defer"]["token"], token.as_str(), "{record}");
    assert_eq!(record["dev"], true, "dev records are tagged: {record}");
    let all = export(stack);
    assert!(
        all.iter().any(|r| r["kind"] == "policy_change"),
        "the dev daemon recorded its policy"
    );
    for r in &all {
        assert_eq!(
            r["dev"], true,
            "every record of a dev run is tagged dev: {r}"
        );
    }
    assert_eq!(
        record["credential"]["lease_id"], retry["credential"]["lease_id"],
        "the record holds the lease, not the value: {record}"
    );
    assert!(record["credential"].get("value").is_none(), "{record}");
    assert!(
        record["args"]["customer"]["email"]["redacted"]
            .as_str()
            .is_some_and(|r| r.starts_with("hmac-sha256:")),
        "the e-mail is redacted in the record: {record}"
    );

    // The credential values were the caller's alone: not in the store, the dev audit sink or
    // the daemon's log. (Neither is the redacted e-mail address.)
    let sink = daemon::stack::dev_audit_log(&data_dir(stack));
    let sink_text = std::fs::read_to_string(&sink).expect("the dev audit sink wrote its file");
    assert!(
        sink_text.contains(&retry_id),
        "the dev sink holds the records (so the check below means something)"
    );
    let seqs: Vec<u64> = sink_text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "the dev sink holds every record of the log once, in order"
    );
    let mut files = files_under(&data_dir(stack));
    files.push(daemon.log.clone());
    assert!(
        files.iter().any(|f| f.ends_with("faramesh.db")),
        "the store file is among those checked: {files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for secret in credentials.iter().map(String::as_str).chain([EMAIL]) {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} leaked into {}",
                f.display()
            );
        }
    }
}

#[test]
fn dev_daemon_refuses_a_second_daemon_on_the_same_stack() {
    let dir = support_stack();
    let stack = dir.path();
    let first = Daemon::dev(stack);
    let mut child = std::process::Command::new(bin())
        .args(["dev", "--dir"])
        .arg(stack)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(Duration::from_secs(15), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a second daemon on the same stack kept running");
    }
    let second = child.wait_with_output().unwrap();
    assert!(!second.status.success(), "a second daemon must not start");
    assert!(
        stderr(&second).contains("another daemon") || stderr(&second).contains("in use"),
        "{}",
        shown(&second)
    );
    // The first one is undisturbed.
    assert!(wait_for(Duration::from_secs(1), || {
        daemon::server::RunInfo::read(stack).is_some_and(|i| i.pid == first.pid())
    }));
    expect(
        &first.decide(call(AGENT, "search_docs", json!({"q": "refunds"}))),
        "permit",
        "RULE_PERMIT",
    );
    first.stop();
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Each `faramesh dev` run signs with a key of its own; the stack keeps every one, and
/// `audit verify` and `audit proof` trust them all, so a stack used by two dev runs verifies.
#[test]
fn a_stack_used_by_two_dev_runs_verifies_with_both_keys() {
    let dir = support_stack();
    let stack = dir.path();
    let mut last_id = String::new();
    for _run in 0..2 {
        let daemon = Daemon::dev(stack);
        let answer = daemon.decide(call(AGENT, "search_docs", json!({"q": "refunds"})));
        expect(&answer, "permit", "RULE_PERMIT");
        last_id = answer["dpr_id"].as_str().unwrap().to_string();
        daemon.stop();
    }
    let keys = std::fs::read_dir(data_dir(stack).join("keys"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with("dev-")
        })
        .count();
    assert_eq!(keys, 2, "one key per dev run");
    let verified = verify(stack);
    assert!(verified.contains("verified"), "{verified}");

    // The second run's record is proved against the second run's key.
    let bundle = stack.join("proof.json");
    let proof = faramesh_in(
        stack,
        &[
            "audit",
            "proof",
            &last_id,
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    ok(&proof, "faramesh audit proof");
    let checked = faramesh_in(
        stack,
        &["audit", "verify", "--bundle", bundle.to_str().unwrap()],
    );
    ok(&checked, "faramesh audit verify --bundle");

    // Trusting only the first run's key (the stack's own, which the first dev run wrote)
    // names a checkpoint signed by the second.
    let first_key = data_dir(stack).join("keys/audit.key.pub");
    let only = faramesh_in(
        stack,
        &["audit", "verify", "--key", first_key.to_str().unwrap()],
    );
    assert_eq!(only.status.code(), Some(1), "{}", shown(&only));
    assert!(stdout(&only).contains("not signed"), "{}", shown(&only));
}
