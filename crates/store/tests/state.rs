//! Durable decision state: rate limits, budgets, sessions, history and kill switches survive
//! a reopen; policy versions and rollbacks are recorded in the chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use engine::state::RateKey;
use fpl::pattern::ToolPattern;
use rust_decimal::Decimal;
use store::{AuditRead, PolicyApply, Store, StoreError};

const T0: i64 = 1_767_258_000_000;
const MINUTE: u64 = 60_000;

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = common::open(dir.path(), |_| {});
        let s = store.state();
        for _ in 0..3 {
            s.rate_check(RateKey::shared("bot/0"), 3, MINUTE, T0)
                .unwrap();
            s.rate_consume(RateKey::shared("bot/0"), 3, MINUTE, T0);
        }
        assert_eq!(
            s.rate_check(RateKey::shared("bot/0"), 3, MINUTE, T0),
            Err(20_000)
        );
        s.budget_add("bot/daily/0", "19.99".parse().unwrap());
        s.budget_add("bot/daily/0", "0.01".parse().unwrap());
        s.session_record("s-1", "1.5".parse().unwrap());
        s.session_record("s-1", Decimal::ONE);
        // A reported cost: reconciled, and no call counted.
        s.session_cost_add("s-1", "-0.5".parse().unwrap());
        for i in 0..5 {
            s.history_push("bot", "stripe/refund", T0 + i);
        }
        store.kill(Some("rogue"), "alice", T0).unwrap();
        // A decision's state changes are committed with its record.
        store
            .append(common::decision("d1", T0, "bot", "permit"))
            .wait()
            .unwrap();
    }
    let (store, _) = common::open(dir.path(), |_| {});
    let s = store.state();
    // Still limited at the same instant, and exactly as long.
    assert_eq!(
        s.rate_check(RateKey::shared("bot/0"), 3, MINUTE, T0),
        Err(20_000)
    );
    assert_eq!(
        s.rate_check(RateKey::shared("bot/0"), 3, MINUTE, T0 + 20_000),
        Ok(())
    );
    assert_eq!(s.budget_spent("bot/daily/0"), "20.00".parse().unwrap());
    let stats = s.session("s-1");
    assert_eq!((stats.calls, stats.cost), (2, "2.0".parse().unwrap()));
    let refunds = ToolPattern::parse("stripe/*").unwrap();
    assert_eq!(s.history_count("bot", &refunds, T0 + 2), 3);
    assert!(s.is_killed("rogue") && !s.is_killed("bot"));
    let kills = store.kills().unwrap();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].agent.as_deref(), Some("rogue"));
    assert_eq!((kills[0].since_ms, kills[0].by.as_str()), (T0, "alice"));
}

#[test]
fn changes_without_a_record_are_flushed_and_unkill_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = common::open(dir.path(), |_| {});
        store.kill(None, "ops", T0).unwrap();
        store.kill(Some("a"), "ops", T0).unwrap();
        store.unkill(Some("a")).unwrap();
        // No record follows: the idle writer stores it, and close flushes it at the latest.
        store.state().budget_add("late", Decimal::TEN);
    }
    let (store, _) = common::open(dir.path(), |_| {});
    let s = store.state();
    assert_eq!(s.budget_spent("late"), Decimal::TEN);
    assert!(s.is_killed("anyone"));
    let kills = store.kills().unwrap();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].agent, None);
    store.unkill(None).unwrap();
    drop(store);
    let (store, _) = common::open(dir.path(), |_| {});
    assert!(!store.state().is_killed("anyone"));
    assert!(store.kills().unwrap().is_empty());
}

fn version(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

#[test]
fn policy_apply_and_rollback_are_recorded_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |_| {});
    let (v1, v2) = (version('a'), version('b'));
    let apply = |v: &str, src: &str, id: &str| PolicyApply {
        version: v.to_owned(),
        source: src.to_owned(),
        by: "alice".into(),
        now_ms: T0,
        record_id: id.to_owned(),
    };
    let first = store.apply_policy(apply(&v1, "permit *", "p1")).unwrap();
    assert_eq!((first.from.as_deref(), first.seq), (None, 1));
    store
        .append(common::decision("d1", T0, "bot", "permit"))
        .wait()
        .unwrap();
    let second = store.apply_policy(apply(&v2, "deny *", "p2")).unwrap();
    assert_eq!((second.from.as_deref(), second.seq), (Some(v1.as_str()), 3));
    let back = store
        .activate_policy(&v1, "p3".into(), "bob", T0 + 1)
        .unwrap();
    assert_eq!(back.from.as_deref(), Some(v2.as_str()));

    let versions = store.policy_versions().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].version, v1);
    assert!(versions[0].active && !versions[1].active);
    assert_eq!(versions[0].applied_by, "bob");
    assert_eq!(store.policy_source(&v2).unwrap().as_deref(), Some("deny *"));

    let (_, _, body) = store.row_by_id("p3").unwrap().unwrap();
    assert!(body.contains(r#""kind":"policy_change""#), "{body}");
    assert!(body.contains(r#""by":"bob""#), "{body}");
    assert_eq!(common::verify(&store, &vk).records, 4);

    assert_eq!(
        store.activate_policy(&version('c'), "p4".into(), "bob", T0),
        Err(StoreError::UnknownPolicy(version('c')))
    );
    assert!(matches!(
        store.apply_policy(apply("not-hex", "", "p5")),
        Err(StoreError::Invalid(_))
    ));
    // Refused changes wrote no record.
    assert_eq!(store.seq_range(None, None).unwrap(), Some((1, 4)));
}
