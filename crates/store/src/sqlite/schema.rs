//! Versioned migrations: `PRAGMA user_version` is the number of steps applied.
//!
//! The SQL stays within what PostgreSQL also accepts (upserts with `ON CONFLICT`, partial
//! indexes), except the storage hints (`WITHOUT ROWID`, `INTEGER PRIMARY KEY`) a PostgreSQL
//! schema would spell its own way.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Every step, in order; step `i` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1_AUDIT, V2_CONTROL, V3_STATE, V4_HISTORY_RUNS];

/// The version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The audit log. `seq`, `hash` and `body` are all verification reads; the other columns are
/// copies from the body for queries only.
const V1_AUDIT: &str = "
CREATE TABLE dpr (
    chain   TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    hash    BLOB    NOT NULL,
    body    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    time_ms INTEGER NOT NULL,
    agent   TEXT,
    effect  TEXT,
    PRIMARY KEY (chain, seq)
) WITHOUT ROWID;
CREATE INDEX dpr_id ON dpr (chain, id);
CREATE INDEX dpr_time ON dpr (chain, time_ms);
CREATE INDEX dpr_agent ON dpr (chain, agent, seq);
CREATE TABLE checkpoints (
    chain TEXT    NOT NULL,
    size  INTEGER NOT NULL,
    note  TEXT    NOT NULL,
    PRIMARY KEY (chain, size)
);
";

/// Approvals, kill switches and policy versions: shared by every daemon of a stack.
const V2_CONTROL: &str = "
CREATE TABLE approvals (
    token       TEXT    PRIMARY KEY,
    chain       TEXT    NOT NULL,
    agent       TEXT    NOT NULL,
    tool        TEXT    NOT NULL,
    args        TEXT    NOT NULL,
    args_digest TEXT    NOT NULL,
    rule_ref    TEXT,
    reason      TEXT,
    status      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    approver    TEXT,
    resolved_ms INTEGER,
    comment     TEXT,
    consumed_ms INTEGER
);
CREATE UNIQUE INDEX approvals_one_pending ON approvals (agent, tool, args_digest)
    WHERE status = 'pending';
CREATE INDEX approvals_status ON approvals (status, created_ms);
CREATE TABLE kills (
    agent     TEXT    PRIMARY KEY,
    since_ms  INTEGER NOT NULL,
    killed_by TEXT    NOT NULL
);
CREATE TABLE policy_versions (
    version    TEXT    PRIMARY KEY,
    source     TEXT    NOT NULL,
    applied_ms INTEGER NOT NULL,
    applied_by TEXT    NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0
);
";

/// The durable side of the decision state. Numbers that may exceed 64 bits (GCRA times,
/// decimals) are kept as their decimal text.
const V3_STATE: &str = "
CREATE TABLE state_rates (
    name       TEXT PRIMARY KEY,
    tat        TEXT NOT NULL,
    cell_limit TEXT NOT NULL
);
CREATE TABLE state_budgets (
    name  TEXT PRIMARY KEY,
    spent TEXT NOT NULL
);
CREATE TABLE state_sessions (
    session TEXT    PRIMARY KEY,
    calls   INTEGER NOT NULL,
    cost    TEXT    NOT NULL
);
CREATE TABLE state_history (
    id      INTEGER PRIMARY KEY,
    agent   TEXT    NOT NULL,
    tool    TEXT    NOT NULL,
    time_ms INTEGER NOT NULL
);
CREATE INDEX state_history_agent ON state_history (agent, id);
";

/// The history ring as runs: one row per agent per writer transaction, `entries` holding that
/// batch's `[[time_ms,"tool"],...]` in push order, so a decision adds no row of its own. `n`
/// comes before `entries` and is in the index, so pruning counts entries without reading
/// them. Each agent's old rows become one run (SQLite's JSON functions; PostgreSQL would
/// spell them `json_agg`, `json_build_array`).
const V4_HISTORY_RUNS: &str = "
CREATE TABLE state_history_runs (
    id      INTEGER PRIMARY KEY,
    agent   TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    entries TEXT    NOT NULL
);
CREATE INDEX state_history_runs_agent ON state_history_runs (agent, id, n);
INSERT INTO state_history_runs (agent, n, entries)
    SELECT agent, count(*), json_group_array(json_array(time_ms, tool) ORDER BY id)
    FROM state_history GROUP BY agent;
DROP TABLE state_history;
";

fn version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Applies the missing steps, each in its own transaction; returns the version found.
/// Refuses a database newer than this build.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let step = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        if version(&tx)? >= step {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", step)?;
        tx.commit()?;
    }
    Ok(found)
}
