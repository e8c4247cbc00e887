//! kill -9 under load (SPEC §5 step 9): with `durability = "sync"` every decision whose answer
//! reached the client is in the log after a SIGKILL; stale sockets and the stale run file do
//! not stop the restart; the log verifies after every crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
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
