//! Sealing records into a chain: each gets the next `seq`, the previous record's hash as its
//! `prev_hash`, its own hash, and a leaf in the chain's Merkle tree.

use crate::merkle::{Frontier, leaf_hash};
use crate::note::Checkpoint;
use crate::record::{Dpr, Hash, hash_body};

/// The default number of records between two signed checkpoints (SPEC §3.3 `checkpoint_every`).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1024;

/// The head of one chain: what sealing the next record needs.
#[derive(Debug, Clone)]
pub struct Chain {
    id: String,
    head: Hash,
    tree: Frontier,
}

/// A record sealed into its chain: the record, its body (what the store keeps and the hash
/// covers) and its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub dpr: Dpr,
    pub body: String,
    pub hash: Hash,
}

impl Chain {
    /// A chain with no records yet.
    pub fn new(id: &str) -> Chain {
        Chain {
            id: id.to_owned(),
            head: Hash::genesis(id),
            tree: Frontier::new(),
        }
    }

    /// A chain continuing after records whose hashes are `hashes`, in order.
    pub fn resume(id: &str, hashes: impl IntoIterator<Item = Hash>) -> Chain {
        let mut chain = Chain::new(id);
        for h in hashes {
            chain.tree.push(leaf_hash(&h));
            chain.head = h;
        }
        chain
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many records the chain holds; the last one's `seq`.
    pub fn len(&self) -> u64 {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.size() == 0
    }

    /// The hash of the last record (the genesis value before the first).
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Seals `dpr` as the next record.
    pub fn seal(&mut self, mut dpr: Dpr) -> Sealed {
        dpr.seq = self.tree.size() + 1;
        dpr.chain.clear();
        dpr.chain.push_str(&self.id);
        dpr.prev_hash = self.head;
        let body = dpr.body();
        let hash = hash_body(body.as_bytes());
        self.tree.push(leaf_hash(&hash));
        self.head = hash;
        Sealed { dpr, body, hash }
    }

    /// The tree head now, as a checkpoint body to sign.
    pub fn checkpoint(&self, time_ms: i64) -> Checkpoint {
        Checkpoint {
            origin: Checkpoint::origin_of(&self.id),
            size: self.tree.size(),
            root: self.tree.root(),
            time_ms,
        }
    }
}
