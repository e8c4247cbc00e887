//! The audit log (SPEC §6): every decision becomes a Decision Provenance Record, sealed into a
//! hash chain and into an RFC 6962 Merkle tree whose roots are signed as C2SP checkpoints, so
//! that changing, dropping, reordering or truncating records is detectable offline.
//!
//! - [`record`]: the DPR, its canonical (RFC 8785) body and its domain-separated hash.
//! - [`chain`]: sealing drafts into linked records and emitting checkpoints.
//! - [`merkle`]: tree hashes, inclusion and consistency proofs.
//! - [`note`]: signed notes and checkpoints, the [`note::Signer`] trait and Ed25519 keys.
//! - [`verify`]: the offline verifier over stored records and checkpoints.
//! - [`bundle`]: self-contained inclusion-proof bundles.

pub mod bundle;
pub mod chain;
mod jcs;
pub mod merkle;
pub mod note;
pub mod record;
mod swar;
pub mod time;
pub mod verify;
