//! SPEC §3.7 cost and budgets, with a driven clock: windows that roll over at UTC boundaries,
//! session budgets, `warn_at` raised once when crossed, `on_exceed`, and costs that cannot be
//! known refused rather than guessed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{expect, harness, permitted};
use engine::clock::{Clock, window_start_ms};
use engine::compile::Verdict::{Defer, Deny};
use engine::decision::{Decision, Event, ReasonCode as R};
use fpl::ast::BudgetWindow;
use rust_decimal::Decimal;
use serde_json::json;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn warnings(d: &Decision) -> Vec<&Event> {
    d.events
        .iter()
        .filter(|e| matches!(e, Event::BudgetWarning { .. }))
        .collect()
}

/// Asserts a refusal by the `window` budget, with what was spent before this call.
#[track_caller]
fn over_budget(d: &Decision, effect: engine::compile::Verdict, window: &str, spent: &str) {
    expect(d, effect, R::BudgetExceeded);
    assert!(
        d.events.iter().any(|e| matches!(
            e,
            Event::BudgetExceeded { window: w, spent: s, .. } if w == window && *s == dec(spent)
        )),
        "a budget_exceeded event for {window} with {spent} spent: {:#?}",
        d.events
    );
    assert!(d.reason.contains(window), "{}", d.reason);
}

/// The corpus's budget policy: every call costs $10; $25 a day.
const SPENDER: &str = r#"
agent "spender" {
  default deny
  rules {
    permit api/call
    permit api/charge
    permit api/free
  }
  cost api/call: $10
  cost api/charge: amount
  budget daily {
    max       $25
    warn_at   0.8
    on_exceed deny
  }
}
"#;

#[test]
fn daily_budget_warns_once_then_refuses_until_the_next_utc_day() {
    let h = harness(SPENDER);
    let call = || h.decide("spender", "api/call", json!({}));
    let d = call(); // 0 → 10
    permitted(&d);
    assert!(d.events.is_empty(), "{:#?}", d.events);
    let d = call(); // 10 → 20: crosses 0.8 × $25 = $20
    permitted(&d);
    assert_eq!(
        d.events,
        vec![Event::BudgetWarning {
            window: "daily".into(),
            spent: dec("20"),
            max: dec("25"),
        }]
    );
    let d = call(); // 20 → 30 > 25
    over_budget(&d, Deny, "daily", "20");
    assert!(warnings(&d).is_empty(), "a refusal is not a warning");
    // A smaller charge still fits: exactly the max is allowed.
    let d = h.decide("spender", "api/charge", json!({"amount": 5}));
    permitted(&d);
    assert!(warnings(&d).is_empty(), "the warning was already raised");
    over_budget(
        &h.decide("spender", "api/charge", json!({"amount": 0.01})),
        Deny,
        "daily",
        "25",
    );
    // Calls that cost nothing are not stopped by a spent budget.
    permitted(&h.decide("spender", "api/free", json!({})));
    // Still the same UTC day at its last millisecond.
    h.set("2026-03-02T23:59:59.999Z");
    over_budget(&call(), Deny, "daily", "25");
    // A new day starts from nothing, and may warn again.
    h.set("2026-03-03T00:00:00Z");
    permitted(&call());
    let d = call();
    permitted(&d);
    assert_eq!(warnings(&d).len(), 1);
}

#[test]
fn one_call_that_jumps_past_the_warning_line_warns() {
    let src = r#"
agent "bot" {
  rules {
    permit pay
  }
  cost pay: amount
  budget daily { max $100; warn_at 0.5 }
}
"#;
    let h = harness(src);
    let pay = |amount: i64| h.decide("bot", "pay", json!({ "amount": amount }));
    let d = pay(49);
    permitted(&d);
    assert!(warnings(&d).is_empty());
    let d = pay(40); // 49 → 89, past 50
    permitted(&d);
    assert_eq!(warnings(&d).len(), 1, "{:#?}", d.events);
    for _ in 0..11 {
        let d = pay(1);
        permitted(&d);
        assert!(warnings(&d).is_empty());
    }
    over_budget(&pay(1), Deny, "daily", "100");
}

#[test]
fn hourly_windows_are_clock_hours() {
    let src = r#"
agent "bot" {
  rules {
    permit x
  }
  cost x: $10
  budget hourly { max $20 }
}
"#;
    let h = harness(src);
    let x = || h.decide("bot", "x", json!({}));
    h.set("2026-03-02T10:30:00Z");
    permitted(&x());
    permitted(&x());
    over_budget(&x(), Deny, "hourly", "20");
    h.set("2026-03-02T10:59:59.999Z");
    over_budget(&x(), Deny, "hourly", "20");
    // The window is the clock hour, not the last 60 minutes.
    h.set("2026-03-02T11:00:00Z");
    permitted(&x());
    permitted(&x());
    over_budget(&x(), Deny, "hourly", "20");
}

#[test]
fn monthly_windows_are_calendar_months_in_utc() {
    let src = r#"
agent "bot" {
  rules {
    permit x
  }
  cost x: $10
  budget monthly { max $20 }
}
"#;
    let h = harness(src);
    let x = || h.decide("bot", "x", json!({}));
    h.set("2026-01-01T00:00:00Z");
    permitted(&x());
    h.set("2026-01-20T12:00:00Z");
    permitted(&x());
    h.set("2026-01-31T23:59:59.999Z");
    over_budget(&x(), Deny, "monthly", "20");
    h.set("2026-02-01T00:00:00Z");
    permitted(&x());
    permitted(&x());
    // February 2026 has 28 days.
    h.set("2026-02-28T23:59:59.999Z");
    over_budget(&x(), Deny, "monthly", "20");
    h.set("2026-03-01T00:00:00Z");
    permitted(&x());
    // Leap years: 2028-02-29 is still February.
    h.set("2028-02-01T00:00:00Z");
    permitted(&x());
    permitted(&x());
    h.set("2028-02-29T23:00:00Z");
    over_budget(&x(), Deny, "monthly", "20");
}

#[test]
fn every_window_must_have_room() {
    let src = r#"
agent "bot" {
  rules {
    permit x
  }
  cost x: $10
  budget daily { max $25 }
  budget monthly { max $40 }
}
"#;
    let h = harness(src);
    let x = || h.decide("bot", "x", json!({}));
    permitted(&x());
    permitted(&x());
    over_budget(&x(), Deny, "daily", "20");
    h.set("2026-03-03T09:00:00Z");
    permitted(&x());
    permitted(&x());
    // Day 3: the day has room, the month ($40 spent) has not.
    h.set("2026-03-04T09:00:00Z");
    over_budget(&x(), Deny, "monthly", "40");
    h.set("2026-04-01T00:00:00Z");
    permitted(&x());
}

#[test]
fn session_budgets() {
    let src = r#"
agent "bot" {
  rules {
    permit x
  }
  cost x: $10
  budget session { max $20 }
}
"#;
    let h = harness(src);
    let x = |s: &str| h.decide_in(s, "bot", "x", json!({}));
    permitted(&x("s-1"));
    permitted(&x("s-1"));
    over_budget(&x("s-1"), Deny, "session", "20");
    // A session budget does not roll over with time.
    h.set("2026-04-01T00:00:00Z");
    over_budget(&x("s-1"), Deny, "session", "20");
    permitted(&x("s-2"));
    permitted(&x("s-2"));
    over_budget(&x("s-2"), Deny, "session", "20");
}

#[test]
fn on_exceed_defer_defers_and_spends_nothing() {
    let src = r#"
agent "bot" {
  rules {
    permit pay
  }
  cost pay: amount
  budget daily { max $25; on_exceed defer }
}
"#;
    let h = harness(src);
    let pay = |amount: i64| h.decide("bot", "pay", json!({ "amount": amount }));
    permitted(&pay(20));
    for _ in 0..3 {
        over_budget(&pay(10), Defer, "daily", "20");
    }
    // The deferred calls reserved nothing: $5 still fits exactly.
    permitted(&pay(5));
    over_budget(&pay(1), Defer, "daily", "25");
}

#[test]
fn only_permits_spend() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    deny  pay if amount > 1000
    defer pay if amount > 100
    permit pay
  }
  cost pay: amount
  budget daily { max $150 }
}
"#;
    let h = harness(src);
    let pay = |amount: i64| h.decide("bot", "pay", json!({ "amount": amount }));
    expect(&pay(5000), Deny, engine::decision::ReasonCode::RuleDeny);
    expect(&pay(120), Defer, engine::decision::ReasonCode::RuleDefer);
    permitted(&pay(100));
    permitted(&pay(50));
    over_budget(&pay(1), Deny, "daily", "150");
}

#[test]
fn cost_from_an_argument_or_a_literal() {
    let src = r#"
agent "bot" {
  rules {
    permit fixed
    permit priced
    permit nested
    permit **
  }
  cost fixed: $2.50
  cost priced: amount
  cost nested: order.total
  budget daily { max $10 }
}
"#;
    let h = harness(src);
    for _ in 0..4 {
        permitted(&h.decide("bot", "fixed", json!({"amount": 1000})));
    }
    over_budget(&h.decide("bot", "fixed", json!({})), Deny, "daily", "10.00");
    h.set("2026-03-03T00:00:00Z");
    permitted(&h.decide("bot", "priced", json!({"amount": 9.99})));
    permitted(&h.decide("bot", "priced", json!({"amount": 0.01})));
    over_budget(
        &h.decide("bot", "priced", json!({"amount": 0.01})),
        Deny,
        "daily",
        "10",
    );
    h.set("2026-03-04T00:00:00Z");
    permitted(&h.decide("bot", "nested", json!({"order": {"total": 10}})));
    over_budget(
        &h.decide("bot", "nested", json!({"order": {"total": 1}})),
        Deny,
        "daily",
        "10",
    );
    // A tool with no cost rule costs nothing.
    permitted(&h.decide("bot", "other", json!({})));
}

#[test]
fn a_cost_that_cannot_be_known_fails_closed() {
    let src = r#"
agent "bot" {
  default permit
  cost pay: amount
  budget daily { max $100 }
}
"#;
    let h = harness(src);
    let pay = |args| h.decide("bot", "pay", args);
    for (args, says) in [
        (json!({}), "missing"),
        (json!({"amount": null}), "missing"),
        (json!({"amount": "10"}), "not a number"),
        (json!({"amount": -5}), "negative"),
    ] {
        let d = pay(args.clone());
        expect(&d, Deny, R::EvalError);
        assert!(d.reason.contains(says), "{args}: {}", d.reason);
        assert!(d.reason.contains("pay"), "{args}: {}", d.reason);
    }
    // None of them spent anything.
    permitted(&pay(json!({"amount": 100})));
}

#[test]
fn session_cost_is_the_sum_of_permitted_costs() {
    let src = r#"
agent "bot" {
  rules {
    permit pay if session.cost < $30
  }
  cost pay: amount
}
"#;
    let h = harness(src);
    let pay = |s: &str, amount: i64| h.decide_in(s, "bot", "pay", json!({ "amount": amount }));
    permitted(&pay("s-1", 20));
    permitted(&pay("s-1", 9));
    permitted(&pay("s-1", 1)); // 29 < 30
    expect(&pay("s-1", 1), Deny, R::DefaultDeny); // 30
    permitted(&pay("s-2", 1));
}

/// `report` (SPEC §3.7): the decision says what it reserved; reconciling adds what the call
/// really cost minus that to every window it counts in — budgets, session budgets and windows
/// only `spent(…)` reads — in the windows of the time it was decided.
#[test]
fn a_reported_cost_reconciles_every_window_the_call_counts_in() {
    let src = r#"
agent "bot" {
  rules {
    permit x if spent(hourly) < $1000
  }
  cost x: amount
  budget daily { max $100 }
  budget session { max $60 }
}
"#;
    let h = harness(src);
    let x = |amount: i64| h.decide_in("s-1", "bot", "x", json!({"amount": amount}));
    let d = x(30);
    permitted(&d);
    assert_eq!(d.cost, dec("30"));
    let spent = |key: &str| h.engine.state().budget_spent(key);
    let decided = h.clock.now_ms();
    // $30 reserved, $50 spent; decided an hour ago: still counted in that hour and day.
    h.clock.set(decided + 3_600_000);
    h.engine
        .reconcile_cost("bot", Some("s-1"), decided, d.cost, dec("50"));
    assert_eq!(spent("bot|session|s-1"), dec("50"));
    let session = h.engine.state().session("s-1");
    assert_eq!((session.calls, session.cost), (1, dec("50")));
    let window = |w: BudgetWindow| format!("bot|{}|{}", w.word(), window_start_ms(w, decided));
    assert_eq!(spent(&window(BudgetWindow::Daily)), dec("50"));
    assert_eq!(spent(&window(BudgetWindow::Hourly)), dec("50"));
    // The session budget now has $10 of room: $20 is refused, $10 passes.
    over_budget(&x(20), Deny, "session", "50");
    permitted(&x(10));
    // A deny reserves nothing; an unknown agent reconciles nothing.
    assert_eq!(x(1).cost, Decimal::ZERO);
    h.engine
        .reconcile_cost("nobody", None, decided, Decimal::ZERO, dec("5"));
}
