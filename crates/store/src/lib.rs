//! faramesh storage: the audit log (SPEC §6) written through group commit, approvals (§7),
//! kill switches, policy versions and the durable side of the decision state (§3.7).
//!
//! [`Store`] is the contract callers program against; [`sqlite::SqliteStore`] is the embedded
//! implementation (one file, `<data_dir>/faramesh.db`). The trait carries no SQLite semantics:
//! every record lives under its `chain` (one per daemon), so a PostgreSQL store shared by many
//! daemons can implement it unchanged (SPEC §13).
//!
//! - [`Store::append`] queues a DPR; a single writer seals it into the chain and commits many
//!   records with one fsync; the returned [`Ticket`] resolves with its `seq` and `hash`.
//! - Reads ([`AuditRead`]) serve `faramesh audit verify|export|tail|show|proof`.
//! - [`state::DurableState`] keeps the engine's hot path in memory and persists its changes in
//!   the writer's transactions.

mod error;
mod ticket;
mod types;

pub mod sqlite;
pub mod state;

use std::ops::ControlFlow;
use std::sync::Arc;

use audit::record::{Dpr, Hash};
use audit::verify::Row;

pub use error::StoreError;
pub use ticket::{Appended, Ticket};
pub use types::{
    Approval, ApprovalStatus, ApprovedCall, DEFAULT_APPROVAL_TTL_MS, Durability, Filter, Health,
    Kill, NewApproval, PolicyApplied, PolicyApply, PolicyVersion, Resolution, new_token,
};

/// A record as the audit commands read it: `seq`, `hash` and the stored body.
pub type Record = (u64, Hash, String);

/// Reads of one chain's audit log: what the verifier and the audit CLI need, and nothing that
/// writes. A reader never blocks the writer.
pub trait AuditRead: Send + Sync + std::fmt::Debug {
    /// The chain this handle reads (and, for a [`Store`], writes).
    fn chain_id(&self) -> &str;
    /// Streams `(seq, hash, body)` for `from_seq ..= to_seq` (to the end when `None`) in `seq`
    /// order, from one consistent snapshot, until `f` breaks.
    fn for_each_row(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        f: &mut dyn FnMut(Row<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;
    /// The hashes of records `1 ..= to_seq`, in order (for proofs and resuming a verifier).
    fn hashes(&self, to_seq: u64) -> Result<Vec<Hash>, StoreError>;
    /// Every signed checkpoint note of the chain, smallest tree size first.
    fn checkpoints(&self) -> Result<Vec<String>, StoreError>;
    /// The record with this DPR id.
    fn row_by_id(&self, id: &str) -> Result<Option<Record>, StoreError>;
    /// The smallest and largest `seq` whose record time lies in `from_ms ..= to_ms`.
    fn seq_range(
        &self,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Option<(u64, u64)>, StoreError>;
    /// Records matching `filter`, in `seq` order (newest first when `filter.newest_first`).
    fn query(&self, filter: &Filter) -> Result<Vec<Record>, StoreError>;
}

/// The whole store: the audit log and everything the daemon keeps besides it.
///
/// Methods that write are synchronous and return once the change is durable (as durable as
/// the configured [`Durability`] makes records). They block: from async code call them on a
/// blocking thread; [`Ticket`] can be awaited instead.
pub trait Store: AuditRead {
    /// Queues a record for the chain; the writer assigns `seq`, `chain` and `prev_hash`.
    fn append(&self, dpr: Dpr) -> Ticket;

    /// Stores a policy version, makes it the active one and writes its policy-change record
    /// (old and new version, who applied) into the chain, in one transaction.
    fn apply_policy(&self, apply: PolicyApply) -> Result<PolicyApplied, StoreError>;
    /// Makes a stored version active again (`faramesh rollback`), with its policy-change record.
    fn activate_policy(
        &self,
        version: &str,
        record_id: String,
        by: &str,
        now_ms: i64,
    ) -> Result<PolicyApplied, StoreError>;
    /// Stored versions, most recently applied first (no source text).
    fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError>;
    /// The source text of a stored version.
    fn policy_source(&self, version: &str) -> Result<Option<String>, StoreError>;

    /// The pending approval of this call (same agent, tool and `args_digest`), or a new one.
    fn request_approval(&self, new: NewApproval, now_ms: i64) -> Result<Approval, StoreError>;
    /// One approval as it stands at `now_ms` (a pending one past its expiry reads as expired).
    fn approval(&self, token: &str, now_ms: i64) -> Result<Option<Approval>, StoreError>;
    /// Approvals with this status (all when `None`), oldest first.
    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now_ms: i64,
    ) -> Result<Vec<Approval>, StoreError>;
    /// Approves or rejects a pending, unexpired approval, recording who and when.
    fn resolve_approval(
        &self,
        token: &str,
        resolution: Resolution,
        now_ms: i64,
    ) -> Result<Approval, StoreError>;
    /// Spends an approved, unexpired approval, once, on `call`: the same agent, tool and
    /// arguments digest as the call that was approved.
    fn consume_approval(
        &self,
        token: &str,
        call: &ApprovedCall,
        now_ms: i64,
    ) -> Result<Approval, StoreError>;
    /// Marks pending approvals past their expiry as expired; returns how many.
    fn expire_approvals(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Turns the kill switch of `agent` (every agent when `None`) on.
    fn kill(&self, agent: Option<&str>, by: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Turns it off.
    fn unkill(&self, agent: Option<&str>) -> Result<(), StoreError>;
    /// The switches that are on (`agent = None` is the global one).
    fn kills(&self) -> Result<Vec<Kill>, StoreError>;

    /// The engine's decision state: in memory, persisted behind the audit writes.
    fn state(&self) -> Arc<dyn engine::state::StateStore>;
    /// Whether the last write succeeded, and the last error.
    fn health(&self) -> Health;
    /// Flushes everything queued, signs a final checkpoint and stops the writer. Later writes
    /// fail with [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}
