//! Group commit: appends from many threads, all acknowledged, gapless and verifiable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use store::{AuditRead, Filter, Store, StoreError};

#[test]
fn appends_from_64_threads_are_gapless_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |c| c.checkpoint_every = 96);
    let store = Arc::new(store);
    let per = 50;
    let handles: Vec<_> = (0..64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| {
                        let id = format!("dpr-{t}-{i}");
                        let effect = if i % 3 == 0 { "deny" } else { "permit" };
                        let d = common::decision(&id, 1_767_258_000_000 + i, "bot", effect);
                        store.append(d).wait().unwrap().seq
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    let total = 64 * per as u64;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());

    let summary = common::verify(&*store, &vk);
    assert_eq!(summary.records, total);
    assert_eq!(summary.checkpoints, total / 96);
    assert_eq!(store.hashes(total).unwrap().len(), total as usize);
    assert!(store.health().healthy);

    // Closing signs a final checkpoint, which the verifier accepts too.
    store.close().unwrap();
    let notes = store.checkpoints().unwrap();
    assert_eq!(notes.len() as u64, total / 96 + 1);
    assert_eq!(common::verify(&*store, &vk).last_checkpoint, Some(total));
    assert_eq!(
        store
            .append(common::decision("late", 0, "bot", "deny"))
            .wait(),
        Err(StoreError::Closed)
    );
}

#[test]
fn reads_for_the_audit_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |_| {});
    let t0 = 1_767_258_000_000;
    for i in 0..20i64 {
        let agent = if i % 2 == 0 { "even" } else { "odd" };
        let effect = if i % 5 == 0 { "deny" } else { "permit" };
        let d = common::decision(&format!("id-{i}"), t0 + i * 1_000, agent, effect);
        store.append(d).wait().unwrap();
    }
    let (seq, hash, body) = store.row_by_id("id-7").unwrap().unwrap();
    assert_eq!(seq, 8);
    assert_eq!(audit::record::hash_body(body.as_bytes()), hash);
    assert!(store.row_by_id("nope").unwrap().is_none());

    assert_eq!(
        store.seq_range(Some(t0 + 5_000), Some(t0 + 9_000)).unwrap(),
        Some((6, 10))
    );
    assert_eq!(store.seq_range(Some(t0 + 100_000), None).unwrap(), None);

    let denies = |f: Filter| -> Vec<u64> {
        store
            .query(&f)
            .unwrap()
            .into_iter()
            .map(|(s, _, _)| s)
            .collect()
    };
    let deny = Some("deny".to_owned());
    assert_eq!(
        denies(Filter {
            effect: deny.clone(),
            ..Filter::default()
        }),
        [1, 6, 11, 16]
    );
    assert_eq!(
        denies(Filter {
            effect: deny.clone(),
            agent: Some("odd".into()),
            ..Filter::default()
        }),
        [6, 16]
    );
    assert_eq!(
        denies(Filter {
            after_seq: Some(15),
            limit: Some(2),
            ..Filter::default()
        }),
        [16, 17]
    );
    assert_eq!(
        denies(Filter {
            effect: deny,
            limit: Some(2),
            newest_first: true,
            to_ms: Some(t0 + 12_000),
            ..Filter::default()
        }),
        [11, 6]
    );

    // Streaming stops when asked, and honours the range.
    let mut seen = Vec::new();
    store
        .for_each_row(5, Some(9), &mut |r| {
            seen.push(r.seq);
            if r.seq == 7 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(seen, [5, 6, 7]);
    let ids: HashSet<String> = store
        .query(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(ids.len(), 20);
}

#[test]
fn the_chain_resumes_after_reopen_and_a_reader_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let (store, vk) = common::open(dir.path(), |c| c.checkpoint_every = 4);
        for i in 0..5 {
            let a = store
                .append(common::decision(
                    &format!("r{round}-{i}"),
                    0,
                    "bot",
                    "permit",
                ))
                .wait()
                .unwrap();
            assert_eq!(a.seq, round * 5 + i + 1);
        }
        assert_eq!(common::verify(&store, &vk).records, (round + 1) * 5);
    }
    let reader = store::sqlite::SqliteReader::open(&dir.path().join("data"), None).unwrap();
    assert_eq!(reader.chain_id(), "chain-a");
    let vk = common::key(dir.path());
    let summary = common::verify(&reader, &audit::note::Signer::verifier(&vk));
    assert_eq!(summary.records, 15);
}

#[test]
fn async_tickets_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |c| {
        c.durability = store::Durability::Interval;
    });
    let tickets: Vec<_> = (0..10)
        .map(|i| store.append(common::decision(&format!("a{i}"), 0, "bot", "permit")))
        .collect();
    let seqs: Vec<u64> = tickets
        .into_iter()
        .map(|t| block_on(t).unwrap().seq)
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

/// A minimal executor: the ticket is a plain `Future`.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn a_failed_write_fails_its_tickets_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, vk) = common::open(dir.path(), |_| {});
    store
        .append(common::decision("ok-1", 0, "bot", "permit"))
        .wait()
        .unwrap();
    // A real SQLite error in the writer's transaction: a trigger refusing one record.
    let side = rusqlite::Connection::open(dir.path().join("data/faramesh.db")).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON dpr WHEN NEW.id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .unwrap();
    let err = store
        .append(common::decision("poison", 0, "bot", "deny"))
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("disk says no"), "{err}");
    let health = store.health();
    assert!(!health.healthy && health.failures == 1, "{health:?}");
    assert!(store.row_by_id("poison").unwrap().is_none());

    // The next batch continues from the last committed record: no gap, still verifiable.
    let a = store
        .append(common::decision("ok-2", 0, "bot", "permit"))
        .wait()
        .unwrap();
    assert_eq!(a.seq, 2);
    assert!(store.health().healthy);
    assert_eq!(common::verify(&store, &vk).records, 2);
}
