//! kill -9 under load (SPEC §5 step 9): with `durability = "sync"` every decision whose answer
//! reached the client is in the log after a SIGKILL; stale sockets and the stale run file do
//! not stop the restart; the log verifies after every crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_common::*;
use serde_json::{Value, json};

const AGENT: &str = "bot";
const ROUNDS: usize = 5;
const THREADS: usize = 6;

const POLICY: &str = r#"runtime {
  durability       = "sync"
  checkpoint_every = 64
}

agent "bot" {
  default deny
  rules {
    permit search_docs
    deny   shell/exec reason "no shells"
    defer  stripe/refund
  }
}
"#;

fn params(t: usize, i: usize) -> Value {
    match i % 3 {
        0 => call(AGENT, "search_docs", json!({"q": format!("t{t} i{i}")})),
        1 => call(AGENT, "shell/exec", json!({"command": format!("ls {i}")})),
        // Deferred calls also write an approval in the same store.
        _ => call(AGENT, "stripe/refund", json!({"amount": i, "thread": t})),
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_decision() {
    let dir = stack(POLICY);
    let stack = dir.path();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut total_rounds_acked = Vec::new();

    for round in 0..ROUNDS {
        let d = Daemon::start(stack);
        let before = acked.lock().unwrap().len();
        let count = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                let (acked, count) = (acked.clone(), count.clone());
                let mut agent = d.agent();
                std::thread::spawn(move || {
                    let mut errors = 0usize;
                    for i in 0.. {
                        match agent.call("decide", params(t, i)) {
                            Ok(r) => {
                                let effect = r["effect"].as_str().unwrap_or_default();
                                assert!(
                                    ["permit", "deny", "defer"].contains(&effect)
                                        && r["reason_code"] != "AUDIT_UNAVAILABLE",
                                    "{r}"
                                );
                                let id = r["dpr_id"].as_str().expect("a dpr_id").to_string();
                                acked.lock().unwrap().push(id);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            // The daemon is gone: the connection broke mid-call.
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        // Kill it mid-load, at a different point each round.
        let target = 300 + round * 200;
        assert!(
            wait_for(Duration::from_secs(15), || count.load(Ordering::Relaxed)
                >= target),
            "round {round}: the load did not get going ({} answers)",
            count.load(Ordering::Relaxed)
        );
        d.sigkill();
        for c in clients {
            assert_eq!(
                c.join().expect("client thread"),
                1,
                "each client saw the crash"
            );
        }
        let n = acked.lock().unwrap().len() - before;
        total_rounds_acked.push(n);

        // The crash left the run file and sockets behind; nothing answers on them.
        assert!(
            daemon::server::RunInfo::read(stack).is_some(),
            "round {round}: a SIGKILL leaves daemon.json behind"
        );
        let status = faramesh_in(stack, &["status"]);
        assert_eq!(
            status.status.code(),
            Some(3),
            "a dead daemon is not running:\n{}",
            shown(&status)
        );

        // The log as the crash left it verifies offline and holds every acknowledged answer.
        verify(stack);
        let logged: HashSet<String> = export(stack)
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        let acked = acked.lock().unwrap();
        let lost: Vec<&String> = acked.iter().filter(|id| !logged.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged decisions are missing after kill -9: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
    }

    // A last restart over the stale files: it serves, stops cleanly, and the whole log —
    // every crash included — verifies with each acknowledged record exactly once.
    let d = Daemon::start(stack);
    let last = d.decide(params(0, 0));
    expect(&last, "permit", "RULE_PERMIT");
    let status = d.status();
    assert_eq!(status["state"], "READY", "{status}");
    assert_eq!(status["store"]["healthy"], true, "{status}");
    d.stop();
    let out = verify(stack);
    assert!(out.contains("signed checkpoint"), "{out}");
    let records = export(stack);
    let mut ids = HashSet::new();
    for r in &records {
        assert!(
            ids.insert(r["id"].as_str().unwrap().to_string()),
            "a record id appears twice: {r}"
        );
    }
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs.first() == Some(&1),
        "seq is gapless across the crashes"
    );
    let acked = acked.lock().unwrap();
    for id in acked
        .iter()
        .chain([last["dpr_id"].as_str().unwrap().to_string()].iter())
    {
        assert!(ids.contains(id), "{id} is in the log");
    }
    // Exactly one policy record: restarts on the same policy add none.
    let changes = records
        .iter()
        .filter(|r| r["kind"] == "policy_change")
        .count();
    assert_eq!(changes, 1, "one policy_change record");
    eprintln!(
        "acknowledged per round before SIGKILL: {total_rounds_acked:?}; {} records in all",
        records.len()
    );
}

/// Runs `THREADS` clients until their connection breaks or `until` says stop; returns every
/// answer they received.
fn load(d: &Daemon, until: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<Value>>> {
    (0..THREADS)
        .map(|t| {
            let mut agent = d.agent();
            let until = until.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0.. {
                    if until.load(Ordering::Acquire) {
                        break;
                    }
                    match agent.call("decide", params(t, i)) {
                        Ok(r) => got.push(r),
                        Err(_) => break,
                    }
                }
                got
            })
        })
        .collect()
}

/// `faramesh stop` while `THREADS` clients keep calling: every answer they got, and the log
/// (verified) afterwards.
fn stop_under_load(stack: &std::path::Path) -> (Vec<Value>, Vec<Value>) {
    let mut d = Daemon::start(stack);
    let until = Arc::new(AtomicBool::new(false));
    let clients = load(&d, until.clone());
    std::thread::sleep(Duration::from_millis(300));
    let out = faramesh_in(stack, &["stop"]);
    ok(&out, "faramesh stop under load");
    // `stop` returns once the run file is gone, that is once the store is closed.
    until.store(true, Ordering::Release);
    assert!(d.wait().success(), "{}", d.log_text());
    let answers: Vec<Value> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert!(answers.len() > 100, "{} answers", answers.len());
    verify(stack);
    (answers, export(stack))
}

fn unrecorded<'a>(answers: &'a [Value], records: &[Value]) -> Vec<&'a Value> {
    let logged: HashSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    answers
        .iter()
        .filter(|a| !logged.contains(a["dpr_id"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_stop_under_load_permits_nothing_unrecorded() {
    let dir = stack(POLICY);
    let (answers, records) = stop_under_load(dir.path());
    let by_id: std::collections::HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for a in &answers {
        if let Some(r) = by_id.get(a["dpr_id"].as_str().unwrap()) {
            assert_eq!(r["effect"], a["effect"], "answer and record agree: {a} {r}");
            assert_eq!(r["reason_code"], a["reason_code"], "{a} {r}");
        }
    }
    // Whatever could not be recorded was refused: fail closed.
    let missing = unrecorded(&answers, &records);
    for a in &missing {
        expect(a, "deny", "AUDIT_UNAVAILABLE");
    }
    eprintln!(
        "{} answers during a stop under load, {} of them unrecorded AUDIT_UNAVAILABLE denies",
        answers.len(),
        missing.len()
    );
}

/// Daemon bug (reported): after `stop` the agent connections stay open until the process
/// exits (≥ 6 s later), and every call on them is answered AUDIT_UNAVAILABLE with no record —
/// SPEC §5: every decision writes exactly one DPR.
#[test]
fn a_stop_under_load_leaves_no_decision_unrecorded() {
    let dir = stack(POLICY);
    let (answers, records) = stop_under_load(dir.path());
    let missing = unrecorded(&answers, &records);
    assert!(
        missing.is_empty(),
        "{} of {} answers have no record, e.g. {}",
        missing.len(),
        answers.len(),
        missing[0]
    );
}

#[test]
fn a_pending_approval_survives_kill_9() {
    let dir = stack(POLICY);
    let stack = dir.path();
    let d = Daemon::start(stack);
    let ask = |d: &Daemon, token: Option<&str>| {
        let mut p = call(AGENT, "stripe/refund", json!({"amount": 8000}));
        if let Some(t) = token {
            p["defer_token"] = json!(t);
        }
        d.decide(p)
    };
    let first = ask(&d, None);
    expect(&first, "defer", "RULE_DEFER");
    let token = first["defer_token"].as_str().unwrap().to_string();
    d.sigkill();

    let d = Daemon::start(stack);
    let again = ask(&d, None);
    assert_eq!(
        again["defer_token"],
        token.as_str(),
        "the same approval after the crash: {again}"
    );
    let a = d.admin_call("approvals.approve", json!({"token": token}));
    assert_eq!(a["status"], "approved", "{a}");
    d.sigkill();

    let d = Daemon::start(stack);
    expect(&ask(&d, Some(&token)), "permit", "APPROVED");
    d.sigkill();

    let d = Daemon::start(stack);
    expect(&ask(&d, Some(&token)), "deny", "APPROVAL_CONSUMED");
    d.stop();
    verify(stack);
}

#[test]
fn interval_durability_survives_kill_9_with_a_verifiable_log() {
    let dir = stack(&POLICY.replace("\"sync\"", "\"interval\""));
    let stack = dir.path();
    let mut acked = 0usize;
    for round in 0..3 {
        let d = Daemon::start(stack);
        let until = Arc::new(AtomicBool::new(false));
        let clients = load(&d, until.clone());
        std::thread::sleep(Duration::from_millis(200 + round * 100));
        d.sigkill();
        acked += clients
            .into_iter()
            .map(|c| c.join().expect("client thread").len())
            .sum::<usize>();
        // `interval` may lose the last few milliseconds, as a suffix: never a broken chain.
        verify(stack);
    }
    let d = Daemon::start(stack);
    expect(&d.decide(params(0, 0)), "permit", "RULE_PERMIT");
    d.stop();
    verify(stack);
    let records = export(stack);
    let decisions = records.iter().filter(|r| r["kind"] == "decision").count();
    eprintln!("interval: {acked} acknowledged, {decisions} recorded");
    assert!(
        decisions > acked / 2,
        "most acknowledged decisions are kept"
    );
}
