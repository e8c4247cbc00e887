//! Helpers shared by the end-to-end tests: the real `faramesh` binary and the corpora.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/corpus` (or `FARAMESH_SHARED_CORPUS`), when this checkout has one.
pub fn shared_corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("FARAMESH_SHARED_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/corpus"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no shared corpus at {}", dir.display());
        None
    }
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// The registry for imports: the shared corpus's, else the project's own.
pub fn registry() -> PathBuf {
    shared_corpus()
        .map(|c| c.join("registry"))
        .unwrap_or_else(|| fixtures().join("registry"))
}

pub fn faramesh() -> Command {
    let mut cmd = Command::cargo_bin("faramesh").expect("the faramesh binary is built");
    cmd.env("FARAMESH_REGISTRY_ROOT", registry())
        .env("NO_COLOR", "1");
    cmd
}

pub fn run(args: &[&str]) -> Output {
    faramesh().args(args).output().expect("faramesh runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files with the given suffix in a directory, sorted.
pub fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}
