use crate::types::ApprovalStatus;

/// Why a store operation failed. Cloneable: one failed transaction fails every ticket in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the store is closed")]
    Closed,
    #[error("the stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the database has schema version {found}; this build knows up to {supported}")]
    TooNew { found: u32, supported: u32 },
    #[error("no approval `{0}`")]
    UnknownApproval(String),
    #[error("approval `{token}` is {status}")]
    NotPending {
        token: String,
        status: ApprovalStatus,
    },
    #[error("approval `{token}` is {status}, not approved")]
    NotApproved {
        token: String,
        status: ApprovalStatus,
    },
    #[error("approval `{0}` was given for a different call (agent, tool or arguments)")]
    DigestMismatch(String),
    #[error("no policy version `{0}`")]
    UnknownPolicy(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}
