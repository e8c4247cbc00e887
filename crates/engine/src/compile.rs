//! Checked AST → compiled policy: patterns indexed, regexes compiled once with size limits,
//! argument paths resolved, so the hot path never re-interprets policy text.

use std::collections::HashMap;
use std::sync::Arc;

use fpl::ast::{
    Agent, BinOp, BudgetWindow, Effect, Entry, Expr, ExprKind, Literal, Policy, Rule, Value,
};
use fpl::pattern::ToolPattern;
use regex::{Regex, RegexBuilder};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::car::{TargetPath, Targets};
use crate::egress::EgressPolicy;
use crate::redact::Plan;

/// Compiled regexes may not exceed this (the checker enforces the same limit).
pub const REGEX_SIZE_LIMIT: usize = fpl::check::REGEX_SIZE_LIMIT;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("the policy has errors; run `faramesh check` ({0})")]
    Invalid(String),
}

/// The decisive effect of a rule or default (a `deny!` decides as a deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Permit,
    Deny,
    Defer,
}

impl Verdict {
    fn of(effect: Effect) -> Verdict {
        match effect {
            Effect::Permit => Verdict::Permit,
            Effect::Defer => Verdict::Defer,
            Effect::Deny | Effect::DenyMandatory => Verdict::Deny,
        }
    }
}

#[derive(Debug)]
pub struct CompiledPolicy {
    pub agents: HashMap<String, CompiledAgent, PolicyKeys>,
    /// SHA-256 of the policy's canonical JSON form.
    pub version: Arc<str>,
    /// The file name rule refs point into (`governance.fms`).
    pub file: String,
    pub audit_mode: bool,
    /// `runtime { timezone }` for `time.*` (UTC when absent). Budget windows stay UTC.
    pub timezone: jiff::tz::TimeZone,
    pub selectors: Vec<SelectorSpec>,
}

#[derive(Debug)]
pub struct SelectorSpec {
    pub name: String,
    pub source: String,
    pub key: CExpr,
    pub cache_ms: u64,
    /// How long an HTTP source may take (`timeout`, default 2 s).
    pub timeout: std::time::Duration,
    pub on_error: Verdict,
}

#[derive(Debug)]
pub struct CompiledAgent {
    pub id: String,
    pub default: Verdict,
    /// `deny!` rules, tried first, in written order.
    pub mandatory: Vec<CompiledRule>,
    pub mandatory_index: RuleIndex,
    pub rules: Vec<CompiledRule>,
    pub index: RuleIndex,
    /// For tool ids a rule names literally, the rules of both lists that match them, found
    /// when the policy is compiled: a decision on such a tool makes one lookup and tests no
    /// pattern. Other tool ids go through the two indexes.
    pub known_tools: HashMap<String, KnownTool, PolicyKeys>,
    pub rate_limits: Vec<RateSpec>,
    pub redactions: Vec<Redaction>,
    pub costs: Vec<(ToolPattern, CExpr)>,
    pub budgets: Vec<BudgetSpec>,
    /// Windows that `spent(…)` reads but no budget declares: spend is still tracked for them.
    pub spent_windows: Vec<BudgetWindow>,
    pub egress: EgressPolicy,
    pub credentials: Vec<CredentialSpec>,
}

#[derive(Debug)]
pub struct CompiledRule {
    pub verdict: Verdict,
    pub mandatory: bool,
    pub pattern: ToolPattern,
    /// `pattern`, prepared for matching.
    pub matcher: ToolMatcher,
    pub method: Option<String>,
    pub host: Option<Glob>,
    pub path: Option<Glob>,
    pub condition: Option<CExpr>,
    pub reason: Option<String>,
    /// 1-based line in the policy file (0 when the policy did not come from FPL text).
    pub line: usize,
    /// The rule as written in canonical FPL, for traces and explanations.
    pub text: Arc<str>,
    /// What a decision by this rule gives as its reason: `reason`, or else the rule's text in
    /// backticks. Built once here rather than on every decision.
    pub explanation: Arc<str>,
    /// `FILE:LINE`, the decision's `rule_ref`.
    pub rule_ref: Arc<str>,
}

/// One `redact PATTERN args: [paths]` statement.
#[derive(Debug)]
pub struct Redaction {
    pub pattern: ToolPattern,
    /// `pattern`, prepared for matching.
    pub matcher: ToolMatcher,
    /// The paths as listed, less repeats and paths inside another listed path: neither ever
    /// redacts anything of its own (see [`crate::redact::redact`]).
    pub paths: Vec<Arc<str>>,
    /// `paths`, prepared for the canonical writer to find their values as it writes.
    pub(crate) targets: Vec<TargetPath>,
}

impl Redaction {
    pub(crate) fn new(pattern: ToolPattern, listed: &[String]) -> Redaction {
        let mut paths: Vec<Arc<str>> = Vec::with_capacity(listed.len());
        for p in listed {
            let inside = |outer: &str| {
                p.len() > outer.len() && p.starts_with(outer) && p.as_bytes()[outer.len()] == b'.'
            };
            if !paths.iter().any(|q| **q == **p) && !listed.iter().any(|q| inside(q)) {
                paths.push(Arc::from(p.as_str()));
            }
        }
        Redaction {
            matcher: ToolMatcher::new(&pattern),
            pattern,
            targets: paths.iter().cloned().map(TargetPath::new).collect(),
            paths,
        }
    }
}

#[derive(Debug)]
pub struct RateSpec {
    pub pattern: ToolPattern,
    /// `pattern`, prepared for matching.
    pub matcher: ToolMatcher,
    pub limit: u64,
    pub period_ms: u64,
    pub per_session: bool,
    pub text: String,
    /// The state key of the limit, `AGENT|INDEX` (a per-session limit appends `|SESSION`).
    pub key: String,
}

#[derive(Debug)]
pub struct BudgetSpec {
    pub window: BudgetWindow,
    pub max: Decimal,
    pub warn_at: Option<Decimal>,
    pub on_exceed: Verdict,
}

#[derive(Debug)]
pub struct CredentialSpec {
    pub name: String,
    pub provider: String,
    pub path: Option<String>,
    pub tools: Vec<ToolPattern>,
    pub ttl_ms: u64,
}

/// A tool pattern prepared for the decision path: it answers exactly as
/// [`ToolPattern::matches`] (the tests compare the two), with the segments split once here
/// and the tool id scanned as bytes rather than through string iterators.
///
/// The pattern is cut at its `**` segments into a head (the segments before the first `**`), a
/// tail (those after the last) and the groups in between. The head is matched from the front
/// of the tool id, the tail from its back, and each middle group at its leftmost place in what
/// is left: every group spans a fixed number of segments, so the leftmost place leaves the
/// most room for the groups after it, and no backtracking is needed. Most patterns fail on
/// their first or last segment after a comparison or two.
#[derive(Debug, Clone)]
pub struct ToolMatcher {
    /// The literal segments the pattern starts with, joined by `/` (`None` when it starts
    /// with a wildcard): compared with the start of the tool id at once.
    prefix: Option<Box<[u8]>>,
    /// The segments of the head after `prefix`.
    head: Vec<MatchSeg>,
    /// `None` when the pattern has no `**`: the tool id has exactly the head's segments.
    deep: Option<Deep>,
}

/// What follows the first `**` of a pattern.
#[derive(Debug, Clone, Default)]
struct Deep {
    /// The runs of segments between two `**`, in order.
    middle: Vec<Vec<MatchSeg>>,
    /// The segments after the last `**`.
    tail: Vec<MatchSeg>,
}

/// One segment of a pattern other than `**`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MatchSeg {
    /// `*`: any one segment.
    Any,
    /// A segment without `*`: exactly these bytes.
    Literal(Box<[u8]>),
    /// A segment glob; `*` matches any run of bytes within the segment.
    Glob(Box<[u8]>),
}

impl MatchSeg {
    fn matches(&self, seg: &[u8]) -> bool {
        match self {
            MatchSeg::Any => true,
            MatchSeg::Literal(lit) => **lit == *seg,
            MatchSeg::Glob(glob) => fpl::pattern::glob_match(glob, seg, false),
        }
    }
}

impl ToolMatcher {
    pub fn new(pattern: &ToolPattern) -> ToolMatcher {
        // `ToolPattern::parse` has checked and normalised the text; this splits it as it does.
        let text = pattern.as_str();
        // The runs of segments between `**`s: the first is the head, the last the tail.
        let mut runs = Vec::new();
        let mut run = Vec::new();
        if text == "*" {
            runs.push(Vec::new());
        } else {
            for seg in text.split('/') {
                match seg {
                    "**" => runs.push(std::mem::take(&mut run)),
                    "*" => run.push(MatchSeg::Any),
                    s if s.contains('*') => run.push(MatchSeg::Glob(s.as_bytes().into())),
                    s => run.push(MatchSeg::Literal(s.as_bytes().into())),
                }
            }
        }
        runs.push(run);
        let mut head = runs.remove(0);
        let deep = runs.pop().map(|tail| Deep {
            // `a/**/**/b` is `a/**/b`: the empty run between two `**` asks for nothing.
            middle: runs.into_iter().filter(|r| !r.is_empty()).collect(),
            tail,
        });
        let mut prefix = Vec::new();
        let mut literals = 0;
        for seg in &head {
            let MatchSeg::Literal(lit) = seg else {
                break;
            };
            if literals > 0 {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(lit);
            literals += 1;
        }
        let prefix = (literals > 0).then(|| prefix.into_boxed_slice());
        head.drain(..literals);
        ToolMatcher { prefix, head, deep }
    }

    /// What follows the literal prefix in the tool id (see `matches` for the form); `None`
    /// when the tool id does not start with those segments.
    #[inline]
    fn after_prefix<'t>(&self, tool: &'t [u8]) -> Option<Option<&'t [u8]>> {
        let Some(prefix) = &self.prefix else {
            return Some(Some(tool));
        };
        let after = tool.strip_prefix(&**prefix)?;
        match after.split_first() {
            None => Some(None),
            Some((b'/', rest)) => Some(Some(rest)),
            Some(_) => None,
        }
    }

    /// Does the tool id (NFKC) match?
    pub fn matches(&self, tool: &str) -> bool {
        // What is left of the tool id: `None` when every segment has been taken, else the text
        // of one or more segments (`Some(b"")` is one empty segment).
        let Some(mut rest) = self.after_prefix(tool.as_bytes()) else {
            return false;
        };
        for seg in &self.head {
            let Some((first, after)) = rest.map(split_first) else {
                return false;
            };
            if !seg.matches(first) {
                return false;
            }
            rest = after;
        }
        let Some(deep) = &self.deep else {
            return rest.is_none();
        };
        for seg in deep.tail.iter().rev() {
            let Some((before, last)) = rest.map(split_last) else {
                return false;
            };
            if !seg.matches(last) {
                return false;
            }
            rest = before;
        }
        deep.middle.iter().all(|group| {
            let found = leftmost(group, rest);
            rest = found.unwrap_or(None);
            found.is_some()
        })
    }
}

/// Finds the leftmost run of segments of `rest` that `group` matches and returns what follows
/// it (`Some(None)` when nothing does); `None` when there is no such run.
fn leftmost<'t>(group: &[MatchSeg], mut rest: Option<&'t [u8]>) -> Option<Option<&'t [u8]>> {
    loop {
        if let Some(after) = match_run(group, rest) {
            return Some(after);
        }
        rest = split_first(rest?).1;
    }
}

/// Matches `group` against the first segments of `rest`; what follows them, if it matches.
fn match_run<'t>(group: &[MatchSeg], mut rest: Option<&'t [u8]>) -> Option<Option<&'t [u8]>> {
    for seg in group {
        let (first, after) = split_first(rest?);
        if !seg.matches(first) {
            return None;
        }
        rest = after;
    }
    Some(rest)
}

/// The first segment of `rest` and what follows its `/`.
fn split_first(rest: &[u8]) -> (&[u8], Option<&[u8]>) {
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// What precedes the last `/` of `rest`, and the last segment.
fn split_last(rest: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match rest.iter().rposition(|&b| b == b'/') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    }
}

/// A `*` glob over a whole string (host and path clauses).
#[derive(Debug)]
pub struct Glob(String);

impl Glob {
    pub fn matches(&self, text: &str) -> bool {
        fpl::pattern::glob_match(self.0.as_bytes(), text.as_bytes(), true)
    }
}

/// Rules indexed by tool: which rules could match a tool id, in written order, without
/// testing every rule's pattern.
#[derive(Debug, Default)]
pub struct RuleIndex {
    exact: HashMap<String, Vec<u32>, PolicyKeys>,
    by_first: HashMap<String, Vec<u32>, PolicyKeys>,
    /// Patterns whose first segment is a wildcard and whose last is literal (`**/export`,
    /// `*/purge`), by that segment: only a tool id ending in it can match.
    by_last: HashMap<String, Vec<u32>, PolicyKeys>,
    anywhere: Vec<u32>,
}

/// The hasher of maps whose keys all come from the policy (never from a request), so nobody
/// who sends requests can choose colliding keys: a multiply-rotate hash in the style of rustc's
/// FxHash, with a final mix, several times faster than SipHash on short keys. Requests only
/// look keys up.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyKeys;

impl std::hash::BuildHasher for PolicyKeys {
    type Hasher = FxHasher;

    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

#[derive(Debug)]
pub struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The length keeps "a" and "a\0" apart.
            self.add(tail_word(rest) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits into the low ones the table indexes by.
        let x = self.0 ^ (self.0 >> 33);
        x.wrapping_mul(Self::K) ^ (x >> 29)
    }
}

/// The 1 to 7 bytes of `rest` as a little-endian word padded with zeros, read with at most
/// three loads and no loop (a copy into a zeroed word costs a `memcpy` call).
pub(crate) fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    if let (Some(lo), Some(hi)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
        // Two overlapping reads; the bytes they share are the same in both.
        let (lo, hi) = (u32::from_le_bytes(*lo), u32::from_le_bytes(*hi));
        return u64::from(lo) | u64::from(hi) << ((n - 4) * 8);
    }
    match rest {
        [] => 0,
        [only] => u64::from(*only),
        [first, .., last] => {
            // Three bytes at most: the middle one is the first or the last when there are two.
            let mid = rest.get(n / 2).copied().unwrap_or(0);
            u64::from(*first) | u64::from(mid) << (n / 2 * 8) | u64::from(*last) << ((n - 1) * 8)
        }
    }
}

/// `a == b`, with no library call when they are at most 16 bytes long (keys, ids and
/// short strings mostly are).
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Two overlapping reads cover 4 to 16 bytes.
    match a.len() {
        8..=16 => {
            a.first_chunk::<8>() == b.first_chunk::<8>()
                && a.last_chunk::<8>() == b.last_chunk::<8>()
        }
        4..=7 => {
            a.first_chunk::<4>() == b.first_chunk::<4>()
                && a.last_chunk::<4>() == b.last_chunk::<4>()
        }
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

impl RuleIndex {
    fn build(rules: &[CompiledRule]) -> RuleIndex {
        let mut idx = RuleIndex::default();
        for (i, r) in rules.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(lit) = r.pattern.literal() {
                idx.exact.entry(lit.to_string()).or_default().push(i);
            } else if let Some(first) = r.pattern.first_literal() {
                idx.by_first.entry(first).or_default().push(i);
            } else if let Some(last) = last_literal(&r.pattern) {
                idx.by_last.entry(last.to_string()).or_default().push(i);
            } else {
                idx.anywhere.push(i);
            }
        }
        idx
    }

    /// Candidate rule indices for `tool`, ascending. Wildcard candidates still need their
    /// pattern tested.
    pub fn candidates<'a>(&'a self, tool: &str) -> Candidates<'a> {
        // `/` is ASCII: the byte scans cut the id at character boundaries.
        let bytes = tool.as_bytes();
        let first = || {
            let end = bytes.iter().position(|&b| b == b'/');
            end.map_or(tool, |i| &tool[..i])
        };
        let last = || {
            let slash = bytes.iter().rposition(|&b| b == b'/');
            slash.map_or(tool, |i| &tool[i + 1..])
        };
        Candidates {
            lists: [
                rules_under(&self.exact, || tool),
                rules_under(&self.by_first, first),
                rules_under(&self.by_last, last),
                &self.anywhere,
            ],
        }
    }
}

/// The rules listed under a key; the key is found only when the map has any (most policies
/// have no pattern of one kind or another, and then no hashing is needed).
fn rules_under<'a, 't>(
    map: &'a HashMap<String, Vec<u32>, PolicyKeys>,
    key: impl FnOnce() -> &'t str,
) -> &'a [u32] {
    if map.is_empty() {
        return &[];
    }
    map.get(key()).map_or(&[][..], Vec::as_slice)
}

/// The last segment of a pattern, when it is literal (neither `**` nor holding a `*`): a tool
/// id matches only if its own last segment is exactly that.
fn last_literal(pattern: &ToolPattern) -> Option<&str> {
    let text = pattern.as_str();
    let last = text.rsplit('/').next()?;
    (!last.contains('*')).then_some(last)
}

/// A merge of ascending lists.
#[derive(Debug)]
pub struct Candidates<'a> {
    lists: [&'a [u32]; 4],
}

/// A rule that may match, and whether it is known to: a pattern without wildcards listed
/// under the tool id itself is that id, so testing it again would only repeat the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub matches: bool,
}

impl Iterator for Candidates<'_> {
    type Item = Candidate;

    fn next(&mut self) -> Option<Candidate> {
        // The list with the smallest head (the first such on a tie; a rule is in one list only).
        let mut best: Option<(usize, u32)> = None;
        for (i, list) in self.lists.iter().enumerate() {
            if let Some(&head) = list.first()
                && best.is_none_or(|(_, b)| head < b)
            {
                best = Some((i, head));
            }
        }
        let (which, head) = best?;
        self.lists[which] = &self.lists[which][1..];
        Some(Candidate {
            index: head as usize,
            // `lists[0]` is the exact list.
            matches: which == 0,
        })
    }
}

/// The rules that apply to a tool id the policy names literally.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KnownTool {
    /// Indices into [`CompiledAgent::mandatory`] of the rules whose pattern matches the id,
    /// ascending.
    pub mandatory: Box<[u32]>,
    /// The same into [`CompiledAgent::rules`].
    pub rules: Box<[u32]>,
    /// The same into [`CompiledAgent::rate_limits`]: the limits a call of the tool uses.
    pub rates: Box<[u32]>,
    /// How its arguments are redacted, as [`crate::redact::plan`] plans it.
    pub redaction: KnownRedaction,
}

/// The redaction plan of a known tool when it takes no work at decision time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum KnownRedaction {
    /// No statement applies.
    #[default]
    None,
    /// The paths of this one statement (an index into [`CompiledAgent::redactions`]) are
    /// spliced.
    One(u32),
    /// Anything else: planned at decision time.
    Plan,
}

impl KnownTool {
    /// `list` as the candidates of a decision, each known to match.
    pub fn candidates(list: &[u32]) -> impl Iterator<Item = Candidate> + '_ {
        list.iter().map(|&i| Candidate {
            index: i as usize,
            matches: true,
        })
    }
}

/// Finds the rules of every tool id the rules name literally (`deny!` rules first, then the
/// others, in written order), as long as that takes testing no more than a few patterns per
/// rule in all: a policy of many literal tools and many wildcard rules would otherwise take
/// their product. Tools past that take the indexes at decision time, which answer the same.
fn known_tools(
    mandatory: &[CompiledRule],
    mandatory_index: &RuleIndex,
    rules: &[CompiledRule],
    index: &RuleIndex,
    rate_limits: &[RateSpec],
    redactions: &[Redaction],
) -> HashMap<String, KnownTool, PolicyKeys> {
    let mut known = HashMap::default();
    let mut budget = 8 * (mandatory.len() + rules.len()) + 1024;
    for tool in mandatory
        .iter()
        .chain(rules)
        .filter_map(|r| r.pattern.literal())
    {
        if known.contains_key(tool) {
            continue;
        }
        let cost = mandatory_index.candidates(tool).count()
            + index.candidates(tool).count()
            + rate_limits.len()
            + redactions.len();
        if cost > budget {
            break;
        }
        budget -= cost;
        // Limits past `u32` indices (never in practice) leave the tool to the decision's tests.
        let Some(rates) = matching_rates(rate_limits, tool) else {
            break;
        };
        let tool_rules = KnownTool {
            mandatory: matching(mandatory, mandatory_index, tool),
            rules: matching(rules, index, tool),
            rates,
            redaction: known_redaction(redactions, tool),
        };
        known.insert(tool.to_string(), tool_rules);
    }
    known
}

/// The plan [`crate::redact::plan`] makes for `tool`, kept when it is none or one statement.
fn known_redaction(redactions: &[Redaction], tool: &str) -> KnownRedaction {
    match crate::redact::plan(redactions, tool) {
        Plan::Splice(Targets::None) => KnownRedaction::None,
        Plan::Splice(Targets::One(targets)) => redactions
            .iter()
            .position(|r| std::ptr::eq(r.targets.as_slice(), targets))
            .and_then(|i| u32::try_from(i).ok())
            .map_or(KnownRedaction::Plan, KnownRedaction::One),
        _ => KnownRedaction::Plan,
    }
}

/// The indices of the rate limits that apply to `tool`, or `None` if one does not fit a `u32`.
fn matching_rates(rate_limits: &[RateSpec], tool: &str) -> Option<Box<[u32]>> {
    rate_limits
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matcher.matches(tool))
        .map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

/// The rules that match `tool`, found as a decision finds them: its candidates in `index`,
/// each tested unless known to match.
fn matching(rules: &[CompiledRule], index: &RuleIndex, tool: &str) -> Box<[u32]> {
    index
        .candidates(tool)
        .filter(|c| c.matches || rules[c.index].matcher.matches(tool))
        .map(|c| u32::try_from(c.index).unwrap_or(u32::MAX))
        .collect()
}

/// A compiled expression: names resolved to where their value comes from. A plain tag (no
/// niche in a variant's fields) makes the dispatch of evaluation a table jump.
#[derive(Debug)]
#[repr(u8)]
pub enum CExpr {
    Lit(Const),
    Arg(Vec<String>),
    Principal(Vec<String>),
    AgentId,
    ToolId,
    SessionId,
    SessionCalls,
    SessionCost,
    TimeHour,
    TimeWeekday,
    TimeDate,
    Selector(usize, Vec<String>),
    List(Vec<CExpr>),
    Not(Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Binary(BinOp, Box<CExpr>, Box<CExpr>),
    Matches(Box<CExpr>, Box<Regexp>),
    Len(Box<CExpr>),
    Lower(Box<CExpr>),
    Upper(Box<CExpr>),
    Domain(Box<CExpr>),
    Host(Box<CExpr>),
    Count(ToolPattern, u64),
    Spent(BudgetWindow),
    /// A comparison of a request field with literals, prepared (see [`FieldTest`]).
    Test(Box<FieldTest>),
}

/// A comparison of a field of the request with literals — `amount < $500`,
/// `currency in ["usd", "eur"]`, `reference matches "…"`, the commonest conditions — prepared
/// so that a decision reads the field's JSON and compares it without building values. It
/// answers only when the field is missing or holds a value of the literals' type (an integer
/// for a number), whose answer is known to be that of the comparison evaluated as usual; for
/// any other value (a type error and its message, a fraction) `general`, the comparison
/// compiled as usual, is evaluated.
#[derive(Debug)]
pub struct FieldTest {
    pub field: Field,
    pub test: Test,
    pub general: CExpr,
}

/// Where a [`FieldTest`] reads its value.
#[derive(Debug, Clone)]
pub enum Field {
    Arg(Vec<String>),
    Principal(Vec<String>),
}

/// What a [`FieldTest`] asks of its value.
#[derive(Debug)]
pub enum Test {
    /// `field OP number` (`OP` one of `==`, `!=`, `<`, `<=`, `>`, `>=`; the field on the left).
    /// An integer orders against the number as against its floor, except that it is below a
    /// fraction whose floor it equals: no decimal arithmetic is needed.
    Num {
        op: BinOp,
        floor: i128,
        integral: bool,
    },
    /// `field == "…"` (`equal`), or `!=`.
    Str { equal: bool, value: Box<str> },
    /// `field == true` and the like.
    Bool { equal: bool, value: bool },
    /// `field in [strings]` (`negate`: `not in`).
    InStrs { negate: bool, set: Box<[Box<str>]> },
    /// `field matches "…"`.
    Matches(Regexp),
}

impl FieldTest {
    /// `general` prepared, when it is a comparison of one of the kinds [`Test`] knows.
    pub(crate) fn prepare(general: CExpr) -> CExpr {
        match FieldTest::of(&general) {
            Some((field, test)) => CExpr::Test(Box::new(FieldTest {
                field,
                test,
                general,
            })),
            None => general,
        }
    }

    fn of(e: &CExpr) -> Option<(Field, Test)> {
        match e {
            CExpr::Matches(a, re) => Some((field(a)?, Test::Matches((**re).clone()))),
            CExpr::Binary(op @ (BinOp::In | BinOp::NotIn), a, b) => {
                let CExpr::List(items) = &**b else {
                    return None;
                };
                let set = items
                    .iter()
                    .map(|i| match i {
                        CExpr::Lit(Const::Str(s)) => Some(s.as_str().into()),
                        _ => None,
                    })
                    .collect::<Option<_>>()?;
                let negate = *op == BinOp::NotIn;
                Some((field(a)?, Test::InStrs { negate, set }))
            }
            CExpr::Binary(op, a, b) => match (&**a, &**b) {
                (CExpr::Lit(c), other) => Some((field(other)?, literal_test(flipped(*op)?, c)?)),
                (other, CExpr::Lit(c)) => Some((field(other)?, literal_test(*op, c)?)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The field an operand reads, when it is one.
fn field(e: &CExpr) -> Option<Field> {
    match e {
        CExpr::Arg(path) => Some(Field::Arg(path.clone())),
        CExpr::Principal(path) => Some(Field::Principal(path.clone())),
        _ => None,
    }
}

/// `x OP y` as `y OP' x`.
fn flipped(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Eq | BinOp::Ne => op,
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        _ => return None,
    })
}

/// `field OP literal` as a [`Test`], for the literals and operators it knows.
fn literal_test(op: BinOp, c: &Const) -> Option<Test> {
    let equal = match op {
        BinOp::Eq => true,
        BinOp::Ne => false,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let Const::Num(n) = c else {
                return None;
            };
            return num_test(op, n);
        }
        _ => return None,
    };
    match c {
        Const::Num(n) => num_test(op, n),
        Const::Str(s) => Some(Test::Str {
            equal,
            value: s.as_str().into(),
        }),
        Const::Bool(b) => Some(Test::Bool { equal, value: *b }),
        Const::Duration(_) | Const::Null => None,
    }
}

fn num_test(op: BinOp, n: &Decimal) -> Option<Test> {
    let floor = n.floor();
    // A whole number: its mantissa is a multiple of its power of ten (at most 10^28).
    let pow = 10i128.checked_pow(floor.scale())?;
    Some(Test::Num {
        op,
        floor: floor.mantissa().checked_div(pow)?,
        integral: floor == *n,
    })
}

/// The regex of a `matches`, and, when every match starts at the start of the text with one
/// of a few known bytes, those bytes: most texts are then refused on their first byte without
/// running the regex (whose search costs a few hundred instructions even when it fails at once).
#[derive(Debug, Clone)]
pub struct Regexp {
    regex: Regex,
    first: Option<ByteSet>,
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

impl Regexp {
    pub fn new(re: &str) -> Result<Regexp, CompileError> {
        let regex = RegexBuilder::new(re)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| CompileError::Invalid(format!("regex {re:?}: {err}")))?;
        Ok(Regexp {
            first: anchored_first_bytes(re),
            regex,
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        if let Some(first) = &self.first
            && !text.as_bytes().first().is_some_and(|&b| first.contains(b))
        {
            return false;
        }
        self.regex.is_match(text)
    }
}

/// The bytes every match of `re` starts with, when every match starts at the start of the text
/// (`^`, not in multi-line mode) and is not empty; `None` when that is not known. The prefixes
/// come from `regex-syntax`'s literal extractor, the one behind the `regex` crate's own
/// prefilters: when it gives a finite set, every match begins with one of its literals. The
/// text is parsed with the `regex` crate's defaults, as [`RegexBuilder`] parsed it.
fn anchored_first_bytes(re: &str) -> Option<ByteSet> {
    use regex_syntax::hir::Look;
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let mut first = ByteSet::default();
    for literal in prefixes.literals()? {
        first.insert(*literal.as_bytes().first()?);
    }
    Some(first)
}

/// The budget windows an expression reads with `spent(…)`.
fn spent_in(e: &CExpr, out: &mut Vec<BudgetWindow>) {
    match e {
        CExpr::Spent(w) if !out.contains(w) => out.push(*w),
        CExpr::List(items) => items.iter().for_each(|i| spent_in(i, out)),
        CExpr::Not(a)
        | CExpr::Matches(a, _)
        | CExpr::Len(a)
        | CExpr::Lower(a)
        | CExpr::Upper(a) => spent_in(a, out),
        CExpr::Domain(a) | CExpr::Host(a) => spent_in(a, out),
        CExpr::And(a, b) | CExpr::Or(a, b) | CExpr::Binary(_, a, b) => {
            spent_in(a, out);
            spent_in(b, out);
        }
        _ => {}
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Num(Decimal),
    Str(String),
    Bool(bool),
    Duration(u64),
    Null,
}

/// Compiles a policy that `faramesh check` accepts. `source` (the FPL text) gives rule lines.
pub fn compile(
    policy: &Policy,
    file: &str,
    source: Option<&str>,
) -> Result<CompiledPolicy, CompileError> {
    let mut c = Compiler {
        file: file.to_string(),
        newlines: source.map(|s| {
            s.bytes()
                .enumerate()
                .filter_map(|(i, b)| (b == b'\n').then_some(i))
                .collect()
        }),
        selectors: policy
            .selectors
            .iter()
            .map(|s| s.name.value.clone())
            .collect(),
    };
    let mut agents = HashMap::default();
    if !policy.rules.is_empty() || policy.default.is_some() {
        let flat = Agent {
            id: fpl::ast::Spanned::new("default".into(), Default::default()),
            default: policy.default.clone(),
            rules: policy.rules.clone(),
            ..Agent::default()
        };
        agents.insert("default".to_string(), c.agent(&flat)?);
    }
    for a in &policy.agents {
        if agents.insert(a.id.value.clone(), c.agent(a)?).is_some() {
            return Err(CompileError::Invalid(format!(
                "duplicate agent `{}`",
                a.id.value
            )));
        }
    }
    let selectors = policy
        .selectors
        .iter()
        .map(|s| c.selector(s))
        .collect::<Result<Vec<_>, _>>()?;
    let canonical = serde_json::to_value(policy)
        .ok()
        .and_then(|v| serde_json_canonicalizer::to_string(&v).ok())
        .unwrap_or_default();
    let audit_mode = policy
        .runtime
        .as_ref()
        .and_then(|r| r.get("mode"))
        .is_some_and(|e| matches!(&e.value.value, Value::Lit(Literal::Str(m)) if m == "audit"));
    let timezone = match policy
        .runtime
        .as_ref()
        .and_then(|r| r.get("timezone"))
        .map(|e| &e.value.value)
    {
        Some(Value::Lit(Literal::Str(name))) => jiff::tz::TimeZone::get(name)
            .map_err(|e| CompileError::Invalid(format!("unknown timezone `{name}`: {e}")))?,
        _ => jiff::tz::TimeZone::UTC,
    };
    Ok(CompiledPolicy {
        timezone,
        agents,
        version: format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        )
        .into(),
        file: file.to_string(),
        audit_mode,
        selectors,
    })
}

struct Compiler {
    /// The file rule refs point into.
    file: String,
    /// Byte offsets of the newlines of the FPL text, when there is one.
    newlines: Option<Vec<usize>>,
    selectors: Vec<String>,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError::Invalid(msg.into()))
}

fn entry<'e>(entries: &'e [Entry], key: &str) -> Option<&'e Value> {
    entries
        .iter()
        .find(|e| e.key.value == key)
        .map(|e| &e.value.value)
}

fn pattern(text: &str) -> Result<ToolPattern, CompileError> {
    ToolPattern::parse(text).map_err(CompileError::Invalid)
}

impl Compiler {
    fn agent(&mut self, a: &Agent) -> Result<CompiledAgent, CompileError> {
        // `check` reports it (FPL507); never compile what would share state keys.
        if !fpl::ast::is_valid_agent_id(&a.id.value) {
            return Err(CompileError::Invalid(format!(
                "agent id {:?} holds `|` or a control character",
                a.id.value
            )));
        }
        let mut mandatory = Vec::new();
        let mut rules = Vec::new();
        for r in &a.rules {
            let compiled = self.rule(r)?;
            if compiled.mandatory {
                mandatory.push(compiled);
            } else {
                rules.push(compiled);
            }
        }
        let rate_limits = a
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pattern = pattern(&r.tool.value)?;
                Ok(RateSpec {
                    key: format!("{}|{i}", a.id.value),
                    matcher: ToolMatcher::new(&pattern),
                    pattern,
                    limit: r.limit.value.max(1),
                    period_ms: r.per.value.millis(),
                    per_session: r.per_session,
                    text: format!(
                        "rate_limit \"{}\": {} per {}",
                        r.tool.value,
                        r.limit.value,
                        r.per.value.word()
                    ),
                })
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        let redactions = a
            .redact
            .iter()
            .map(|r| {
                let listed: Vec<String> = r.args.iter().map(|p| p.value.clone()).collect();
                Ok(Redaction::new(pattern(&r.tool.value)?, &listed))
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        let costs = a
            .costs
            .iter()
            .map(|c| Ok((pattern(&c.tool.value)?, self.expr(&c.amount)?)))
            .collect::<Result<Vec<_>, CompileError>>()?;
        let budgets = a
            .budgets
            .iter()
            .map(budget)
            .collect::<Result<Vec<_>, _>>()?;
        let egress = a.egress.as_ref().map_or_else(EgressPolicy::default, |e| {
            EgressPolicy::new(
                &strings(entry(&e.entries, "allow")),
                &strings(entry(&e.entries, "deny")),
            )
        });
        let credentials = a
            .credentials
            .iter()
            .map(credential)
            .collect::<Result<Vec<_>, _>>()?;
        let mut spent_windows = Vec::new();
        for r in mandatory.iter().chain(&rules) {
            if let Some(c) = &r.condition {
                spent_in(c, &mut spent_windows);
            }
        }
        for (_, c) in &costs {
            spent_in(c, &mut spent_windows);
        }
        spent_windows.retain(|w| !budgets.iter().any(|b| b.window == *w));
        let mandatory_index = RuleIndex::build(&mandatory);
        let index = RuleIndex::build(&rules);
        let known_tools = known_tools(
            &mandatory,
            &mandatory_index,
            &rules,
            &index,
            &rate_limits,
            &redactions,
        );
        Ok(CompiledAgent {
            spent_windows,
            id: a.id.value.clone(),
            default: a
                .default
                .as_ref()
                .map_or(Verdict::Deny, |d| Verdict::of(d.value)),
            mandatory_index,
            mandatory,
            index,
            rules,
            known_tools,
            rate_limits,
            redactions,
            costs,
            budgets,
            egress,
            credentials,
        })
    }

    /// The line `fpl::span::line_col` gives (newlines before the rule's start, plus one),
    /// found by a binary search rather than by counting from the top for every rule.
    fn line(&self, r: &Rule) -> usize {
        self.newlines.as_ref().map_or(0, |newlines| {
            newlines.partition_point(|&at| at < r.effect.span.start) + 1
        })
    }

    fn rule(&mut self, r: &Rule) -> Result<CompiledRule, CompileError> {
        let text = single_rule_text(r);
        let explanation = r
            .reason
            .as_ref()
            .map_or_else(|| format!("`{text}`"), |r| r.value.clone());
        let pattern = pattern(&r.tool.value)?;
        let line = self.line(r);
        Ok(CompiledRule {
            explanation: explanation.into(),
            rule_ref: format!("{}:{line}", self.file).into(),
            verdict: Verdict::of(r.effect.value),
            mandatory: r.effect.value == Effect::DenyMandatory,
            matcher: ToolMatcher::new(&pattern),
            pattern,
            method: r.method.as_ref().map(|m| m.value.to_ascii_uppercase()),
            host: r.host.as_ref().map(|h| Glob(h.value.to_ascii_lowercase())),
            path: r.path.as_ref().map(|p| Glob(p.value.clone())),
            condition: r.condition.as_ref().map(|c| self.expr(c)).transpose()?,
            reason: r.reason.as_ref().map(|r| r.value.clone()),
            line,
            text: text.into(),
        })
    }

    fn selector(&mut self, s: &fpl::ast::NamedBlock) -> Result<SelectorSpec, CompileError> {
        let source = match entry(&s.entries, "source") {
            Some(Value::Lit(Literal::Str(src))) => src.clone(),
            _ => return invalid(format!("selector `{}` has no source", s.name.value)),
        };
        let key = match entry(&s.entries, "key") {
            Some(Value::Expr(e)) => self.expr(e)?,
            Some(Value::Lit(Literal::Str(text))) => {
                let e = fpl::parse_expr(text).map_err(|_| {
                    CompileError::Invalid(format!("selector `{}`: bad key", s.name.value))
                })?;
                self.expr(&e)?
            }
            _ => return invalid(format!("selector `{}` has no key", s.name.value)),
        };
        let cache_ms = match entry(&s.entries, "cache") {
            Some(Value::Lit(Literal::Duration(d))) => d.millis().unwrap_or(u64::MAX),
            _ => 0,
        };
        let timeout = match entry(&s.entries, "timeout") {
            Some(Value::Lit(Literal::Duration(d))) => {
                std::time::Duration::from_millis(d.millis().unwrap_or(u64::MAX).max(1))
            }
            _ => crate::selector::HTTP_TIMEOUT,
        };
        let on_error = match entry(&s.entries, "on_error") {
            Some(Value::Lit(Literal::Str(e))) if e == "defer" => Verdict::Defer,
            _ => Verdict::Deny,
        };
        Ok(SelectorSpec {
            name: s.name.value.clone(),
            source,
            key,
            cache_ms,
            timeout,
            on_error,
        })
    }

    fn expr(&mut self, e: &Expr) -> Result<CExpr, CompileError> {
        Ok(match &e.kind {
            ExprKind::Literal(l) => CExpr::Lit(constant(l)),
            ExprKind::Path(segments) => self.path(segments),
            ExprKind::List(items) => CExpr::List(
                items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Not(inner) => CExpr::Not(Box::new(self.expr(inner)?)),
            ExprKind::Binary { op, lhs, rhs } => {
                let l = Box::new(self.expr(lhs)?);
                match op {
                    BinOp::And => CExpr::And(l, Box::new(self.expr(rhs)?)),
                    BinOp::Or => CExpr::Or(l, Box::new(self.expr(rhs)?)),
                    BinOp::Matches => match &rhs.kind {
                        ExprKind::Literal(Literal::Str(re)) => {
                            FieldTest::prepare(CExpr::Matches(l, Box::new(Regexp::new(re)?)))
                        }
                        _ => return invalid("the regex after `matches` must be a string literal"),
                    },
                    op => FieldTest::prepare(CExpr::Binary(*op, l, Box::new(self.expr(rhs)?))),
                }
            }
            ExprKind::Call { func, args } => self.call(&func.value, args)?,
        })
    }

    fn path(&self, segments: &[String]) -> CExpr {
        let rest = || segments[1..].to_vec();
        let field = segments.get(1).map(String::as_str);
        match (segments[0].as_str(), field, segments.len()) {
            ("args", Some(_), _) => CExpr::Arg(rest()),
            ("principal", Some(_), _) => CExpr::Principal(rest()),
            ("agent", Some("id"), 2) => CExpr::AgentId,
            ("tool", Some("id"), 2) => CExpr::ToolId,
            ("session", Some("id"), 2) => CExpr::SessionId,
            ("session", Some("calls"), 2) => CExpr::SessionCalls,
            ("session", Some("cost"), 2) => CExpr::SessionCost,
            ("time", Some("hour"), 2) => CExpr::TimeHour,
            ("time", Some("weekday"), 2) => CExpr::TimeWeekday,
            ("time", Some("date"), 2) => CExpr::TimeDate,
            (root, _, _) => match self.selectors.iter().position(|s| s == root) {
                Some(i) => CExpr::Selector(i, rest()),
                None => CExpr::Arg(segments.to_vec()),
            },
        }
    }

    fn call(&mut self, func: &str, args: &[Expr]) -> Result<CExpr, CompileError> {
        let one = |c: &mut Self| -> Result<Box<CExpr>, CompileError> {
            match args {
                [a] => Ok(Box::new(c.expr(a)?)),
                _ => invalid(format!("`{func}` takes one argument")),
            }
        };
        Ok(match func {
            "len" => CExpr::Len(one(self)?),
            "lower" => CExpr::Lower(one(self)?),
            "upper" => CExpr::Upper(one(self)?),
            "domain" => CExpr::Domain(one(self)?),
            "host" => CExpr::Host(one(self)?),
            "count" => match args {
                [
                    Expr {
                        kind: ExprKind::Literal(Literal::Str(p)),
                        ..
                    },
                    Expr {
                        kind: ExprKind::Literal(Literal::Duration(d)),
                        ..
                    },
                ] => CExpr::Count(pattern(p)?, d.millis().unwrap_or(u64::MAX)),
                _ => return invalid("`count` takes a pattern and a duration"),
            },
            "spent" => match args {
                [
                    Expr {
                        kind: ExprKind::Path(p),
                        ..
                    },
                ] if p.len() == 1 => match BudgetWindow::from_word(&p[0]) {
                    Some(w) => CExpr::Spent(w),
                    None => return invalid("`spent` takes a budget window"),
                },
                _ => return invalid("`spent` takes a budget window"),
            },
            other => return invalid(format!("unknown function `{other}`")),
        })
    }
}

fn constant(l: &Literal) -> Const {
    match l {
        Literal::Str(s) => Const::Str(s.clone()),
        Literal::Number(n) | Literal::Money(n) => Const::Num(*n),
        Literal::Duration(d) => Const::Duration(d.millis().unwrap_or(u64::MAX)),
        Literal::Size(s) => Const::Num(Decimal::from(s.bytes().unwrap_or(u64::MAX))),
        Literal::Bool(b) => Const::Bool(*b),
        Literal::Null => Const::Null,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|i| match &i.value {
                Value::Lit(Literal::Str(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Some(Value::Lit(Literal::Str(s))) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn budget(b: &fpl::ast::Budget) -> Result<BudgetSpec, CompileError> {
    let max = match entry(&b.entries, "max") {
        Some(Value::Lit(Literal::Money(m) | Literal::Number(m))) => *m,
        _ => return invalid(format!("the {} budget has no `max`", b.window.value.word())),
    };
    let warn_at = match entry(&b.entries, "warn_at") {
        Some(Value::Lit(Literal::Number(f))) => Some(*f),
        _ => None,
    };
    let on_exceed = match entry(&b.entries, "on_exceed") {
        Some(Value::Lit(Literal::Str(e))) if e == "defer" => Verdict::Defer,
        _ => Verdict::Deny,
    };
    Ok(BudgetSpec {
        window: b.window.value,
        max,
        warn_at,
        on_exceed,
    })
}

fn credential(c: &fpl::ast::NamedBlock) -> Result<CredentialSpec, CompileError> {
    let provider = match entry(&c.entries, "provider") {
        Some(Value::Lit(Literal::Str(p))) => p.clone(),
        _ => return invalid(format!("credential `{}` has no provider", c.name.value)),
    };
    let path = match entry(&c.entries, "path") {
        Some(Value::Lit(Literal::Str(p))) => Some(p.clone()),
        _ => None,
    };
    let tools = strings(entry(&c.entries, "tools"))
        .iter()
        .map(|t| pattern(t))
        .collect::<Result<Vec<_>, _>>()?;
    let ttl_ms = match entry(&c.entries, "ttl") {
        Some(Value::Lit(Literal::Duration(d))) => d.millis().unwrap_or(30_000),
        _ => 30_000,
    };
    Ok(CredentialSpec {
        name: c.name.value.clone(),
        provider,
        path,
        tools,
        ttl_ms,
    })
}

/// One rule in canonical FPL, without padding.
fn single_rule_text(r: &Rule) -> String {
    let p = Policy {
        rules: vec![Rule {
            meta: Default::default(),
            ..r.clone()
        }],
        ..Policy::default()
    };
    fpl::format::format_policy(&p)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(pattern: &str, tool: &str) {
        let p = ToolPattern::parse(pattern).unwrap();
        assert_eq!(
            ToolMatcher::new(&p).matches(tool),
            p.matches(tool),
            "{pattern} on {tool}"
        );
    }

    #[test]
    fn matcher_agrees_with_tool_pattern() {
        for pattern in [
            "*",
            "**",
            "a",
            "a/b",
            "a/*",
            "a/**",
            "**/a",
            "**/a/**",
            "*/a",
            "a*",
            "*a*b",
            "a/**/b",
            "a/**/**/b",
            "**/**",
            "a/*/c",
            "svc1/*",
            "svc1/**/delete",
            "**/export",
            "*/purge",
            "*/*",
            "**/a/**/b/**",
            "a/**/b/**/c",
            "**/a/*/**/b",
            "a/**/a",
            "**/a/a",
        ] {
            for tool in [
                "",
                "a",
                "b",
                "a/b",
                "a/b/c",
                "a/c",
                "ab",
                "aab",
                "a/",
                "/a",
                "a//b",
                "x/a/y",
                "svc1/op1",
                "svc1/x/delete",
                "svc1/delete",
                "svc10/op1",
                "x/export",
                "export",
                "a/x/y/b",
                "a/b/b",
                "a/a",
                "a/a/a",
                "x/a/y/b/z",
                "a/b/a/b/c",
                "a/q/b",
            ] {
                same(pattern, tool);
            }
        }
    }

    /// The index gives every rule whose pattern matches, in written order, as a scan of all
    /// rules would.
    #[test]
    fn rule_index_misses_no_matching_rule() {
        let patterns = [
            "*",
            "**",
            "a",
            "a/b",
            "a/*",
            "a/**",
            "**/a",
            "**/a/**",
            "*/a",
            "a*",
            "*a*b",
            "a/**/b",
            "*/*",
            "**/b",
            "*/b/a",
            "**/*/a",
            "*/**/b",
            "b/**",
            "**/x/**/a",
        ];
        let mut text = String::from("agent \"t\" {\n  default deny\n  rules {\n");
        for p in patterns {
            text.push_str(&format!("    permit {p}\n"));
        }
        text.push_str("  }\n}\n");
        let parsed = fpl::parse(&text);
        assert!(parsed.diagnostics.iter().all(|d| !d.is_error()));
        let compiled = compile(&parsed.policy, "governance.fms", Some(&text)).unwrap();
        let agent = &compiled.agents["t"];
        for tool in [
            "", "a", "b", "a/b", "b/a", "a/a", "x/a", "x/b/a", "a/x/b", "ab", "a//b", "/a", "a/",
            "x/y/a", "b/b", "q",
        ] {
            let indexed: Vec<usize> = agent
                .index
                .candidates(tool)
                .filter(|c| {
                    let tested = agent.rules[c.index].matcher.matches(tool);
                    assert!(
                        tested || !c.matches,
                        "{tool:?}: a known match does not match"
                    );
                    tested
                })
                .map(|c| c.index)
                .collect();
            let scanned: Vec<usize> = (0..agent.rules.len())
                .filter(|&i| agent.rules[i].pattern.matches(tool))
                .collect();
            assert_eq!(indexed, scanned, "{tool:?}");
        }
    }

    /// A tool a rule names gets, in each list, exactly the rules whose pattern matches it, as a
    /// scan of all rules would find them.
    #[test]
    fn known_tools_list_every_matching_rule() {
        let patterns = [
            "a", "a/b", "*", "**", "a/*", "**/b", "*/b", "a/**", "b", "a/b", "x/**/b", "a*/b",
            "**/a/**", "b/a", "a/b/c", "*/*/c",
        ];
        let mut text = String::from("agent \"t\" {\n  default deny\n  rules {\n");
        for (i, p) in patterns.iter().enumerate() {
            let effect = if i % 3 == 0 { "deny!" } else { "permit" };
            text.push_str(&format!("    {effect} {p}\n"));
        }
        text.push_str("  }\n");
        for p in patterns {
            text.push_str(&format!("  rate_limit \"{p}\": 10 per minute\n"));
        }
        text.push_str("}\n");
        let parsed = fpl::parse(&text);
        assert!(parsed.diagnostics.iter().all(|d| !d.is_error()));
        let compiled = compile(&parsed.policy, "governance.fms", Some(&text)).unwrap();
        let agent = &compiled.agents["t"];
        let scan = |rules: &[CompiledRule], tool: &str| -> Vec<u32> {
            (0..rules.len() as u32)
                .filter(|&i| rules[i as usize].pattern.matches(tool))
                .collect()
        };
        let literal: Vec<&str> = patterns
            .iter()
            .copied()
            .filter(|p| !p.contains('*'))
            .collect();
        assert_eq!(agent.known_tools.len(), 5);
        for tool in literal {
            let known = &agent.known_tools[tool];
            assert_eq!(*known.mandatory, *scan(&agent.mandatory, tool), "{tool}");
            assert_eq!(*known.rules, *scan(&agent.rules, tool), "{tool}");
            let rates: Vec<u32> = (0..agent.rate_limits.len() as u32)
                .filter(|&i| agent.rate_limits[i as usize].pattern.matches(tool))
                .collect();
            assert_eq!(*known.rates, *rates, "{tool}");
        }
    }

    #[test]
    fn rule_lines_are_those_of_line_col() {
        let text = "# héllo — wörld\n\nagent \"a\" {\n  default deny\n  rules {\n    permit x/a\n\n    \
                    # naïve ünïcode\n    deny   x/b  reason \"é\"\n    permit x/c if amount < $5\n    \
                    defer  x/d\n  }\n}\n";
        let parsed = fpl::parse(text);
        assert!(parsed.diagnostics.iter().all(|d| !d.is_error()));
        let compiled = compile(&parsed.policy, "governance.fms", Some(text)).unwrap();
        let rules = &compiled.agents["a"].rules;
        let written = &parsed.policy.agents[0].rules;
        assert_eq!(rules.len(), 4);
        for (c, r) in rules.iter().zip(written) {
            assert_eq!(c.line, fpl::span::line_col(text, r.effect.span.start).0);
        }
        assert_eq!(
            rules.iter().map(|r| r.line).collect::<Vec<_>>(),
            [6, 9, 10, 11]
        );
    }

    /// Regexes of every shape the first-byte check must get right: anchored or not, empty
    /// matches, alternations with an empty branch, case folding, multi-line mode, classes.
    const REGEXES: &[&str] = &[
        "^(test|qa)_5_[0-9]+$",
        "^acct_5_[0-9]{8}$",
        "^a",
        "^$",
        "^",
        "(?i)^ab",
        "^(?i:a)b",
        "(?m)^a",
        "^a|b",
        "b|^a",
        "^[a-c]x",
        "^.*",
        "^\\d",
        "^é",
        "^(a|)b",
        "^(a|)",
        "^a?b",
        "^a*",
        "\\Aab",
        "^(?:ab)+",
        "^\\b",
        "^[^a]",
        "a^",
        "(^a)|(^b)",
        "^(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q)",
        "^\\w",
    ];

    #[test]
    fn first_bytes_are_taken_from_anchored_regexes_only() {
        let first = |re| {
            anchored_first_bytes(re)
                .map(|set| (0..=255u8).filter(|&b| set.contains(b)).collect::<Vec<_>>())
        };
        assert_eq!(first("^(test|qa)_5_[0-9]+$"), Some(vec![b'q', b't']));
        assert_eq!(first("^[a-c]x"), Some(vec![b'a', b'b', b'c']));
        assert_eq!(first("(?i)^ab"), Some(vec![b'A', b'a']));
        assert_eq!(first("^a?b"), Some(vec![b'a', b'b']));
        assert_eq!(first("^(a|)b"), Some(vec![b'a', b'b']));
        for unknown in ["(?m)^a", "^a|b", "^$", "^(a|)", "^.*", "a"] {
            assert_eq!(first(unknown), None, "{unknown}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn regexp_agrees_with_regex(
            re in prop::sample::select(REGEXES),
            text in "[abcqtx_05é\\n ]{0,6}",
        ) {
            let plain = Regex::new(re).unwrap();
            prop_assert_eq!(Regexp::new(re).unwrap().is_match(&text), plain.is_match(&text),
                "{} on {:?}", re, text);
        }

        #[test]
        fn matcher_agrees_with_tool_pattern_everywhere(
            segs in prop::collection::vec("(\\*\\*|[ab*]{1,3})", 1..7),
            tool in "[ab/]{0,14}",
        ) {
            let text = segs.join("/");
            if let Ok(p) = ToolPattern::parse(&text) {
                prop_assert_eq!(ToolMatcher::new(&p).matches(&tool), p.matches(&tool),
                    "{} on {}", text, tool);
            }
        }

        #[test]
        fn tail_word_is_the_bytes_padded_with_zeros(rest in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(&rest);
            prop_assert_eq!(tail_word(&rest), u64::from_le_bytes(w));
        }
    }
}
