//! Versioned migrations: an old file is brought up to date with its data; a newer one is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

const T0: i64 = 1_767_258_000_000;

use audit::chain::Chain;
use engine::state::{HISTORY_CAPACITY, MemoryState, StateStore};
use rusqlite::{Connection, params};
use store::sqlite::schema::{MIGRATIONS, VERSION};
use store::{AuditRead, NewApproval, Store, StoreError};

/// A file as the first release wrote it: only the audit tables, one record.
fn version_1_file(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = Connection::open(dir.join("faramesh.db")).unwrap();
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    let s = Chain::new("chain-a").seal(common::decision("old", 0, "bot", "deny"));
    conn.execute(
        "INSERT INTO dpr (chain, seq, hash, body, id, time_ms, agent, effect)
         VALUES ('chain-a', 1, ?1, ?2, 'old', 0, 'bot', 'deny')",
        params![&s.hash.0[..], s.body],
    )
    .unwrap();
}

fn user_version(path: &std::path::Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn an_old_file_is_migrated_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    version_1_file(&data);
    assert_eq!(user_version(&data.join("faramesh.db")), 1);

    let (store, vk) = common::open(dir.path(), |_| {});
    assert_eq!(user_version(&data.join("faramesh.db")), VERSION);
    // The old record is there and the chain goes on from it.
    assert_eq!(store.row_by_id("old").unwrap().unwrap().0, 1);
    let a = store
        .append(common::decision("new", 0, "bot", "permit"))
        .wait()
        .unwrap();
    assert_eq!(a.seq, 2);
    assert_eq!(common::verify(&store, &vk).records, 2);
    // Tables of later versions work.
    let approval = NewApproval {
        agent: "bot".into(),
        tool: "t".into(),
        args: "{}".into(),
        args_digest: "d".into(),
        rule_ref: None,
        reason: None,
    };
    store.request_approval(approval, 0).unwrap();
    store.state().budget_add("b", rust_decimal::Decimal::ONE);
    drop(store);

    // Opening again applies nothing twice.
    let (store, _) = common::open(dir.path(), |_| {});
    assert_eq!(store.state().budget_spent("b"), rust_decimal::Decimal::ONE);
}

#[test]
fn every_step_applies_in_order_from_every_version() {
    for start in 0..=VERSION {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("x.db")).unwrap();
        for sql in &MIGRATIONS[..start as usize] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", start).unwrap();
        assert_eq!(store::sqlite::schema::migrate(&mut conn).unwrap(), start);
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
    }
}

#[test]
fn a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    Connection::open(data.join("faramesh.db"))
        .unwrap()
        .pragma_update(None, "user_version", VERSION + 1)
        .unwrap();
    let err = store::sqlite::SqliteStore::open(
        store::sqlite::Config::new(&data, "chain-a"),
        Box::new(common::key(dir.path())),
    )
    .unwrap_err();
    assert_eq!(
        err,
        StoreError::TooNew {
            found: VERSION + 1,
            supported: VERSION
        }
    );
}

/// A file at version 3 keeps one row per permitted call; each agent's rows become one run,
/// and a restart loads the rings the old rows gave: each agent's newest `HISTORY_CAPACITY`
/// rows, in `id` order.
#[test]
fn version_3_history_rows_become_runs() {
    const TOOLS: &[&str] = &["stripe/refund", "fs/read", "", "quote\"d\\", "ü/🦀\n\u{1}"];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut log: Vec<(&str, &str, i64)> = Vec::new();
    for i in 0..HISTORY_CAPACITY + 1_500 {
        let agent = if i % 10 == 0 { "light" } else { "heavy" };
        // Now and then the clock had stepped back.
        let back = if i % 50 == 7 { 40 } else { 0 };
        log.push((agent, TOOLS[i % TOOLS.len()], T0 + (i / 3) as i64 - back));
    }
    {
        let mut conn = Connection::open(data.join("faramesh.db")).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        for (agent, tool, t) in &log {
            tx.prepare_cached(
                "INSERT INTO state_history (agent, tool, time_ms) VALUES (?1, ?2, ?3)",
            )
            .unwrap()
            .execute(params![agent, tool, t])
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let heavy = log.iter().filter(|(a, ..)| *a == "heavy").count();
    assert!(heavy > HISTORY_CAPACITY);

    let (store, _) = common::open(dir.path(), |_| {});
    let db = data.join("faramesh.db");
    assert_eq!(user_version(&db), VERSION);
    let conn = Connection::open(&db).unwrap();
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'state_history%'
             AND name NOT LIKE 'state_history_runs%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0, "the old table and index are dropped");
    // One run holds all of an agent's rows (a single run is never trimmed).
    let runs: Vec<(String, i64)> = conn
        .prepare("SELECT agent, n FROM state_history_runs ORDER BY agent")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let light = log.len() - heavy;
    assert_eq!(
        runs,
        [
            ("heavy".to_owned(), heavy as i64),
            ("light".to_owned(), light as i64)
        ]
    );
    assert_rings(&store, &log);

    // New runs follow the migrated one.
    for i in 0..500 {
        let tool = TOOLS[i % TOOLS.len()];
        store
            .state()
            .history_push("heavy", tool, T0 + 10_000 + i as i64);
        log.push(("heavy", tool, T0 + 10_000 + i as i64));
    }
    store
        .append(common::decision("d", T0 + 20_000, "bot", "permit"))
        .wait()
        .unwrap();
    drop(store);
    let (store, _) = common::open(dir.path(), |_| {});
    assert_rings(&store, &log);
}

/// The store's rings are each agent's newest `HISTORY_CAPACITY` pushes of `log`, replayed.
fn assert_rings(store: &store::sqlite::SqliteStore, log: &[(&str, &str, i64)]) {
    for agent in ["heavy", "light"] {
        let pushes: Vec<_> = log.iter().filter(|(a, ..)| *a == agent).collect();
        let want = MemoryState::new();
        for (_, tool, t) in &pushes[pushes.len().saturating_sub(HISTORY_CAPACITY)..] {
            want.history_push(agent, tool, *t);
        }
        assert_eq!(
            store.durable_state().history(agent),
            want.history(agent),
            "{agent}"
        );
    }
}
