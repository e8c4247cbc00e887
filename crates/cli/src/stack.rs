//! Where a stack keeps its state: the conventions every command (and the daemon) shares.

use std::path::{Path, PathBuf};

/// `<stack>/.faramesh/data`: the store file and the audit keys.
pub fn data_dir(stack: &Path) -> PathBuf {
    stack.join(".faramesh").join("data")
}

/// The stack's checkpoint signing key (mode 0600); its verifier key is beside it, `.pub`.
pub fn audit_key(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("audit.key")
}
