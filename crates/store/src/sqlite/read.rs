//! Reads of the audit log, each on a reader's own connection.

use std::ops::ControlFlow;

use audit::record::Hash;
use audit::verify::Row;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql, params};

use crate::{Filter, Record, StoreError};

fn seq_of(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("seq {n}")))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn hash_of(v: ValueRef<'_>) -> Result<Hash, StoreError> {
    let b = v
        .as_blob()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let h: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("a hash of {} bytes", b.len())))?;
    Ok(Hash(h))
}

fn record(r: &rusqlite::Row<'_>) -> Result<Record, StoreError> {
    Ok((seq_of(r.get(0)?)?, hash_of(r.get_ref(1)?)?, r.get(2)?))
}

pub(crate) fn for_each_row(
    conn: &Connection,
    chain: &str,
    from: u64,
    to: Option<u64>,
    f: &mut dyn FnMut(Row<'_>) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, hash, body FROM dpr WHERE chain = ?1 AND seq >= ?2 AND seq <= ?3
         ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![chain, clamp(from), clamp(to.unwrap_or(u64::MAX))])?;
    while let Some(r) = rows.next()? {
        // The body is borrowed from SQLite's row buffer: no copy per record.
        let body = r
            .get_ref(2)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = Row {
            seq: seq_of(r.get(0)?)?,
            hash: hash_of(r.get_ref(1)?)?,
            body,
        };
        if f(row).is_break() {
            break;
        }
    }
    Ok(())
}

pub(crate) fn hashes(conn: &Connection, chain: &str, to: u64) -> Result<Vec<Hash>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT hash FROM dpr WHERE chain = ?1 AND seq <= ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![chain, clamp(to)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(hash_of(r.get_ref(0)?)?);
    }
    Ok(out)
}

pub(crate) fn checkpoints(conn: &Connection, chain: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT note FROM checkpoints WHERE chain = ?1 ORDER BY size")?;
    let notes = stmt
        .query_map(params![chain], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(notes)
}

pub(crate) fn last_checkpoint(conn: &Connection, chain: &str) -> Result<u64, StoreError> {
    let n: Option<i64> = conn.query_row(
        "SELECT MAX(size) FROM checkpoints WHERE chain = ?1",
        params![chain],
        |r| r.get(0),
    )?;
    n.map_or(Ok(0), seq_of)
}

pub(crate) fn row_by_id(
    conn: &Connection,
    chain: &str,
    id: &str,
) -> Result<Option<Record>, StoreError> {
    let mut stmt = conn.prepare_cached(
        // Not `ORDER BY seq LIMIT 1`: the planner would walk the primary key instead of `dpr_id`.
        "SELECT seq, hash, body FROM dpr WHERE chain = ?1
         AND seq = (SELECT MIN(seq) FROM dpr WHERE chain = ?1 AND id = ?2)",
    )?;
    let mut rows = stmt.query(params![chain, id])?;
    rows.next()?.map(record).transpose()
}

pub(crate) fn seq_range(
    conn: &Connection,
    chain: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Option<(u64, u64)>, StoreError> {
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT MIN(seq), MAX(seq) FROM dpr
             WHERE chain = ?1 AND time_ms >= ?2 AND time_ms <= ?3",
        )?
        .query_row(
            params![chain, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    match (lo, hi) {
        (Some(lo), Some(hi)) => Ok(Some((seq_of(lo)?, seq_of(hi)?))),
        _ => Ok(None),
    }
}

pub(crate) fn query(conn: &Connection, chain: &str, f: &Filter) -> Result<Vec<Record>, StoreError> {
    let mut sql = String::from("SELECT seq, hash, body FROM dpr WHERE chain = ?");
    let mut args: Vec<&dyn ToSql> = vec![&chain];
    let after = f.after_seq.map(clamp);
    let limit = f.limit.map(clamp);
    let clauses: [(&str, Option<&dyn ToSql>); 5] = [
        (
            " AND effect = ?",
            f.effect.as_ref().map(|v| v as &dyn ToSql),
        ),
        (" AND agent = ?", f.agent.as_ref().map(|v| v as &dyn ToSql)),
        (
            " AND time_ms >= ?",
            f.from_ms.as_ref().map(|v| v as &dyn ToSql),
        ),
        (
            " AND time_ms <= ?",
            f.to_ms.as_ref().map(|v| v as &dyn ToSql),
        ),
        (" AND seq > ?", after.as_ref().map(|v| v as &dyn ToSql)),
    ];
    for (clause, arg) in clauses {
        if let Some(arg) = arg {
            sql.push_str(clause);
            args.push(arg);
        }
    }
    sql.push_str(if f.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq"
    });
    if let Some(limit) = &limit {
        sql.push_str(" LIMIT ?");
        args.push(limit);
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(&args[..])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(record(r)?);
    }
    Ok(out)
}
