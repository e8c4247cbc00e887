//! Offline verification (SPEC §6): recompute every record's hash, follow the links, rebuild the
//! Merkle tree and compare it with every signed checkpoint; stop at the first bad record and
//! say why.
//!
//! Records are checked from their stored bodies, byte for byte: the body is what the hash
//! covers, and its `seq`, `chain` and `prev_hash` are read from the body itself (a quick scan
//! of its top-level members), never from a column beside it.

use std::collections::VecDeque;
use std::fmt;

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
    /// valid signature by `key` and name this chain.
    pub fn new(chain: &str, key: &VerifierKey, notes: &[String]) -> Result<Verifier, Failure> {
        Verifier::resume(chain, key, notes, Hash::genesis(chain), Frontier::new())
    }

    /// A verifier that starts after the records whose Merkle tree is `tree` and whose last
    /// hash is `prev`: for checking a range of a long log without rechecking its beginning.
    pub fn resume(
        chain: &str,
        key: &VerifierKey,
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
            let cp = Checkpoint::open(note, key)
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

fn scan_links(body: &str) -> Option<Links<'_>> {
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

/// The top-level members of a compact JSON object (JCS text), as (key, value text). Keys with
/// escapes end the iteration: record keys never have them.
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

    /// The end of the string that starts at `i` (after its closing quote).
    fn skip_string(&self, mut i: usize) -> Option<usize> {
        i += 1;
        loop {
            let j = crate::swar::quote_or_backslash(self.b, i)?;
            if self.b[j] == b'"' {
                return Some(j + 1);
            }
            i = j + 2;
        }
    }

    fn skip_value(&self, mut i: usize) -> Option<usize> {
        let b = self.b;
        match *b.get(i)? {
            b'"' => self.skip_string(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *b.get(i)? {
                        b'"' => {
                            i = self.skip_string(i)?;
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
            if *b.get(start)? != b'"' {
                return None;
            }
            let key_end = crate::swar::quote_or_backslash(b, start + 1)?;
            if b[key_end] != b'"' || *b.get(key_end + 1)? != b':' {
                return None;
            }
            let value_start = key_end + 2;
            let value_end = self.skip_value(value_start)?;
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
