//! The Merkle tree against an independent RFC 6962 implementation (`ct-merkle`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::merkle::{
    Frontier, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use audit::record::Hash;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use proptest::prelude::*;

type Theirs = MemoryBackedTree<sha2_011::Sha256, [u8; 32]>;

fn records(n: usize, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            let mut h = [salt; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Hash(h)
        })
        .collect()
}

fn both(n: usize) -> (Vec<Hash>, Theirs) {
    let recs = records(n, 7);
    let mut theirs = Theirs::new();
    for r in &recs {
        theirs.push(r.0);
    }
    (recs.iter().map(leaf_hash).collect(), theirs)
}

fn flat(path: &[Hash]) -> Vec<u8> {
    path.iter().flat_map(|h| h.0).collect()
}

#[test]
fn roots_match_ct_merkle_for_every_size_up_to_300() {
    for n in 0..=300 {
        let (leaves, theirs) = both(n);
        let mut frontier = Frontier::new();
        for l in &leaves {
            frontier.push(*l);
        }
        let want = theirs.root();
        assert_eq!(
            root(&leaves).0.as_slice(),
            want.as_bytes().as_slice(),
            "size {n}"
        );
        assert_eq!(frontier.root(), root(&leaves), "frontier, size {n}");
    }
}

#[test]
fn inclusion_proofs_match_ct_merkle_and_verify() {
    for n in 1..=70 {
        let (leaves, theirs) = both(n);
        let r = root(&leaves);
        for i in 0..n {
            let ours = inclusion_proof(&leaves, i).unwrap();
            assert_eq!(
                flat(&ours),
                theirs.prove_inclusion(i).as_bytes(),
                "size {n} leaf {i}"
            );
            assert!(verify_inclusion(i as u64, n as u64, &leaves[i], &ours, &r));
            // Another leaf, another index, another size or a changed path must all fail.
            let other = leaves[(i + 1) % n];
            if n > 1 {
                assert!(!verify_inclusion(i as u64, n as u64, &other, &ours, &r));
                assert!(!verify_inclusion(
                    ((i + 1) % n) as u64,
                    n as u64,
                    &leaves[i],
                    &ours,
                    &r
                ));
            }
            if let Some(first) = ours.first() {
                let mut bad = ours.clone();
                bad[0] = Hash([first.0[0] ^ 1; 32]);
                assert!(!verify_inclusion(i as u64, n as u64, &leaves[i], &bad, &r));
            }
        }
    }
}

#[test]
fn consistency_proofs_match_ct_merkle_and_verify() {
    for n in 1..=70 {
        let (leaves, theirs) = both(n);
        let new_root = root(&leaves);
        for m in 1..=n {
            let ours = consistency_proof(&leaves, m).unwrap();
            if m < n {
                assert_eq!(
                    flat(&ours),
                    theirs.prove_consistency(n - m).as_bytes(),
                    "{m} -> {n}"
                );
            }
            let old_root = root(&leaves[..m]);
            assert!(
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &ours),
                "{m} -> {n}"
            );
            // A rewritten old tree is not a prefix of the new one.
            let mut forged = leaves[..m].to_vec();
            forged[m - 1] = Hash([9; 32]);
            assert!(
                !verify_consistency(m as u64, n as u64, &root(&forged), &new_root, &ours),
                "{m} -> {n}"
            );
        }
    }
}

proptest! {
    #[test]
    fn frontier_is_the_tree_head(n in 0usize..2000, salt in any::<u8>()) {
        let leaves: Vec<Hash> = records(n, salt).iter().map(leaf_hash).collect();
        let mut f = Frontier::new();
        for l in &leaves {
            f.push(*l);
        }
        prop_assert_eq!(f.size(), n as u64);
        prop_assert_eq!(f.root(), root(&leaves));
    }
}
