//! The engine's decision state made durable.
//!
//! Decisions read and write memory only: budgets, the history ring and kill switches live in
//! a wrapped [`MemoryState`]; rate cells and session counters in maps of our own, because
//! `MemoryState` offers no way to load a saved GCRA cell or session. Every change also marks
//! its key dirty; the store's writer drains the marks at the end of each group-commit batch
//! and writes the current values in the same transaction as the batch's records.
//!
//! What survives a crash: every change made before a record was appended is committed in that
//! record's transaction or an earlier one, so the state behind every acknowledged decision is
//! on disk. Changes that no record followed (a budget `report`) reach the disk within the
//! writer's idle flush interval (10 ms). Rate cells that went idle may be dropped: an idle
//! cell admits exactly like a missing one; pruning one deletes its row too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use engine::state::{GcraState, MemoryState, RateKey, SessionStats, StateStore};
use fpl::pattern::ToolPattern;
use rust_decimal::Decimal;

/// Prune idle rate cells once the map grows past twice its size after the last prune.
const RATE_PRUNE_MIN: usize = 1_024;

/// The decision state of one daemon; see the module docs.
#[derive(Debug, Default)]
pub struct DurableState {
    mem: MemoryState,
    rates: Mutex<RateCells>,
    sessions: Mutex<HashMap<String, SessionStats>>,
    dirty: Mutex<Dirty>,
    /// Set with every mark, so an idle writer checks without taking the lock.
    any_dirty: AtomicBool,
}

#[derive(Debug, Default)]
struct RateCells {
    cells: HashMap<String, GcraState>,
    prune_at: usize,
}

#[derive(Debug, Default)]
struct Dirty {
    rates: HashSet<String>,
    budgets: HashSet<String>,
    sessions: HashSet<String>,
    history: Vec<HistoryEntry>,
    kills: Vec<KillChange>,
}

/// One permitted call in an agent's history ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryEntry {
    pub agent: String,
    pub tool: String,
    pub time_ms: i64,
}

/// A kill switch turned on (`by`, `since_ms`) or off (`by = None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KillChange {
    pub agent: Option<String>,
    pub on: Option<(String, i64)>,
}

/// The current values of everything marked dirty, for the writer to store.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// `None`: the cell was pruned as idle.
    pub rates: Vec<(String, Option<GcraState>)>,
    pub budgets: Vec<(String, Decimal)>,
    pub sessions: Vec<(String, SessionStats)>,
    pub history: Vec<HistoryEntry>,
    pub kills: Vec<KillChange>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
            && self.budgets.is_empty()
            && self.sessions.is_empty()
            && self.history.is_empty()
            && self.kills.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn mark(set: &mut HashSet<String>, key: &str) {
    if !set.contains(key) {
        set.insert(key.to_owned());
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl DurableState {
    pub fn new() -> Self {
        Self::default()
    }

    fn dirty(&self) -> MutexGuard<'_, Dirty> {
        self.any_dirty.store(true, Ordering::Release);
        lock(&self.dirty)
    }

    /// Turns a kill switch on or off, recording who turned it on.
    pub(crate) fn set_kill(&self, agent: Option<&str>, on: Option<(String, i64)>) {
        self.mem.set_killed(agent, on.is_some());
        self.dirty().kills.push(KillChange {
            agent: agent.map(str::to_owned),
            on,
        });
    }

    /// A copy of `agent`'s history ring, oldest first (see [`MemoryState::history`]).
    pub fn history(&self, agent: &str) -> Vec<(i64, String)> {
        self.mem.history(agent)
    }

    pub(crate) fn has_changes(&self) -> bool {
        self.any_dirty.load(Ordering::Acquire)
    }

    /// Takes the marks and reads the values they point at.
    pub(crate) fn take_changes(&self) -> Changes {
        let dirty = {
            let mut d = lock(&self.dirty);
            self.any_dirty.store(false, Ordering::Release);
            std::mem::take(&mut *d)
        };
        let rates = {
            let r = lock(&self.rates);
            let get = |k: String| {
                let v = r.cells.get(&k).copied();
                (k, v)
            };
            dirty.rates.into_iter().map(get).collect()
        };
        let sessions = {
            let s = lock(&self.sessions);
            let get = |k: String| {
                let v = s.get(&k).copied().unwrap_or_default();
                (k, v)
            };
            dirty.sessions.into_iter().map(get).collect()
        };
        let budgets = dirty
            .budgets
            .into_iter()
            .map(|k| {
                let v = self.mem.budget_spent(&k);
                (k, v)
            })
            .collect();
        Changes {
            rates,
            budgets,
            sessions,
            history: dirty.history,
            kills: dirty.kills,
        }
    }

    /// Marks again what a failed transaction did not store, so the next one stores it.
    pub(crate) fn requeue(&self, changes: Changes) {
        let mut d = self.dirty();
        d.rates.extend(changes.rates.into_iter().map(|(k, _)| k));
        d.budgets
            .extend(changes.budgets.into_iter().map(|(k, _)| k));
        d.sessions
            .extend(changes.sessions.into_iter().map(|(k, _)| k));
        let later = std::mem::replace(&mut d.history, changes.history);
        d.history.extend(later);
        let later = std::mem::replace(&mut d.kills, changes.kills);
        d.kills.extend(later);
    }

    // Loading at open: values go to memory without being marked dirty.

    pub(crate) fn load_rate(&self, key: String, cell: GcraState) {
        lock(&self.rates).cells.insert(key, cell);
    }

    pub(crate) fn load_budget(&self, key: &str, spent: Decimal) {
        self.mem.budget_add(key, spent);
    }

    pub(crate) fn load_session(&self, key: String, stats: SessionStats) {
        lock(&self.sessions).insert(key, stats);
    }

    pub(crate) fn load_history(&self, agent: &str, tool: &str, time_ms: i64) {
        self.mem.history_push(agent, tool, time_ms);
    }

    pub(crate) fn load_kill(&self, agent: Option<&str>) {
        self.mem.set_killed(agent, true);
    }
}

impl DurableState {
    /// Changes a session's counters (made if new) and marks them for the next write.
    fn change_session(&self, session: &str, change: impl FnOnce(&mut SessionStats)) {
        {
            let mut sessions = lock(&self.sessions);
            let stats = match sessions.get_mut(session) {
                Some(s) => s,
                None => sessions.entry(session.to_owned()).or_default(),
            };
            change(stats);
        }
        mark(&mut self.dirty().sessions, session);
    }
}

impl StateStore for DurableState {
    fn rate_check(
        &self,
        key: RateKey<'_>,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        let cell = lock(&self.rates).cells.get(key.text().as_ref()).copied();
        GcraState::check(cell, limit, period_ms, now_ms)
    }

    fn rate_consume(&self, key: RateKey<'_>, limit: u64, period_ms: u64, now_ms: i64) {
        let key = key.text();
        let key = key.as_ref();
        let mut pruned = Vec::new();
        {
            let mut rates = lock(&self.rates);
            let cell = rates.cells.get(key).copied();
            let next = GcraState::consume(cell, limit, period_ms, now_ms);
            match rates.cells.get_mut(key) {
                Some(c) => *c = next,
                None => {
                    rates.cells.insert(key.to_owned(), next);
                }
            }
            if rates.cells.len() > rates.prune_at.max(RATE_PRUNE_MIN) {
                // Pruned cells are marked too, so their rows are deleted.
                rates.cells.retain(|k, c| {
                    let idle = c.is_idle(now_ms);
                    if idle {
                        pruned.push(k.clone());
                    }
                    !idle
                });
                rates.prune_at = rates.cells.len().saturating_mul(2);
            }
        }
        let mut dirty = self.dirty();
        mark(&mut dirty.rates, key);
        dirty.rates.extend(pruned);
    }

    fn budget_spent(&self, key: &str) -> Decimal {
        self.mem.budget_spent(key)
    }

    fn budget_add(&self, key: &str, amount: Decimal) -> Decimal {
        let total = self.mem.budget_add(key, amount);
        mark(&mut self.dirty().budgets, key);
        total
    }

    fn history_push(&self, agent: &str, tool: &str, now_ms: i64) {
        self.mem.history_push(agent, tool, now_ms);
        self.dirty().history.push(HistoryEntry {
            agent: agent.to_owned(),
            tool: tool.to_owned(),
            time_ms: now_ms,
        });
    }

    fn history_count(&self, agent: &str, pattern: &ToolPattern, since_ms: i64) -> u64 {
        self.mem.history_count(agent, pattern, since_ms)
    }

    fn set_killed(&self, agent: Option<&str>, killed: bool) {
        let on = killed.then(|| ("engine".to_owned(), now_ms()));
        self.set_kill(agent, on);
    }

    fn is_killed(&self, agent: &str) -> bool {
        self.mem.is_killed(agent)
    }

    fn session(&self, session: &str) -> SessionStats {
        lock(&self.sessions)
            .get(session)
            .copied()
            .unwrap_or_default()
    }

    fn session_record(&self, session: &str, cost: Decimal) {
        self.change_session(session, |stats| stats.record(cost));
    }

    fn session_cost_add(&self, session: &str, delta: Decimal) {
        self.change_session(session, |stats| stats.add_cost(delta));
    }
}
