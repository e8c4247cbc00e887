//! A self-contained inclusion proof (`faramesh audit proof ID`): one record, its audit path
//! and the signed checkpoint it leads to, checkable with nothing but the verifier key.

use serde::{Deserialize, Serialize};

use crate::merkle::{leaf_hash, verify_inclusion};
use crate::note::{Checkpoint, VerifierKey};
use crate::record::{Hash, Stored};
use crate::verify::{Failure, Location};

pub const BUNDLE_FORMAT: &str = "faramesh-inclusion-proof/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// The full record, `hash` included.
    pub record: serde_json::Value,
    /// `seq - 1`.
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The audit path, bottom up (RFC 6962 §2.1.1).
    pub inclusion: Vec<Hash>,
    /// The signed checkpoint note whose root the path leads to.
    pub checkpoint: String,
    /// The verifier key that signed it (C2SP vkey text). Trust it only if it is the stack's.
    pub key: String,
}

/// What a bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub id: String,
    pub seq: u64,
    pub tree_size: u64,
    pub key_name: String,
    /// The key was the one the verifier was told to trust, not only the bundle's own.
    pub key_trusted: bool,
}

impl Bundle {
    /// Checks the record's hash, its path to the checkpoint's root and the checkpoint's
    /// signature, by `trusted` when given (else by the bundle's own key).
    pub fn verify(&self, trusted: Option<&VerifierKey>) -> Result<Proven, Failure> {
        let fail = |reason: String| Failure {
            at: Location::Record(self.leaf_index + 1),
            reason,
        };
        if self.format != BUNDLE_FORMAT {
            return Err(fail(format!("unknown bundle format `{}`", self.format)));
        }
        let stored = Stored::from_json(&self.record.to_string())
            .map_err(|e| fail(format!("the record cannot be read: {e}")))?;
        let seq = stored.dpr.seq;
        if stored.dpr.hash() != stored.hash {
            return Err(fail(
                "its contents do not match its hash: the record was changed".into(),
            ));
        }
        if seq != self.leaf_index + 1 {
            return Err(fail(format!(
                "the record is record {seq}, but the proof is for leaf {}",
                self.leaf_index
            )));
        }
        let own = VerifierKey::from_text(&self.key).map_err(|e| fail(e.to_string()))?;
        let key = trusted.unwrap_or(&own);
        let cp = Checkpoint::open(&self.checkpoint, key)
            .map_err(|e| fail(format!("checkpoint: {e}")))?;
        if cp.origin != Checkpoint::origin_of(&stored.dpr.chain) {
            return Err(fail(format!(
                "the checkpoint is for `{}`, not this record's chain",
                cp.origin
            )));
        }
        if cp.size != self.tree_size {
            return Err(fail(format!(
                "the checkpoint covers {} records, the proof {}",
                cp.size, self.tree_size
            )));
        }
        if !verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &leaf_hash(&stored.hash),
            &self.inclusion,
            &cp.root,
        ) {
            return Err(fail("the audit path does not lead to the signed root: the record is not in the log it claims".into()));
        }
        Ok(Proven {
            id: stored.dpr.id,
            seq,
            tree_size: self.tree_size,
            key_name: key.name.clone(),
            key_trusted: trusted.is_some(),
        })
    }
}
