//! `durability = interval`: callers seal their own records and the writer commits them every
//! few milliseconds. The chain must stay gapless and verifiable with jobs sealing beside them,
//! and a commit that loses acknowledged records must stop the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{AuditRead, Durability, PolicyApply, Store, StoreError};

fn version(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[test]
fn sealing_in_the_callers_keeps_the_chain_gapless_beside_policy_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |c| {
        c.durability = Durability::Interval;
        c.checkpoint_every = 96;
    });
    let store = Arc::new(store);
    let per = 200u64;
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| {
                        let d = common::decision(&format!("dpr-{t}-{i}"), 0, "bot", "permit");
                        store.append(d).wait().unwrap().seq
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    // Policy changes are sealed by the writer itself, between the callers' records.
    let applies = 5u64;
    for n in 0..applies {
        let applied = store
            .apply_policy(PolicyApply {
                version: version(n as u8),
                source: format!("permit * # {n}"),
                by: "ops".into(),
                now_ms: 0,
                record_id: format!("policy-{n}"),
            })
            .unwrap();
        assert!(applied.seq >= 1);
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut seqs: Vec<u64> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = 16 * per + applies;
    assert_eq!(seqs.len() as u64, 16 * per);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, 16 * per, "two records got one seq");

    store.close().unwrap();
    let summary = common::verify(&*store, &vk);
    assert_eq!(summary.records, total);
    assert_eq!(summary.last_checkpoint, Some(total));
    assert_eq!(store.checkpoints().unwrap().len() as u64, total / 96 + 1);
    for n in 0..applies {
        assert!(store.row_by_id(&format!("policy-{n}")).unwrap().is_some());
    }
    assert_eq!(
        store
            .append(common::decision("late", 0, "bot", "deny"))
            .wait(),
        Err(StoreError::Closed)
    );
}

#[test]
fn an_acknowledged_record_reaches_the_disk_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |c| c.durability = Durability::Interval);
    let a = store
        .append(common::decision("soon", 0, "bot", "permit"))
        .wait()
        .unwrap();
    // Another connection sees it once committed: within 5 ms plus one commit.
    let reader = store::sqlite::SqliteReader::open(&dir.path().join("data"), Some("chain-a"));
    let started = Instant::now();
    let reader = reader.unwrap();
    while reader.row_by_id("soon").unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "never committed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reader.row_by_id("soon").unwrap().unwrap().0, a.seq);
    assert_eq!(common::verify(&reader, &vk).records, 1);
}

#[test]
fn a_commit_that_loses_acknowledged_records_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |c| c.durability = Durability::Interval);
    store
        .append(common::decision("ok-1", 0, "bot", "permit"))
        .wait()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let side = rusqlite::Connection::open(dir.path().join("data/faramesh.db")).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON dpr WHEN NEW.id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .unwrap();
    // Acknowledged at once: interval mode answers before the commit.
    store
        .append(common::decision("poison", 0, "bot", "deny"))
        .wait()
        .unwrap();
    let started = Instant::now();
    let err = loop {
        match store
            .append(common::decision("after", 0, "bot", "permit"))
            .wait()
        {
            Err(e) => break e,
            Ok(_) => {
                assert!(started.elapsed() < Duration::from_secs(2), "never refused");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    assert!(err.to_string().contains("acknowledged"), "{err}");
    let health = store.health();
    assert!(!health.healthy, "{health:?}");
    assert!(
        health.last_error.unwrap().contains("disk says no"),
        "the cause is kept"
    );
    assert!(store.close().is_err());
    // What did commit still verifies: the lost records are a suffix.
    let summary = common::verify(&store, &vk);
    assert_eq!(summary.records, 1);
    assert!(store.row_by_id("poison").unwrap().is_none());
}

/// The WAL header's checkpoint sequence number and salts (bytes 12..24): they change each
/// time SQLite rewinds the WAL to its beginning.
fn wal_generation(dir: &std::path::Path) -> Vec<u8> {
    let wal = std::fs::read(dir.join("data/faramesh.db-wal")).unwrap_or_default();
    wal.get(12..24).map(<[u8]>::to_vec).unwrap_or_default()
}

#[test]
fn the_wal_is_rewound_under_continuous_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |c| c.durability = Durability::Interval);
    let store = Arc::new(store);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = common::decision(&format!("w{t}-{n}"), 0, "bot", "permit");
                    store.append(d).wait().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let first = wal_generation(dir.path());
    let mut rewound = false;
    let started = Instant::now();
    while !rewound && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        rewound = wal_generation(dir.path()) != first;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        rewound,
        "the WAL never started again while records kept coming"
    );
    store.close().unwrap();
    assert_eq!(common::verify(&*store, &vk).records, total);
    // Closing leaves the WAL empty.
    let wal = dir.path().join("data/faramesh.db-wal");
    assert_eq!(std::fs::metadata(wal).map_or(0, |m| m.len()), 0);
}
