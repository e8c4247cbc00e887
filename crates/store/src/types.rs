//! Plain data passed through [`crate::Store`].

use std::fmt;
use std::str::FromStr;

use audit::record::Hash;

use crate::StoreError;

/// SPEC §3.3 `approval_ttl` default: 24 h.
pub const DEFAULT_APPROVAL_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// SPEC §3.3 `durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A ticket resolves only once its record's transaction is on disk.
    #[default]
    Sync,
    /// A ticket resolves once its record is sealed; the transaction holding it reaches the disk
    /// within 10 ms. A crash loses at most the records of that window, as a suffix of the chain.
    Interval,
}

impl FromStr for Durability {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "sync" => Ok(Durability::Sync),
            "interval" => Ok(Durability::Interval),
            _ => Err(StoreError::Invalid(format!(
                "durability `{s}`: expected `sync` or `interval`"
            ))),
        }
    }
}

/// Which records [`crate::AuditRead::query`] returns. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub effect: Option<String>,
    pub agent: Option<String>,
    /// Record time, inclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only records with a larger `seq` (`audit tail --follow`).
    pub after_seq: Option<u64>,
    pub limit: Option<u64>,
    /// The last `limit` matches, newest first (`audit tail`).
    pub newest_first: bool,
}

/// Whether the store can write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// False since a write failed, until one succeeds again.
    pub healthy: bool,
    /// Transactions that failed since the store was opened.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// A kill switch that is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// `None`: every agent.
    pub agent: Option<String>,
    pub since_ms: i64,
    pub by: String,
}

/// SPEC §7 status of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Consumed,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Consumed => "consumed",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "rejected" => ApprovalStatus::Rejected,
            "expired" => ApprovalStatus::Expired,
            "consumed" => ApprovalStatus::Consumed,
            _ => return Err(StoreError::Corrupt(format!("approval status `{s}`"))),
        })
    }
}

/// A deferred call waiting for an operator (the fields SPEC §7 lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    pub agent: String,
    pub tool: String,
    /// Canonical arguments after redaction.
    pub args: String,
    pub args_digest: String,
    pub rule_ref: Option<String>,
    pub reason: Option<String>,
}

/// An approval as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub token: String,
    pub agent: String,
    pub tool: String,
    pub args: String,
    pub args_digest: String,
    pub rule_ref: Option<String>,
    pub reason: Option<String>,
    pub status: ApprovalStatus,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Who approved or rejected it, when, and why.
    pub approver: Option<String>,
    pub resolved_ms: Option<i64>,
    pub comment: Option<String>,
    pub consumed_ms: Option<i64>,
    /// The chain (daemon) that created it.
    pub chain: String,
}

/// The call an approval is spent on: it must be the call that was approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedCall {
    pub agent: String,
    pub tool: String,
    pub args_digest: String,
}

/// An operator's answer to a pending approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub approve: bool,
    pub approver: String,
    pub comment: Option<String>,
}

/// A new policy to make active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyApply {
    /// Hex SHA-256 of the compiled policy (the DPR `policy_version`).
    pub version: String,
    pub source: String,
    pub by: String,
    pub now_ms: i64,
    /// The id of the policy-change record.
    pub record_id: String,
}

/// The outcome of an apply or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyApplied {
    /// The version active before.
    pub from: Option<String>,
    pub to: String,
    /// The policy-change record.
    pub seq: u64,
    pub hash: Hash,
}

/// A stored policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    pub applied_ms: i64,
    pub applied_by: String,
    pub active: bool,
}

/// A fresh approval token: `dfr_` and 128 random bits as 32 hex digits.
pub fn new_token() -> Result<String, StoreError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| StoreError::Storage(format!("no randomness for a token: {e}")))?;
    Ok(format!("dfr_{}", hex::encode(raw)))
}

pub(crate) fn check_version(version: &str) -> Result<(), StoreError> {
    let ok = version.len() == 64
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "policy version `{version}`: expected 64 lowercase hex digits"
        )))
    }
}
