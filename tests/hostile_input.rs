//! Hostile input never crashes `faramesh`: deep nesting, huge files, invalid UTF-8 and NUL
//! bytes each get a clear error and exit 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;

fn check_bytes(bytes: &[u8], name: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let out = run(&["check", p.to_str().unwrap()]);
    (out.status.code(), stdout(&out))
}

fn assert_error(bytes: &[u8], name: &str, mention: &str) {
    let (code, out) = check_bytes(bytes, name);
    assert_eq!(
        code,
        Some(1),
        "exit 1, not a crash; output:\n{}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.contains(mention),
        "mentions {mention:?}:\n{}",
        &out[..out.len().min(2000)]
    );
}

const DEEP: usize = 100_000;

#[test]
fn deeply_nested_parentheses() {
    let src = format!(
        "agent \"a\" {{\n  rules {{\n    permit x if {}a{}\n  }}\n}}\n",
        "(".repeat(DEEP),
        ")".repeat(DEEP)
    );
    assert_error(src.as_bytes(), "governance.fms", "nesting deeper than");
}

#[test]
fn deeply_nested_not_and_lists() {
    let src = format!(
        "agent \"a\" {{\n  rules {{\n    permit x if {}a\n  }}\n}}\n",
        "not ".repeat(DEEP)
    );
    assert_error(src.as_bytes(), "governance.fms", "nesting deeper than");
    let src = format!("runtime {{\n  mode = {}\n}}\n", "[".repeat(DEEP));
    assert_error(src.as_bytes(), "governance.fms", "nesting deeper than");
}

#[test]
fn deeply_nested_braces() {
    let src = format!("agent \"a\" {}\n", "{".repeat(DEEP));
    let (code, _) = check_bytes(src.as_bytes(), "governance.fms");
    assert_eq!(code, Some(1));
}

#[test]
fn deeply_nested_json_and_yaml() {
    let json = format!(
        "{{\"runtime\": {{\"mode\": {}1{}}}}}",
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    assert_error(
        json.as_bytes(),
        "governance.fms.json",
        "not a valid JSON policy",
    );
    let yaml = format!(
        "runtime:\n  mode: {}1{}\n",
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    assert_error(
        yaml.as_bytes(),
        "governance.fms.yaml",
        "not a valid YAML policy",
    );
    let expr = format!(
        "{{\"agents\": [{{\"id\": \"a\", \"rules\": [{{\"effect\": \"permit\", \"tool\": \"x\", \"if\": \"{}a{}\"}}]}}]}}",
        "(".repeat(DEEP),
        ")".repeat(DEEP)
    );
    assert_error(
        expr.as_bytes(),
        "governance.fms.json",
        "nesting deeper than",
    );
}

#[test]
fn a_ten_megabyte_file() {
    let line = "permit tool/x if amount < $5\n";
    let big = line.repeat(10 * 1024 * 1024 / line.len() + 1);
    assert_error(big.as_bytes(), "governance.fms", "limited to 8 MiB");
}

#[test]
fn many_errors_are_capped_not_endless() {
    let line = "permit x if (((\n";
    let src = line.repeat(100_000);
    let (code, out) = check_bytes(src.as_bytes(), "governance.fms");
    assert_eq!(code, Some(1));
    assert!(
        out.contains("more problems not shown"),
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
}

#[test]
fn invalid_utf8() {
    let mut bytes = b"agent \"a\" {\n  rules {\n    permit x if name == \"".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(b"\"\n  }\n}\n");
    assert_error(&bytes, "governance.fms", "governance.fms:3:");
    assert_error(&bytes, "governance.fms", "not valid UTF-8");
}

#[test]
fn nul_bytes() {
    let bytes = b"agent \"a\" {\n  default deny\x00\n}\n";
    assert_error(bytes, "governance.fms", "NUL byte");
    assert_error(b"\x00\x00\x00", "governance.fms", "NUL byte");
}

#[test]
fn a_missing_path_is_an_error_not_a_panic() {
    let out = run(&["check", Path::new("/nonexistent/stack").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("does not exist"));
}
