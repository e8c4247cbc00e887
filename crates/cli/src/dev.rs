//! `faramesh dev`: the in-process stubs of SPEC §10.

use std::sync::Arc;

use daemon::broker::Minter;

/// The dev secrets issuer.
pub fn minter() -> Option<Arc<dyn Minter>> {
    None
}
