//! Regressions: each test is a bug the engine once had (found by its test suite).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{expect, harness};
use engine::compile::Verdict::{Deny, Permit};
use engine::decision::{Event, ReasonCode as R};
use serde_json::json;

// Bug A
#[test]
fn host_clause_is_not_fooled_by_a_backslash() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit http/get host "*.example.com"
    permit fetch if host(url) ends_with ".example.com"
  }
}
"#;
    let h = harness(src);
    for url in [
        "https://evil.io\\.api.example.com/",
        "https://evil.io\\@api.example.com/",
    ] {
        // WHATWG clients (and the engine's own egress check) read the host as `evil.io`.
        expect(
            &h.decide("bot", "http/get", json!({ "url": url })),
            Deny,
            R::DefaultDeny,
        );
        expect(
            &h.decide("bot", "fetch", json!({ "url": url })),
            Deny,
            R::DefaultDeny,
        );
    }
}

// Bug B
#[test]
fn a_missing_list_element_makes_in_unknown() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit send if to not in [principal.id, blocked]
    permit copy if not (to in [blocked])
  }
}
"#;
    let h = harness(src);
    // `blocked` and `principal.id` are missing: the comparison reads them, so it is unknown.
    expect(
        &h.decide("bot", "send", json!({"to": "x"})),
        Deny,
        R::DefaultDeny,
    );
    expect(
        &h.decide("bot", "copy", json!({"to": "x"})),
        Deny,
        R::DefaultDeny,
    );
}

// Bug C
#[test]
fn a_refused_call_raises_no_budget_warning_and_a_crossing_warns_once() {
    let src = r#"
agent "multi" {
  rules {
    permit pay
  }
  cost pay: amount
  budget daily { max $100; warn_at 0.5 }
  budget monthly { max $50 }
}
agent "web" {
  rules {
    permit pay
  }
  cost pay: amount
  budget daily { max $100; warn_at 0.5 }
  egress { allow = ["ok.example.com"] }
}
"#;
    let h = harness(src);
    let warned = |d: &engine::decision::Decision| {
        d.events
            .iter()
            .filter(|e| matches!(e, Event::BudgetWarning { .. }))
            .count()
    };
    let pay = |agent: &str, amount: i64, url: &str| {
        h.decide(agent, "pay", json!({"amount": amount, "url": url}))
    };
    let ok = "https://ok.example.com/";
    // Refused by a second budget.
    assert_eq!(pay("multi", 30, ok).effect, Permit); // daily 30, monthly 30
    let d = pay("multi", 25, ok); // daily would cross 50, but monthly 55 > 50 refuses
    expect(&d, Deny, R::BudgetExceeded);
    assert_eq!(warned(&d), 0, "nothing was spent: {:?}", d.events);
    assert_eq!(warned(&pay("multi", 20, ok)), 1); // the one real crossing (daily 50)
    // Refused by egress.
    let d = pay("web", 60, "https://evil.example.net/");
    expect(&d, Deny, R::EgressDenied);
    assert_eq!(warned(&d), 0, "nothing was spent: {:?}", d.events);
    assert_eq!(warned(&pay("web", 60, ok)), 1);
}

// Bug D
#[test]
fn redacted_values_do_not_leak_through_the_reason() {
    let src = r#"
agent "bot" {
  rules {
    permit **
  }
  redact ** args: ["endpoint", "amount"]
  cost pay: amount
  budget daily { max $100 }
  egress { allow = ["api.example.com"] }
}
"#;
    let h = harness(src);
    for (tool, args, secret) in [
        (
            "call",
            json!({"endpoint": "secret-host.corp.internal"}),
            "secret-host",
        ),
        (
            "call",
            json!({"endpoint": "https://u:hunter2\\@x.example/"}),
            "hunter2",
        ),
        ("pay", json!({"amount": 4321}), "4321"),
        ("pay", json!({"amount": -77}), "77"),
    ] {
        let d = h.decide("bot", tool, args);
        assert!(
            !serde_json::to_string(&d).unwrap().contains(secret),
            "{}",
            d.reason
        );
    }
}

// E
#[test]
fn time_follows_the_runtime_timezone() {
    let src = r#"
runtime { timezone = "Europe/Berlin" }
agent "bot" {
  default deny
  rules {
    permit t if time.hour == 11
  }
}
"#;
    // 10:00 UTC on 2026-03-02 is 11:00 in Berlin (CET).
    expect(
        &harness(src).decide("bot", "t", json!({})),
        Permit,
        R::RulePermit,
    );
}

// F
#[test]
fn spent_counts_without_a_budget_block() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit t if spent(daily) < $15
  }
  cost t: $10
}
"#;
    let h = harness(src);
    expect(&h.decide("bot", "t", json!({})), Permit, R::RulePermit);
    expect(&h.decide("bot", "t", json!({})), Permit, R::RulePermit);
    expect(&h.decide("bot", "t", json!({})), Deny, R::DefaultDeny);
}
