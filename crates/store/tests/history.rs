//! The history ring is stored as runs (one row per agent per transaction): after a restart
//! every agent's ring holds the same entries in the same order, and the stored runs stay
//! bounded however many batches are written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;

use engine::state::{HISTORY_CAPACITY, MemoryState, StateStore};
use fpl::pattern::ToolPattern;
use rusqlite::{Connection, params};
use store::Store;
use store::sqlite::SqliteStore;

const T0: i64 = 1_767_258_000_000;
/// Batches of at most this many pushes (one record commits each).
const MAX_BATCH: usize = 300;
/// The writer trims an agent's runs once they hold this many entries beyond the ring.
const PRUNE_SLACK: usize = 1_024;

const AGENTS: &[&str] = &["heavy", "light", "rare", "agent \"q\"/ü"];
/// Tools JSON must escape, and plain ones.
const TOOLS: &[&str] = &[
    "stripe/refund",
    "stripe/charge",
    "fs/read",
    "",
    "quote\"d",
    "back\\slash",
    "new\nline\ttab\u{1}",
    "ünïcødé/🦀",
    "]],[[0,\"x\"]",
    "\u{2028}sep",
];
const PATTERNS: &[&str] = &["*", "stripe/*", "stripe/refund", "fs/read", "**"];

/// xorshift64*: reproducible pushes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// "heavy" gets most pushes, so it passes the ring's capacity.
    fn agent(&mut self) -> &'static str {
        match self.below(10) {
            0..=6 => AGENTS[0],
            7 | 8 => AGENTS[1],
            _ => AGENTS[2 + self.below(2)],
        }
    }
}

/// Every push made, per agent, in order.
#[derive(Default)]
struct Log(HashMap<&'static str, Vec<(i64, &'static str)>>);

impl Log {
    /// What a restart must load: each agent's newest `HISTORY_CAPACITY` pushes, replayed in
    /// order.
    fn replayed(&self) -> MemoryState {
        let m = MemoryState::new();
        for (agent, pushes) in &self.0 {
            let newest = &pushes[pushes.len().saturating_sub(HISTORY_CAPACITY)..];
            for (t, tool) in newest {
                m.history_push(agent, tool, *t);
            }
        }
        m
    }
}

/// Pushes `n` random permits into the store's state, `live` and `log`, committing them with
/// one record per batch of random size. `step` gives each push's time from the last.
fn push_batches(
    store: &SqliteStore,
    live: &MemoryState,
    log: &mut Log,
    rng: &mut Rng,
    n: usize,
    clock: &mut i64,
    step: fn(&mut Rng) -> i64,
) {
    let state = store.durable_state();
    let mut left = n;
    while left > 0 {
        let batch = (1 + rng.below(MAX_BATCH)).min(left);
        for _ in 0..batch {
            *clock += step(rng);
            let (agent, tool) = (rng.agent(), TOOLS[rng.below(TOOLS.len())]);
            state.history_push(agent, tool, *clock);
            live.history_push(agent, tool, *clock);
            log.0.entry(agent).or_default().push((*clock, tool));
        }
        let id = format!("d{:016x}", rng.next());
        store
            .append(common::decision(&id, *clock, "bot", "permit"))
            .wait()
            .unwrap();
        left -= batch;
    }
}

/// Time goes on by 0 to 2 ms (ties are common).
fn forward(rng: &mut Rng) -> i64 {
    rng.below(3) as i64
}

/// Now and then the clock steps back a little.
fn wobbly(rng: &mut Rng) -> i64 {
    if rng.below(20) == 0 {
        -(rng.below(50) as i64)
    } else {
        rng.below(3) as i64
    }
}

/// The store's rings equal `want`'s, entry for entry, and so do `history_count` answers.
fn assert_history(store: &SqliteStore, want: &MemoryState) {
    let state = store.durable_state();
    for agent in AGENTS {
        let ring = want.history(agent);
        assert_eq!(state.history(agent), ring, "{agent}");
        let mut windows: Vec<i64> = ring.iter().step_by(997).map(|(t, _)| *t).collect();
        windows.extend([i64::MIN, ring.last().map_or(0, |(t, _)| t + 1)]);
        for p in PATTERNS {
            let p = ToolPattern::parse(p).unwrap();
            for since in &windows {
                assert_eq!(
                    state.history_count(agent, &p, *since),
                    want.history_count(agent, &p, *since),
                    "{agent} since {since}"
                );
            }
        }
    }
}

#[test]
fn history_survives_restart_entry_for_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (live, mut log, mut rng, mut clock) = (MemoryState::new(), Log::default(), Rng(7), T0);
    {
        let (store, _) = common::open(dir.path(), |_| {});
        push_batches(
            &store, &live, &mut log, &mut rng, 25_000, &mut clock, forward,
        );
        assert_history(&store, &live);
    }
    assert!(log.0["heavy"].len() > HISTORY_CAPACITY + PRUNE_SLACK);
    assert_eq!(live.history("heavy").len(), HISTORY_CAPACITY);
    // With time never going back, the ring is exactly the newest pushes.
    let replayed = log.replayed();
    for agent in AGENTS {
        assert_eq!(live.history(agent), replayed.history(agent), "{agent}");
    }
    {
        let (store, _) = common::open(dir.path(), |_| {});
        assert_history(&store, &live);
        // The writer goes on from the counts the load found.
        push_batches(
            &store, &live, &mut log, &mut rng, 6_000, &mut clock, forward,
        );
        assert_history(&store, &live);
    }
    let (store, _) = common::open(dir.path(), |_| {});
    assert_history(&store, &live);
}

#[test]
fn a_clock_stepping_back_reloads_the_newest_pushes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (live, mut log, mut rng, mut clock) = (MemoryState::new(), Log::default(), Rng(11), T0);
    {
        let (store, _) = common::open(dir.path(), |_| {});
        push_batches(
            &store, &live, &mut log, &mut rng, 18_000, &mut clock, wobbly,
        );
    }
    assert!(log.0["heavy"].len() > HISTORY_CAPACITY);
    // A ring kept in order by time may hold other entries than the newest pushes; what is
    // stored (as ever) is the newest pushes, and a restart replays them in push order.
    let (store, _) = common::open(dir.path(), |_| {});
    assert_history(&store, &log.replayed());
}

/// (entries, runs, entries of the oldest run) stored for `agent`.
fn stored(dir: &Path, agent: &str) -> (usize, usize, usize) {
    let conn = Connection::open(dir.join("data").join("faramesh.db")).unwrap();
    let (entries, runs): (i64, i64) = conn
        .query_row(
            "SELECT coalesce(sum(n), 0), count(*) FROM state_history_runs WHERE agent = ?1",
            params![agent],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let oldest: i64 = conn
        .query_row(
            "SELECT n FROM state_history_runs WHERE agent = ?1 ORDER BY id LIMIT 1",
            params![agent],
            |r| r.get(0),
        )
        .unwrap();
    (entries as usize, runs as usize, oldest as usize)
}

#[test]
fn stored_history_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (live, mut log, mut rng, mut clock) = (MemoryState::new(), Log::default(), Rng(3), T0);
    {
        let (store, _) = common::open(dir.path(), |_| {});
        push_batches(
            &store, &live, &mut log, &mut rng, 3_000, &mut clock, forward,
        );
    }
    // Far fewer rows than calls: a run per agent per transaction. Batches average 150 pushes,
    // ~70% of them for "heavy"; the writer's idle flush may split one now and then.
    let (entries, runs, _) = stored(dir.path(), "heavy");
    assert_eq!(entries, log.0["heavy"].len());
    assert!(runs * 20 < entries, "{runs} runs for {entries} entries");
    {
        let (store, _) = common::open(dir.path(), |_| {});
        push_batches(
            &store, &live, &mut log, &mut rng, 80_000, &mut clock, forward,
        );
    }
    let pushed = log.0["heavy"].len();
    assert!(pushed > 5 * HISTORY_CAPACITY, "{pushed}");
    // The writer trimmed as it went: the ring, the trim's slack, and a run or two beyond.
    let (entries, _, _) = stored(dir.path(), "heavy");
    assert!(entries >= HISTORY_CAPACITY, "{entries}");
    assert!(
        entries < HISTORY_CAPACITY + PRUNE_SLACK + 2 * MAX_BATCH,
        "{entries}"
    );
    // Opening trims to whole runs: dropping the oldest would leave fewer than the ring holds.
    let (store, _) = common::open(dir.path(), |_| {});
    assert_history(&store, &live);
    drop(store);
    for agent in &AGENTS[..2] {
        let (entries, _, oldest) = stored(dir.path(), agent);
        assert!(entries >= HISTORY_CAPACITY, "{agent}: {entries}");
        assert!(entries - oldest < HISTORY_CAPACITY, "{agent}: {entries}");
    }
}
