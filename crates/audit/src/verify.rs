//! Offline verification (SPEC §6): recompute every record's hash, follow the links, rebuild the
//! Merkle tree and compare it with every signed checkpoint; stop at the first bad record and
//! say why.
//!
//! Records are checked from their stored bodies, byte for byte: the body is what the hash
//! covers, and its `seq`, `chain` and `prev_hash` are read from the body itself (a quick scan
//! of its top-level members), never from a column beside it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::merkle::{Frontier, leaf_hash};
use crate::note::{Checkpoint, NoteError, VerifierKey};
use crate::record::{Hash, hash_body};

/// One stored record as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The position the store holds it at.
    pub seq: u64,
    pub hash: Hash,
    pub body: &'a str,
}

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Record(u64),
    Checkpoint(u64),
}

/// The first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Location,
    pub reason: String,
}

impl Failure {
    fn record(seq: u64, reason: impl Into<String>) -> Failure {
        Failure {
            at: Location::Record(seq),
            reason: reason.into(),
        }
    }

    fn checkpoint(size: u64, reason: impl Into<String>) -> Failure {
        Failure {
            at: Location::Checkpoint(size),
            reason: reason.into(),
        }
    }

    /// The first record that is bad, when the failure names one.
    pub fn record_seq(&self) -> Option<u64> {
        match self.at {
            Location::Record(s) => Some(s),
            Location::Checkpoint(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Location::Record(s) => write!(f, "record {s}: {}", self.reason),
            Location::Checkpoint(s) => write!(f, "checkpoint at size {s}: {}", self.reason),
        }
    }
}

impl std::error::Error for Failure {}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    /// The first and last `seq` checked.
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub checkpoints: u64,
    /// The size of the last checkpoint checked: records after it are protected by the chain
    /// alone until the next checkpoint is signed.
    pub last_checkpoint: Option<u64>,
}

/// The members of a record body that link it into its chain.
struct Links<'b> {
    seq: Option<u64>,
    chain: Option<&'b str>,
    prev_hash: Option<&'b str>,
}

/// Streams a chain's records through every check.
#[derive(Debug)]
pub struct Verifier {
    chain: String,
    next_seq: u64,
    prev: Hash,
    tree: Frontier,
    /// Verified checkpoints still ahead, smallest first.
    checkpoints: VecDeque<Checkpoint>,
    /// A record whose link to its predecessor is broken, waiting for the next record to tell
    /// which of the two was altered.
    pending: Option<u64>,
    /// A checkpoint that did not match, held for one record: if that record does not link to
    /// its predecessor, the link names the changed record more precisely.
    mismatch: Option<Failure>,
    records: u64,
    first: Option<u64>,
    checked_checkpoints: u64,
    last_checkpoint: Option<u64>,
}

impl Verifier {
    /// A verifier for chain `chain` from its first record. Every checkpoint note must carry a
    /// valid signature by one of `keys` and name this chain. (A stack holds several keys when
    /// `faramesh dev`, which signs with a key of its own each run, shared its log.)
    pub fn new(chain: &str, keys: &[VerifierKey], notes: &[String]) -> Result<Verifier, Failure> {
        Verifier::resume(chain, keys, notes, Hash::genesis(chain), Frontier::new())
    }

    /// A verifier that starts after the records whose Merkle tree is `tree` and whose last
    /// hash is `prev`: for checking a range of a long log without rechecking its beginning.
    pub fn resume(
        chain: &str,
        keys: &[VerifierKey],
        notes: &[String],
        prev: Hash,
        tree: Frontier,
    ) -> Result<Verifier, Failure> {
        let origin = Checkpoint::origin_of(chain);
        let mut checkpoints = Vec::with_capacity(notes.len());
        for note in notes {
            let size = Checkpoint::parse(note.split("\n\n").next().unwrap_or(""))
                .map(|c| c.size)
                .unwrap_or(0);
            let cp = open_with_any(note, keys)
                .map_err(|e| Failure::checkpoint(size, signature_reason(&e)))?;
            if cp.origin != origin {
                return Err(Failure::checkpoint(
                    cp.size,
                    format!("it is for `{}`, not for chain `{chain}`", cp.origin),
                ));
            }
            checkpoints.push(cp);
        }
        checkpoints.sort_by_key(|c| c.size);
        let start = tree.size();
        let checkpoints = checkpoints.into_iter().filter(|c| c.size > start).collect();
        Ok(Verifier {
            chain: chain.to_owned(),
            next_seq: start + 1,
            prev,
            tree,
            checkpoints,
            pending: None,
            mismatch: None,
            records: 0,
            first: None,
            checked_checkpoints: 0,
            last_checkpoint: None,
        })
    }

    /// Checks the next record.
    pub fn push(&mut self, row: Row<'_>) -> Result<(), Failure> {
        let seq = self.next_seq;
        if row.seq != seq {
            return Err(if row.seq > seq {
                Failure::record(
                    seq,
                    format!("missing: the next record stored is {}", row.seq),
                )
            } else {
                Failure::record(
                    row.seq,
                    format!("out of order: it follows record {}", seq - 1),
                )
            });
        }
        let links =
            scan_links(row.body).ok_or_else(|| Failure::record(seq, "its body is not a record"))?;
        if links.seq != Some(seq) {
            return Err(Failure::record(
                seq,
                match links.seq {
                    Some(s) => format!(
                        "the record stored here is record {s}: records were moved or renumbered"
                    ),
                    None => "its body has no seq".to_owned(),
                },
            ));
        }
        if links.chain != Some(self.chain.as_str()) {
            return Err(Failure::record(
                seq,
                format!(
                    "it belongs to chain {:?}, not to `{}`",
                    links.chain.unwrap_or(""),
                    self.chain
                ),
            ));
        }
        let computed = hash_body(row.body.as_bytes());
        if computed != row.hash {
            return Err(Failure::record(
                seq,
                "its contents do not match its hash: the record was changed",
            ));
        }
        let linked = links.prev_hash.map(str::as_bytes) == Some(&self.prev.hex_bytes()[..]);
        if let Some(pending_seq) = self.pending.take() {
            // Record `pending_seq` did not link to its predecessor. If it does not link to its
            // successor either, it was rewritten itself; if its successor accepts it, the
            // predecessor is the one that changed.
            return Err(if linked {
                Failure::record(
                    pending_seq - 1,
                    format!(
                        "record {pending_seq} links to a different hash: record {} was changed and rehashed",
                        pending_seq - 1
                    ),
                )
            } else {
                Failure::record(
                    pending_seq,
                    "it was changed and rehashed: it links to neither its predecessor nor its successor",
                )
            });
        }
        if linked {
            if let Some(f) = self.mismatch.take() {
                return Err(f);
            }
        } else {
            if seq == 1 {
                return Err(Failure::record(
                    1,
                    "it does not start from the chain's genesis value: records before it were removed or it was rewritten",
                ));
            }
            self.pending = Some(seq);
        }
        self.prev = row.hash;
        self.tree.push(leaf_hash(&row.hash));
        self.records += 1;
        self.first.get_or_insert(seq);
        self.next_seq += 1;
        self.check_checkpoint();
        Ok(())
    }

    /// Compares the tree with every checkpoint of its size; a mismatch is held in `mismatch`.
    fn check_checkpoint(&mut self) {
        let size = self.tree.size();
        while let Some(cp) = self.checkpoints.front() {
            if cp.size > size {
                break;
            }
            if self.pending.is_some() || self.mismatch.is_some() {
                // A link failure is the more precise finding; it is reported with the next record.
                break;
            }
            let root = self.tree.root();
            if cp.root != root {
                let from = self.last_checkpoint.map_or(1, |s| s + 1);
                self.mismatch = Some(Failure::checkpoint(
                    cp.size,
                    format!(
                        "the records do not match the signed tree head: records {from}..={} were rewritten after it was signed",
                        cp.size
                    ),
                ));
                break;
            }
            self.last_checkpoint = Some(cp.size);
            self.checked_checkpoints += 1;
            self.checkpoints.pop_front();
        }
    }

    /// Ends verification: reports a broken last link and checkpoints beyond the last record.
    pub fn finish(mut self) -> Result<Summary, Failure> {
        if let Some(seq) = self.pending.take() {
            return Err(Failure::record(
                seq - 1,
                format!(
                    "record {seq}, the last, links to a different hash: record {} or {seq} was changed",
                    seq - 1
                ),
            ));
        }
        if let Some(f) = self.mismatch.take() {
            return Err(f);
        }
        self.check_checkpoint();
        if let Some(f) = self.mismatch.take() {
            return Err(f);
        }
        if let Some(cp) = self.checkpoints.front() {
            let have = self.tree.size();
            return Err(Failure::record(
                have + 1,
                format!(
                    "missing: the log ends at record {have}, but a signed checkpoint covers {} records (records {}..={} were removed)",
                    cp.size,
                    have + 1,
                    cp.size
                ),
            ));
        }
        Ok(Summary {
            records: self.records,
            first: self.first,
            last: self.first.map(|_| self.next_seq - 1),
            checkpoints: self.checked_checkpoints,
            last_checkpoint: self.last_checkpoint,
        })
    }
}

/// The checkpoint of `note` signed by the first of `keys` that signed it. When none did, the
/// error says why: a signature by a trusted key that does not verify (the note was altered)
/// over one by no trusted key at all.
fn open_with_any(note: &str, keys: &[VerifierKey]) -> Result<Checkpoint, NoteError> {
    let mut refusal = None;
    for key in keys {
        match Checkpoint::open(note, key) {
            Ok(cp) => return Ok(cp),
            Err(e @ NoteError::BadSignature(_)) => return Err(e),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    Err(refusal.unwrap_or_else(|| NoteError::Malformed("no trusted key to check it with".into())))
}

fn signature_reason(e: &NoteError) -> String {
    match e {
        NoteError::Unsigned { name, key_id } => {
            format!(
                "it is not signed by the stack's key `{name}` ({key_id}): it was re-signed or forged"
            )
        }
        NoteError::BadSignature(name) => {
            format!("its signature by `{name}` does not verify: the checkpoint was altered")
        }
        other => other.to_string(),
    }
}

/// Reads `seq`, `chain` and `prev_hash` from a body: the quick way when it proves the members
/// it found are top-level ones, else by walking every member up to `seq`. Both give the same
/// answer on any JSON text without duplicate keys.
fn scan_links(body: &str) -> Option<Links<'_>> {
    quick_links(body).or_else(|| walk_links(body))
}

/// Every top-level member in order, up to `seq`.
fn walk_links(body: &str) -> Option<Links<'_>> {
    let mut links = Links {
        seq: None,
        chain: None,
        prev_hash: None,
    };
    for (key, value) in Members::new(body) {
        match key {
            "chain" => links.chain = Some(unquote(value)?),
            "prev_hash" => links.prev_hash = Some(unquote(value)?),
            "seq" => {
                links.seq = value.parse().ok();
                // The members after `seq` (session, time, tool) link nothing.
                break;
            }
            _ => {}
        }
    }
    Some(links)
}

/// Finders for the keys read from the quick way (built once: building one costs more than a
/// search).
static CHAIN_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| finder(b"\"chain\":"));
static PREV_HASH_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| finder(b"\"prev_hash\":"));

/// A finder whose prefilter looks for the needle's bytes that are rare in record bodies: not
/// JSON's punctuation, hex digits or `_` (its default ranking, for prose, picks `"`).
fn finder(needle: &'static [u8]) -> Finder<'static> {
    struct Bodies;
    impl memchr::arch::all::packedpair::HeuristicFrequencyRank for Bodies {
        fn rank(&self, byte: u8) -> u8 {
            match byte {
                b'"' | b':' | b',' | b'{' | b'}' | b'[' | b']' | b'_' => 255,
                b'0'..=b'9' | b'a'..=b'f' => 250,
                b'v' | b'q' | b'w' | b'x' | b'z' | b'j' | b'k' => 100,
                _ => 200,
            }
        }
    }
    memchr::memmem::FinderBuilder::new().build_forward_with_ranker(Bodies, needle)
}

/// `seq`, `chain` and `prev_hash` without walking every member before them. `None` when it
/// cannot prove what it found; the walk then decides.
///
/// In JSON text a `"` after `,` or `{` opens a string, so `,"k":` is always a member key (at
/// some depth), never text inside a string. Then:
/// - a key is a member of the body itself (not of a nested object) when no `}` but the body's
///   last byte follows it: a nested object closes before the body does;
/// - a key at `at` is in the same object as a later key at `target` when stepping over whole
///   members from `at`, one `,` at a time, passes every `}` before `target`: had the object
///   of `at` been another one, its closing `}` would lie between the two.
///
/// So `seq` is found from the end, and only the members that hold a `}` (nested values)
/// between `chain` and `seq` are stepped over, not the strings around them.
fn quick_links(body: &str) -> Option<Links<'_>> {
    let b = body.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let seq_at = last_seq_key(b)?;
    let seq = tail_seq(body, seq_at)?;
    let (prev_at, prev_hash) = key_in_object(&PREV_HASH_KEY, body, seq_at)?;
    let (_, chain) = key_in_object(&CHAIN_KEY, body, prev_at)?;
    Some(Links {
        seq: Some(seq),
        chain: Some(unquote(chain)?),
        prev_hash: Some(unquote(prev_hash)?),
    })
}

/// How many look-alikes of a key (inside nested values) are passed over before leaving the
/// body to the walk.
const LOOK_ALIKES: usize = 4;

/// The first key `finder` finds before `target` that is in the same object as `target`, and
/// its value.
fn key_in_object<'b>(
    finder: &Finder<'_>,
    body: &'b str,
    target: usize,
) -> Option<(usize, &'b str)> {
    let b = body.as_bytes();
    let mut from = 0;
    for _ in 0..=LOOK_ALIKES {
        let at = from + finder.find(b.get(from..target)?)?;
        if matches!(b.get(at.wrapping_sub(1)), Some(b',' | b'{'))
            && let Some(value) = same_object(body, at, target)
        {
            return Some((at, value));
        }
        from = at + 1;
    }
    None
}

/// The value of the key at `at` when it is in the same object as the key at `target` (see
/// [`quick_links`]). A `chain`, `prev_hash` or `seq` key stepped over on the way (a
/// duplicate) leaves the body to the walk.
fn same_object(body: &str, at: usize, target: usize) -> Option<&str> {
    let b = body.as_bytes();
    let last_close = memchr::memrchr(b'}', b.get(at..target)?).map(|c| at + c);
    let mut i = at;
    let mut value = None;
    loop {
        let key_end = key_end(b, i)?;
        if b.get(key_end) != Some(&b':') {
            return None;
        }
        let value_end = skip_value(b, key_end + 1)?;
        if value.is_none() {
            value = Some(body.get(key_end + 1..value_end)?);
        } else if matches!(&b[i + 1..key_end - 1], b"chain" | b"prev_hash" | b"seq") {
            return None;
        }
        if b.get(value_end) != Some(&b',') {
            return None;
        }
        i = value_end + 1;
        if i > target {
            return None;
        }
        if last_close.is_none_or(|c| i > c) {
            return value;
        }
    }
}

/// The position of the `"` of the last `,"seq":` key.
fn last_seq_key(b: &[u8]) -> Option<usize> {
    // The members after `seq` are few and short: a backward search for its `q` is quick.
    const KEY: &[u8] = b",\"seq\":";
    let mut end = b.len();
    loop {
        let q = memchr::memrchr(b'q', &b[..end])?;
        if q >= 4 && b.get(q - 4..q + 3) == Some(KEY) {
            return Some(q - 3);
        }
        end = q;
    }
}

/// The `seq` whose key starts at `at`, when it is a top-level member: when no `}` but the
/// last byte follows it (see [`quick_links`]).
fn tail_seq(body: &str, at: usize) -> Option<u64> {
    let b = body.as_bytes();
    let start = at + 6;
    let mut end = start;
    while b.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    if end == start || !matches!(b.get(end), Some(b',' | b'}')) {
        return None;
    }
    if memchr::memchr(b'}', b.get(end..b.len() - 1)?).is_some() {
        return None;
    }
    body[start..end].parse().ok()
}

/// The end (after the closing quote) of the key whose opening quote is at `i`, if it has no
/// escapes (record keys never do).
#[inline]
fn key_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let j = crate::swar::quote_or_backslash(b, i + 1)?;
    (b[j] == b'"').then_some(j + 1)
}

/// The end (after the closing quote) of the string whose opening quote is at `i`.
#[inline]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        let j = crate::swar::quote_or_backslash(b, i)?;
        if b[j] == b'"' {
            return Some(j + 1);
        }
        i = j + 2;
    }
}

/// The end of the JSON value that starts at `i`.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while !matches!(b.get(i)?, b',' | b'}') {
                i += 1;
            }
            Some(i)
        }
    }
}

/// A string member's text, when it has no escapes (chain ids and hashes never do).
fn unquote(v: &str) -> Option<&str> {
    v.strip_prefix('"')?
        .strip_suffix('"')
        .filter(|s| !s.contains('\\'))
}

/// The byte offset of the `,` before top-level member `key` of a JCS object.
pub(crate) fn member_start(body: &str, key: &str) -> Option<usize> {
    let mut m = Members::new(body);
    while let Some((k, _)) = m.next() {
        if k == key {
            return m.last_start.checked_sub(1);
        }
    }
    None
}

/// The top-level members of a compact JSON object (JCS text), as (key, value text); a key is
/// its raw text, escapes and all.
struct Members<'b> {
    b: &'b [u8],
    s: &'b str,
    i: usize,
    last_start: usize,
    done: bool,
}

impl<'b> Members<'b> {
    fn new(s: &'b str) -> Self {
        let ok = s.starts_with('{');
        Members {
            b: s.as_bytes(),
            s,
            i: 1,
            last_start: 0,
            done: !ok,
        }
    }
}

impl<'b> Iterator for Members<'b> {
    type Item = (&'b str, &'b str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.b;
        let start = self.i;
        let step = || -> Option<(usize, usize, usize, usize)> {
            // A key with escapes is stepped over whole: it matches no record key.
            let key_end = string_end(b, start)? - 1;
            if *b.get(key_end + 1)? != b':' {
                return None;
            }
            let value_start = key_end + 2;
            let value_end = skip_value(b, value_start)?;
            Some((start + 1, key_end, value_start, value_end))
        };
        let Some((ks, ke, vs, ve)) = step() else {
            self.done = true;
            return None;
        };
        self.last_start = start;
        match b.get(ve) {
            Some(b',') => self.i = ve + 1,
            Some(b'}') => self.done = true,
            _ => {
                self.done = true;
                return None;
            }
        }
        Some((&self.s[ks..ke], &self.s[vs..ve]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn parts(l: &Links<'_>) -> (Option<u64>, Option<String>, Option<String>) {
        (
            l.seq,
            l.chain.map(str::to_owned),
            l.prev_hash.map(str::to_owned),
        )
    }

    const KEYS: &[&str] = &[
        "adapter",
        "args",
        "chain",
        "prev_hash",
        "seq",
        "session",
        "time",
        "tool",
        "a\\\"b",
        "zz",
    ];

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(",\"seq\":7,".to_owned()),
            Just("\\\",\"chain\":\"x".to_owned()),
            Just("}]{[".to_owned()),
            "[a-z\\\\\"{},:]{0,12}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            text().prop_map(Value::String),
            any::<u32>().prop_map(|n| json!(n)),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(Value::Null),
            Just(json!(true)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    /// A body like a record's, with any members (nested look-alikes included) beside them.
    fn body() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((prop::sample::select(KEYS), value()), 0..8),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.9),
            0u64..20,
        )
            .prop_map(|(members, links, seq_number, seq)| {
                let mut m: Map<String, Value> = members
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                if links {
                    m.insert("chain".into(), json!("c"));
                    m.insert("prev_hash".into(), json!("ab".repeat(32)));
                    m.insert("time".into(), json!("2026-11-21T09:00:00.001Z"));
                    m.insert(
                        "seq".into(),
                        if seq_number { json!(seq) } else { json!("1") },
                    );
                }
                serde_json_canonicalizer::to_string(&Value::Object(m)).unwrap_or_default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn the_quick_scan_agrees_with_the_walk(body in body()) {
            if let Some(quick) = quick_links(&body) {
                let walk = walk_links(&body);
                prop_assert_eq!(Some(parts(&quick)), walk.as_ref().map(parts), "{}", body);
            }
        }
    }

    /// The agreement test above is not vacuous: many generated bodies take the quick scan,
    /// nested look-alikes and all.
    #[test]
    fn generated_bodies_take_the_quick_scan() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut quick, mut tricky) = (0, 0);
        for _ in 0..2000 {
            let Ok(tree) = body().new_tree(&mut runner) else {
                continue;
            };
            let b = tree.current();
            if quick_links(&b).is_some() {
                quick += 1;
                if b.matches("\"chain\":").count() > 1 || b.matches("\"seq\":").count() > 1 {
                    tricky += 1;
                }
            }
        }
        assert!(quick > 300 && tricky > 30, "quick {quick}, tricky {tricky}");
    }

    #[test]
    fn records_take_the_quick_scan() {
        let h = "ab".repeat(32);
        let nested = format!(
            r#"{{"adapter":"s","args":{{"chain":"x","q":[{{"seq":2,"prev_hash":"{h}"}}],"z":"\",\"seq\":9}}"}},"chain":"c","events":[{{"chain":"y"}}],"id":"i","prev_hash":"{h}","principal":{{"seq":3}},"seq":12,"session":"s\"q","time":"t","tool":"t"}}"#
        );
        let quick = quick_links(&nested).map(|l| parts(&l));
        assert_eq!(quick, Some((Some(12), Some("c".into()), Some(h.clone()))));
        assert_eq!(quick, walk_links(&nested).map(|l| parts(&l)));
    }

    #[test]
    fn members_of_nested_bodies() {
        let body = r#"{"a":{"x":[1,{"y":"}\"]"}]},"b":"q\\\"","c":12,"d":[],"e":null}"#;
        let got: Vec<_> = Members::new(body).collect();
        assert_eq!(
            got,
            vec![
                ("a", r#"{"x":[1,{"y":"}\"]"}]}"#),
                ("b", r#""q\\\"""#),
                ("c", "12"),
                ("d", "[]"),
                ("e", "null")
            ]
        );
        assert_eq!(member_start(body, "c"), Some(body.find(",\"c\"").unwrap()));
    }
}
