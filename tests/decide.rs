//! `faramesh decide` end to end: one decision as JSON, with its rule and trace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

fn decide(args: &[&str]) -> Value {
    let scene = repo_root().join("examples/support-stack");
    let mut all = vec![
        "decide",
        "--policy",
        scene.to_str().unwrap(),
        "--agent",
        "support-bot",
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_small_refund_is_permitted_by_its_rule() {
    let d = decide(&[
        "--tool",
        "stripe/refund",
        "--args",
        r#"{"amount": 80, "customer": {"email": "a@b.c"}}"#,
    ]);
    assert_eq!(d["effect"], "permit");
    assert_eq!(d["reason_code"], "RULE_PERMIT");
    assert!(
        d["rule_ref"]
            .as_str()
            .unwrap()
            .starts_with("governance.fms:")
    );
    assert_eq!(
        d["rule_line"],
        d["trace"].as_array().unwrap().last().unwrap()["line"]
    );
    assert!(d["args_digest"].as_str().unwrap().starts_with("sha256:"));
    let recorded = d["recorded_args"].to_string();
    assert!(
        !recorded.contains("a@b.c"),
        "the e-mail is redacted: {recorded}"
    );
    assert!(recorded.contains("hmac-sha256:"), "{recorded}");
    assert_eq!(d["credential"]["provider"], "vault");
}

#[test]
fn a_large_refund_is_deferred_and_a_missing_amount_falls_to_the_default() {
    let d = decide(&["--tool", "stripe/refund", "--args", r#"{"amount": 8000}"#]);
    assert_eq!(d["effect"], "defer");
    assert_eq!(d["reason_code"], "RULE_DEFER");
    let d = decide(&["--tool", "stripe/refund", "--args", "{}"]);
    assert_eq!(d["effect"], "deny");
    assert_eq!(d["reason_code"], "DEFAULT_DENY");
    let outcomes: Vec<&Value> = d["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["outcome"])
        .collect();
    assert!(
        outcomes.iter().all(|o| *o == "condition_unknown"),
        "{outcomes:?}"
    );
}

#[test]
fn a_type_error_denies_with_eval_error() {
    let d = decide(&["--tool", "stripe/refund", "--args", r#"{"amount": "80"}"#]);
    assert_eq!(d["effect"], "deny");
    assert_eq!(d["reason_code"], "EVAL_ERROR");
    assert!(d["reason"].as_str().unwrap().contains("amount"), "{d}");
}

#[test]
fn unknown_agents_and_malformed_requests_are_denied() {
    let scene = repo_root().join("examples/support-stack");
    let out = run(&[
        "decide",
        "--policy",
        scene.to_str().unwrap(),
        "--agent",
        "nobody",
        "--tool",
        "x",
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["reason_code"], "UNKNOWN_AGENT");
    let d = decide(&["--tool", "search_docs", "--args", r#"{"q": "a\u0000b"}"#]);
    assert_eq!(d["effect"], "deny");
    assert_eq!(d["reason_code"], "MALFORMED_REQUEST");
    assert!(d["reason"].as_str().unwrap().contains("NUL"), "{d}");
}
