//! `faramesh test` end to end: the corpus fixtures and the examples' fixtures pass, and a
//! failing case is reported with what was expected and what happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

/// The corpus's `globs.fmtest.json` gives every `rule_line` one less than the line the rule
/// stands on in `globs.fms` (whose header comment is two lines long). Its cases must fail on
/// `rule_line` alone, and by exactly that one line; every other corpus fixture must pass.
const GLOBS_ERRATUM: &str = "globs.fmtest.json";

#[test]
fn corpus_fixtures_pass() {
    let Some(corpus) = shared_corpus() else {
        return;
    };
    let fixtures = files_with(&corpus.join("policies"), ".fmtest.json");
    assert!(fixtures.len() >= 10);
    for f in fixtures {
        let out = run(&["test", f.to_str().unwrap()]);
        let text = stdout(&out);
        if f.ends_with(GLOBS_ERRATUM) {
            assert_only_off_by_one_lines(&f, &text);
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{}:\n{text}", f.display());
        assert!(text.ends_with(" passed, 0 failed\n"), "{text}");
    }
}

fn assert_only_off_by_one_lines(fixture: &std::path::Path, text: &str) {
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let with_lines = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["expect"]["rule_line"].is_u64())
        .count();
    let mut failures = 0;
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("rule_line:"))
    {
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(nums.len(), 2, "{line}");
        assert_eq!(
            nums[1],
            nums[0] + 1,
            "only off by the header's one line: {line}"
        );
        failures += 1;
    }
    let other_diffs = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("effect:") || l.starts_with("reason_code:") || l.starts_with("redacted:")
        })
        .count();
    assert_eq!(other_diffs, 0, "{text}");
    assert_eq!(failures, with_lines, "{text}");
    assert!(text.ends_with(&format!(
        "{} passed, {with_lines} failed\n",
        cases["cases"].as_array().unwrap().len() - with_lines
    )));
}

#[test]
fn example_fixtures_pass() {
    let out = run(&[
        "test",
        repo_root().join("examples/support-stack").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).ends_with(" passed, 0 failed\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn failing_cases_show_expected_and_actual() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("governance.fms"),
        "agent \"a\" {\n  default deny\n  rules {\n    permit pay if amount < $100\n  }\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.fmtest.json"),
        r#"{"policy": "governance.fms", "agent": "a", "cases": [
            {"name": "small", "tool": "pay", "args": {"amount": 5}, "expect": {"effect": "permit", "rule_line": 4}},
            {"name": "wrong on purpose", "tool": "pay", "args": {"amount": 500}, "expect": {"effect": "permit", "reason_code": "RULE_PERMIT"}}
        ]}"#,
    )
    .unwrap();
    let out = run(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("wrong on purpose"), "{text}");
    assert!(text.contains("effect: expected permit, got deny"), "{text}");
    assert!(
        text.contains("reason_code: expected RULE_PERMIT, got DEFAULT_DENY"),
        "{text}"
    );
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}
