//! `faramesh apply` hot-swaps the running daemon's policy under continuous load with no failed
//! call (SPEC §12), a policy that does not compile changes nothing, `faramesh rollback` puts
//! the previous version back, and every change is a record of the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_common::*;
use serde_json::{Value, json};

const AGENT: &str = "bot";
const THREADS: usize = 8;
const APPLIES: usize = 13;

/// A denies shell commands; B permits them. Both permit `search_docs`.
const POLICY_A: &str = r#"runtime {
  durability = "interval"
}

agent "bot" {
  default deny
  rules {
    permit search_docs
    deny   shell/exec reason "policy A: no shells"
  }
}
"#;

const POLICY_B: &str = r#"runtime {
  durability = "interval"
}

agent "bot" {
  default deny
  rules {
    permit search_docs
    permit shell/exec
  }
}
"#;

/// Does not check: a rule with no tool.
const BROKEN: &str = r#"agent "bot" {
  default deny
  rules {
    permit
  }
}
"#;

/// What one client saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    sent: Instant,
    tool: &'static str,
    effect: String,
    reason_code: String,
    dpr_id: String,
}

fn shell() -> Value {
    call(AGENT, "shell/exec", json!({"command": "ls"}))
}

#[track_caller]
fn version(d: &Daemon) -> String {
    d.status()["policy_version"].as_str().unwrap().to_string()
}

#[test]
fn hot_swaps_under_load_drop_nothing() {
    let dir = stack(POLICY_A);
    let stack = dir.path();
    let d = Daemon::start(stack);
    let v_a = d.info.policy_version.clone();
    expect(&d.decide(shell()), "deny", "RULE_DENY");
    let mut main_calls = 1usize;

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, seen, errors) = (stop.clone(), seen.clone(), errors.clone());
            let mut agent = d.agent();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Acquire) {
                    i += 1;
                    let tool = if (i + t).is_multiple_of(2) {
                        "shell/exec"
                    } else {
                        "search_docs"
                    };
                    let sent = Instant::now();
                    let args = json!({"command": "ls", "thread": t, "i": i});
                    match agent.call("decide", call(AGENT, tool, args)) {
                        Ok(r) => mine.push(Seen {
                            sent,
                            tool,
                            effect: r["effect"].as_str().unwrap_or("?").to_string(),
                            reason_code: r["reason_code"].as_str().unwrap_or("?").to_string(),
                            dpr_id: r["dpr_id"].as_str().unwrap_or("").to_string(),
                        }),
                        Err(e) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("thread {t} call {i}: {e}"));
                            break;
                        }
                    }
                }
                seen.lock().unwrap().extend(mine);
            })
        })
        .collect();

    // Let the load build up, then swap back and forth.
    std::thread::sleep(Duration::from_millis(300));
    let mut v_b = String::new();
    let mut expected_changes = vec![v_a.clone()];
    let mut last_apply = Instant::now();
    for i in 0..APPLIES {
        let (policy, name) = if i.is_multiple_of(2) {
            (POLICY_B, "B")
        } else {
            (POLICY_A, "A")
        };
        write_policy(stack, policy);
        let out = faramesh_in(stack, &["apply"]);
        ok(&out, &format!("apply #{i} (policy {name})"));
        assert!(stdout(&out).starts_with("applied "), "{}", shown(&out));
        last_apply = Instant::now();
        let v = version(&d);
        if i == 0 {
            v_b = v.clone();
        }
        assert_eq!(
            &v,
            if i.is_multiple_of(2) { &v_b } else { &v_a },
            "apply #{i}"
        );
        expected_changes.push(v);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(v_a, v_b);
    // Some more load on the last policy, then stop the clients.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    for c in clients {
        c.join().expect("a client thread panicked");
    }

    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "calls failed during the swaps: {errors:#?}"
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 200,
        "the load was too light to mean anything: {} calls",
        seen.len()
    );
    for s in seen.iter() {
        assert!(
            matches!(
                (s.effect.as_str(), s.reason_code.as_str()),
                ("permit", "RULE_PERMIT") | ("deny", "RULE_DENY")
            ),
            "every call is decided by a rule of A or B: {s:?}"
        );
        if s.tool == "search_docs" {
            assert_eq!(
                s.effect, "permit",
                "both policies permit search_docs: {s:?}"
            );
        }
    }
    eprintln!(
        "{} calls by {THREADS} clients across {APPLIES} applies",
        seen.len()
    );
    let after: Vec<&Seen> = seen.iter().filter(|s| s.sent > last_apply).collect();
    assert!(
        after.iter().filter(|s| s.tool == "shell/exec").count() >= THREADS,
        "every client made calls after the last apply: {} calls",
        after.len()
    );
    for s in &after {
        assert_eq!(
            s.effect, "permit",
            "after the last apply, policy B decides: {s:?}"
        );
    }
    // Both policies were in force for some calls along the way.
    let shell_effects: HashSet<&str> = seen
        .iter()
        .filter(|s| s.tool == "shell/exec")
        .map(|s| s.effect.as_str())
        .collect();
    assert_eq!(
        shell_effects.len(),
        2,
        "A and B both decided: {shell_effects:?}"
    );

    // A policy that does not check changes nothing, from the CLI or on the admin socket.
    write_policy(stack, BROKEN);
    let out = faramesh_in(stack, &["apply"]);
    assert!(
        !out.status.success(),
        "a broken policy must not apply:\n{}",
        shown(&out)
    );
    assert!(stderr(&out).contains("not applied"), "{}", shown(&out));
    let refused = d.admin().call("apply", json!({}));
    assert_eq!(rpc_code(&refused), Some(-32000), "{refused:?}");
    assert_eq!(version(&d), v_b, "the old policy stays in force");
    expect(&d.decide(shell()), "permit", "RULE_PERMIT");
    main_calls += 1;
    write_policy(stack, POLICY_B);

    // Rollback: to the version before (A), then forward again by a version prefix.
    let out = faramesh_in(stack, &["rollback"]);
    ok(&out, "faramesh rollback");
    assert!(
        stdout(&out).contains(&format!("rolled back to {}", &v_a[..12])),
        "{}",
        shown(&out)
    );
    assert_eq!(version(&d), v_a);
    expect(&d.decide(shell()), "deny", "RULE_DENY");
    let out = faramesh_in(stack, &["rollback", "--to", &v_b[..16]]);
    ok(&out, "faramesh rollback --to");
    assert_eq!(version(&d), v_b);
    expect(&d.decide(shell()), "permit", "RULE_PERMIT");
    main_calls += 2;
    let out = faramesh_in(stack, &["rollback", "--to", "0123456789abcdef"]);
    assert!(!out.status.success(), "no such version:\n{}", shown(&out));
    assert_eq!(version(&d), v_b);
    expected_changes.extend([v_a.clone(), v_b.clone()]);
    d.stop();

    // The log verifies and holds each change, in order, and exactly one record per decision.
    verify(stack);
    let records = export(stack);
    let changes: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "policy_change")
        .collect();
    let tos: Vec<&str> = changes
        .iter()
        .map(|r| r["change"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, expected_changes, "policy-change records: {changes:#?}");
    for pair in changes.windows(2) {
        assert_eq!(
            pair[1]["change"]["from"], pair[0]["change"]["to"],
            "each change starts where the last one ended: {pair:#?}"
        );
    }
    let operator = operator_label();
    for c in &changes[1..] {
        let by = c["change"]["by"].as_str().unwrap_or_default();
        assert!(by.contains(&operator), "who applied it: {c}");
    }
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(
        decisions.len(),
        seen.len() + main_calls,
        "exactly one record per decision"
    );
    let logged: HashSet<&str> = decisions
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for s in seen.iter() {
        assert!(logged.contains(s.dpr_id.as_str()), "{s:?} is in the log");
    }
    let after_ids: HashSet<&str> = after.iter().map(|s| s.dpr_id.as_str()).collect();
    for r in &decisions {
        let v = r["policy_version"].as_str().unwrap();
        assert!(v == v_a || v == v_b, "{r}");
        if after_ids.contains(r["id"].as_str().unwrap()) {
            assert_eq!(v, v_b, "decided under B: {r}");
        }
    }
}

#[test]
fn apply_starts_the_daemon_when_none_runs() {
    let dir = stack(POLICY_A);
    let stack = dir.path();
    let status = faramesh_in(stack, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", shown(&status));

    let out = faramesh_in(stack, &["apply"]);
    let info = daemon::server::RunInfo::read(stack);
    let _guard = info.as_ref().map(|i| PidGuard(i.pid));
    ok(&out, "faramesh apply (start)");
    let info = info.expect("daemon.json at READY");
    assert!(
        stdout(&out).contains(&format!("started the daemon (pid {})", info.pid)),
        "{}",
        shown(&out)
    );
    assert!(!info.dev, "apply starts the production daemon");
    let log = std::fs::read_to_string(daemon::stack::log_file(stack)).unwrap_or_default();
    assert!(log.contains("ready"), "daemon.log: {log}");

    let status = faramesh_in(stack, &["status", "--format", "json"]);
    ok(&status, "faramesh status");
    let s: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["state"], "READY", "{s}");
    assert_eq!(s["policy_version"], info.policy_version.as_str(), "{s}");
    let text = faramesh_in(stack, &["status"]);
    assert!(stdout(&text).contains("READY"), "{}", shown(&text));

    let mut agent = daemon::client::Client::connect(&info.socket, CALL_TIMEOUT).unwrap();
    expect(&agent.call("decide", shell()).unwrap(), "deny", "RULE_DENY");
    let again = faramesh_in(stack, &["apply"]);
    ok(&again, "faramesh apply (unchanged)");
    assert!(stdout(&again).starts_with("unchanged"), "{}", shown(&again));
    write_policy(stack, POLICY_B);
    let swapped = faramesh_in(stack, &["apply"]);
    ok(&swapped, "faramesh apply (swap)");
    // The same connection, the new policy.
    expect(
        &agent.call("decide", shell()).unwrap(),
        "permit",
        "RULE_PERMIT",
    );
    drop(agent);

    let out = faramesh_in(stack, &["stop"]);
    ok(&out, "faramesh stop");
    assert!(stdout(&out).contains("stopped"), "{}", shown(&out));
    let status = faramesh_in(stack, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", shown(&status));
    assert!(
        daemon::server::RunInfo::read(stack).is_none(),
        "the run file is removed at stop"
    );
    verify(stack);
}

/// What a swap cannot change (the runtime block's start-up keys, the providers) is named to
/// the operator, and the daemon keeps running the new rules with the old settings.
#[test]
fn apply_names_the_settings_that_need_a_restart() {
    let dir = stack(POLICY_A);
    let stack = dir.path();
    let out = faramesh_in(stack, &["apply"]);
    ok(&out, "faramesh apply (start)");
    let _guard = PidGuard(daemon::server::RunInfo::read(stack).unwrap().pid);
    let with_provider = format!(
        "provider \"hooks\" {{ type = \"webhook\"; url = \"http://127.0.0.1:9/alerts\" }}\n{}",
        POLICY_B.replace("durability = \"interval\"", "durability = \"sync\"")
    );
    write_policy(stack, &with_provider);
    let out = faramesh_in(stack, &["apply"]);
    ok(&out, "faramesh apply (swap)");
    let note = stderr(&out);
    assert!(
        note.contains("durability") && note.contains("providers") && note.contains("restarts"),
        "{}",
        shown(&out)
    );
    // The rules did swap.
    let mut agent = daemon::client::Client::connect(
        &daemon::stack::default_socket(stack),
        Duration::from_secs(5),
    )
    .unwrap();
    let answer = agent
        .call("decide", call("bot", "shell/exec", json!({})))
        .unwrap();
    expect(&answer, "permit", "RULE_PERMIT");
    ok(&faramesh_in(stack, &["stop"]), "faramesh stop");
}
