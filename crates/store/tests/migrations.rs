//! Versioned migrations: an old file is brought up to date with its data; a newer one is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use audit::chain::Chain;
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
