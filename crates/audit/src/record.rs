//! The Decision Provenance Record (SPEC §6) and its hash.
//!
//! A record's **body** is the RFC 8785 (JCS) text of every field but `hash`; its hash is
//! `SHA-256("faramesh/dpr/v1\n" || body)`. Optional fields are omitted when absent (never
//! written as `null`), so a body has exactly one text. JSON-valued fields (`args`,
//! `principal`, `selectors`, `events`) are held as their JCS text ([`Canonical`]) and spliced
//! into the body as they are.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::jcs::Object;
use crate::time::{format_ms, parse_ms};

/// Prefix of every record hash: a record hash can never be confused with another SHA-256 use
/// (a Merkle node, a genesis value, an args digest).
pub const RECORD_DOMAIN: &[u8] = b"faramesh/dpr/v1\n";
/// Prefix of a chain's genesis value, the `prev_hash` of its first record.
pub const GENESIS_DOMAIN: &[u8] = b"faramesh/genesis/v1\n";

/// A SHA-256 value, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        push_hex(&mut s, &self.0);
        s
    }

    /// The 64 lowercase hex digits, without allocating.
    pub fn hex_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (o, b) in out.chunks_exact_mut(8).zip(self.0.chunks_exact(4)) {
            o.copy_from_slice(&hex4(b));
        }
        out
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Hash(out))
    }

    /// The `prev_hash` of the first record of chain `chain`.
    pub fn genesis(chain: &str) -> Hash {
        let mut h = Sha256::new();
        h.update(GENESIS_DOMAIN);
        h.update(chain.as_bytes());
        Hash(h.finalize().into())
    }
}

/// Four bytes as eight lowercase hex digits, all at once: each nibble is spread into a byte of
/// a `u64`, then `'0'` is added, and `'a' - '0' - 10` more where the nibble is above 9.
fn hex4(b: &[u8]) -> [u8; 8] {
    const LO: u64 = 0x0101_0101_0101_0101;
    let mut x = b.iter().fold(0u64, |x, &b| x << 8 | u64::from(b));
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    let above_9 = ((x + 6 * LO) >> 4) & LO;
    (x + b'0' as u64 * LO + above_9 * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| D::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// JSON held as its RFC 8785 text. Reading one from JSON canonicalises it, so a record read
/// from a pretty-printed export hashes as the daemon hashed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Canonical(Box<str>);

impl Canonical {
    /// Trusts that `jcs` is already RFC 8785 text (the engine's canonical args are).
    pub fn from_jcs(jcs: impl Into<Box<str>>) -> Canonical {
        Canonical(jcs.into())
    }

    pub fn of(value: &serde_json::Value) -> Result<Canonical, serde_json::Error> {
        serde_json_canonicalizer::to_string(value).map(|s| Canonical(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Debug for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Canonical {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Canonical {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Canonical::of(&v).map_err(D::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One decision on one tool call.
    Decision,
    /// A policy apply, swap or rollback.
    PolicyChange,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Decision => "decision",
            Kind::PolicyChange => "policy_change",
        }
    }
}

/// A deferred call's approval token and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defer {
    pub token: String,
    /// `pending`, `approved`, `rejected`, `expired` or `consumed`.
    pub status: String,
}

/// Who approved (or rejected) the call this record permits, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub approver: String,
    #[serde(rename = "time", with = "time_text")]
    pub time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The credential minted for a permit: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub provider: String,
    pub scope: String,
    pub lease_id: String,
    pub ttl_ms: u64,
}

/// A policy apply: the versions before and after, and who applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub by: String,
}

/// A Decision Provenance Record. `seq`, `chain` and `prev_hash` are set when the record is
/// sealed into its chain ([`crate::chain::Chain::seal`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpr {
    pub seq: u64,
    pub id: String,
    #[serde(rename = "time", with = "time_text")]
    pub time_ms: i64,
    pub chain: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub principal: Option<Canonical>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The canonical arguments after redaction.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub args: Option<Canonical>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_digest: Option<String>,
    /// `permit`, `deny` or `defer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// `enforce` or `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_ref: Option<String>,
    pub policy_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer: Option<Defer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// Selector answers used, by selector name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub selectors: Option<Canonical>,
    /// Decision events (budget warnings, …).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub events: Option<Canonical>,
    /// The rules tried, in order, and why each did or did not decide:
    /// `[{"line": N, "outcome": "…"}]` (`faramesh explain`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub trace: Option<Canonical>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<PolicyChange>,
    pub prev_hash: Hash,
}

impl Dpr {
    /// A decision record with every optional field empty; `seq`, `chain` and `prev_hash` are
    /// filled in when it is sealed.
    pub fn decision(id: String, time_ms: i64, policy_version: String) -> Dpr {
        Dpr::new(Kind::Decision, id, time_ms, policy_version)
    }

    pub fn policy_change(id: String, time_ms: i64, change: PolicyChange) -> Dpr {
        let mut d = Dpr::new(Kind::PolicyChange, id, time_ms, change.to.clone());
        d.change = Some(change);
        d
    }

    fn new(kind: Kind, id: String, time_ms: i64, policy_version: String) -> Dpr {
        Dpr {
            seq: 0,
            id,
            time_ms,
            chain: String::new(),
            kind,
            dev: false,
            agent: None,
            session: None,
            principal: None,
            tool: None,
            args: None,
            args_digest: None,
            effect: None,
            mode: None,
            reason_code: None,
            reason: None,
            rule_ref: None,
            policy_version,
            adapter: None,
            defer: None,
            approval: None,
            credential: None,
            selectors: None,
            events: None,
            trace: None,
            latency_us: None,
            change: None,
            prev_hash: Hash::default(),
        }
    }

    /// The JCS text of every field but `hash`: what the hash covers and what the store keeps.
    pub fn body(&self) -> String {
        // Room for the fixed fields and the usual variable ones, so the body is written without
        // growing.
        let variable = [
            &self.args,
            &self.principal,
            &self.selectors,
            &self.events,
            &self.trace,
        ]
        .iter()
        .map(|c| c.as_ref().map_or(0, |c| c.0.len()))
        .sum::<usize>()
            + self.reason.as_ref().map_or(0, String::len);
        let mut out = String::with_capacity(768 + variable);
        let mut o = Object::open(&mut out);
        o.opt_str("adapter", self.adapter.as_deref())
            .opt_str("agent", self.agent.as_deref());
        if let Some(a) = &self.approval {
            o.object("approval", |o| {
                o.str("approver", &a.approver)
                    .opt_str("comment", a.comment.as_deref())
                    .time("time", a.time_ms);
            });
        }
        if let Some(a) = &self.args {
            o.raw("args", &a.0);
        }
        o.opt_str("args_digest", self.args_digest.as_deref())
            .str("chain", &self.chain);
        if let Some(c) = &self.change {
            o.object("change", |o| {
                o.str("by", &c.by)
                    .opt_str("from", c.from.as_deref())
                    .str("to", &c.to);
            });
        }
        if let Some(c) = &self.credential {
            o.object("credential", |o| {
                o.str("lease_id", &c.lease_id)
                    .str("provider", &c.provider)
                    .str("scope", &c.scope)
                    .u64("ttl_ms", c.ttl_ms);
            });
        }
        if let Some(d) = &self.defer {
            o.object("defer", |o| {
                o.str("status", &d.status).str("token", &d.token);
            });
        }
        if self.dev {
            o.bool("dev", true);
        }
        o.opt_str("effect", self.effect.as_deref());
        if let Some(e) = &self.events {
            o.raw("events", &e.0);
        }
        o.str("id", &self.id).str("kind", self.kind.as_str());
        if let Some(l) = self.latency_us {
            o.u64("latency_us", l);
        }
        o.opt_str("mode", self.mode.as_deref())
            .str("policy_version", &self.policy_version)
            .hash("prev_hash", &self.prev_hash);
        if let Some(p) = &self.principal {
            o.raw("principal", &p.0);
        }
        o.opt_str("reason", self.reason.as_deref())
            .opt_str("reason_code", self.reason_code.as_deref())
            .opt_str("rule_ref", self.rule_ref.as_deref());
        if let Some(s) = &self.selectors {
            o.raw("selectors", &s.0);
        }
        o.u64("seq", self.seq)
            .opt_str("session", self.session.as_deref())
            .time("time", self.time_ms)
            .opt_str("tool", self.tool.as_deref());
        if let Some(t) = &self.trace {
            o.raw("trace", &t.0);
        }
        o.close();
        out
    }

    /// The record's hash: SHA-256 over the domain prefix and [`Dpr::body`].
    pub fn hash(&self) -> Hash {
        hash_body(self.body().as_bytes())
    }

    /// The full record, `hash` included, as one line of JSON (RFC 8785 text).
    pub fn to_json_with_hash(&self, hash: &Hash) -> String {
        with_hash(&self.body(), hash)
    }
}

/// The hash of a record body.
pub fn hash_body(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(RECORD_DOMAIN);
    h.update(body);
    Hash(h.finalize().into())
}

/// A body with its `"hash"` member inserted where RFC 8785 puts it (after `events`, before
/// `id`), giving the full record's JCS text.
pub fn with_hash(body: &str, hash: &Hash) -> String {
    // Every record has an `id`; a body without one gets the hash last.
    let at = crate::verify::member_start(body, "id").unwrap_or(body.len().saturating_sub(1));
    let mut out = String::with_capacity(body.len() + 76);
    out.push_str(&body[..at]);
    out.push_str(",\"hash\":\"");
    push_hex(&mut out, &hash.0);
    out.push('"');
    out.push_str(&body[at..]);
    out
}

/// A record as read back (from a store or a JSONL export): the record and the hash stored
/// with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub dpr: Dpr,
    pub hash: Hash,
}

impl Stored {
    /// Reads a full record (a JSONL export line, `hash` included). Unknown fields are errors:
    /// a field the hash does not cover must not pass for part of the record.
    pub fn from_json(text: &str) -> Result<Stored, serde_json::Error> {
        let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
        let hash = map
            .remove("hash")
            .ok_or_else(|| serde_json::Error::custom("missing field `hash`"))?;
        let hash = Hash::deserialize(hash)?;
        let dpr = Dpr::deserialize(serde_json::Value::Object(map))?;
        Ok(Stored { dpr, hash })
    }

    /// The full record as JCS text, `hash` included.
    pub fn to_json(&self) -> String {
        self.dpr.to_json_with_hash(&self.hash)
    }
}

/// A JSON-valued field that is present, `null` included (absent fields are `None` by
/// `default`): `"args": null` reads back as itself, not as a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Canonical>, D::Error> {
    Canonical::deserialize(d).map(Some)
}

mod time_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ms(*ms))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_ms(&s)
            .ok_or_else(|| D::Error::custom("expected a time like 2026-01-01T00:00:00.000Z"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_bytes_are_the_hex_text() {
        for seed in 0u8..=255 {
            let mut h = [0u8; 32];
            for (i, b) in h.iter_mut().enumerate() {
                *b = seed
                    .wrapping_mul(37)
                    .wrapping_add((i as u8).wrapping_mul(101));
            }
            let h = Hash(h);
            assert_eq!(&h.hex_bytes()[..], h.to_hex().as_bytes());
            assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        }
    }
}
