//! Approvals (SPEC §7), policy versions and kill switches: SQL run inside writer jobs
//! (writes) or on reader connections (reads).

use audit::record::{Dpr, PolicyChange};
use rusqlite::{Connection, OptionalExtension, params};

use super::persist::ALL_AGENTS;
use super::writer::Batch;
use crate::types::check_version;
use crate::{
    Approval, ApprovalStatus, ApprovedCall, Kill, NewApproval, PolicyApplied, PolicyVersion,
    Resolution, StoreError, new_token,
};

const APPROVAL_COLUMNS: &str = "token, chain, agent, tool, args, args_digest, rule_ref, reason, \
     status, created_ms, expires_ms, approver, resolved_ms, comment, consumed_ms";

fn approval_row(r: &rusqlite::Row<'_>, now_ms: i64) -> rusqlite::Result<Approval> {
    let status: String = r.get(8)?;
    let expires_ms: i64 = r.get(10)?;
    let status = status.parse().unwrap_or(ApprovalStatus::Expired);
    Ok(Approval {
        token: r.get(0)?,
        chain: r.get(1)?,
        agent: r.get(2)?,
        tool: r.get(3)?,
        args: r.get(4)?,
        args_digest: r.get(5)?,
        rule_ref: r.get(6)?,
        reason: r.get(7)?,
        status: effective(status, expires_ms, now_ms),
        created_ms: r.get(9)?,
        expires_ms,
        approver: r.get(11)?,
        resolved_ms: r.get(12)?,
        comment: r.get(13)?,
        consumed_ms: r.get(14)?,
    })
}

/// A pending approval past its expiry is expired, whether or not a sweep has marked it.
fn effective(status: ApprovalStatus, expires_ms: i64, now_ms: i64) -> ApprovalStatus {
    if status == ApprovalStatus::Pending && expires_ms <= now_ms {
        ApprovalStatus::Expired
    } else {
        status
    }
}

pub(crate) fn approval(
    conn: &Connection,
    token: &str,
    now_ms: i64,
) -> Result<Option<Approval>, StoreError> {
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE token = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![token], |r| approval_row(r, now_ms))
        .optional()?)
}

pub(crate) fn approvals(
    conn: &Connection,
    status: Option<ApprovalStatus>,
    now_ms: i64,
) -> Result<Vec<Approval>, StoreError> {
    let filter = match status {
        None => "1 = 1",
        Some(ApprovalStatus::Pending) => "status = 'pending' AND expires_ms > ?1",
        Some(ApprovalStatus::Expired) => {
            "(status = 'expired' OR (status = 'pending' AND expires_ms <= ?1))"
        }
        Some(ApprovalStatus::Approved) => "status = 'approved'",
        Some(ApprovalStatus::Rejected) => "status = 'rejected'",
        Some(ApprovalStatus::Consumed) => "status = 'consumed'",
    };
    let sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE {filter} AND ?1 = ?1
         ORDER BY created_ms, token"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now_ms], |r| approval_row(r, now_ms))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn request(
    b: &mut Batch<'_>,
    new: &NewApproval,
    ttl_ms: u64,
    now_ms: i64,
) -> Result<Approval, StoreError> {
    let tx = b.tx();
    // A pending row past its expiry would hold the one-pending-per-call index.
    tx.prepare_cached(
        "UPDATE approvals SET status = 'expired' WHERE agent = ?1 AND tool = ?2
         AND args_digest = ?3 AND status = 'pending' AND expires_ms <= ?4",
    )?
    .execute(params![new.agent, new.tool, new.args_digest, now_ms])?;
    let sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE agent = ?1 AND tool = ?2
         AND args_digest = ?3 AND status = 'pending'"
    );
    let found = tx
        .prepare_cached(&sql)?
        .query_row(params![new.agent, new.tool, new.args_digest], |r| {
            approval_row(r, now_ms)
        })
        .optional()?;
    if let Some(found) = found {
        return Ok(found);
    }
    let token = new_token()?;
    let expires = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    tx.prepare_cached(
        "INSERT INTO approvals (token, chain, agent, tool, args, args_digest, rule_ref, reason,
         status, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10)",
    )?
    .execute(params![
        token,
        b.chain_id(),
        new.agent,
        new.tool,
        new.args,
        new.args_digest,
        new.rule_ref,
        new.reason,
        now_ms,
        expires
    ])?;
    approval(b.tx(), &token, now_ms)?.ok_or(StoreError::UnknownApproval(token))
}

pub(crate) fn resolve(
    b: &mut Batch<'_>,
    token: &str,
    res: &Resolution,
    now_ms: i64,
) -> Result<Approval, StoreError> {
    let status = if res.approve { "approved" } else { "rejected" };
    let n = b
        .tx()
        .prepare_cached(
            "UPDATE approvals SET status = ?2, approver = ?3, resolved_ms = ?4, comment = ?5
             WHERE token = ?1 AND status = 'pending' AND expires_ms > ?4",
        )?
        .execute(params![token, status, res.approver, now_ms, res.comment])?;
    let found = approval(b.tx(), token, now_ms)?;
    match found {
        None => Err(StoreError::UnknownApproval(token.to_owned())),
        Some(a) if n == 0 => Err(StoreError::NotPending {
            token: token.to_owned(),
            status: a.status,
        }),
        Some(a) => Ok(a),
    }
}

pub(crate) fn consume(
    b: &mut Batch<'_>,
    token: &str,
    call: &ApprovedCall,
    now_ms: i64,
) -> Result<Approval, StoreError> {
    // One statement: two concurrent retries can never both spend it, and it is spent only on
    // the call that was approved (agent, tool and arguments), before it expires.
    let n = b
        .tx()
        .prepare_cached(
            "UPDATE approvals SET status = 'consumed', consumed_ms = ?5
             WHERE token = ?1 AND status = 'approved'
               AND agent = ?2 AND tool = ?3 AND args_digest = ?4 AND expires_ms > ?5",
        )?
        .execute(params![
            token,
            call.agent,
            call.tool,
            call.args_digest,
            now_ms
        ])?;
    let found = approval(b.tx(), token, now_ms)?;
    match found {
        None => Err(StoreError::UnknownApproval(token.to_owned())),
        Some(a) if n == 1 => Ok(a),
        Some(a) if a.status != ApprovalStatus::Approved => Err(StoreError::NotApproved {
            token: token.to_owned(),
            status: a.status,
        }),
        Some(a) if a.expires_ms <= now_ms => Err(StoreError::NotApproved {
            token: token.to_owned(),
            status: ApprovalStatus::Expired,
        }),
        Some(_) => Err(StoreError::DigestMismatch(token.to_owned())),
    }
}

pub(crate) fn expire(b: &mut Batch<'_>, now_ms: i64) -> Result<u64, StoreError> {
    let n = b
        .tx()
        .prepare_cached(
            "UPDATE approvals SET status = 'expired' WHERE status = 'pending' AND expires_ms <= ?1",
        )?
        .execute(params![now_ms])?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Stores (when `source` is given) and activates `version`, and records the change.
pub(crate) fn activate(
    b: &mut Batch<'_>,
    version: &str,
    source: Option<&str>,
    by: &str,
    now_ms: i64,
    record_id: String,
) -> Result<PolicyApplied, StoreError> {
    check_version(version)?;
    let from: Option<String> = b
        .tx()
        .query_row(
            "SELECT version FROM policy_versions WHERE active = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let n = match source {
        Some(source) => b
            .tx()
            .prepare_cached(
                "INSERT INTO policy_versions (version, source, applied_ms, applied_by, active)
             VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (version) DO UPDATE
             SET source = excluded.source, applied_ms = excluded.applied_ms,
                 applied_by = excluded.applied_by",
            )?
            .execute(params![version, source, now_ms, by])?,
        None => b
            .tx()
            .prepare_cached(
                "UPDATE policy_versions SET applied_ms = ?2, applied_by = ?3 WHERE version = ?1",
            )?
            .execute(params![version, now_ms, by])?,
    };
    if n == 0 {
        return Err(StoreError::UnknownPolicy(version.to_owned()));
    }
    b.tx()
        .prepare_cached(
            "UPDATE policy_versions SET active = CASE WHEN version = ?1 THEN 1 ELSE 0 END
             WHERE active = 1 OR version = ?1",
        )?
        .execute(params![version])?;
    let change = PolicyChange {
        from: from.clone(),
        to: version.to_owned(),
        by: by.to_owned(),
    };
    let a = b.append(Dpr::policy_change(record_id, now_ms, change))?;
    Ok(PolicyApplied {
        from,
        to: version.to_owned(),
        seq: a.seq,
        hash: a.hash,
    })
}

pub(crate) fn policy_versions(conn: &Connection) -> Result<Vec<PolicyVersion>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, applied_ms, applied_by, active FROM policy_versions
         ORDER BY applied_ms DESC, version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PolicyVersion {
            version: r.get(0)?,
            applied_ms: r.get(1)?,
            applied_by: r.get(2)?,
            active: r.get::<_, i64>(3)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn policy_source(
    conn: &Connection,
    version: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT source FROM policy_versions WHERE version = ?1")?
        .query_row(params![version], |r| r.get(0))
        .optional()?)
}

pub(crate) fn kills(conn: &Connection) -> Result<Vec<Kill>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT agent, since_ms, killed_by FROM kills ORDER BY agent")?;
    let rows = stmt.query_map([], |r| {
        let agent: String = r.get(0)?;
        Ok(Kill {
            agent: (agent != ALL_AGENTS).then_some(agent),
            since_ms: r.get(1)?,
            by: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
