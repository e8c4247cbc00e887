//! `faramesh fmt` end to end: canonical, idempotent, lossless, and keeps comments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every policy the tests can reach: the shared corpus (when present), fixtures and examples.
fn policies() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(corpus) = shared_corpus() {
        out.extend(files_with(&corpus.join("policies"), ".fms"));
    }
    for suffix in [".fms", ".fms.yaml", ".fms.json"] {
        out.extend(files_with(&fixtures().join("valid"), suffix));
    }
    out.push(repo_root().join("examples/support-stack/governance.fms"));
    out.push(repo_root().join("examples/flat-rules/governance.fms"));
    out
}

fn fmt(path: &Path, extra: &[&str]) -> String {
    let mut args = vec!["fmt", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fmt {}: {}",
        path.display(),
        stderr(&out)
    );
    stdout(&out)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn formatting_is_idempotent_and_preserves_the_ast() {
    let dir = tempfile::tempdir().unwrap();
    for policy in policies() {
        let once = fmt(&policy, &["--to", "fpl"]);
        let formatted = write(dir.path(), "governance.fms", &once);
        assert_eq!(
            fmt(&formatted, &[]),
            once,
            "second fmt of {} changed it",
            policy.display()
        );
        // The JSON form is the AST without comments: it must not change through formatting.
        assert_eq!(
            fmt(&formatted, &["--to", "json"]),
            fmt(&policy, &["--to", "json"]),
            "formatting {} changed its meaning",
            policy.display()
        );
        let check = run(&["fmt", "--check", formatted.to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    }
}

#[test]
fn fpl_yaml_and_json_convert_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    for policy in policies() {
        let json = fmt(&policy, &["--to", "json"]);
        let yaml = fmt(&policy, &["--to", "yaml"]);
        let from_json = write(dir.path(), "p.fms.json", &json);
        let from_yaml = write(dir.path(), "p.fms.yaml", &yaml);
        assert_eq!(
            fmt(&from_yaml, &["--to", "json"]),
            json,
            "YAML round trip of {}",
            policy.display()
        );
        // FPL -> JSON -> FPL: the same AST (comments and blank lines are layout, not meaning).
        let back = write(dir.path(), "back.fms", &fmt(&from_json, &["--to", "fpl"]));
        assert_eq!(
            fmt(&back, &["--to", "json"]),
            json,
            "FPL -> JSON -> FPL of {}",
            policy.display()
        );
    }
}

#[test]
fn comments_survive_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let src = "# header\n\n# about the runtime\nruntime {\n  mode = \"enforce\" # trailing\n  # dangling in runtime\n}\n\nagent \"a\" { # after brace\n  # above default\n  default deny\n  rules {\n    # above the rule\n    permit x if a == 1 # beside the rule\n\n    deny y\n    # end of rules\n  }\n  # end of agent\n}\n# end of file\n";
    let p = write(dir.path(), "governance.fms", src);
    let out = fmt(&p, &[]);
    for c in [
        "# header",
        "# about the runtime",
        "# trailing",
        "# dangling in runtime",
        "# after brace",
        "# above default",
        "# above the rule",
        "# beside the rule",
        "# end of rules",
        "# end of agent",
        "# end of file",
    ] {
        assert_eq!(out.matches(c).count(), 1, "{c} is kept once in:\n{out}");
    }
    assert!(
        out.contains("permit x if a == 1  # beside the rule"),
        "{out}"
    );
    assert!(out.starts_with("# header\n\n"), "{out}");
}

#[test]
fn check_flag_reports_unformatted_files_without_changing_them() {
    let dir = tempfile::tempdir().unwrap();
    let messy = "agent   \"a\"{\n default deny\n rules{\n  allow x when a&&b\n }\n}\n";
    let p = write(dir.path(), "governance.fms", messy);
    let out = run(&["fmt", "--check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not in canonical form"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), messy);
    let canonical = repo_root().join("examples/support-stack");
    assert_eq!(
        run(&["fmt", "--check", canonical.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn write_rewrites_in_place_and_converts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "governance.fms",
        "agent \"a\"{\n default deny\n rules{ permit x when a&&b }\n}\n",
    );
    let stack = dir.path().to_str().unwrap();
    assert_eq!(run(&["fmt", "--write", stack]).status.code(), Some(0));
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(
        text,
        "agent \"a\" {\n  default deny\n\n  rules {\n    permit x if a and b\n  }\n}\n"
    );

    let out = run(&["fmt", "--write", "--to", "yaml", stack]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!p.exists(), "the converted file replaces the original");
    assert!(dir.path().join("governance.fms.yaml").exists());
    assert_eq!(run(&["check", stack]).status.code(), Some(0));
    assert_eq!(
        run(&["fmt", "--write", "--to", "fpl", stack]).status.code(),
        Some(0)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
}

#[test]
fn broken_policies_are_not_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "governance.fms",
        "agent \"a\" {\n  rules {\n    allowz x\n  }\n}\n",
    );
    let out = run(&["fmt", "--write", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown effect `allowz`"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_to_string(&p).unwrap().contains("allowz"));
}
