//! Decision state (SPEC §3.7, §5 steps 1, 4, 5): rate limits, budgets, the history ring, kill
//! switches and session counters.
//!
//! Everything sits behind [`StateStore`] so a durable backend (SQLite, PostgreSQL) can replace
//! [`MemoryState`] without touching callers: every method takes plain data and returns plain
//! data. The GCRA arithmetic is in [`GcraState`], so every backend admits exactly the same calls.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fpl::pattern::ToolPattern;
use rust_decimal::Decimal;

use crate::compile::{PolicyKeys, same_bytes, tail_word};

/// At most this many permitted calls are kept per agent in the history ring (the most recent).
pub const HISTORY_CAPACITY: usize = 10_000;

/// The state a decision reads and writes. Implementations must be safe to share between
/// threads; each method is atomic on its own.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// GCRA rate limit with burst `limit` per `period_ms`, keyed by `key`. Check only: `Ok(())`
    /// if a call at `now_ms` would be admitted, `Err(retry_after_ms)` if not. Does not consume.
    fn rate_check(
        &self,
        key: RateKey<'_>,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
    ) -> Result<(), u64>;
    /// Consumes one admission (called only when the final decision is permit).
    fn rate_consume(&self, key: RateKey<'_>, limit: u64, period_ms: u64, now_ms: i64);
    /// Money spent so far in a budget window (`key` identifies agent + window + window start,
    /// or the session). Unknown keys have spent nothing.
    fn budget_spent(&self, key: &str) -> Decimal;
    /// Adds spend (a reservation at decision time; `report` reconciles later, possibly with a
    /// negative amount) and returns the new total.
    fn budget_add(&self, key: &str, amount: Decimal) -> Decimal;
    /// Records a permitted call in the agent's history ring (bounded: at most
    /// [`HISTORY_CAPACITY`] most recent entries per agent).
    fn history_push(&self, agent: &str, tool: &str, now_ms: i64);
    /// Permitted calls of `agent` whose tool matches `pattern`, at or after `since_ms`.
    fn history_count(&self, agent: &str, pattern: &ToolPattern, since_ms: i64) -> u64;
    /// Kill switches: global (`agent = None`) or per agent.
    fn set_killed(&self, agent: Option<&str>, killed: bool);
    /// True when the global switch or the agent's switch is on.
    fn is_killed(&self, agent: &str) -> bool;
    /// Session counters: calls and cost so far (a session never seen gives zeros).
    fn session(&self, session: &str) -> SessionStats;
    /// Counts one more call of the session, costing `cost`.
    fn session_record(&self, session: &str, cost: Decimal);
    /// Adds `delta` (possibly negative: a reported cost below the reserved one) to the session's
    /// cost, counting no call.
    fn session_cost_add(&self, session: &str, delta: Decimal);

    /// Everything a final permit changes, in this order: one admission of each rate limit it
    /// passed, its cost added to each budget key, the history ring, the session counters.
    /// Exactly the calls of the methods above; a backend may apply them at once.
    fn record_permit(&self, permit: &Permit<'_>) {
        for r in permit.rates {
            self.rate_consume(r.key, r.limit, r.period_ms, permit.now_ms);
        }
        for key in permit.spends {
            self.budget_add(key, permit.cost);
        }
        self.history_push(permit.agent, permit.tool, permit.now_ms);
        if let Some(session) = permit.session {
            self.session_record(session, permit.cost);
        }
    }

    /// A permit whose only remaining condition is its rate limits: checks each of
    /// `permit.rates` in order as [`StateStore::rate_check`] does; if all admit the call,
    /// records the permit as [`StateStore::record_permit`] does and returns `Ok(())`, else
    /// returns the index in `permit.rates` of the first that refuses with its retry-after and
    /// changes nothing. Exactly those calls; a backend may check and record at once.
    fn record_permit_within_rates(&self, permit: &Permit<'_>) -> Result<(), (usize, u64)> {
        for (i, r) in permit.rates.iter().enumerate() {
            self.rate_check(r.key, r.limit, r.period_ms, permit.now_ms)
                .map_err(|retry_after_ms| (i, retry_after_ms))?;
        }
        self.record_permit(permit);
        Ok(())
    }
}

/// The cell of a rate limit a call uses: the limit's own key (`AGENT|INDEX`, from the
/// policy), and for a per-session limit the call's session (`""` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey<'a> {
    pub limit: &'a str,
    pub session: Option<&'a str>,
}

impl<'a> RateKey<'a> {
    /// The cell of a limit shared by all sessions.
    pub fn shared(limit: &'a str) -> Self {
        RateKey {
            limit,
            session: None,
        }
    }

    /// The cell of a per-session limit for `session`.
    pub fn per_session(limit: &'a str, session: &'a str) -> Self {
        RateKey {
            limit,
            session: Some(session),
        }
    }

    /// The key as one text, `LIMIT` or `LIMIT|SESSION`: how a backend that keys cells by text
    /// names them.
    pub fn text(&self) -> Cow<'a, str> {
        match self.session {
            None => Cow::Borrowed(self.limit),
            Some(session) => {
                let mut key = String::with_capacity(self.limit.len() + 1 + session.len());
                key.push_str(self.limit);
                key.push('|');
                key.push_str(session);
                Cow::Owned(key)
            }
        }
    }
}

/// One admission of a rate limit, consumed when the call is permitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateUse<'a> {
    pub key: RateKey<'a>,
    pub limit: u64,
    pub period_ms: u64,
}

/// What a final permit changes (see [`StateStore::record_permit`]).
#[derive(Debug, Clone, Copy)]
pub struct Permit<'a> {
    pub agent: &'a str,
    pub tool: &'a str,
    pub session: Option<&'a str>,
    pub cost: Decimal,
    pub now_ms: i64,
    pub rates: &'a [RateUse<'a>],
    pub spends: &'a [String],
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub calls: u64,
    pub cost: Decimal,
}

impl SessionStats {
    /// Counts one more call costing `cost` (saturating: counters never wrap).
    pub fn record(&mut self, cost: Decimal) {
        self.calls = self.calls.saturating_add(1);
        self.add_cost(cost);
    }

    /// Adds `delta` to the cost (saturating), counting no call.
    pub fn add_cost(&mut self, delta: Decimal) {
        self.cost = add_saturating(self.cost, delta);
    }
}

/// The GCRA state of one rate-limit key: the theoretical arrival time (TAT).
///
/// Time is kept in exact units of `ms × limit`, in which the emission interval
/// `T = period_ms / limit` ms is the integer `period_ms`, so no rounding ever happens. `limit`
/// is stored beside the TAT so a key whose limit changes (policy reload) is rescaled rather
/// than misread. A durable backend can store the two numbers as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    /// Theoretical arrival time in units of `ms × limit`.
    pub tat: i128,
    /// The limit `tat` is scaled by.
    pub limit: u64,
}

/// `ceil(a / b)` for `b > 0`.
fn div_ceil_i128(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

impl GcraState {
    /// The TAT in units of the given `limit` (rounded up, i.e. never more lenient).
    fn tat_in(self, limit: u64) -> i128 {
        if self.limit == limit || self.limit == 0 {
            self.tat
        } else {
            div_ceil_i128(
                self.tat.saturating_mul(i128::from(limit)),
                i128::from(self.limit),
            )
        }
    }

    /// Would a call at `now_ms` be admitted? `Err(retry_after_ms)` if not: the smallest wait
    /// after which it would be. With burst `limit`, at most `limit` calls are admitted at once,
    /// and one more every `period_ms / limit` ms after that.
    ///
    /// `limit == 0` admits nothing (`Err(period_ms)`); `period_ms == 0` admits everything.
    pub fn check(
        state: Option<GcraState>,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        Self::admit(state, limit, period_ms, now_ms).map(|_| ())
    }

    /// The state after admitting one call at `now_ms`.
    #[inline]
    pub fn consume(state: Option<GcraState>, limit: u64, period_ms: u64, now_ms: i64) -> GcraState {
        let now = scaled(now_ms, limit);
        let tat = state.map_or(now, |s| s.tat_in(limit)).max(now);
        GcraState {
            tat: tat.saturating_add(i128::from(period_ms)),
            limit,
        }
    }

    /// [`GcraState::check`], then [`GcraState::consume`] when it admits: the state after the
    /// call, or the retry-after of its refusal.
    #[inline]
    pub fn admit(
        state: Option<GcraState>,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
    ) -> Result<GcraState, u64> {
        if period_ms == 0 {
            return Ok(Self::consume(state, limit, 0, now_ms));
        }
        if limit == 0 {
            return Err(period_ms);
        }
        let n = i128::from(limit);
        let t = i128::from(period_ms);
        let now = scaled(now_ms, limit);
        let tat = state.map_or(now, |s| s.tat_in(limit)).max(now);
        // N × T < 2^128: exact in u128, saturated into i128 as `n.saturating_mul(t)` would be.
        let burst = i128::try_from(u128::from(limit) * u128::from(period_ms)).unwrap_or(i128::MAX);
        // Admit iff max(TAT, now) + T - now <= N × T.
        let next = tat.saturating_add(t);
        let excess = next.saturating_sub(now).saturating_sub(burst);
        if excess <= 0 {
            Ok(GcraState { tat: next, limit })
        } else {
            Err(u64::try_from(div_ceil_i128(excess, n)).unwrap_or(u64::MAX))
        }
    }

    /// True when the state no longer matters at `now_ms`: its TAT is not after now, so it
    /// admits exactly like a key never seen.
    pub fn is_idle(self, now_ms: i64) -> bool {
        self.tat <= scaled(now_ms, self.limit)
    }
}

/// `now_ms × limit`, exact: its magnitude is below 2^63 × 2^64 = 2^127, so no i128 product of
/// the two overflows (and saturating would change nothing).
#[inline]
fn scaled(now_ms: i64, limit: u64) -> i128 {
    i128::from(now_ms) * i128::from(limit)
}

const RATE_PRUNE_MIN: usize = 1_024;

/// One agent's history ring: (time, tool), oldest first. Entries share the name of the tool of
/// the newest entry when theirs is the same (agents tend to repeat a tool), so recording such a
/// call allocates nothing.
type Ring = VecDeque<(i64, Arc<str>)>;

/// In-memory state: lost on restart. Kill switches are read without a lock; everything else
/// sits behind one lock, so a decision takes it twice (checking its rate limits, recording its
/// permit) rather than once per concern.
#[derive(Debug, Default)]
pub struct MemoryState {
    tables: Mutex<Tables>,
    killed_all: AtomicBool,
    killed: Mutex<HashSet<String>>,
    /// How many agents `killed` holds, so the common case (none) takes no lock.
    killed_count: AtomicUsize,
}

#[derive(Debug, Default)]
struct Tables {
    /// Cells of the limits shared by all sessions whose key names no agent ([`agent_of`]), by
    /// limit key. The keys come from the policy, never from whoever sends requests, so the
    /// policy's fast hasher is safe here.
    rates: HashMap<Box<str>, GcraState, PolicyKeys>,
    /// Prune idle cells of `rates` when it grows past this.
    prune_at: usize,
    budgets: HashMap<String, Decimal>,
    /// By agent id: ids come from the policy (only permitted calls are recorded, and limit keys
    /// name the policy's agents).
    agents: HashMap<String, AgentEntry, PolicyKeys>,
    /// By session id, which requests choose: a keyed hasher ([`SessionKeys`]).
    sessions: HashMap<String, SessionEntry, SessionKeys>,
}

/// What is kept of one agent: its history ring and the cells of the limits shared by all
/// sessions whose key names it, so that one lookup finds both for a permit.
#[derive(Debug, Default)]
struct AgentEntry {
    ring: Ring,
    /// Of its shared limits.
    rates: RateCells,
}

/// Rate cells by limit key, for the few limits of one agent or one session: a short list
/// searched in place; idle cells are dropped whenever a new one comes.
#[derive(Debug, Default)]
struct RateCells(Vec<(Box<str>, GcraState)>);

impl RateCells {
    fn get(&self, key: &str) -> Option<GcraState> {
        self.0
            .iter()
            .find(|(k, _)| same_bytes(k.as_bytes(), key.as_bytes()))
            .map(|(_, cell)| *cell)
    }

    /// Consumes one admission of the cell of `key`, first checking it when `check` is set
    /// (then a refusal changes nothing).
    #[inline]
    fn admit(
        &mut self,
        key: &str,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
        check: bool,
    ) -> Result<(), u64> {
        let cells = &mut self.0;
        let cell = cells
            .iter_mut()
            .find(|(k, _)| same_bytes(k.as_bytes(), key.as_bytes()))
            .map(|(_, cell)| cell);
        let before = cell.as_deref().copied();
        let next = if check {
            GcraState::admit(before, limit, period_ms, now_ms)?
        } else {
            GcraState::consume(before, limit, period_ms, now_ms)
        };
        match cell {
            Some(cell) => *cell = next,
            None => {
                // An idle cell admits as a cell never seen does.
                cells.retain(|(_, cell)| !cell.is_idle(now_ms));
                cells.push((key.into(), next));
            }
        }
        Ok(())
    }
}

/// The agent whose entry keeps the cell of shared limit `key`: the text before its last `|`
/// (the policy's keys are `AGENT|INDEX`). A key without `|` has its cell in `Tables::rates`.
fn agent_of(key: &str) -> Option<&str> {
    key.rsplit_once('|').map(|(agent, _)| agent)
}

/// `agent_of(key) == Some(agent)`, without searching `key` for its agent.
#[inline]
fn is_key_of(key: &str, agent: &str) -> bool {
    let (key, n) = (key.as_bytes(), agent.len());
    key.get(n) == Some(&b'|')
        && key
            .get(..n)
            .is_some_and(|head| same_bytes(head, agent.as_bytes()))
        && key
            .get(n + 1..)
            .is_some_and(|tail| tail.iter().all(|&b| b != b'|'))
}

/// What is kept of one session: its counters and the cells of its per-session rate limits.
#[derive(Debug, Default)]
struct SessionEntry {
    stats: SessionStats,
    /// Of the per-session limits the session used recently.
    rates: RateCells,
}

/// The hasher of maps keyed by what requests choose (session ids): SipHash-1-3, the algorithm
/// of std's default hasher, under random keys drawn per map, so nobody can aim keys at one
/// bucket without knowing them. It differs from std's only in taking each `write` whole (its
/// words, then its tail with its length, as SipHash ends a message), rather than streaming
/// bytes across writes: about half the cost on short ids, and still SipHash of an injective
/// encoding of the key (a `str` is its bytes, see `write_u8`).
#[derive(Clone)]
pub(crate) struct SessionKeys {
    k0: u64,
    k1: u64,
}

impl Default for SessionKeys {
    fn default() -> Self {
        // Two outputs of std's randomly keyed SipHash: as unpredictable as its keys.
        let random = RandomState::new();
        SessionKeys {
            k0: random.hash_one(0u8),
            k1: random.hash_one(1u8),
        }
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(…)")
    }
}

impl BuildHasher for SessionKeys {
    type Hasher = Sip13;

    fn build_hasher(&self) -> Sip13 {
        Sip13::new(self.k0, self.k1)
    }
}

/// SipHash-1-3 state (Aumasson and Bernstein; one round per word, three to finish).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sip13 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Sip13 {
    fn new(k0: u64, k1: u64) -> Self {
        Sip13 {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn absorb(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.v0 ^= m;
    }
}

impl Hasher for Sip13 {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.absorb(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        // The last word: the tail and the length modulo 256 in the top byte.
        self.absorb(tail_word(rest) | (bytes.len() as u64) << 56);
    }

    fn write_u8(&mut self, i: u8) {
        // A `str` hashes as one `write` and then the byte 0xff, which marks its end in a stream
        // of bytes; a whole `write` already ends with its length, so the marker is skipped (one
        // round less): a session id hashes as SipHash-1-3 of its bytes. Others: `write(&[i])`.
        if i != 0xff {
            self.absorb(u64::from(i) | 1 << 56);
        }
    }

    fn finish(&self) -> u64 {
        let mut s = *self;
        s.v2 ^= 0xff;
        s.round();
        s.round();
        s.round();
        s.v0 ^ s.v1 ^ s.v2 ^ s.v3
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `a + b`, saturating at the ends of `Decimal`.
#[inline]
fn add_saturating(a: Decimal, b: Decimal) -> Decimal {
    // Most calls add nothing to nothing. A sum with a zero is the other operand, scale and
    // sign included (`0 + 0` is the right one); the proptest checks this against the sum.
    if a.is_zero() {
        return b;
    }
    if b.is_zero() {
        return a;
    }
    add_saturating_slow(a, b)
}

fn add_saturating_slow(a: Decimal, b: Decimal) -> Decimal {
    a.checked_add(b).unwrap_or(if b.is_sign_negative() {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

impl Tables {
    fn rate_cell(&self, key: RateKey<'_>) -> Option<GcraState> {
        match key.session {
            None => match agent_of(key.limit) {
                Some(agent) => self.agents.get(agent)?.rates.get(key.limit),
                None => self.rates.get(key.limit).copied(),
            },
            Some(session) => self.sessions.get(session)?.rates.get(key.limit),
        }
    }

    fn rate_consume(&mut self, key: RateKey<'_>, limit: u64, period_ms: u64, now_ms: i64) {
        let Some(session) = key.session else {
            return self.shared_rate_consume(key.limit, limit, period_ms, now_ms);
        };
        // Consuming checks nothing, so this never fails.
        let _ = self.with_session(session, |entry| {
            entry
                .rates
                .admit(key.limit, limit, period_ms, now_ms, false)
        });
    }

    fn shared_rate_consume(&mut self, key: &str, limit: u64, period_ms: u64, now_ms: i64) {
        if let Some(agent) = agent_of(key) {
            // Consuming checks nothing, so this never fails.
            let _ = self.with_agent(agent, |entry| {
                entry.rates.admit(key, limit, period_ms, now_ms, false)
            });
            return;
        }
        let cell = self.rates.get_mut(key);
        let next = GcraState::consume(cell.as_deref().copied(), limit, period_ms, now_ms);
        match cell {
            Some(cell) => *cell = next,
            None => {
                self.rates.insert(key.into(), next);
            }
        }
        self.prune_rates(now_ms);
    }

    fn prune_rates(&mut self, now_ms: i64) {
        if self.rates.len() > self.prune_at.max(RATE_PRUNE_MIN) {
            self.rates.retain(|_, cell| !cell.is_idle(now_ms));
            self.prune_at = self.rates.len().saturating_mul(2);
        }
    }

    fn budget_add(&mut self, key: &str, amount: Decimal) -> Decimal {
        match self.budgets.get_mut(key) {
            Some(spent) => {
                *spent = add_saturating(*spent, amount);
                *spent
            }
            None => {
                self.budgets.insert(key.to_owned(), amount);
                amount
            }
        }
    }

    fn history_push(&mut self, agent: &str, tool: &str, now_ms: i64) {
        self.with_agent(agent, |entry| entry.history_push(tool, now_ms));
    }

    /// Everything a final permit changes (see [`StateStore::record_permit`]).
    fn record_permit(&mut self, permit: &Permit<'_>) {
        for r in permit.rates {
            self.rate_consume(r.key, r.limit, r.period_ms, permit.now_ms);
        }
        self.record_permit_but_rates(permit, true);
    }

    /// [`StateStore::record_permit_within_rates`] under the lock.
    fn record_permit_within_rates(&mut self, permit: &Permit<'_>) -> Result<(), (usize, u64)> {
        // The usual single shared limit of the permit's own agent: its cell and the history
        // ring are in the agent's entry, found by one lookup.
        if let [r] = permit.rates
            && r.key.session.is_none()
            && is_key_of(r.key.limit, permit.agent)
        {
            let admit = |entry: &mut AgentEntry| {
                entry
                    .rates
                    .admit(r.key.limit, r.limit, r.period_ms, permit.now_ms, true)?;
                entry.history_push(permit.tool, permit.now_ms);
                Ok(())
            };
            match self.agents.get_mut(permit.agent) {
                Some(entry) => admit(entry),
                // A refusal makes no entry.
                None => GcraState::check(None, r.limit, r.period_ms, permit.now_ms)
                    .and_then(|()| admit(self.agents.entry(permit.agent.to_owned()).or_default())),
            }
            .map_err(|retry_after_ms| (0, retry_after_ms))?;
            self.record_permit_but_rates(permit, false);
            return Ok(());
        }
        for (i, r) in permit.rates.iter().enumerate() {
            GcraState::check(self.rate_cell(r.key), r.limit, r.period_ms, permit.now_ms)
                .map_err(|retry_after_ms| (i, retry_after_ms))?;
        }
        self.record_permit(permit);
        Ok(())
    }

    /// What a final permit changes besides its rate limits (and its history entry unless
    /// `history`).
    fn record_permit_but_rates(&mut self, permit: &Permit<'_>, history: bool) {
        for key in permit.spends {
            self.budget_add(key, permit.cost);
        }
        if history {
            self.history_push(permit.agent, permit.tool, permit.now_ms);
        }
        if let Some(session) = permit.session {
            self.with_session(session, |entry| entry.stats.record(permit.cost));
        }
    }

    /// Runs `f` on the agent's entry, made if it is new.
    fn with_agent<R>(&mut self, agent: &str, f: impl FnOnce(&mut AgentEntry) -> R) -> R {
        match self.agents.get_mut(agent) {
            Some(entry) => f(entry),
            None => f(self.agents.entry(agent.to_owned()).or_default()),
        }
    }

    /// Runs `f` on the session's entry, made if it is new (a known session costs no `String`).
    fn with_session<R>(&mut self, session: &str, f: impl FnOnce(&mut SessionEntry) -> R) -> R {
        match self.sessions.get_mut(session) {
            Some(entry) => f(entry),
            None => f(self.sessions.entry(session.to_owned()).or_default()),
        }
    }
}

impl AgentEntry {
    fn history_push(&mut self, tool: &str, now_ms: i64) {
        let ring = &mut self.ring;
        let repeated = matches!(ring.back(), Some((_, newest)) if same_bytes(newest.as_bytes(), tool.as_bytes()));
        // Keep time order even if the clock stepped back (normally this is a push_back).
        if ring.back().is_none_or(|(last, _)| *last <= now_ms) {
            // A full ring drops its oldest entry for the new one: dropped first, its name is
            // the new entry's when it is the newest's too (no reference count changes).
            let oldest = match ring.len() >= HISTORY_CAPACITY {
                true => ring.pop_front(),
                false => None,
            };
            let name = match (oldest, ring.back()) {
                (Some((_, old)), Some((_, newest))) if repeated && Arc::ptr_eq(&old, newest) => old,
                (_, Some((_, newest))) if repeated => Arc::clone(newest),
                _ => Arc::from(tool),
            };
            ring.push_back((now_ms, name));
        } else {
            let name = match ring.back() {
                Some((_, newest)) if repeated => Arc::clone(newest),
                _ => Arc::from(tool),
            };
            let at = ring.partition_point(|(t, _)| *t <= now_ms);
            ring.insert(at, (now_ms, name));
        }
        while ring.len() > HISTORY_CAPACITY {
            ring.pop_front();
        }
    }
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of `agent`'s history ring, oldest first: lets a durable backend's tests compare
    /// what it reloads with what was pushed.
    pub fn history(&self, agent: &str) -> Vec<(i64, String)> {
        lock(&self.tables)
            .agents
            .get(agent)
            .map_or_else(Vec::new, |entry| {
                entry
                    .ring
                    .iter()
                    .map(|(t, tool)| (*t, tool.to_string()))
                    .collect()
            })
    }
}

impl StateStore for MemoryState {
    fn rate_check(
        &self,
        key: RateKey<'_>,
        limit: u64,
        period_ms: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        let cell = lock(&self.tables).rate_cell(key);
        GcraState::check(cell, limit, period_ms, now_ms)
    }

    fn rate_consume(&self, key: RateKey<'_>, limit: u64, period_ms: u64, now_ms: i64) {
        lock(&self.tables).rate_consume(key, limit, period_ms, now_ms);
    }

    fn budget_spent(&self, key: &str) -> Decimal {
        lock(&self.tables)
            .budgets
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    fn budget_add(&self, key: &str, amount: Decimal) -> Decimal {
        lock(&self.tables).budget_add(key, amount)
    }

    fn history_push(&self, agent: &str, tool: &str, now_ms: i64) {
        lock(&self.tables).history_push(agent, tool, now_ms);
    }

    fn history_count(&self, agent: &str, pattern: &ToolPattern, since_ms: i64) -> u64 {
        let tables = lock(&self.tables);
        let Some(AgentEntry { ring, .. }) = tables.agents.get(agent) else {
            return 0;
        };
        let n = ring
            .iter()
            .rev()
            .take_while(|(t, _)| *t >= since_ms)
            .filter(|(_, tool)| pattern.matches(tool))
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    fn set_killed(&self, agent: Option<&str>, killed: bool) {
        match agent {
            None => self.killed_all.store(killed, Ordering::SeqCst),
            Some(agent) => {
                let mut set = lock(&self.killed);
                if killed {
                    set.insert(agent.to_owned());
                } else {
                    set.remove(agent);
                }
                // Under the lock, so the count always matches the set once the lock is free.
                self.killed_count.store(set.len(), Ordering::SeqCst);
            }
        }
    }

    fn is_killed(&self, agent: &str) -> bool {
        self.killed_all.load(Ordering::SeqCst)
            || (self.killed_count.load(Ordering::SeqCst) > 0 && lock(&self.killed).contains(agent))
    }

    fn session(&self, session: &str) -> SessionStats {
        lock(&self.tables)
            .sessions
            .get(session)
            .map(|entry| entry.stats)
            .unwrap_or_default()
    }

    fn session_record(&self, session: &str, cost: Decimal) {
        lock(&self.tables).with_session(session, |entry| entry.stats.record(cost));
    }

    fn session_cost_add(&self, session: &str, delta: Decimal) {
        lock(&self.tables).with_session(session, |entry| entry.stats.add_cost(delta));
    }

    /// The same changes as the provided method, under one lock.
    fn record_permit(&self, permit: &Permit<'_>) {
        lock(&self.tables).record_permit(permit);
    }

    /// The same checks and changes as the provided method, under one lock: no other decision
    /// can consume a checked rate before this one records its permit.
    fn record_permit_within_rates(&self, permit: &Permit<'_>) -> Result<(), (usize, u64)> {
        lock(&self.tables).record_permit_within_rates(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MINUTE: u64 = 60_000;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> ToolPattern {
        ToolPattern::parse(s).unwrap()
    }

    /// Check, and consume when admitted: what the engine does for a permit.
    fn call(s: &dyn StateStore, key: &str, limit: u64, period: u64, now: i64) -> Result<(), u64> {
        s.rate_check(RateKey::shared(key), limit, period, now)?;
        s.rate_consume(RateKey::shared(key), limit, period, now);
        Ok(())
    }

    #[test]
    fn corpus_three_per_minute() {
        let s = MemoryState::new();
        let t0 = 1_767_258_000_000; // 2026-01-01T09:00:00Z
        for _ in 0..3 {
            assert_eq!(call(&s, "limited/0", 3, MINUTE, t0), Ok(()));
        }
        assert_eq!(call(&s, "limited/0", 3, MINUTE, t0), Err(20_000));
        // A refused call consumed nothing: still exactly 20 s to wait.
        assert_eq!(
            s.rate_check(RateKey::shared("limited/0"), 3, MINUTE, t0),
            Err(20_000)
        );
        assert_eq!(call(&s, "limited/0", 3, MINUTE, t0 + 61_000), Ok(()));
    }

    #[test]
    fn steady_rate_after_the_burst() {
        // 2 per second: a burst of 2, then one every 500 ms.
        let s = MemoryState::new();
        assert_eq!(call(&s, "k", 2, 1_000, 0), Ok(()));
        assert_eq!(call(&s, "k", 2, 1_000, 0), Ok(()));
        assert_eq!(call(&s, "k", 2, 1_000, 0), Err(500));
        for i in 1..=20 {
            let at = i * 500;
            assert_eq!(
                call(&s, "k", 2, 1_000, at - 1),
                Err(1),
                "just before slot {i}"
            );
            assert_eq!(call(&s, "k", 2, 1_000, at), Ok(()), "slot {i}");
            assert_eq!(
                call(&s, "k", 2, 1_000, at),
                Err(500),
                "second call in slot {i}"
            );
        }
        // After a long pause the full burst is back, but not more.
        let later = 1_000_000;
        assert_eq!(call(&s, "k", 2, 1_000, later), Ok(()));
        assert_eq!(call(&s, "k", 2, 1_000, later), Ok(()));
        assert_eq!(call(&s, "k", 2, 1_000, later), Err(500));
    }

    #[test]
    fn retry_after_is_exact_with_a_fractional_interval() {
        // 3 per second: T = 333⅓ ms.
        let s = MemoryState::new();
        for _ in 0..3 {
            assert_eq!(call(&s, "k", 3, 1_000, 0), Ok(()));
        }
        assert_eq!(s.rate_check(RateKey::shared("k"), 3, 1_000, 0), Err(334));
        assert_eq!(s.rate_check(RateKey::shared("k"), 3, 1_000, 333), Err(1));
        assert_eq!(s.rate_check(RateKey::shared("k"), 3, 1_000, 334), Ok(()));
        // Three slots later no rounding has accumulated: the 3rd refill is at exactly 1000 ms.
        assert_eq!(call(&s, "k", 3, 1_000, 334), Ok(()));
        assert_eq!(s.rate_check(RateKey::shared("k"), 3, 1_000, 666), Err(1));
        assert_eq!(call(&s, "k", 3, 1_000, 667), Ok(()));
        assert_eq!(s.rate_check(RateKey::shared("k"), 3, 1_000, 999), Err(1));
        assert_eq!(call(&s, "k", 3, 1_000, 1_000), Ok(()));
        assert_eq!(
            s.rate_check(RateKey::shared("k"), 3, 1_000, 1_000),
            Err(334)
        );
    }

    #[test]
    fn keys_are_independent() {
        let s = MemoryState::new();
        let session = |limit, session| RateKey::per_session(limit, session);
        let per = |key: RateKey<'_>, now| -> Result<(), u64> {
            s.rate_check(key, 1, MINUTE, now)?;
            s.rate_consume(key, 1, MINUTE, now);
            Ok(())
        };
        assert_eq!(per(session("a|0", "s1"), 0), Ok(()));
        assert_eq!(per(session("a|0", "s1"), 0), Err(60_000));
        assert_eq!(per(session("a|0", "s2"), 0), Ok(()));
        assert_eq!(per(session("a|1", "s1"), 0), Ok(()));
        assert_eq!(per(session("b|0", "s1"), 0), Ok(()));
        // A call without a session has the per-session cell of the empty session.
        assert_eq!(per(session("a|0", ""), 0), Ok(()));
        assert_eq!(per(session("a|0", ""), 0), Err(60_000));
        // The shared cell of a limit is not any session's.
        assert_eq!(per(RateKey::shared("a|0"), 0), Ok(()));
        assert_eq!(per(RateKey::shared("a|1"), 0), Ok(()));
        assert_eq!(call(&s, "a|1", 1, MINUTE, 0), Err(60_000));
        assert_eq!(
            s.rate_check(session("a|0", "s1"), 1, MINUTE, 30_000),
            Err(30_000)
        );
        // Per-session cells do not touch the session's counters.
        assert_eq!(s.session("s1"), SessionStats::default());
    }

    #[test]
    fn rate_keys_as_text() {
        assert_eq!(RateKey::shared("a|0").text(), "a|0");
        assert_eq!(RateKey::per_session("a|0", "s1").text(), "a|0|s1");
        assert_eq!(RateKey::per_session("a|0", "").text(), "a|0|");
    }

    #[test]
    fn check_does_not_consume() {
        let s = MemoryState::new();
        for _ in 0..100 {
            assert_eq!(s.rate_check(RateKey::shared("k"), 3, MINUTE, 0), Ok(()));
        }
        for _ in 0..3 {
            assert_eq!(call(&s, "k", 3, MINUTE, 0), Ok(()));
        }
        assert_eq!(
            s.rate_check(RateKey::shared("k"), 3, MINUTE, 0),
            Err(20_000)
        );
    }

    #[test]
    fn degenerate_limits() {
        let s = MemoryState::new();
        assert_eq!(
            s.rate_check(RateKey::shared("zero"), 0, MINUTE, 0),
            Err(MINUTE)
        );
        for _ in 0..10 {
            assert_eq!(call(&s, "unbounded", 5, 0, 0), Ok(()));
        }
        // Extreme values saturate instead of overflowing.
        assert_eq!(call(&s, "huge", u64::MAX, u64::MAX, i64::MAX), Ok(()));
        assert_eq!(call(&s, "huge", u64::MAX, u64::MAX, i64::MAX), Ok(()));
        assert_eq!(call(&s, "one", 1, u64::MAX, i64::MIN), Ok(()));
        assert_eq!(
            s.rate_check(RateKey::shared("one"), 1, u64::MAX, i64::MIN),
            Err(u64::MAX)
        );
    }

    #[test]
    fn a_changed_limit_rescales_the_state() {
        let s = MemoryState::new();
        for _ in 0..3 {
            assert_eq!(call(&s, "k", 3, MINUTE, 0), Ok(()));
        }
        // The TAT is 60 s ahead. As 6 per minute (T = 10 s) that leaves room for 0 at once…
        assert_eq!(
            s.rate_check(RateKey::shared("k"), 6, MINUTE, 0),
            Err(10_000)
        );
        // …and as 1 per minute the same TAT means one minute to wait.
        assert_eq!(
            s.rate_check(RateKey::shared("k"), 1, MINUTE, 0),
            Err(60_000)
        );
        assert_eq!(call(&s, "k", 6, MINUTE, 10_000), Ok(()));
    }

    #[test]
    fn idle_rate_cells_are_pruned() {
        let s = MemoryState::new();
        for i in 0..5_000 {
            s.rate_consume(RateKey::shared(&format!("k{i}")), 1, 1_000, i);
        }
        // Every cell older than a second has gone idle and was pruned along the way.
        let len = lock(&s.tables).rates.len();
        assert!(len <= 2 * RATE_PRUNE_MIN + 1_000, "{len}");
        // Pruning did not forget live cells.
        assert_eq!(
            s.rate_check(RateKey::shared("k4999"), 1, 1_000, 4_999),
            Err(1_000)
        );
    }

    #[test]
    fn idle_cells_of_an_agent_are_dropped() {
        let s = MemoryState::new();
        for i in 0..5_000 {
            s.rate_consume(RateKey::shared(&format!("a|{i}")), 1, 1_000, i);
        }
        // A cell is dropped once idle, when a new one comes: those of the last second stay.
        let len = lock(&s.tables).agents["a"].rates.0.len();
        assert!(len <= 1_001, "{len}");
        assert!(lock(&s.tables).rates.is_empty());
        assert_eq!(
            s.rate_check(RateKey::shared("a|4999"), 1, 1_000, 4_999),
            Err(1_000)
        );
        assert_eq!(
            s.rate_check(RateKey::shared("a|0"), 1, 1_000, 4_999),
            Ok(())
        );
    }

    #[test]
    fn budgets_accumulate_per_key() {
        let s = MemoryState::new();
        assert_eq!(s.budget_spent("bot/daily/0"), Decimal::ZERO);
        assert_eq!(s.budget_add("bot/daily/0", dec("19.99")), dec("19.99"));
        assert_eq!(s.budget_add("bot/daily/0", dec("0.01")), dec("20.00"));
        assert_eq!(s.budget_add("bot/daily/0", dec("30000")), dec("30020.00"));
        assert_eq!(s.budget_spent("bot/daily/0"), dec("30020"));
        // A reconciliation that reports less than reserved.
        assert_eq!(s.budget_add("bot/daily/0", dec("-20")), dec("30000"));
        // Other windows and agents are separate.
        assert_eq!(s.budget_spent("bot/daily/86400000"), Decimal::ZERO);
        assert_eq!(s.budget_add("other/daily/0", dec("1")), dec("1"));
        assert_eq!(s.budget_spent("bot/daily/0"), dec("30000"));
        // Saturates instead of overflowing.
        s.budget_add("big", Decimal::MAX);
        assert_eq!(s.budget_add("big", Decimal::ONE), Decimal::MAX);
    }

    #[test]
    fn history_counts_within_the_window() {
        let s = MemoryState::new();
        for (t, tool) in [
            (1_000, "stripe/refund"),
            (2_000, "stripe/charge"),
            (3_000, "stripe/refund"),
            (4_000, "db/query"),
            (5_000, "stripe/refund"),
        ] {
            s.history_push("bot", tool, t);
        }
        s.history_push("other", "stripe/refund", 5_000);
        let refunds = pat("stripe/refund");
        assert_eq!(s.history_count("bot", &refunds, 0), 3);
        assert_eq!(s.history_count("bot", &refunds, 3_000), 2); // `since` is inclusive
        assert_eq!(s.history_count("bot", &refunds, 3_001), 1);
        assert_eq!(s.history_count("bot", &refunds, 5_001), 0);
        assert_eq!(s.history_count("bot", &pat("stripe/*"), 2_000), 3);
        assert_eq!(s.history_count("bot", &pat("*"), 0), 5);
        assert_eq!(s.history_count("other", &pat("*"), 0), 1);
        assert_eq!(s.history_count("nobody", &pat("*"), 0), 0);
        // A clock that stepped back still gives a time-ordered ring.
        s.history_push("bot", "stripe/refund", 2_500);
        assert_eq!(s.history_count("bot", &refunds, 2_500), 3);
        assert_eq!(s.history_count("bot", &refunds, 3_000), 2);
        let times: Vec<i64> = lock(&s.tables).agents["bot"]
            .ring
            .iter()
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(times, [1_000, 2_000, 2_500, 3_000, 4_000, 5_000]);
    }

    #[test]
    fn repeated_tools_share_their_name() {
        let s = MemoryState::new();
        for (t, tool) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
            s.history_push("bot", tool, t);
        }
        let tables = lock(&s.tables);
        let ring: Vec<&Arc<str>> = tables.agents["bot"]
            .ring
            .iter()
            .map(|(_, tool)| tool)
            .collect();
        assert!(Arc::ptr_eq(ring[0], ring[1]));
        assert!(!Arc::ptr_eq(ring[1], ring[3]));
        drop(tables);
        assert_eq!(
            s.history("bot"),
            [(1, "a"), (2, "a"), (3, "b"), (4, "a")].map(|(t, n)| (t, n.to_string()))
        );
    }

    /// A full ring takes each new entry in place of its oldest, reusing that entry's name
    /// when it is the newest's too, and stays exactly the most recent entries in time order
    /// (the clock stepping back included).
    #[test]
    fn a_full_ring_keeps_the_newest_entries() {
        let s = MemoryState::new();
        let mut model: VecDeque<(i64, String)> = VecDeque::new();
        let mut push = |s: &MemoryState, tool: &str, t: i64| {
            s.history_push("bot", tool, t);
            let at = model.partition_point(|(u, _)| *u <= t);
            model.insert(at, (t, tool.to_owned()));
            while model.len() > HISTORY_CAPACITY {
                model.pop_front();
            }
        };
        // Runs of one tool, so the oldest entry is often the newest's name.
        let tools = ["a", "b", "a"];
        for i in 0..(3 * HISTORY_CAPACITY as i64) {
            let tool = tools[(i / 2_500 % 3) as usize];
            push(&s, tool, i);
        }
        {
            let tables = lock(&s.tables);
            let ring = &tables.agents["bot"].ring;
            assert_eq!(ring.len(), HISTORY_CAPACITY);
            // The newest run (2,500 calls of `a`, after `b`) shares one name.
            let newest = &ring[HISTORY_CAPACITY - 1].1;
            assert!(
                ring.iter()
                    .rev()
                    .take(2_500)
                    .all(|(_, t)| Arc::ptr_eq(t, newest))
            );
            assert!(!Arc::ptr_eq(&ring[HISTORY_CAPACITY - 2_501].1, newest));
        }
        push(&s, "c", 5);
        push(&s, "a", 3 * HISTORY_CAPACITY as i64 - 2);
        push(&s, "a", 3 * HISTORY_CAPACITY as i64 + 1);
        assert_eq!(s.history("bot"), Vec::from(model));
    }

    #[test]
    fn history_is_bounded_per_agent() {
        let s = MemoryState::new();
        let extra = 50;
        for i in 0..(HISTORY_CAPACITY as i64 + extra) {
            s.history_push("bot", if i % 2 == 0 { "even" } else { "odd" }, i);
        }
        s.history_push("quiet", "even", 0);
        assert_eq!(lock(&s.tables).agents["bot"].ring.len(), HISTORY_CAPACITY);
        assert_eq!(
            s.history_count("bot", &pat("*"), i64::MIN),
            HISTORY_CAPACITY as u64
        );
        // The oldest `extra` entries were dropped: counting from before them sees none of them.
        assert_eq!(
            s.history_count("bot", &pat("*"), 0),
            HISTORY_CAPACITY as u64
        );
        assert_eq!(
            s.history_count("bot", &pat("even"), 0),
            HISTORY_CAPACITY as u64 / 2
        );
        assert_eq!(
            lock(&s.tables).agents["bot"].ring.front().map(|(t, _)| *t),
            Some(extra)
        );
        // Other agents keep their own ring.
        assert_eq!(s.history_count("quiet", &pat("*"), i64::MIN), 1);
    }

    #[test]
    fn kill_switches_global_and_per_agent() {
        let s = MemoryState::new();
        assert!(!s.is_killed("a"));
        s.set_killed(Some("a"), true);
        assert!(s.is_killed("a"));
        assert!(!s.is_killed("b"));
        s.set_killed(None, true);
        assert!(s.is_killed("a") && s.is_killed("b"));
        // Lifting one agent's switch does not lift the global one.
        s.set_killed(Some("a"), false);
        assert!(s.is_killed("a"));
        s.set_killed(None, false);
        assert!(!s.is_killed("a") && !s.is_killed("b"));
        // And lifting the global switch keeps per-agent ones.
        s.set_killed(Some("b"), true);
        s.set_killed(None, true);
        s.set_killed(None, false);
        assert!(s.is_killed("b") && !s.is_killed("a"));
    }

    #[test]
    fn session_counters() {
        let s = MemoryState::new();
        assert_eq!(s.session("s-1"), SessionStats::default());
        s.session_record("s-1", dec("1.50"));
        s.session_record("s-1", Decimal::ZERO);
        s.session_record("s-1", dec("2.25"));
        s.session_record("s-2", dec("9"));
        assert_eq!(
            s.session("s-1"),
            SessionStats {
                calls: 3,
                cost: dec("3.75")
            }
        );
        assert_eq!(
            s.session("s-2"),
            SessionStats {
                calls: 1,
                cost: dec("9")
            }
        );
        assert_eq!(s.session("s-3"), SessionStats::default());
    }

    #[test]
    fn shared_between_threads_admits_exactly_the_burst() {
        let s: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        s.rate_consume(RateKey::shared("k"), 1_000, MINUTE, 0);
                        s.budget_add("b", Decimal::ONE);
                        s.session_record("s", Decimal::ONE);
                        s.history_push("a", "t", 0);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // 800 consumptions of a burst of 1000 leave room for exactly 200 more.
        for _ in 0..200 {
            assert_eq!(call(&*s, "k", 1_000, MINUTE, 0), Ok(()));
        }
        assert_eq!(
            s.rate_check(RateKey::shared("k"), 1_000, MINUTE, 0),
            Err(60)
        );
        assert_eq!(s.budget_spent("b"), dec("800"));
        assert_eq!(s.session("s").calls, 800);
        assert_eq!(s.history_count("a", &pat("t"), 0), 800);
    }

    #[test]
    fn poisoned_locks_are_recovered() {
        let s = Arc::new(MemoryState::new());
        s.budget_add("b", Decimal::ONE);
        let s2 = Arc::clone(&s);
        let _ = std::thread::spawn(move || {
            let _guard = s2.tables.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(s.tables.is_poisoned());
        assert_eq!(s.budget_add("b", Decimal::ONE), dec("2"));
    }

    /// The provided `record_permit` (one call per change) on the memory store's own methods:
    /// the reference the store's one-lock version is compared with.
    #[derive(Debug)]
    struct OneByOne(MemoryState);

    impl StateStore for OneByOne {
        fn rate_check(&self, k: RateKey<'_>, l: u64, p: u64, now: i64) -> Result<(), u64> {
            self.0.rate_check(k, l, p, now)
        }
        fn rate_consume(&self, k: RateKey<'_>, l: u64, p: u64, now: i64) {
            self.0.rate_consume(k, l, p, now)
        }
        fn budget_spent(&self, key: &str) -> Decimal {
            self.0.budget_spent(key)
        }
        fn budget_add(&self, key: &str, amount: Decimal) -> Decimal {
            self.0.budget_add(key, amount)
        }
        fn history_push(&self, agent: &str, tool: &str, now_ms: i64) {
            self.0.history_push(agent, tool, now_ms)
        }
        fn history_count(&self, agent: &str, pattern: &ToolPattern, since_ms: i64) -> u64 {
            self.0.history_count(agent, pattern, since_ms)
        }
        fn set_killed(&self, agent: Option<&str>, killed: bool) {
            self.0.set_killed(agent, killed)
        }
        fn is_killed(&self, agent: &str) -> bool {
            self.0.is_killed(agent)
        }
        fn session(&self, session: &str) -> SessionStats {
            self.0.session(session)
        }
        fn session_record(&self, session: &str, cost: Decimal) {
            self.0.session_record(session, cost)
        }
        fn session_cost_add(&self, session: &str, delta: Decimal) {
            self.0.session_cost_add(session, delta)
        }
    }

    mod state_prop {
        use super::*;
        use proptest::prelude::*;

        /// The simplest GCRA store: every cell in one map by its key as text, never pruned.
        #[derive(Default)]
        struct Reference {
            cells: HashMap<String, GcraState>,
            sessions: HashMap<String, SessionStats>,
            budgets: HashMap<String, Decimal>,
        }

        impl Reference {
            fn check(&self, r: &RateUse<'_>, now: i64) -> Result<(), u64> {
                let cell = self.cells.get(r.key.text().as_ref()).copied();
                GcraState::check(cell, r.limit, r.period_ms, now)
            }

            fn permit(&mut self, p: &Permit<'_>) {
                for r in p.rates {
                    let key = r.key.text().into_owned();
                    let cell = self.cells.get(&key).copied();
                    let next = GcraState::consume(cell, r.limit, r.period_ms, p.now_ms);
                    self.cells.insert(key, next);
                }
                for key in p.spends {
                    let spent = self.budgets.entry(key.clone()).or_default();
                    *spent = add_saturating(*spent, p.cost);
                }
                if let Some(s) = p.session {
                    self.sessions
                        .entry(s.to_owned())
                        .or_default()
                        .record(p.cost);
                }
            }
        }

        /// Keys of limits: of agent `a`, of `b`, of none, of agent `a|b` and of `ab`.
        const LIMITS: [&str; 6] = ["a|0", "a|1", "b|0", "k", "a|b|0", "ab|0"];
        const SESSIONS: [&str; 3] = ["", "s1", "s|2"];
        /// Agents whose permits do and do not own the limits above.
        const AGENTS: [&str; 4] = ["a", "b", "a|b", "bot"];

        /// The rate uses that generated (limit, session, allowance) triples stand for; a
        /// session index past `SESSIONS` is no session.
        fn rate_uses(uses: &[(usize, usize, u64)]) -> Vec<RateUse<'static>> {
            uses.iter()
                .map(|&(l, s, limit)| RateUse {
                    key: RateKey {
                        limit: LIMITS[l],
                        session: SESSIONS.get(s).copied(),
                    },
                    limit,
                    period_ms: 1_000,
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Shared cells, per-session cells (kept in the session's entry), idle cells
            /// dropped, limits that change, and permits recorded at once: the store answers
            /// every check exactly as one map of cells by text does.
            #[test]
            fn rate_cells_match_one_map_by_text(
                steps in proptest::collection::vec(
                    (0i64..1_500, proptest::collection::vec((0usize..6, 0usize..4, 1u64..4), 0..3),
                     0usize..4, 0u32..3, any::<bool>(), 0usize..4),
                    1..120,
                ),
            ) {
                let fast = MemoryState::new();
                let slow = OneByOne(MemoryState::new());
                let mut model = Reference::default();
                let mut now = 1_000_000i64;
                for (delay, uses, session, cost, at_once, agent) in steps {
                    now += delay;
                    let session = SESSIONS.get(session).copied();
                    let rates = rate_uses(&uses);
                    let mut admitted = true;
                    for r in &rates {
                        let want = model.check(r, now);
                        prop_assert_eq!(fast.rate_check(r.key, r.limit, r.period_ms, now), want);
                        prop_assert_eq!(slow.rate_check(r.key, r.limit, r.period_ms, now), want);
                        admitted &= want.is_ok();
                    }
                    if !admitted {
                        continue;
                    }
                    let spends = [String::from("bot|daily|0")];
                    let agent = AGENTS[agent];
                    let permit = Permit {
                        agent,
                        tool: "t/op",
                        session,
                        cost: Decimal::from(cost),
                        now_ms: now,
                        rates: &rates,
                        spends: &spends[..usize::from(cost > 0)],
                    };
                    model.permit(&permit);
                    if at_once {
                        fast.record_permit(&permit);
                    } else {
                        // The same changes, one method at a time.
                        for r in &rates {
                            fast.rate_consume(r.key, r.limit, r.period_ms, now);
                        }
                        for key in permit.spends {
                            fast.budget_add(key, permit.cost);
                        }
                        fast.history_push(agent, "t/op", now);
                        if let Some(s) = session {
                            fast.session_record(s, permit.cost);
                        }
                    }
                    slow.record_permit(&permit);
                }
                for s in SESSIONS {
                    let want = model.sessions.get(s).copied().unwrap_or_default();
                    prop_assert_eq!(fast.session(s), want);
                    prop_assert_eq!(slow.session(s), want);
                }
                let spent = model.budgets.get("bot|daily|0").copied().unwrap_or_default();
                prop_assert_eq!(fast.budget_spent("bot|daily|0"), spent);
                prop_assert_eq!(slow.budget_spent("bot|daily|0"), spent);
                for agent in AGENTS {
                    prop_assert_eq!(fast.history(agent), slow.0.history(agent));
                }
            }

            /// Checking the rates and recording the permit under one lock answers and changes
            /// exactly what the provided method's calls do: the first refusing rate with its
            /// retry-after and nothing changed, or every change of the permit.
            #[test]
            fn one_lock_permit_matches_check_then_record(
                steps in proptest::collection::vec(
                    (0i64..1_500, proptest::collection::vec((0usize..6, 0usize..4, 1u64..4), 0..4),
                     0usize..4, 0usize..4, "t/op|t/other"),
                    1..120,
                ),
            ) {
                let fast = MemoryState::new();
                let slow = OneByOne(MemoryState::new());
                let mut model = Reference::default();
                let mut now = 1_000_000i64;
                for (delay, uses, session, agent, tool) in steps {
                    now += delay;
                    let rates = rate_uses(&uses);
                    let permit = Permit {
                        agent: AGENTS[agent],
                        tool: &tool,
                        session: SESSIONS.get(session).copied(),
                        cost: Decimal::ZERO,
                        now_ms: now,
                        rates: &rates,
                        spends: &[],
                    };
                    let want = rates
                        .iter()
                        .enumerate()
                        .find_map(|(i, r)| model.check(r, now).err().map(|retry| (i, retry)))
                        .map_or(Ok(()), Err);
                    if want.is_ok() {
                        model.permit(&permit);
                    }
                    prop_assert_eq!(fast.record_permit_within_rates(&permit), want);
                    prop_assert_eq!(slow.record_permit_within_rates(&permit), want);
                    for r in &rates {
                        let want = model.check(r, now);
                        prop_assert_eq!(fast.rate_check(r.key, r.limit, r.period_ms, now), want);
                        prop_assert_eq!(slow.rate_check(r.key, r.limit, r.period_ms, now), want);
                    }
                }
                for s in SESSIONS {
                    let want = model.sessions.get(s).copied().unwrap_or_default();
                    prop_assert_eq!(fast.session(s), want);
                    prop_assert_eq!(slow.session(s), want);
                }
                for agent in AGENTS {
                    prop_assert_eq!(fast.history(agent), slow.0.history(agent));
                }
            }
        }
    }

    mod add_prop {
        use super::*;
        use proptest::prelude::*;
        use std::hash::Hash;

        fn decimal() -> impl Strategy<Value = Decimal> {
            (any::<i64>(), 0u32..28, any::<bool>(), 0u8..4).prop_map(|(n, scale, neg, kind)| {
                let d = match kind {
                    0 => Decimal::ZERO,
                    1 => Decimal::new(0, scale),
                    2 => Decimal::MAX,
                    _ => Decimal::new(n, scale),
                };
                if neg { -d } else { d }
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            /// The zero shortcut gives the very `Decimal` the full sum gives: same value, same
            /// scale, same sign.
            #[test]
            fn add_saturating_is_the_saturating_sum(a in decimal(), b in decimal()) {
                let got = add_saturating(a, b);
                let want = add_saturating_slow(a, b);
                prop_assert_eq!(got.serialize(), want.serialize());
            }

            /// One write is SipHash-1-3 of its bytes: std's default hasher, whose keys are
            /// zero when made with `new` (and whose algorithm is SipHash-1-3 today).
            #[test]
            fn one_write_is_siphash_1_3(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
                let mut ours = Sip13::new(0, 0);
                ours.write(&bytes);
                let mut std = std::hash::DefaultHasher::new();
                std.write(&bytes);
                prop_assert_eq!(ours.finish(), std.finish());
            }

            /// Session ids that differ hash differently (with overwhelming probability); an id
            /// hashes as one write of its bytes (std's SipHash-1-3 of them under zero keys), and
            /// `write_u8` is a one-byte `write` but for a `str`'s end marker 0xff.
            #[test]
            fn session_keys_hash_ids_apart(
                a in "[a-z0-9-]{0,20}",
                b in "[a-z0-9-]{0,20}",
                byte in any::<u8>(),
            ) {
                let keys = SessionKeys::default();
                prop_assert_eq!(keys.hash_one(&a) == keys.hash_one(&b), a == b);
                let mut ours = Sip13::new(0, 0);
                a.hash(&mut ours);
                let mut std = std::hash::DefaultHasher::new();
                std.write(a.as_bytes());
                prop_assert_eq!(ours.finish(), std.finish());
                let mut one = keys.build_hasher();
                one.write_u8(byte);
                let mut two = keys.build_hasher();
                if byte != 0xff {
                    two.write(&[byte]);
                }
                prop_assert_eq!(one.finish(), two.finish());
            }
        }
    }

    mod fast_paths_prop {
        use super::*;
        use proptest::prelude::*;

        /// `GcraState::check` as it was written with saturating i128 products throughout.
        fn check_saturating(
            state: Option<GcraState>,
            limit: u64,
            period_ms: u64,
            now_ms: i64,
        ) -> Result<(), u64> {
            if period_ms == 0 {
                return Ok(());
            }
            if limit == 0 {
                return Err(period_ms);
            }
            let n = i128::from(limit);
            let t = i128::from(period_ms);
            let now = i128::from(now_ms).saturating_mul(n);
            let tat = state.map_or(now, |s| s.tat_in(limit)).max(now);
            let excess = tat
                .saturating_add(t)
                .saturating_sub(now)
                .saturating_sub(n.saturating_mul(t));
            if excess <= 0 {
                Ok(())
            } else {
                Err(u64::try_from(div_ceil_i128(excess, n)).unwrap_or(u64::MAX))
            }
        }

        /// `GcraState::consume` as it was written with saturating i128 products.
        fn consume_saturating(
            state: Option<GcraState>,
            limit: u64,
            period_ms: u64,
            now_ms: i64,
        ) -> GcraState {
            let n = i128::from(limit);
            let now = i128::from(now_ms).saturating_mul(n);
            let tat = state.map_or(now, |s| s.tat_in(limit)).max(now);
            GcraState {
                tat: tat.saturating_add(i128::from(period_ms)),
                limit,
            }
        }

        fn u64_edge() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(u64::MAX),
                Just(1u64 << 63),
                0u64..10_000,
                any::<u64>(),
            ]
        }

        fn i64_edge() -> impl Strategy<Value = i64> {
            prop_oneof![
                Just(0i64),
                Just(i64::MIN),
                Just(i64::MAX),
                1_767_258_000_000i64..1_767_258_100_000,
                any::<i64>(),
            ]
        }

        fn state() -> impl Strategy<Value = Option<GcraState>> {
            let tat = prop_oneof![
                Just(i128::MAX),
                Just(i128::MIN),
                Just(0i128),
                any::<i128>(),
                (i64_edge(), u64_edge(), 0u64..5_000)
                    .prop_map(|(now, n, d)| i128::from(now) * i128::from(n) + i128::from(d)),
            ];
            proptest::option::of(
                (tat, u64_edge()).prop_map(|(tat, limit)| GcraState { tat, limit }),
            )
        }

        /// A word of `a`, `|` and `b`: short texts that often share prefixes and bars.
        fn text() -> impl Strategy<Value = String> {
            "[ab|]{0,20}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]

            /// The exact products give every answer the saturating ones gave, at the ends of
            /// every range too; `admit` is `check` then `consume`.
            #[test]
            fn gcra_products_need_no_saturation(
                state in state(),
                limit in u64_edge(),
                period in u64_edge(),
                now in i64_edge(),
            ) {
                let checked = check_saturating(state, limit, period, now);
                let consumed = consume_saturating(state, limit, period, now);
                prop_assert_eq!(GcraState::check(state, limit, period, now), checked);
                prop_assert_eq!(GcraState::consume(state, limit, period, now), consumed);
                prop_assert_eq!(
                    GcraState::admit(state, limit, period, now),
                    checked.map(|()| consumed)
                );
                if let Some(s) = state {
                    let idle = s.tat <= i128::from(now).saturating_mul(i128::from(s.limit));
                    prop_assert_eq!(s.is_idle(now), idle);
                }
            }

            /// The permit's shortcut finds a key's agent as `agent_of` does.
            #[test]
            fn is_key_of_is_agent_of(key in text(), agent in text(), index in "[0-9a|]{0,3}") {
                prop_assert_eq!(is_key_of(&key, &agent), agent_of(&key) == Some(agent.as_str()));
                let key = format!("{agent}|{index}");
                prop_assert_eq!(is_key_of(&key, &agent), agent_of(&key) == Some(agent.as_str()));
            }
        }
    }

    mod gcra_prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        enum Op {
            /// Look only.
            Check,
            /// Check, and consume when admitted (a permit).
            Call,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![Just(Op::Check), Just(Op::Call)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// GCRA with burst N and interval T = P/N admits at most N + floor(w/T) calls in
            /// any closed window of length w: for admitted calls i..=j,
            /// (j - i + 1) × P <= N × P + (t_j - t_i) × N.
            /// And it is exact: a refusal's retry_after is the first instant it would admit,
            /// and after a full period of silence the whole burst is available again.
            #[test]
            fn gcra_respects_the_window_bound(
                limit in 1u64..8,
                period in 1u64..5_000,
                steps in proptest::collection::vec((0i64..3_000, op()), 1..200),
            ) {
                let s = MemoryState::new();
                let mut now = 1_767_258_000_000i64;
                let mut admitted: Vec<i64> = Vec::new();
                for (delay, op) in steps {
                    now += delay;
                    let checked = s.rate_check(RateKey::shared("k"), limit, period, now);
                    if let Err(retry) = checked {
                            prop_assert!(retry >= 1);
                            prop_assert!(retry <= period);
                            let retry = retry as i64;
                            prop_assert_eq!(s.rate_check(RateKey::shared("k"), limit, period, now + retry), Ok(()));
                            prop_assert!(s.rate_check(RateKey::shared("k"), limit, period, now + retry - 1).is_err());
                        // After a full period of silence the GCRA must admit.
                        if let Some(&last) = admitted.last() {
                            prop_assert!(now - last < period as i64,
                                "refused {} ms after the last admission", now - last);
                        }
                    }
                    if let (Op::Call, Ok(())) = (op, checked) {
                        s.rate_consume(RateKey::shared("k"), limit, period, now);
                        admitted.push(now);
                    }
                }
                let (n, p) = (limit as i128, period as i128);
                for i in 0..admitted.len() {
                    for j in i..admitted.len() {
                        let count = (j - i + 1) as i128;
                        let w = (admitted[j] - admitted[i]) as i128;
                        prop_assert!(count * p <= n * p + w * n,
                            "{} calls admitted within {} ms (limit {} per {} ms)", count, w, limit, period);
                    }
                }
                // Nothing is admitted twice "at once" beyond the burst.
                for w in admitted.windows(limit as usize + 1) {
                    prop_assert!(w[limit as usize] > w[0]);
                }
            }
        }
    }
}
