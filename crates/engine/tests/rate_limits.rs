//! SPEC §3.7 rate limits, with a driven clock: GCRA with burst N, exact `retry_after_ms`,
//! per-session scoping, and only whole permits consume.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{expect, harness, permitted};
use engine::compile::Verdict::{Defer, Deny, Permit};
use engine::decision::{Decision, Event, ReasonCode as R};
use serde_json::json;

/// Asserts a refusal by a rate limit that says to retry in exactly `retry_ms`.
#[track_caller]
fn limited(d: &Decision, retry_ms: u64) {
    expect(d, Deny, R::RateExceeded);
    assert_eq!(d.retry_after_ms, Some(retry_ms), "{d:#?}");
    assert!(
        d.events.iter().any(|e| matches!(
            e,
            Event::RateExceeded { retry_after_ms, .. } if *retry_after_ms == retry_ms
        )),
        "a rate_exceeded event is raised: {:#?}",
        d.events
    );
    assert!(d.reason.contains("rate_limit"), "{}", d.reason);
}

const LIMITED: &str = r#"
agent "limited" {
  rules {
    permit ping
    permit search
    permit burst7
    permit tick
  }
  rate_limit "ping": 3 per minute
  rate_limit "search": 2 per minute per session
  rate_limit "burst7": 7 per minute
  rate_limit "tick": 1 per second
}
"#;

#[test]
fn burst_then_refill_with_exact_retry_after() {
    let h = harness(LIMITED);
    let ping = || h.decide("limited", "ping", json!({}));
    for _ in 0..3 {
        let d = ping();
        permitted(&d);
        assert_eq!(d.retry_after_ms, None);
    }
    // One call every 20 s after the burst of 3.
    limited(&ping(), 20_000);
    h.advance(19_999);
    limited(&ping(), 1);
    h.advance(1);
    permitted(&ping());
    limited(&ping(), 20_000);
    // A minute of quiet refills the whole burst, and no more.
    h.advance(60_000);
    for _ in 0..3 {
        permitted(&ping());
    }
    limited(&ping(), 20_000);
}

#[test]
fn retry_after_is_exact_when_the_interval_is_fractional() {
    // 60 000 ms / 7 = 8571.43 ms between calls after the burst.
    let h = harness(LIMITED);
    let call = || h.decide("limited", "burst7", json!({}));
    for _ in 0..7 {
        permitted(&call());
    }
    limited(&call(), 8_572);
    h.advance(8_571);
    limited(&call(), 1);
    h.advance(1);
    permitted(&call());
    // The next slot is two intervals after the burst: 17 142.86 ms, that is 8 571 ms more.
    limited(&call(), 8_571);
}

#[test]
fn per_second_limits() {
    let h = harness(LIMITED);
    let tick = || h.decide("limited", "tick", json!({}));
    permitted(&tick());
    limited(&tick(), 1_000);
    h.advance(999);
    limited(&tick(), 1);
    h.advance(1);
    permitted(&tick());
}

#[test]
fn refused_attempts_do_not_push_the_next_slot_back() {
    let h = harness(LIMITED);
    let ping = || h.decide("limited", "ping", json!({}));
    for _ in 0..3 {
        permitted(&ping());
    }
    for i in 0..10 {
        h.advance(1_000);
        limited(&ping(), 20_000 - 1_000 * (i + 1));
    }
    h.advance(10_000);
    permitted(&ping());
}

#[test]
fn per_session_limits_are_scoped_to_the_session() {
    let h = harness(LIMITED);
    let search = |s: &str| h.decide_in(s, "limited", "search", json!({}));
    permitted(&search("s-1"));
    permitted(&search("s-1"));
    limited(&search("s-1"), 30_000);
    // Another session has its own allowance.
    permitted(&search("s-2"));
    permitted(&search("s-2"));
    limited(&search("s-2"), 30_000);
    limited(&search("s-1"), 30_000);
    // An agent-wide limit is shared by every session.
    let ping = |s: &str| h.decide_in(s, "limited", "ping", json!({}));
    permitted(&ping("s-1"));
    permitted(&ping("s-1"));
    permitted(&ping("s-2"));
    limited(&ping("s-3"), 20_000);
    limited(&h.decide("limited", "ping", json!({})), 20_000);
}

#[test]
fn limits_are_per_agent() {
    let src = r#"
agent "a" {
  rules {
    permit x
  }
  rate_limit "x": 1 per hour
}
agent "b" {
  rules {
    permit x
  }
  rate_limit "x": 1 per hour
}
"#;
    let h = harness(src);
    permitted(&h.decide("a", "x", json!({})));
    limited(&h.decide("a", "x", json!({})), 3_600_000);
    permitted(&h.decide("b", "x", json!({})));
}

const ONLY_PERMITS: &str = r#"
agent "bot" {
  default permit
  rules {
    deny  pay if ok == false
    defer pay if amount > 100
    permit pay if ok == true
  }
  rate_limit "pay": 2 per minute
  rate_limit "*": 100 per minute
}
"#;

#[test]
fn only_permitted_calls_consume() {
    let h = harness(ONLY_PERMITS);
    let pay = |args| h.decide("bot", "pay", args);
    for _ in 0..5 {
        expect(&pay(json!({"ok": false})), Deny, R::RuleDeny);
        expect(
            &pay(json!({"ok": true, "amount": 500})),
            Defer,
            R::RuleDefer,
        );
        expect(&pay(json!({"ok": "yes", "amount": 1})), Deny, R::EvalError);
    }
    // None of those counted: the full burst of 2 is still there.
    permitted(&pay(json!({"ok": true, "amount": 1})));
    // A default permit is a permit, and is counted like one.
    expect(&pay(json!({"amount": 1})), Permit, R::DefaultPermit);
    limited(&pay(json!({"ok": true, "amount": 1})), 30_000);
    // A rule deny is not turned into a rate refusal.
    expect(&pay(json!({"ok": false})), Deny, R::RuleDeny);
}

#[test]
fn a_call_refused_by_one_limit_consumes_none_of_the_others() {
    let src = r#"
agent "bot" {
  rules {
    permit api/**
  }
  rate_limit "api/*": 5 per minute
  rate_limit "api/call": 2 per minute
}
"#;
    let h = harness(src);
    permitted(&h.decide("bot", "api/call", json!({})));
    permitted(&h.decide("bot", "api/call", json!({})));
    for _ in 0..4 {
        limited(&h.decide("bot", "api/call", json!({})), 30_000);
    }
    // `api/*` has been consumed twice only: three more calls fit.
    for _ in 0..3 {
        permitted(&h.decide("bot", "api/other", json!({})));
    }
    limited(&h.decide("bot", "api/other", json!({})), 12_000);
    // `api/**` permits this tool, but neither limit's pattern matches it.
    permitted(&h.decide("bot", "api/v2/call", json!({})));
}

#[test]
fn a_call_refused_by_the_budget_or_egress_does_not_consume_the_rate() {
    let src = r#"
agent "bot" {
  rules {
    permit api/call
  }
  rate_limit "api/call": 2 per minute
  cost api/call: amount
  budget daily { max $100 }
  egress { allow = ["api.example.com"] }
}
"#;
    let h = harness(src);
    let call = |args| h.decide("bot", "api/call", args);
    for _ in 0..5 {
        expect(&call(json!({"amount": 500})), Deny, R::BudgetExceeded);
        expect(
            &call(json!({"amount": 1, "url": "https://evil.example.net/"})),
            Deny,
            R::EgressDenied,
        );
        expect(&call(json!({})), Deny, R::EvalError);
    }
    permitted(&call(
        json!({"amount": 10, "url": "https://api.example.com/"}),
    ));
    permitted(&call(json!({"amount": 10})));
    limited(&call(json!({"amount": 10})), 30_000);
}

#[test]
fn a_rate_refusal_spends_nothing() {
    let src = r#"
agent "bot" {
  rules {
    permit api/call if spent(daily) < $25
  }
  rate_limit "api/call": 1 per minute
  cost api/call: $10
  budget daily { max $1000 }
}
"#;
    let h = harness(src);
    let call = || h.decide("bot", "api/call", json!({}));
    permitted(&call()); // spent 0 → 10
    for _ in 0..10 {
        limited(&call(), 60_000);
    }
    h.advance(60_000);
    permitted(&call()); // spent 10 → 20
    h.advance(60_000);
    permitted(&call()); // spent 20 → 30: the refusals cost nothing
    h.advance(60_000);
    expect(&call(), Deny, R::DefaultDeny);
}

/// Rate cells are stored under `AGENT|INDEX[|SESSION]`: an agent id with `|` could share one
/// with another agent's per-session cell, so such a policy is never compiled.
#[test]
fn an_agent_id_with_a_bar_is_not_compiled() {
    let src = "agent \"a|0\" {\n  default permit\n  rate_limit \"*\": 1 per minute\n}\n";
    let parsed = fpl::parse(src);
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()));
    let err = engine::compile::compile(&parsed.policy, "governance.fms", Some(src)).unwrap_err();
    assert!(err.to_string().contains("holds `|`"), "{err}");
}
