//! Crash consistency: a child process appends under load and prints each record's id once its
//! ticket resolves; the parent kills it with SIGKILL at random moments and after every kill
//! checks that the log verifies and, with `durability = sync`, holds every acknowledged id;
//! with `interval`, every id acknowledged well before the kill, and never a later record
//! without the earlier ones.
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
const INTERVAL: &str = "FARAMESH_STORE_CRASH_INTERVAL";
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
    config.durability = if std::env::var_os(INTERVAL).is_some() {
        Durability::Interval
    } else {
        Durability::Sync
    };
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
    run_child(dir, round, false)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Runs the child, kills it; returns each acknowledged id with how long before the kill its
/// acknowledgement was read.
fn run_child(dir: &std::path::Path, round: u32, interval: bool) -> Vec<(String, Duration)> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if interval {
        command.env(INTERVAL, "1");
    }
    let mut child = command
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
            .filter_map(|l| Some((l.strip_prefix("ack ")?.to_owned(), Instant::now())))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(30 + random_below(800)));
    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader
        .join()
        .unwrap()
        .into_iter()
        .map(|(id, at)| (id, killed.saturating_duration_since(at)))
        .collect()
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

/// `durability = interval` promises a record on disk within 10 ms of its acknowledgement;
/// allow a loaded machine 250 ms.
const INTERVAL_GRACE: Duration = Duration::from_millis(250);

#[test]
fn sigkill_in_interval_mode_loses_only_the_last_moments() {
    let dir = tempfile::tempdir().unwrap();
    let vk = common::key(dir.path()).verifier();
    let (mut acked_total, mut lost_total) = (0usize, 0usize);
    for round in 0..10 {
        let acked = run_child(dir.path(), round, true);
        acked_total += acked.len();
        if !dir.path().join("data/faramesh.db").exists() {
            continue;
        }
        let reader = SqliteReader::open(&dir.path().join("data"), Some("crash")).unwrap();
        common::verify(&reader, &vk);
        for t in 0..WRITERS {
            let mut missing: Option<&str> = None;
            for (id, before_kill) in acked
                .iter()
                .filter(|(id, _)| id.contains(&format!("-t{t}-")))
            {
                let present = reader.row_by_id(id).unwrap().is_some();
                if !present {
                    assert!(
                        *before_kill < INTERVAL_GRACE,
                        "round {round}: {id}, acknowledged {before_kill:?} before the kill, is missing"
                    );
                    lost_total += 1;
                    missing.get_or_insert(id);
                } else if let Some(gap) = missing {
                    panic!("round {round}: {id} is stored but the earlier {gap} is not");
                }
            }
        }
    }
    assert!(acked_total > 0, "no record was ever acknowledged");
    eprintln!("10 kills, {acked_total} acknowledged, {lost_total} lost in the last moments");
}
