//! `faramesh check` end to end: the real binary on the shared corpus and on the project's own
//! fixtures. Each invalid file must fail at the line, and with the words, its EXPECTED.json gives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn assert_valid(policy: &Path) {
    let out = run(&["check", &policy.to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} should check clean:\n{}",
        policy.display(),
        stdout(&out)
    );
}

/// Runs every file of an EXPECTED.json and checks exit code, line and wording.
fn assert_expected_failures(dir: &Path) -> usize {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("EXPECTED.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    let on_disk = files_with(dir, ".fms");
    assert_eq!(
        files.len(),
        on_disk.len(),
        "every invalid file has an expectation in {}",
        dir.display()
    );
    for (name, want) in files {
        let path = dir.join(name);
        let out = run(&["check", "--format", "json", &path.to_string_lossy()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} must exit 1:\n{}",
            stdout(&out)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let lines: Vec<u64> = match &want["line"] {
            Value::Array(a) => a.iter().map(|l| l.as_u64().unwrap()).collect(),
            l => vec![l.as_u64().unwrap()],
        };
        let mention = want["mentions"].as_str().unwrap().to_lowercase();
        let found = report["diagnostics"].as_array().unwrap().iter().any(|d| {
            d["severity"] == "error"
                && lines.contains(&d["line"].as_u64().unwrap_or(0))
                && d["message"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains(&mention)
        });
        assert!(
            found,
            "{name}: no error on line {lines:?} mentioning {mention:?}; got:\n{:#}",
            report["diagnostics"]
        );
    }
    files.len()
}

#[test]
fn shared_corpus_policies_check_clean() {
    let Some(corpus) = shared_corpus() else {
        return;
    };
    let policies = files_with(&corpus.join("policies"), ".fms");
    assert!(policies.len() >= 10, "the corpus has its policies");
    for p in policies {
        assert_valid(&p);
    }
}

#[test]
fn shared_corpus_invalid_files_fail_where_expected() {
    let Some(corpus) = shared_corpus() else {
        return;
    };
    assert!(assert_expected_failures(&corpus.join("invalid")) >= 16);
}

#[test]
fn own_valid_fixtures_and_examples_check_clean() {
    let mut policies = files_with(&fixtures().join("valid"), ".fms");
    policies.extend(files_with(&fixtures().join("valid"), ".fms.yaml"));
    policies.extend(files_with(&fixtures().join("valid"), ".fms.json"));
    assert!(policies.len() >= 5);
    for p in policies {
        assert_valid(&p);
    }
    for stack in ["support-stack", "flat-rules"] {
        let out = faramesh()
            .env("VAULT_TOKEN", "set-for-the-test")
            .args([
                "check",
                "--strict",
                &repo_root().join("examples").join(stack).to_string_lossy(),
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "examples/{stack}:\n{}",
            stdout(&out)
        );
    }
}

#[test]
fn own_invalid_fixtures_fail_where_expected() {
    assert!(assert_expected_failures(&fixtures().join("invalid")) >= 12);
}

#[test]
fn one_run_reports_every_error_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("governance.fms");
    std::fs::write(
        &policy,
        "agent \"a\" {\n  default deny\n  rules {\n    permitt x\n    permit y if amount < \"5\"\n    deny z if (a\n    permit w if name matches \"[\"\n  }\n  budget daily { max $5; warn_at 2 }\n  rate_limit \"q\": 5 minute\n}\n",
    )
    .unwrap();
    let out = run(&["check", "--format", "json", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<u64> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| d["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![4, 5, 6, 7, 9, 10], "{report:#}");
}

#[test]
fn text_output_names_file_line_column_code_and_help() {
    let Some(corpus) = shared_corpus() else {
        return;
    };
    let file = corpus.join("invalid/unknown-block.fms");
    let out = run(&["check", &file.to_string_lossy()]);
    let text = stdout(&out);
    let header = format!(
        "{}:2:3: error[FPL203]: unknown block `rulez` in agent; did you mean `rules`?",
        file.display()
    );
    assert!(text.contains(&header), "{text}");
    assert!(
        text.contains("2 │   rulez {"),
        "the excerpt shows the line:\n{text}"
    );
    assert!(text.contains("help: "), "{text}");
}

#[test]
fn unresolved_import_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("governance.fms"),
        "import \"github.com/faramesh/faramesh-registry/frameworks/nope@9.9.9\"\nagent \"a\" {\n  default deny\n}\n",
    )
    .unwrap();
    let out = run(&["check", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("cannot resolve import"));
    let out = faramesh()
        .env_remove("FARAMESH_REGISTRY_ROOT")
        .args(["check", &dir.path().to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("FARAMESH_REGISTRY_ROOT"));
}

#[test]
fn warnings_fail_only_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("governance.fms"),
        "agent \"a\" {\n  rules {\n    permit x\n  }\n}\n",
    )
    .unwrap();
    let path = dir.path().to_string_lossy().to_string();
    let out = run(&["check", &path]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("warning[FPL704]"));
    assert_eq!(run(&["check", "--strict", &path]).status.code(), Some(3));
}

/// A registry with one policy at `name/version`, and a stack that imports it.
struct ImportSetup {
    registry: tempfile::TempDir,
    stack: tempfile::TempDir,
}

impl ImportSetup {
    fn new(name: &str, version: &str, body: &str, stack_policy: &str) -> ImportSetup {
        let registry = tempfile::tempdir().unwrap();
        let lib = registry.path().join(name).join(version);
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("policy.fms"), body).unwrap();
        let stack = tempfile::tempdir().unwrap();
        std::fs::write(stack.path().join("governance.fms"), stack_policy).unwrap();
        ImportSetup { registry, stack }
    }

    fn library(&self, name: &str, version: &str) -> std::path::PathBuf {
        self.registry
            .path()
            .join(name)
            .join(version)
            .join("policy.fms")
    }

    fn check(&self, extra: &[&str]) -> std::process::Output {
        faramesh()
            .env("FARAMESH_REGISTRY_ROOT", self.registry.path())
            .arg("check")
            .args(extra)
            .arg(self.stack.path())
            .output()
            .unwrap()
    }
}

fn trust_block(registry: &str, key: &ed25519_dalek::SigningKey) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "trust {{\n  key \"{registry}\" ed25519:{}\n}}\n",
        b64.encode(key.verifying_key().to_bytes())
    )
}

#[test]
fn imports_merge_under_local_content_and_an_imported_deny_bang_is_enforced_statically() {
    let setup = ImportSetup::new(
        "example.org/acme/policies/guard",
        "1.0.0",
        "agent \"ops\" {\n  rules {\n    deny! shell/*\n  }\n}\n",
        "import \"example.org/acme/policies/guard@1.0.0\"\nagent \"ops\" {\n  default deny\n  rules {\n    permit shell/ls\n  }\n}\n",
    );
    let out = setup.check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("governance.fms:5:5: error[FPL701]"), "{text}");
    assert!(text.contains("deny! shell/*"), "{text}");
}

/// A declared trust key makes the signature mandatory, and a valid one removes the warning.
#[test]
fn trusted_imports_are_verified() {
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let body = "runtime {\n  approval_ttl = 1h\n}\n";
    let setup = ImportSetup::new(
        "example.org/acme/policies/base",
        "1.2.3",
        body,
        &format!(
            "import \"example.org/acme/policies/base@1.2.3\"\n{}agent \"a\" {{\n  default deny\n}}\n",
            trust_block("example.org/acme", &key)
        ),
    );
    let library = setup.library("example.org/acme/policies/base", "1.2.3");

    let missing = setup.check(&["--strict"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stdout(&missing));
    assert!(
        stdout(&missing).contains("error[FPL405]"),
        "{}",
        stdout(&missing)
    );

    let sig =
        base64::engine::general_purpose::STANDARD.encode(key.sign(body.as_bytes()).to_bytes());
    std::fs::write(
        library.with_extension("fms.sig"),
        format!("ed25519:{sig}\n"),
    )
    .unwrap();
    let good = setup.check(&["--strict"]);
    assert_eq!(good.status.code(), Some(0), "{}", stdout(&good));

    std::fs::write(&library, "runtime {\n  approval_ttl = 9999h\n}\n").unwrap();
    let tampered = setup.check(&["--strict"]);
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        stdout(&tampered).contains("signature does not match"),
        "{}",
        stdout(&tampered)
    );
}

/// A key for `example.org/acm` says nothing about `example.org/acme`: registries match on whole
/// path segments, and the most specific one decides.
#[test]
fn trust_keys_match_whole_registry_segments() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let setup = ImportSetup::new(
        "example.org/acme/policies/base",
        "1.0.0",
        "runtime {\n  approval_ttl = 1h\n}\n",
        &format!(
            "import \"example.org/acme/policies/base@1.0.0\"\n{}agent \"a\" {{\n  default deny\n}}\n",
            trust_block("example.org/acm", &key)
        ),
    );
    let out = setup.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("warning[FPL403]"),
        "unsigned, not verified by a sibling's key: {}",
        stdout(&out)
    );
}

#[test]
fn json_output_is_machine_readable() {
    let Some(corpus) = shared_corpus() else {
        return;
    };
    let out = run(&[
        "check",
        "--format",
        "json",
        &corpus.join("invalid/bad-regex.fms").to_string_lossy(),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["exit_code"], 1);
    let d = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "FPL601")
        .unwrap();
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(37))
    );
    assert!(d["help"].as_str().unwrap().contains("RE2"));
}

/// YAML and JSON findings have no line to point at, so their messages name the place.
#[test]
fn yaml_findings_say_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("governance.fms.yaml");
    std::fs::write(
        &policy,
        "agents:\n  - id: bot\n    default: deny\n    rules:\n      - effect: permit\n        tool: x\n        if: amount < \"5\"\n    budgets:\n      - window: daily\n        max: $5\n        warn_at: 3\n",
    )
    .unwrap();
    let out = run(&["check", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("(in agent `bot`, rule 1 (`permit x`))"),
        "{text}"
    );
    assert!(text.contains("(in agent `bot`, budget daily)"), "{text}");
}
