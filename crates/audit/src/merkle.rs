//! The RFC 6962 (§2.1) Merkle tree over the log: leaf `i` is the hash of record `i`
//! (`seq` = i + 1), hashed as `SHA-256(0x00 || record hash)`; interior nodes are
//! `SHA-256(0x01 || left || right)`. Proofs follow RFC 6962 §2.1.1–2.1.2 and are checked with
//! the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::generic_array::typenum::U64;
use sha2::{Digest, Sha256};

use crate::record::Hash;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 of blocks already padded: leaves and nodes have fixed lengths, so their padding is
/// written once here instead of by a streaming hasher on every call.
fn digest_padded(blocks: &[GenericArray<u8, U64>]) -> Hash {
    let mut state = IV;
    sha2::compress256(&mut state, blocks);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    Hash(out)
}

pub fn leaf_hash(record_hash: &Hash) -> Hash {
    // 0x00 || hash: 33 bytes, one block with its padding and bit length (264).
    let mut block = GenericArray::<u8, U64>::default();
    block[1..33].copy_from_slice(&record_hash.0);
    block[33] = 0x80;
    block[62..].copy_from_slice(&264u16.to_be_bytes());
    digest_padded(std::slice::from_ref(&block))
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // 0x01 || left || right: 65 bytes, two blocks with the padding and bit length (520).
    let mut blocks = [GenericArray::<u8, U64>::default(); 2];
    blocks[0][0] = 1;
    blocks[0][1..33].copy_from_slice(&left.0);
    blocks[0][33..].copy_from_slice(&right.0[..31]);
    blocks[1][0] = right.0[31];
    blocks[1][1] = 0x80;
    blocks[1][62..].copy_from_slice(&520u16.to_be_bytes());
    digest_padded(&blocks)
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// A tree grown one leaf at a time, holding only the roots of its perfect subtrees (at most
/// 64), so appending costs one leaf hash and on average one node hash.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a peak of equal height to merge with.
        while size & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                node = node_hash(&left, &node);
            }
            size >>= 1;
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The tree head: RFC 6962's MTH over every leaf so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => empty_root(),
            Some(last) => peaks.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// MTH over leaf hashes (RFC 6962 §2.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The audit path of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1), bottom up.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_into(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path_into(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// The proof that the tree of the first `old_size` leaves is a prefix of the tree of `leaves`
/// (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks an audit path (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-padded hashes are SHA-256 of the RFC 6962 inputs.
    #[test]
    fn leaf_and_node_hashes_are_sha256_of_their_inputs() {
        let a = Hash(Sha256::digest(b"a").into());
        let b = Hash(Sha256::digest(b"b").into());
        let leaf: [u8; 32] = Sha256::new()
            .chain_update([0])
            .chain_update(a.0)
            .finalize()
            .into();
        assert_eq!(leaf_hash(&a), Hash(leaf));
        let node: [u8; 32] = Sha256::new()
            .chain_update([1])
            .chain_update(a.0)
            .chain_update(b.0)
            .finalize()
            .into();
        assert_eq!(node_hash(&a, &b), Hash(node));
    }
}
