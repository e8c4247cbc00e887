//! SPEC §3.9 egress on permitted calls, §3.10 redaction of what is recorded, and §4's
//! `args_digest` over the canonical, unredacted arguments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{REDACTION_KEY, expect, expect_rule, harness, line_of, permitted};
use engine::compile::Verdict::{Defer, Deny, Permit};
use engine::decision::{Decision, ReasonCode as R};
use engine::redact::{RedactionKey, redaction_of};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The corpus's research policy (`corpus/policies/research.fms`).
const RESEARCH: &str = r#"# Autonomous web agents (from the product brief).
agent "research-bot" {
  default deny

  rules {
    permit browser/navigate  if host in ["en.wikipedia.org", "duckduckgo.com"]
    deny   browser/navigate  if host matches "(?i)(porn|gambling|warez)"
    permit browser/scrape
    permit browser/screenshot
    defer  browser/upload
    deny   browser/download  if size_mb > 100
  }

  egress {
    allow = ["en.wikipedia.org", "duckduckgo.com", "*.wikimedia.org"]
  }

  budget daily {
    max       $30
    on_exceed deny
  }
}
"#;

fn research(tool: &str, args: Value) -> Decision {
    harness(RESEARCH).decide("research-bot", tool, args)
}

#[test]
fn the_corpus_research_cases() {
    let d = research("browser/navigate", json!({"host": "en.wikipedia.org"}));
    expect_rule(&d, Permit, R::RulePermit, 6);
    let d = research(
        "browser/navigate",
        json!({"host": "best-GAMBLING-site.com"}),
    );
    expect_rule(&d, Deny, R::RuleDeny, 7);
    let d = research("browser/navigate", json!({"host": "example.com"}));
    expect(&d, Deny, R::DefaultDeny);
    let d = research(
        "browser/scrape",
        json!({"url": "https://upload.wikimedia.org/a.png"}),
    );
    expect_rule(&d, Permit, R::RulePermit, 8);
    let d = research(
        "browser/scrape",
        json!({"url": "https://evil.example.com/"}),
    );
    expect(&d, Deny, R::EgressDenied);
    // The reason names the rule broken, never the destination: it may be a redacted argument.
    assert!(d.reason.contains("egress policy"), "{}", d.reason);
    assert!(!d.reason.contains("evil.example.com"), "{}", d.reason);
    let d = research("browser/upload", json!({"file": "x.pdf"}));
    expect_rule(&d, Defer, R::RuleDefer, 10);
    let d = research("browser/download", json!({"size_mb": 500}));
    expect_rule(&d, Deny, R::RuleDeny, 11);
    let d = research("browser/download", json!({"size_mb": 5}));
    expect(&d, Deny, R::DefaultDeny);
}

#[test]
fn egress_checks_every_destination_a_permitted_call_names() {
    let allowed = [
        json!({"url": "https://en.wikipedia.org/wiki/Rust"}),
        json!({"url": "HTTPS://EN.WIKIPEDIA.ORG:443/wiki"}),
        json!({"url": "https://en.wikipedia.org./"}),
        json!({"url": "https://a.b.wikimedia.org/x"}),
        json!({"host": "duckduckgo.com"}),
        json!({"page": {"links": [{"url": "https://duckduckgo.com/?q=x"}]}}),
        // A relative reference names no host of its own.
        json!({"url": "/wiki/Rust"}),
        // A call naming no destination is not restricted.
        json!({"selector": "#main"}),
    ];
    for args in allowed {
        permitted(&research("browser/scrape", args));
    }
    let refused = [
        json!({"url": "https://evil.example.com/"}),
        // `*.wikimedia.org` is subdomains only.
        json!({"url": "https://wikimedia.org/"}),
        json!({"url": "https://en.wikipedia.org.evil.io/"}),
        // The userinfo is not the host.
        json!({"url": "https://en.wikipedia.org@evil.io/"}),
        // Any destination key, at any depth, in arrays too, in any spelling.
        json!({"uri": "https://evil.io/"}),
        json!({"endpoint": "evil.io:443"}),
        json!({"request": {"base_url": "https://evil.io"}}),
        json!({"mirrors": [{"url": "https://en.wikipedia.org/"}, {"url": "https://evil.io/"}]}),
        json!({"url": ["https://duckduckgo.com/", "https://evil.io/"]}),
        json!({"baseUrl": "https://evil.io/"}),
        json!({"Host": "evil.io"}),
        // A destination whose host cannot be read unambiguously is refused.
        json!({"url": "https://evil.io\\@en.wikipedia.org/"}),
        json!({"host": 2130706433}),
    ];
    for args in refused {
        let d = research("browser/scrape", args.clone());
        assert_eq!(
            (d.effect, d.reason_code),
            (Deny, R::EgressDenied),
            "{args}: {}",
            d.reason
        );
    }
}

#[test]
fn egress_does_not_change_a_deny_or_a_defer() {
    let evil = "https://evil.example.com/";
    let d = research("browser/upload", json!({"url": evil}));
    expect_rule(&d, Defer, R::RuleDefer, 10);
    let d = research("browser/download", json!({"url": evil, "size_mb": 500}));
    expect_rule(&d, Deny, R::RuleDeny, 11);
    let d = research("browser/download", json!({"url": evil, "size_mb": 5}));
    expect(&d, Deny, R::DefaultDeny);
}

#[test]
fn deny_wins_over_allow_and_no_block_means_no_restriction() {
    let src = r#"
agent "strict" {
  default permit
  egress { allow = ["*.example.com"]; deny = ["bad.example.com"] }
}
agent "denylist" {
  default permit
  egress { deny = ["*.evil.io"] }
}
agent "open" {
  default permit
}
"#;
    let h = harness(src);
    let call = |agent: &str, url: &str| h.decide(agent, "http/get", json!({ "url": url }));
    permitted(&call("strict", "https://good.example.com/"));
    expect(
        &call("strict", "https://bad.example.com/"),
        Deny,
        R::EgressDenied,
    );
    expect(&call("strict", "https://other.org/"), Deny, R::EgressDenied);
    permitted(&call("denylist", "https://other.org/"));
    expect(
        &call("denylist", "https://a.evil.io/"),
        Deny,
        R::EgressDenied,
    );
    permitted(&call("denylist", "https://evil.io/"));
    permitted(&call("open", "https://anything.example/"));
    permitted(&call("open", "not even a url"));
}

// ---- redaction ----

const PAYMENTS: &str = r#"
agent "payments" {
  default deny
  rules {
    permit stripe/charge if amount < $1000
    defer  stripe/charge if amount >= $1000
    deny   stripe/charge if card_number == "0000"
  }
  redact stripe/charge args: ["card_number", "cvv", "card.holder", "missing.path"]
  redact stripe/* args: ["api_key"]
  redact other/tool args: ["amount"]
}
"#;

fn key() -> RedactionKey {
    RedactionKey::from_bytes(REDACTION_KEY)
}

fn token(v: &Value) -> Value {
    json!({ "redacted": redaction_of(v, &key()) })
}

fn digest_of(args: &Value) -> String {
    let text = serde_json_canonicalizer::to_string(args).unwrap();
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn charge_args() -> Value {
    json!({
        "amount": 250,
        "currency": "usd",
        "card_number": "4242424242424242",
        "cvv": "123",
        "card": {"holder": "Ada Lovelace", "exp": "12/30"},
        "api_key": "sk_live_abcdef"
    })
}

#[test]
fn recorded_args_hold_tokens_never_values() {
    let h = harness(PAYMENTS);
    let args = charge_args();
    let d = h.decide("payments", "stripe/charge", args.clone());
    permitted(&d);
    let expected = json!({
        "amount": 250,
        "currency": "usd",
        "card_number": token(&json!("4242424242424242")),
        "cvv": token(&json!("123")),
        "card": {"holder": token(&json!("Ada Lovelace")), "exp": "12/30"},
        "api_key": token(&json!("sk_live_abcdef"))
    });
    assert_eq!(d.recorded_args.to_value(), expected);
    // Recorded as the RFC 8785 text of the redacted arguments, byte for byte.
    assert_eq!(
        d.recorded_args.as_str(),
        serde_json_canonicalizer::to_string(&expected).unwrap()
    );
    let mut redacted: Vec<&str> = d.redacted.iter().map(|p| &**p).collect();
    redacted.sort();
    assert_eq!(
        redacted,
        vec!["api_key", "card.holder", "card_number", "cvv"]
    );
    let text = serde_json::to_string(&d).unwrap();
    for secret in ["4242424242424242", "Ada Lovelace", "sk_live_abcdef"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // Each token is `hmac-sha256:` and 64 lowercase hex digits.
    let recorded = d.recorded_args.to_value();
    let t = recorded["cvv"]["redacted"].as_str().unwrap();
    let hex = t.strip_prefix("hmac-sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    // Equal values give equal tokens (auditors test equality); different values do not.
    let mut other = args.clone();
    other["cvv"] = json!("124");
    let d2 = h.decide("payments", "stripe/charge", other);
    assert_eq!(
        d2.recorded_args.to_value()["card_number"],
        d.recorded_args.to_value()["card_number"]
    );
    assert_ne!(
        d2.recorded_args.to_value()["cvv"],
        d.recorded_args.to_value()["cvv"]
    );
}

#[test]
fn redaction_applies_whatever_the_decision() {
    let h = harness(PAYMENTS);
    let mut big = charge_args();
    big["amount"] = json!(5000);
    let mut bad = charge_args();
    bad["amount"] = json!("5000");
    let decisions = [
        h.decide("payments", "stripe/charge", big),
        h.decide("payments", "stripe/charge", bad),
        h.decide(
            "payments",
            "stripe/refund",
            json!({"api_key": "sk_live_abcdef"}),
        ),
    ];
    expect(&decisions[0], Defer, R::RuleDefer);
    expect(&decisions[1], Deny, R::EvalError);
    expect(&decisions[2], Deny, R::DefaultDeny);
    for d in &decisions {
        let text = serde_json::to_string(d).unwrap();
        assert!(!text.contains("sk_live_abcdef"), "{text}");
        assert!(!text.contains("4242424242424242"), "{text}");
        assert!(d.redacted.iter().any(|p| &**p == "api_key"));
    }
    // A stopped agent's call is recorded redacted too.
    h.engine.state().set_killed(Some("payments"), true);
    let d = h.decide("payments", "stripe/charge", charge_args());
    expect(&d, Deny, R::KillSwitch);
    assert_eq!(
        d.recorded_args.to_value()["card_number"],
        token(&json!("4242424242424242"))
    );
}

#[test]
fn redaction_follows_the_tool_pattern_and_whole_values() {
    let h = harness(PAYMENTS);
    // `card_number` is redacted only for stripe/charge; `api_key` for every stripe tool.
    let d = h.decide(
        "payments",
        "stripe/refund",
        json!({"card_number": "4111", "api_key": "k"}),
    );
    assert_eq!(d.recorded_args.to_value()["card_number"], json!("4111"));
    assert_eq!(d.recorded_args.to_value()["api_key"], token(&json!("k")));
    assert_eq!(d.redacted, [Arc::from("api_key")]);
    // A whole object or list is replaced, with the token of its canonical form.
    let d = h.decide(
        "payments",
        "stripe/charge",
        json!({"amount": 1, "cvv": {"b": [1, 2], "a": "x"}}),
    );
    assert_eq!(
        d.recorded_args.to_value()["cvv"],
        token(&json!({"a": "x", "b": [1, 2]}))
    );
    // Numbers are redacted like strings.
    let d = h.decide("payments", "other/tool", json!({"amount": 12345}));
    assert_eq!(
        d.recorded_args.to_value(),
        json!({"amount": token(&json!(12345))})
    );
    assert!(!serde_json::to_string(&d).unwrap().contains("12345"));
    // Absent paths are not errors and are not listed.
    let d = h.decide("payments", "stripe/charge", json!({"amount": 1}));
    permitted(&d);
    assert!(d.redacted.is_empty());
    assert_eq!(d.recorded_args.to_value(), json!({"amount": 1}));
}

#[test]
fn redacted_fields_are_still_evaluated_on_their_real_value() {
    let h = harness(PAYMENTS);
    let mut args = charge_args();
    args["card_number"] = json!("0000");
    args["amount"] = json!(5000);
    // The deny on the real card number is tried only after the defer: first match wins.
    expect_rule(
        &h.decide("payments", "stripe/charge", args.clone()),
        Defer,
        R::RuleDefer,
        line_of(PAYMENTS, "defer  stripe/charge"),
    );
    let d = h.decide(
        "payments",
        "stripe/charge",
        json!({"card_number": "0000", "amount": null}),
    );
    expect_rule(
        &d,
        Deny,
        R::RuleDeny,
        line_of(PAYMENTS, "deny   stripe/charge"),
    );
    assert!(!serde_json::to_string(&d).unwrap().contains("\"0000\""));
}

#[test]
fn args_digest_is_of_the_canonical_unredacted_args() {
    let h = harness(PAYMENTS);
    let args = charge_args();
    let d = h.decide("payments", "stripe/charge", args.clone());
    assert_eq!(d.args_digest, digest_of(&args));
    assert_ne!(d.args_digest, digest_of(&d.recorded_args.to_value()));
    // Key order, whitespace and number spelling do not change the digest.
    let reordered: Value = serde_json::from_str(
        r#"{ "api_key":"sk_live_abcdef", "card":{"exp":"12/30","holder":"Ada Lovelace"},
             "cvv":"123", "card_number":"4242424242424242", "currency":"usd", "amount":250.0 }"#,
    )
    .unwrap();
    let d2 = h.decide("payments", "stripe/charge", reordered);
    assert_eq!(d2.args_digest, d.args_digest);
    // Any change to a redacted value changes the digest, though the record's shape is equal.
    let mut other = args.clone();
    other["cvv"] = json!("999");
    let d3 = h.decide("payments", "stripe/charge", other);
    assert_ne!(d3.args_digest, d.args_digest);
    // Absent and null args are both `{}`.
    let empty = digest_of(&json!({}));
    assert_eq!(
        h.decide("payments", "stripe/charge", Value::Null)
            .args_digest,
        empty
    );
    assert_eq!(
        h.decide("payments", "stripe/charge", json!({})).args_digest,
        empty
    );
}
