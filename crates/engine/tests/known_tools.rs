//! What the policy lists at compile time for the tools it names (`CompiledAgent::known_tools`)
//! is only a shortcut: an engine whose agents list nothing, and so test every pattern and plan
//! every redaction at decision time, makes the very same decisions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{START, at, from_policy, unchecked_policy};
use proptest::prelude::*;
use serde_json::{Value, json};

const TOOLS: &[&str] = &["a/b", "a/c", "b/b", "a/b/c", "x", "q/r"];
const PATTERNS: &[&str] = &[
    "a/b", "a/c", "b/b", "a/b/c", "x", "a/*", "**", "a/**", "*/b", "**/c",
];
const PATHS: &[&str] = &["card", "card.number", "card.holder", "email", "x.y.z"];

#[derive(Debug, Clone)]
struct Policy {
    default: &'static str,
    rules: Vec<(&'static str, &'static str, Option<u32>)>,
    redactions: Vec<(&'static str, Vec<&'static str>)>,
    rates: Vec<(&'static str, u32)>,
}

impl Policy {
    fn text(&self) -> String {
        let mut t = format!("agent \"bot\" {{\n  default {}\n  rules {{\n", self.default);
        for (effect, pattern, below) in &self.rules {
            t.push_str(&format!("    {effect} {pattern}"));
            if let Some(n) = below {
                t.push_str(&format!(" if amount < {n}"));
            }
            t.push('\n');
        }
        t.push_str("  }\n");
        for (pattern, limit) in &self.rates {
            t.push_str(&format!("  rate_limit \"{pattern}\": {limit} per minute\n"));
        }
        for (pattern, paths) in &self.redactions {
            let paths: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
            t.push_str(&format!(
                "  redact {pattern} args: [{}]\n",
                paths.join(", ")
            ));
        }
        t.push_str("}\n");
        t
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    let pattern = || prop::sample::select(PATTERNS);
    let effect = prop::sample::select(&["permit", "deny", "defer", "deny!"][..]);
    (
        prop::sample::select(&["permit", "deny", "defer"][..]),
        prop::collection::vec((effect, pattern(), prop::option::of(0u32..20)), 0..6),
        prop::collection::vec((pattern(), prop::sample::subsequence(PATHS, 1..=3)), 0..4),
        prop::collection::vec((pattern(), 1u32..4), 0..3),
    )
        .prop_map(|(default, rules, redactions, rates)| Policy {
            default,
            rules,
            redactions,
            rates,
        })
}

fn args() -> impl Strategy<Value = Value> {
    (
        0u32..20,
        prop::option::of("[0-9]{4}"),
        prop::bool::ANY,
        prop::option::of("[a-z]{1,3}@x"),
    )
        .prop_map(|(amount, number, nested, email)| {
            let mut args = json!({ "amount": amount });
            if let Some(n) = number {
                args["card"] = if nested {
                    json!({ "number": n, "holder": "Ada" })
                } else {
                    json!(n)
                };
            }
            if let Some(e) = email {
                args["email"] = json!(e);
            }
            args
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn known_tools_decide_as_testing_every_pattern(
        p in policy(),
        calls in prop::collection::vec((prop::sample::select(TOOLS), args()), 1..8),
    ) {
        let text = p.text();
        let listed = from_policy(unchecked_policy(&text), &std::env::temp_dir(), at(START));
        let mut bare = unchecked_policy(&text);
        for agent in bare.agents.values_mut() {
            agent.known_tools.clear();
        }
        let tested = from_policy(bare, &std::env::temp_dir(), at(START));
        for (tool, args) in calls {
            let a = listed.decide("bot", tool, args.clone());
            let b = tested.decide("bot", tool, args);
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", text);
        }
    }
}
