//! Crash consistency: a child process appends under load (`durability = sync`) and prints
//! each record's id once its ticket resolves; the parent kills it with SIGKILL at random
//! moments and after every kill checks that the log verifies and holds every acknowledged id.
//!
//! The child is this test binary itself, re-run with `CHILD` set to the data directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit::note::Signer;
use store::sqlite::{Config, SqliteReader, SqliteStore};
use store::{AuditRead, Durability, Store};

const CHILD: &str = "FARAMESH_STORE_CRASH_CHILD";
const ROUND: &str = "FARAMESH_STORE_CRASH_ROUND";
const ROUNDS: u32 = 30;
const WRITERS: usize = 4;

/// The child's work; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let round = std::env::var(ROUND).unwrap();
    let dir = std::path::PathBuf::from(dir);
    let mut config = Config::new(dir.join("data"), "crash");
    config.durability = Durability::Sync;
    config.checkpoint_every = 64;
    let store = Arc::new(SqliteStore::open(config, Box::new(common::key(&dir))).unwrap());
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (store, round) = (Arc::clone(&store), round.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = format!("r{round}-t{t}-{i}");
                    store
                        .append(common::decision(&id, i, "bot", "permit"))
                        .wait()
                        .unwrap();
                    // One write per acknowledgement: it is in the pipe before the next append.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {id}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

/// Runs the child for a random while, kills it, returns the ids it acknowledged.
fn run_child_and_kill(dir: &std::path::Path, round: u32) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir)
        .env(ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ack ").map(str::to_owned))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(30 + random_below(800)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn sigkill_never_loses_an_acknowledged_record() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Made before the first child, so no kill can land while the key is being written.
    let vk = common::key(dir.path()).verifier();
    let mut acked_total = 0usize;
    for round in 0..ROUNDS {
        let acked = run_child_and_kill(dir.path(), round);
        acked_total += acked.len();
        if !dir.path().join("data/faramesh.db").exists() {
            assert!(acked.is_empty());
            continue;
        }
        let reader = match SqliteReader::open(&dir.path().join("data"), Some("crash")) {
            Ok(r) => r,
            Err(e) => panic!("round {round}: reopening failed: {e}"),
        };
        let summary = common::verify(&reader, &vk);
        for id in &acked {
            assert!(
                reader.row_by_id(id).unwrap().is_some(),
                "round {round}: acknowledged record {id} is missing"
            );
        }
        assert!(summary.records as usize >= acked_total);
    }
    assert!(acked_total > 0, "no record was ever acknowledged");
    eprintln!(
        "{ROUNDS} kills, {acked_total} acknowledged records, all present and verified in {:?}",
        started.elapsed()
    );
}
