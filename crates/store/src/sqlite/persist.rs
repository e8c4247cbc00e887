//! Storing and loading the decision state (see [`crate::state`]).

use std::collections::HashMap;

use engine::state::{GcraState, HISTORY_CAPACITY, SessionStats};
use rusqlite::{Connection, Transaction, params};
use rust_decimal::Decimal;

use crate::StoreError;
use crate::state::{Changes, DurableState, HistoryEntry};

/// The key of the global kill switch in `kills.agent`.
pub(crate) const ALL_AGENTS: &str = "*";
/// Trim an agent's stored history once it has grown by this many entries since the last trim
/// (and holds more than the ring).
const PRUNE_SLACK: usize = 1_024;

/// Entries stored per agent, counted by the writer so it knows when to trim without a count
/// query. A failed transaction leaves an agent's count off until its next trim, which only
/// moves that trim earlier or later.
#[derive(Debug, Default)]
pub(crate) struct HistoryPruner {
    stored: HashMap<String, Stored>,
}

#[derive(Debug, Clone, Copy)]
struct Stored {
    entries: usize,
    trim_at: usize,
}

impl Stored {
    /// After a trim that left `entries`. A trim keeps whole runs, so it may leave more than the
    /// ring; the next one waits for `PRUNE_SLACK` new entries rather than running every batch.
    fn trimmed(entries: usize) -> Stored {
        Stored {
            entries,
            trim_at: entries.max(HISTORY_CAPACITY) + PRUNE_SLACK,
        }
    }
}

impl HistoryPruner {
    /// Counts a run just stored for `agent`; trims the agent's runs when due.
    fn count_run(&mut self, conn: &Connection, agent: &str, n: usize) -> Result<(), StoreError> {
        let stored = match self.stored.get_mut(agent) {
            Some(s) => s,
            None => self
                .stored
                .entry(agent.to_owned())
                .or_insert(Stored::trimmed(0)),
        };
        stored.entries = stored.entries.saturating_add(n);
        if stored.entries >= stored.trim_at {
            *stored = Stored::trimmed(prune_history(conn, agent)?);
        }
        Ok(())
    }
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

/// One row per agent per transaction (a run), rather than one per permitted call: the batch's
/// entries for the agent in push order, as `[[time_ms,"tool"],...]`.
fn store_history(
    tx: &Transaction<'_>,
    c: &Changes,
    pruner: &mut HistoryPruner,
) -> Result<(), StoreError> {
    let mut insert = tx
        .prepare_cached("INSERT INTO state_history_runs (agent, n, entries) VALUES (?1, ?2, ?3)")?;
    for (agent, entries) in runs(&c.history) {
        let json = serde_json::to_string(&entries)
            .map_err(|e| StoreError::Storage(format!("history of `{agent}`: {e}")))?;
        insert.execute(params![agent, to_i64(entries.len()), json])?;
        pruner.count_run(tx, agent, entries.len())?;
    }
    Ok(())
}

/// The entries grouped by agent, each agent's in push order.
fn runs(history: &[HistoryEntry]) -> Vec<(&str, Vec<(i64, &str)>)> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut runs: Vec<(&str, Vec<(i64, &str)>)> = Vec::new();
    for h in history {
        let i = *at.entry(h.agent.as_str()).or_insert_with(|| {
            runs.push((h.agent.as_str(), Vec::new()));
            runs.len() - 1
        });
        if let Some((_, entries)) = runs.get_mut(i) {
            entries.push((h.time_ms, h.tool.as_str()));
        }
    }
    runs
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Deletes the agent's runs whose entries are all older than its newest [`HISTORY_CAPACITY`]
/// (what the ring holds); returns how many entries are left.
fn prune_history(conn: &Connection, agent: &str) -> Result<usize, StoreError> {
    let (oldest_needed, kept) = oldest_needed_run(conn, agent)?;
    if let Some(id) = oldest_needed {
        conn.prepare_cached("DELETE FROM state_history_runs WHERE agent = ?1 AND id < ?2")?
            .execute(params![agent, id])?;
    }
    Ok(kept)
}

/// Walks the agent's runs newest first (the index alone) to the one that completes the ring:
/// its id, if the runs reach that far, and the entries up to it.
fn oldest_needed_run(conn: &Connection, agent: &str) -> Result<(Option<i64>, usize), StoreError> {
    let mut newest = conn
        .prepare_cached("SELECT id, n FROM state_history_runs WHERE agent = ?1 ORDER BY id DESC")?;
    let mut rows = newest.query(params![agent])?;
    let mut kept = 0usize;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        kept = kept.saturating_add(usize::try_from(n).unwrap_or(0));
        if kept >= HISTORY_CAPACITY {
            return Ok((Some(r.get(0)?), kept));
        }
    }
    Ok((None, kept))
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

/// Loads the stored state into memory (nothing marked dirty); trims history on the way and
/// returns the writer's history counts.
pub(crate) fn load(conn: &Connection, state: &DurableState) -> Result<HistoryPruner, StoreError> {
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
    let pruner = load_history(conn, state)?;
    let mut kills = conn.prepare("SELECT agent FROM kills")?;
    let mut rows = kills.query([])?;
    while let Some(r) = rows.next()? {
        let agent: String = r.get(0)?;
        state.load_kill((agent != ALL_AGENTS).then_some(agent.as_str()));
    }
    Ok(pruner)
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

/// Replays each agent's newest [`HISTORY_CAPACITY`] entries in push order, as they were
/// stored before a restart; trims the runs on the way and returns the writer's counts.
fn load_history(conn: &Connection, state: &DurableState) -> Result<HistoryPruner, StoreError> {
    let agents: Vec<String> = conn
        .prepare("SELECT DISTINCT agent FROM state_history_runs")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut pruner = HistoryPruner::default();
    for agent in agents {
        let stored = prune_history(conn, &agent)?;
        load_runs(conn, state, &agent, stored.saturating_sub(HISTORY_CAPACITY))?;
        pruner.stored.insert(agent, Stored::trimmed(stored));
    }
    Ok(pruner)
}

/// Pushes the agent's stored entries, oldest first, but for the first `skip`: the oldest run
/// kept may reach further back than the ring did.
fn load_runs(
    conn: &Connection,
    state: &DurableState,
    agent: &str,
    mut skip: usize,
) -> Result<(), StoreError> {
    let mut runs =
        conn.prepare("SELECT n, entries FROM state_history_runs WHERE agent = ?1 ORDER BY id")?;
    let mut rows = runs.query(params![agent])?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(0)?;
        let entries: Vec<(i64, String)> = serde_json::from_str(r.get_ref(1)?.as_str()?)
            .map_err(|e| StoreError::Corrupt(format!("history of `{agent}`: {e}")))?;
        if to_i64(entries.len()) != n {
            return Err(StoreError::Corrupt(format!(
                "history of `{agent}`: a run of {} entries says {n}",
                entries.len()
            )));
        }
        for (time_ms, tool) in entries.iter().skip(skip) {
            state.load_history(agent, tool, *time_ms);
        }
        skip = skip.saturating_sub(entries.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_makes_one_run_per_agent_in_push_order() {
        let e = |agent: &str, tool: &str, time_ms| HistoryEntry {
            agent: agent.into(),
            tool: tool.into(),
            time_ms,
        };
        let batch = [
            e("a", "x", 1),
            e("b", "y\"", 2),
            e("a", "z", 3),
            e("a", "x", 3),
        ];
        let runs = runs(&batch);
        let want = [
            ("a", vec![(1, "x"), (3, "z"), (3, "x")]),
            ("b", vec![(2, "y\"")]),
        ];
        assert_eq!(runs, want);
        let json: Vec<String> = runs
            .iter()
            .map(|(_, e)| serde_json::to_string(e).unwrap_or_default())
            .collect();
        assert_eq!(json, [r#"[[1,"x"],[3,"z"],[3,"x"]]"#, r#"[[2,"y\""]]"#]);
    }
}
