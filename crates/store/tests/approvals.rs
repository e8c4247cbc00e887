//! Approvals (SPEC §7): one token per pending call, digest binding, one spend, expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use store::{ApprovalStatus, ApprovedCall, NewApproval, Resolution, Store, StoreError};

const T0: i64 = 1_767_258_000_000;
const HOUR: i64 = 3_600_000;

fn refund(amount: u32) -> NewApproval {
    NewApproval {
        agent: "support-bot".into(),
        tool: "stripe/refund".into(),
        args: format!(r#"{{"amount":{amount}}}"#),
        args_digest: format!("digest-{amount}"),
        rule_ref: Some("governance.fms:12".into()),
        reason: Some("refunds need a human".into()),
    }
}

/// The refund call whose arguments digest to `digest`.
fn call(digest: &str) -> ApprovedCall {
    ApprovedCall {
        agent: refund(0).agent,
        tool: refund(0).tool,
        args_digest: digest.into(),
    }
}

fn approve(by: &str) -> Resolution {
    Resolution {
        approve: true,
        approver: by.into(),
        comment: Some("ok".into()),
    }
}

#[test]
fn an_identical_retry_gets_the_same_token() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |_| {});
    let a = store.request_approval(refund(80), T0).unwrap();
    assert!(a.token.starts_with("dfr_") && a.token.len() == 4 + 32);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.expires_ms, T0 + 24 * HOUR);
    assert_eq!(a.chain, "chain-a");
    let again = store.request_approval(refund(80), T0 + 1_000).unwrap();
    assert_eq!(again.token, a.token);
    // Different arguments are a different call.
    let other = store.request_approval(refund(8_000), T0).unwrap();
    assert_ne!(other.token, a.token);
    let pending = store.approvals(Some(ApprovalStatus::Pending), T0).unwrap();
    assert_eq!(pending.len(), 2);
}

#[test]
fn approval_binds_the_digest_and_is_spent_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |_| {});
    let a = store.request_approval(refund(80), T0).unwrap();
    let ok = store
        .resolve_approval(&a.token, approve("alice"), T0 + 10)
        .unwrap();
    assert_eq!(ok.status, ApprovalStatus::Approved);
    assert_eq!(ok.approver.as_deref(), Some("alice"));
    assert_eq!(ok.resolved_ms, Some(T0 + 10));
    assert_eq!(ok.comment.as_deref(), Some("ok"));

    // An approval of $80 is never spent on $8000.
    assert_eq!(
        store.consume_approval(&a.token, &call("digest-8000"), T0 + 20),
        Err(StoreError::DigestMismatch(a.token.clone()))
    );
    // Nor by another agent, nor on another tool, with the same arguments.
    let mut other_agent = call("digest-80");
    other_agent.agent = "intruder-bot".into();
    let mut other_tool = call("digest-80");
    other_tool.tool = "stripe/payouts".into();
    for wrong in [other_agent, other_tool] {
        assert_eq!(
            store.consume_approval(&a.token, &wrong, T0 + 25),
            Err(StoreError::DigestMismatch(a.token.clone()))
        );
    }
    let spent = store
        .consume_approval(&a.token, &call("digest-80"), T0 + 30)
        .unwrap();
    assert_eq!(spent.status, ApprovalStatus::Consumed);
    assert_eq!(spent.consumed_ms, Some(T0 + 30));
    assert!(matches!(
        store.consume_approval(&a.token, &call("digest-80"), T0 + 40),
        Err(StoreError::NotApproved {
            status: ApprovalStatus::Consumed,
            ..
        })
    ));
    // After the spend the same call defers again, with a new token.
    let next = store.request_approval(refund(80), T0 + 50).unwrap();
    assert_ne!(next.token, a.token);
}

#[test]
fn concurrent_spends_succeed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |_| {});
    let store = std::sync::Arc::new(store);
    let a = store.request_approval(refund(80), T0).unwrap();
    store
        .resolve_approval(&a.token, approve("bob"), T0)
        .unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (store, token) = (std::sync::Arc::clone(&store), a.token.clone());
            std::thread::spawn(move || {
                store
                    .consume_approval(&token, &call("digest-80"), T0)
                    .is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
}

#[test]
fn an_approval_not_spent_before_its_expiry_is_not_spendable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |c| c.approval_ttl_ms = 60_000);
    let a = store.request_approval(refund(80), T0).unwrap();
    store
        .resolve_approval(&a.token, approve("alice"), T0 + 59_000)
        .unwrap();
    assert_eq!(
        store.consume_approval(&a.token, &call("digest-80"), T0 + 60_000),
        Err(StoreError::NotApproved {
            token: a.token.clone(),
            status: ApprovalStatus::Expired
        })
    );
}

#[test]
fn expired_rejected_and_resolved_approvals_cannot_be_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open(dir.path(), |c| c.approval_ttl_ms = 60_000);
    let a = store.request_approval(refund(1), T0).unwrap();
    assert_eq!(a.expires_ms, T0 + 60_000);
    // Past its expiry it reads as expired and cannot be approved.
    let late = T0 + 60_000;
    assert_eq!(
        store.approval(&a.token, late).unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        store.resolve_approval(&a.token, approve("alice"), late),
        Err(StoreError::NotPending {
            token: a.token.clone(),
            status: ApprovalStatus::Expired
        })
    );
    assert_eq!(store.expire_approvals(late).unwrap(), 1);
    assert_eq!(
        store
            .approvals(Some(ApprovalStatus::Expired), late)
            .unwrap()[0]
            .token,
        a.token
    );
    // The same call asked again after expiry gets a fresh approval.
    let fresh = store.request_approval(refund(1), late).unwrap();
    assert_ne!(fresh.token, a.token);

    // Rejected: recorded, final, and not spendable.
    let r = store.request_approval(refund(2), T0).unwrap();
    let rejected = store
        .resolve_approval(
            &r.token,
            Resolution {
                approve: false,
                approver: "carol".into(),
                comment: Some("too much".into()),
            },
            T0 + 5,
        )
        .unwrap();
    assert_eq!(rejected.status, ApprovalStatus::Rejected);
    assert_eq!(rejected.approver.as_deref(), Some("carol"));
    assert!(matches!(
        store.resolve_approval(&r.token, approve("alice"), T0 + 6),
        Err(StoreError::NotPending {
            status: ApprovalStatus::Rejected,
            ..
        })
    ));
    assert!(matches!(
        store.consume_approval(&r.token, &call("digest-2"), T0 + 7),
        Err(StoreError::NotApproved {
            status: ApprovalStatus::Rejected,
            ..
        })
    ));

    // Approved once: a second resolution is refused, the first approver stays.
    let p = store.request_approval(refund(3), T0).unwrap();
    store
        .resolve_approval(&p.token, approve("alice"), T0)
        .unwrap();
    assert!(matches!(
        store.resolve_approval(&p.token, approve("mallory"), T0),
        Err(StoreError::NotPending {
            status: ApprovalStatus::Approved,
            ..
        })
    ));
    assert_eq!(
        store
            .approval(&p.token, T0)
            .unwrap()
            .unwrap()
            .approver
            .as_deref(),
        Some("alice")
    );
    assert_eq!(
        store.resolve_approval("dfr_nope", approve("alice"), T0),
        Err(StoreError::UnknownApproval("dfr_nope".into()))
    );
    assert!(store.approval("dfr_nope", T0).unwrap().is_none());
}

#[test]
fn approvals_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let (store, _) = common::open(dir.path(), |_| {});
        let a = store.request_approval(refund(80), T0).unwrap();
        store
            .resolve_approval(&a.token, approve("alice"), T0)
            .unwrap();
        a.token
    };
    let (store, _) = common::open(dir.path(), |_| {});
    let a = store
        .consume_approval(&token, &call("digest-80"), T0 + 1)
        .unwrap();
    assert_eq!(a.approver.as_deref(), Some("alice"));
}
