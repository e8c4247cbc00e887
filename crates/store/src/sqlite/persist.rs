//! Storing and loading the decision state (see [`crate::state`]).

use std::collections::HashMap;

use engine::state::{GcraState, HISTORY_CAPACITY, SessionStats};
use rusqlite::{Connection, Transaction, params};
use rust_decimal::Decimal;

use crate::StoreError;
use crate::state::{Changes, DurableState};

/// The key of the global kill switch in `kills.agent`.
pub(crate) const ALL_AGENTS: &str = "*";
/// Trim an agent's stored history back to the ring's capacity after this many inserts.
const PRUNE_EVERY: usize = 1_024;

/// Counts history inserts per agent since its rows were last trimmed.
#[derive(Debug, Default)]
pub(crate) struct HistoryPruner {
    since: HashMap<String, usize>,
}

fn corrupt(what: &str, text: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{text}`"))
}

pub(crate) fn store_changes(
    tx: &Transaction<'_>,
    c: &Changes,
    pruner: &mut HistoryPruner,
) -> Result<(), StoreError> {
    if c.is_empty() {
        return Ok(());
    }
    store_rates(tx, c)?;
    let mut budget = tx.prepare_cached(
        "INSERT INTO state_budgets (name, spent) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET spent = excluded.spent",
    )?;
    for (k, spent) in &c.budgets {
        budget.execute(params![k, spent.to_string()])?;
    }
    let mut session = tx.prepare_cached(
        "INSERT INTO state_sessions (session, calls, cost) VALUES (?1, ?2, ?3)
         ON CONFLICT (session) DO UPDATE SET calls = excluded.calls, cost = excluded.cost",
    )?;
    for (k, s) in &c.sessions {
        let calls = i64::try_from(s.calls).unwrap_or(i64::MAX);
        session.execute(params![k, calls, s.cost.to_string()])?;
    }
    store_history(tx, c, pruner)?;
    store_kills(tx, c)
}

fn store_rates(tx: &Transaction<'_>, c: &Changes) -> Result<(), StoreError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO state_rates (name, tat, cell_limit) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET tat = excluded.tat, cell_limit = excluded.cell_limit",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM state_rates WHERE name = ?1")?;
    for (k, cell) in &c.rates {
        match cell {
            Some(g) => upsert.execute(params![k, g.tat.to_string(), g.limit.to_string()])?,
            None => delete.execute(params![k])?,
        };
    }
    Ok(())
}

fn store_history(
    tx: &Transaction<'_>,
    c: &Changes,
    pruner: &mut HistoryPruner,
) -> Result<(), StoreError> {
    let mut insert =
        tx.prepare_cached("INSERT INTO state_history (agent, tool, time_ms) VALUES (?1, ?2, ?3)")?;
    for h in &c.history {
        insert.execute(params![h.agent, h.tool, h.time_ms])?;
        let n = match pruner.since.get_mut(&h.agent) {
            Some(n) => n,
            None => pruner.since.entry(h.agent.clone()).or_default(),
        };
        *n += 1;
        if *n >= PRUNE_EVERY {
            *n = 0;
            prune_history(tx, &h.agent)?;
        }
    }
    Ok(())
}

/// Keeps an agent's newest [`HISTORY_CAPACITY`] rows: what the ring holds.
pub(crate) fn prune_history(conn: &Connection, agent: &str) -> Result<(), StoreError> {
    let keep = i64::try_from(HISTORY_CAPACITY).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "DELETE FROM state_history WHERE agent = ?1 AND id <= (
             SELECT id FROM state_history WHERE agent = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![agent, keep])?;
    Ok(())
}

fn store_kills(tx: &Transaction<'_>, c: &Changes) -> Result<(), StoreError> {
    for k in &c.kills {
        let agent = k.agent.as_deref().unwrap_or(ALL_AGENTS);
        match &k.on {
            Some((by, since)) => tx
                .prepare_cached(
                    "INSERT INTO kills (agent, since_ms, killed_by) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent) DO UPDATE
                     SET since_ms = excluded.since_ms, killed_by = excluded.killed_by",
                )?
                .execute(params![agent, since, by])?,
            None => tx
                .prepare_cached("DELETE FROM kills WHERE agent = ?1")?
                .execute(params![agent])?,
        };
    }
    Ok(())
}

/// Loads the stored state into memory (nothing marked dirty); trims history on the way.
pub(crate) fn load(conn: &Connection, state: &DurableState) -> Result<(), StoreError> {
    let mut rates = conn.prepare("SELECT name, tat, cell_limit FROM state_rates")?;
    let mut rows = rates.query([])?;
    while let Some(r) = rows.next()? {
        let (tat, limit): (String, String) = (r.get(1)?, r.get(2)?);
        let cell = GcraState {
            tat: tat.parse().map_err(|_| corrupt("GCRA time", &tat))?,
            limit: limit.parse().map_err(|_| corrupt("rate limit", &limit))?,
        };
        // Loaded even when idle by the wall clock: the engine may run on another clock.
        state.load_rate(r.get(0)?, cell);
    }
    let mut budgets = conn.prepare("SELECT name, spent FROM state_budgets")?;
    let mut rows = budgets.query([])?;
    while let Some(r) = rows.next()? {
        let (name, spent): (String, String) = (r.get(0)?, r.get(1)?);
        let spent: Decimal = spent.parse().map_err(|_| corrupt("budget", &spent))?;
        state.load_budget(&name, spent);
    }
    load_sessions(conn, state)?;
    load_history(conn, state)?;
    let mut kills = conn.prepare("SELECT agent FROM kills")?;
    let mut rows = kills.query([])?;
    while let Some(r) = rows.next()? {
        let agent: String = r.get(0)?;
        state.load_kill((agent != ALL_AGENTS).then_some(agent.as_str()));
    }
    Ok(())
}

fn load_sessions(conn: &Connection, state: &DurableState) -> Result<(), StoreError> {
    let mut sessions = conn.prepare("SELECT session, calls, cost FROM state_sessions")?;
    let mut rows = sessions.query([])?;
    while let Some(r) = rows.next()? {
        let (calls, cost): (i64, String) = (r.get(1)?, r.get(2)?);
        let stats = SessionStats {
            calls: u64::try_from(calls).unwrap_or(0),
            cost: cost.parse().map_err(|_| corrupt("session cost", &cost))?,
        };
        state.load_session(r.get(0)?, stats);
    }
    Ok(())
}

fn load_history(conn: &Connection, state: &DurableState) -> Result<(), StoreError> {
    let agents: Vec<String> = conn
        .prepare("SELECT DISTINCT agent FROM state_history")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for agent in &agents {
        prune_history(conn, agent)?;
    }
    let mut history = conn.prepare("SELECT agent, tool, time_ms FROM state_history ORDER BY id")?;
    let mut rows = history.query([])?;
    while let Some(r) = rows.next()? {
        let agent = r.get_ref(0)?.as_str()?;
        let tool = r.get_ref(1)?.as_str()?;
        state.load_history(agent, tool, r.get(2)?);
    }
    Ok(())
}
