//! Where a stack keeps its state: the daemon's conventions (`daemon::stack`), with the data
//! directory the running daemon uses, or the policy's `runtime { data_dir }`.

use std::path::{Path, PathBuf};

pub use daemon::stack::audit_key;

/// The stack's data directory: the running daemon's, else the policy's `data_dir`, else
/// `<stack>/.faramesh/data`.
pub fn data_dir(stack: &Path) -> PathBuf {
    if let Some(info) = daemon::server::RunInfo::read(stack) {
        return info.data_dir;
    }
    daemon::policy::load_policy(stack)
        .ok()
        .and_then(|p| p.runtime.data_dir)
        .map_or_else(|| daemon::stack::default_data_dir(stack), |d| stack.join(d))
}
