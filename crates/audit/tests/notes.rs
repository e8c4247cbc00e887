//! Signed notes and checkpoints in the C2SP formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::note::{Checkpoint, LocalKey, NoteError, Signer, VerifierKey, sign_note};
use audit::record::Hash;

// The example key and note of golang.org/x/mod/sumdb/note (the reference implementation of
// C2SP signed-note): our keys, key IDs and signatures must be byte-for-byte the same.
const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn matches_the_reference_implementation() {
    let key = LocalKey::from_text(SKEY).unwrap();
    assert_eq!(key.verifier().to_text(), VKEY);
    assert_eq!(key.to_text(), SKEY);
    assert_eq!(sign_note(TEXT, &key).unwrap(), SIGNED);
    let vk = VerifierKey::from_text(VKEY).unwrap();
    assert_eq!(vk.open(SIGNED).unwrap(), TEXT);
}

#[test]
fn altered_notes_and_other_keys_are_refused() {
    let vk = VerifierKey::from_text(VKEY).unwrap();
    let altered = SIGNED.replacen("cryptography", "cryptographY", 1);
    assert_eq!(
        vk.open(&altered),
        Err(NoteError::BadSignature("PeterNeumann".into()))
    );
    let other = LocalKey::generate("PeterNeumann").unwrap();
    let forged = sign_note(TEXT, &other).unwrap();
    assert!(matches!(vk.open(&forged), Err(NoteError::Unsigned { .. })));
    assert!(
        VerifierKey::from_text(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err()
    );
    assert!(vk.open("no signatures here\n").is_err());
}

#[test]
fn checkpoints_round_trip_and_bind_every_line() {
    let key = LocalKey::generate("faramesh-test").unwrap();
    let cp = Checkpoint {
        origin: Checkpoint::origin_of("chain-1"),
        size: 2048,
        root: Hash([7; 32]),
        time_ms: 1_795_251_600_000,
    };
    let note = cp.sign(&key).unwrap();
    assert!(note.starts_with("faramesh/audit/chain-1\n2048\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\ntime 2026-11-21T09:00:00.000Z\n\n\u{2014} faramesh-test "), "{note}");
    assert_eq!(Checkpoint::open(&note, &key.verifier()).unwrap(), cp);
    let bigger = note.replacen("\n2048\n", "\n2049\n", 1);
    assert!(Checkpoint::open(&bigger, &key.verifier()).is_err());
}

#[test]
fn key_files_are_private_and_reloaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/audit.key");
    let a = LocalKey::load_or_create(&path, "stack").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = LocalKey::load_or_create(&path, "stack").unwrap();
    assert_eq!(a.verifier(), b.verifier());
    let public = std::fs::read_to_string(audit::note::public_path(&path)).unwrap();
    assert_eq!(VerifierKey::from_text(&public).unwrap(), a.verifier());
}
