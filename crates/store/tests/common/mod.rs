//! Helpers shared by the store's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::ControlFlow;
use std::path::Path;

use audit::note::{LocalKey, Signer, VerifierKey};
use audit::record::{Canonical, Dpr};
use audit::verify::{Summary, Verifier};
use store::AuditRead;
use store::sqlite::{Config, SqliteStore};

pub const VERSION: &str = "1111111111111111111111111111111111111111111111111111111111111111";

pub fn key(dir: &Path) -> LocalKey {
    LocalKey::load_or_create(&dir.join("key"), "test-daemon").unwrap()
}

pub fn open(dir: &Path, config: impl FnOnce(&mut Config)) -> (SqliteStore, VerifierKey) {
    let mut c = Config::new(dir.join("data"), "chain-a");
    config(&mut c);
    let key = key(dir);
    let vk = key.verifier();
    (SqliteStore::open(c, Box::new(key)).unwrap(), vk)
}

pub fn decision(id: &str, time_ms: i64, agent: &str, effect: &str) -> Dpr {
    let mut d = Dpr::decision(id.to_owned(), time_ms, VERSION.to_owned());
    d.agent = Some(agent.to_owned());
    d.tool = Some("stripe/refund".to_owned());
    d.effect = Some(effect.to_owned());
    d.args = Some(Canonical::from_jcs(r#"{"amount":80,"currency":"usd"}"#));
    d.mode = Some("enforce".to_owned());
    d
}

/// Runs the offline verifier over everything the store holds.
pub fn verify(store: &dyn AuditRead, key: &VerifierKey) -> Summary {
    let notes = store.checkpoints().unwrap();
    let mut v = Verifier::new(store.chain_id(), std::slice::from_ref(key), &notes).unwrap();
    let mut failure = None;
    store
        .for_each_row(1, None, &mut |row| match v.push(row) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        })
        .unwrap();
    if let Some(e) = failure {
        panic!("verification failed: {e}");
    }
    v.finish().unwrap()
}
