//! Where a stack keeps its state: the conventions the daemon and every command share.
//!
//! ```text
//! <stack>/governance.fms
//! <stack>/.faramesh/data/faramesh.db          the store (runtime `data_dir` moves it)
//! <stack>/.faramesh/data/chain                 this stack's chain id
//! <stack>/.faramesh/data/keys/audit.key(.pub)  checkpoint signing key (0600) and verifier key
//! <stack>/.faramesh/data/keys/dev-*.pub        verifier keys of `faramesh dev` runs
//! <stack>/.faramesh/data/keys/redaction.key    HMAC key of redaction tokens (0600)
//! <stack>/.faramesh/data/keys/operator.token   bearer token of the HTTP API's operator (0600)
//! <stack>/.faramesh/run/faramesh.sock          agent socket (0660; FARAMESH_SOCKET or `socket`)
//! <stack>/.faramesh/run/admin.sock             operator socket (0600)
//! <stack>/.faramesh/run/daemon.json            the running daemon: pid, addresses, version
//! <stack>/.faramesh/run/daemon.log             its log when started in the background
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// `<stack>/.faramesh/data`: the default `data_dir`.
pub fn default_data_dir(stack: &Path) -> PathBuf {
    stack.join(".faramesh").join("data")
}

/// `<stack>/.faramesh/run`: sockets and the run file.
pub fn run_dir(stack: &Path) -> PathBuf {
    stack.join(".faramesh").join("run")
}

pub fn default_socket(stack: &Path) -> PathBuf {
    run_dir(stack).join("faramesh.sock")
}

pub fn admin_socket(stack: &Path) -> PathBuf {
    run_dir(stack).join("admin.sock")
}

pub fn run_file(stack: &Path) -> PathBuf {
    run_dir(stack).join("daemon.json")
}

pub fn log_file(stack: &Path) -> PathBuf {
    run_dir(stack).join("daemon.log")
}

pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

/// The stack's checkpoint signing key; its verifier key is beside it, `.pub`.
pub fn audit_key(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("audit.key")
}

pub fn redaction_key(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("redaction.key")
}

pub fn operator_token(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("operator.token")
}

pub fn chain_file(data_dir: &Path) -> PathBuf {
    data_dir.join("chain")
}

/// The JSON lines `faramesh dev`'s audit sink writes.
pub fn dev_audit_log(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-audit.jsonl")
}

/// Creates `path` with mode 0600 holding `bytes`, unless it exists; returns its contents.
pub fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = make()?;
    match owner_only().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(bytes)
        }
        // Another process made it first: theirs stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

fn owner_only() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.mode(0o600);
    o
}

/// Random bytes from the OS.
pub fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(b)
}
