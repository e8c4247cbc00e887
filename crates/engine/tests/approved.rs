//! SPEC §5 step 8: the retry of an approved call is decided afresh. The approval turns a defer
//! into a permit (`APPROVED`) and nothing else: denials, rate limits, budgets that deny and
//! egress still win, and the permit is counted like any other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, expect, harness, request};
use engine::compile::Verdict::{self, Defer, Deny, Permit};
use engine::decision::ReasonCode as R;
use serde_json::{Value, json};

const POLICY: &str = r#"
agent "bot" {
  rules {
    deny!  stripe/refund if amount > 100000
    permit stripe/refund if amount < 500
    defer  stripe/refund if amount >= 500
    deny   stripe/payouts
    defer  http/get
  }
  rate_limit "stripe/refund": 2 per hour
  cost stripe/refund: amount
  budget daily { max = $10000; on_exceed = defer }
  budget monthly { max = $20000; on_exceed = deny }
  egress { allow = ["api.stripe.com"] }
}
"#;

const REFUND: &str = "stripe/refund";

fn refund(amount: u64) -> Value {
    json!({ "amount": amount })
}

/// The retry of an approved call, decided: asserts its effect and reason code.
#[track_caller]
fn approved(h: &Harness, tool: &str, args: Value, effect: Verdict, code: R) {
    expect(
        &h.engine.decide_approved(&request("bot", tool, args)),
        effect,
        code,
    );
}

/// The same call without an approval.
#[track_caller]
fn plain(h: &Harness, tool: &str, args: Value, effect: Verdict, code: R) {
    expect(&h.decide("bot", tool, args), effect, code);
}

#[test]
fn an_approval_turns_only_a_defer_into_a_permit() {
    let h = harness(POLICY);
    plain(&h, REFUND, refund(8000), Defer, R::RuleDefer);
    approved(&h, REFUND, refund(8000), Permit, R::Approved);
    // A rule that denies, a mandatory deny and the default deny are not defers.
    approved(&h, "stripe/payouts", json!({}), Deny, R::RuleDeny);
    approved(&h, REFUND, refund(200_000), Deny, R::RuleDeny);
    approved(&h, "unknown/tool", json!({}), Deny, R::DefaultDeny);
}

#[test]
fn the_approved_permit_still_passes_rate_limits_and_counts() {
    let h = harness(POLICY);
    approved(&h, REFUND, refund(600), Permit, R::Approved);
    plain(&h, REFUND, refund(10), Permit, R::RulePermit);
    // Two refunds an hour: the approved one counted.
    approved(&h, REFUND, refund(700), Deny, R::RateExceeded);
}

#[test]
fn a_budget_that_defers_is_satisfied_by_the_approval_one_that_denies_is_not() {
    let h = harness(POLICY);
    let nine = refund(9000);
    // $9,000 then $9,000: the daily budget ($10,000, defer) is exceeded; the approval is
    // the human that budget asks for.
    approved(&h, REFUND, nine.clone(), Permit, R::Approved);
    h.advance(3_600_000);
    plain(&h, REFUND, nine.clone(), Defer, R::RuleDefer);
    approved(&h, REFUND, nine, Permit, R::Approved);
    h.advance(3_600_000);
    // $18,000 spent this month; $5,000 more passes the monthly budget, which denies.
    approved(&h, REFUND, refund(5000), Deny, R::BudgetExceeded);
}

#[test]
fn egress_still_applies_to_an_approved_call() {
    let h = harness(POLICY);
    let url = |u: &str| json!({ "url": u });
    plain(
        &h,
        "http/get",
        url("https://api.stripe.com/v1"),
        Defer,
        R::RuleDefer,
    );
    approved(
        &h,
        "http/get",
        url("https://api.stripe.com/v1"),
        Permit,
        R::Approved,
    );
    approved(
        &h,
        "http/get",
        url("https://evil.example/x"),
        Deny,
        R::EgressDenied,
    );
}
