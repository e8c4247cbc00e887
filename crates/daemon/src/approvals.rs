//! SPEC §5 step 8 and §7: a defer creates (or, for an identical retry, finds) a pending
//! approval; a retry carrying an approved token for this very call is permitted once.
//!
//! The engine has already decided afresh when this runs, so an approval only ever turns a
//! defer into a permit: a rule that now denies, a rate limit or a budget still wins.

use std::sync::Arc;

use audit::record;
use engine::car::ActionRequest;
use engine::compile::Verdict;
use engine::decision::{Decision, ReasonCode};
use engine::engine::Engine;
use store::{Approval, ApprovalStatus, ApprovedCall, NewApproval, Store, StoreError};

use crate::core::{CallKey, Core, Outcome};

/// Settles a deferred call. `retry` is the request again when it carried a defer token: an
/// approved retry is decided once more, as approved, by the engine.
pub async fn settle(
    core: &Core,
    engine: &Engine,
    decision: Decision,
    call: &CallKey<'_>,
    retry: Option<(&str, &ActionRequest)>,
    now: i64,
) -> (Outcome, Decision) {
    let outcome = Outcome::of(&decision);
    match retry.filter(|(t, _)| !t.is_empty()) {
        None => (open(core, outcome, &decision, call, now).await, decision),
        Some((token, request)) => {
            let approved = match check(core, outcome, &decision, call, token, now).await {
                Ok(a) => a,
                Err(outcome) => return (outcome, decision),
            };
            let again = engine.decide_approved(request);
            if again.effect != Verdict::Permit {
                // A rate limit, a budget or egress still wins; the approval stays unspent.
                return (Outcome::of(&again), again);
            }
            let outcome = consume(core, Outcome::of(&again), &again, call, approved, now).await;
            (outcome, again)
        }
    }
}

/// A deferred call without a token: its pending approval, new or found.
async fn open(
    core: &Core,
    mut outcome: Outcome,
    decision: &Decision,
    call: &CallKey<'_>,
    now: i64,
) -> Outcome {
    let new = NewApproval {
        agent: call.agent.to_string(),
        tool: call.tool.to_string(),
        args: decision.recorded_args.as_str().to_string(),
        args_digest: decision.args_digest.clone(),
        rule_ref: outcome.rule_ref.clone(),
        reason: Some(outcome.reason.clone()),
    };
    match blocking(core, move |s| s.request_approval(new, now)).await {
        Ok(a) => {
            outcome.defer = Some(defer_of(&a));
            core.notices.approvals_changed();
            outcome
        }
        Err(e) => unavailable(outcome, &e),
    }
}

/// A retry with a defer token: `Ok` with the approval when it is approved for this very call;
/// otherwise the outcome to answer (still deferred, or denied and why).
async fn check(
    core: &Core,
    outcome: Outcome,
    decision: &Decision,
    call: &CallKey<'_>,
    token: &str,
    now: i64,
) -> Result<Approval, Outcome> {
    let t = token.to_string();
    let found = match blocking(core, move |s| s.approval(&t, now)).await {
        Ok(found) => found,
        Err(e) => return Err(unavailable(outcome, &e)),
    };
    let approval = match found {
        Some(a) if binds(&a, call, decision) => a,
        _ => {
            return Err(outcome.into_deny(
                ReasonCode::ApprovalMismatch,
                format!("defer token {token} does not approve this call (agent, tool and arguments must be those approved)"),
            ));
        }
    };
    Err(match approval.status {
        ApprovalStatus::Approved => return Ok(approval),
        ApprovalStatus::Pending => {
            let mut o = outcome;
            o.defer = Some(defer_of(&approval));
            o.reason = format!("{} (awaiting approval of {token})", o.reason);
            o
        }
        ApprovalStatus::Rejected => {
            let by = approval.approver.as_deref().unwrap_or("an operator");
            let mut o = outcome.into_deny(
                ReasonCode::ApprovalRejected,
                format!("approval {token} was rejected by {by}"),
            );
            o.defer = Some(defer_of(&approval));
            o
        }
        ApprovalStatus::Expired => {
            let mut o = outcome.into_deny(
                ReasonCode::ApprovalExpired,
                format!("approval {token} expired before it was approved"),
            );
            o.defer = Some(defer_of(&approval));
            o
        }
        ApprovalStatus::Consumed => consumed(outcome, token),
    })
}

/// Spends the approval on the permitted retry, once.
async fn consume(
    core: &Core,
    outcome: Outcome,
    decision: &Decision,
    call: &CallKey<'_>,
    approval: Approval,
    now: i64,
) -> Outcome {
    let token = approval.token;
    let spent = ApprovedCall {
        agent: call.agent.to_string(),
        tool: call.tool.to_string(),
        args_digest: decision.args_digest.clone(),
    };
    let t = token.clone();
    match blocking(core, move |s| s.consume_approval(&t, &spent, now)).await {
        Ok(a) => {
            core.notices.approvals_changed();
            let mut o = outcome;
            o.effect = Verdict::Permit;
            o.code = ReasonCode::Approved;
            let by = a.approver.clone().unwrap_or_default();
            o.reason = format!("approved by {by}; permitted once");
            o.defer = Some(defer_of(&a));
            o.approval = Some(record::Approval {
                approver: by,
                time_ms: a.resolved_ms.unwrap_or(now),
                comment: a.comment.clone(),
            });
            o
        }
        // Another retry spent it first.
        Err(StoreError::NotApproved { .. }) => consumed(outcome, &token),
        Err(StoreError::DigestMismatch(_)) => outcome.into_deny(
            ReasonCode::ApprovalMismatch,
            format!("defer token {token} does not approve this call"),
        ),
        Err(e) => unavailable(outcome, &e),
    }
}

fn consumed(outcome: Outcome, token: &str) -> Outcome {
    outcome.into_deny(
        ReasonCode::ApprovalConsumed,
        format!(
            "approval {token} was already used for one permitted call; call again without the token to ask for a new approval"
        ),
    )
}

fn unavailable(outcome: Outcome, e: &StoreError) -> Outcome {
    tracing::error!(error = %e, "approval storage failed: denied");
    outcome.into_deny(
        ReasonCode::ApprovalUnavailable,
        "the approval could not be read or created, so the call is denied",
    )
}

/// An approval binds the agent, the tool and the digest of the arguments it was given for.
fn binds(a: &Approval, call: &CallKey<'_>, decision: &Decision) -> bool {
    a.agent == call.agent && a.tool == call.tool && a.args_digest == decision.args_digest
}

fn defer_of(a: &Approval) -> record::Defer {
    record::Defer {
        token: a.token.clone(),
        status: a.status.as_str().to_string(),
    }
}

/// Runs a store call on the blocking pool (SQLite is synchronous).
pub async fn blocking<T: Send + 'static>(
    core: &Core,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store: Arc<dyn Store> = Arc::clone(&core.store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .unwrap_or_else(|e| Err(StoreError::Storage(format!("store task failed: {e}"))))
}
