//! The canonical action request (SPEC §4) and the pre-scanners of SPEC §5 step 3.
//!
//! Every adapter (SDK, HTTP, gRPC, MCP, the CLI) hands the engine an [`ActionRequest`];
//! [`canonicalize`] checks it and turns it into the one [`CanonicalRequest`] the engine evaluates
//! and records. Anything it refuses is [`Malformed`], which the pipeline answers with deny
//! `MALFORMED_REQUEST`.
//!
//! Canonicalisation is deterministic: requests that differ only in key order, whitespace or the
//! spelling of numbers (`1.0` / `1` / `1e0`) give the identical `canonical_args` and
//! `args_digest`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::{Arc, LazyLock};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::compile::same_bytes;
use crate::doc::{Doc, JsonRef, Key, Source, View, bytes_cmp, utf16_cmp};
use crate::redact::RedactionKey;
use crate::sha::{SIDE_BY_SIDE, digest_and_hmacs, sha256};

/// What an adapter sends (deserializable from the daemon's JSON and the CLI).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
pub struct ActionRequest {
    /// The agent making the call; must be non-empty.
    pub agent: String,
    /// The agent's session, when the adapter knows one.
    #[serde(default)]
    pub session: Option<String>,
    /// The tool id, such as `stripe/refund`; normalised to NFKC.
    pub tool: String,
    /// The tool's arguments: a JSON object (absent or `null` means `{}`). Read with duplicate
    /// keys refused ([`strict_value`]).
    #[serde(default, deserialize_with = "strict_value")]
    pub args: Value,
    /// Who the agent acts for: a JSON object, or absent. Read with duplicate keys refused.
    #[serde(default, deserialize_with = "strict_option")]
    pub principal: Option<Value>,
    /// The adapter's id for this call.
    #[serde(default)]
    pub call_id: Option<String>,
    /// `sdk`, `mcp`, `http`, `grpc`, …
    #[serde(default)]
    pub adapter: Option<String>,
    /// The token of an earlier deferral, on a retry.
    #[serde(default)]
    pub defer_token: Option<String>,
}

/// Size and shape limits applied by [`canonicalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest canonical (JCS) args text accepted, in bytes. Default 256 KiB.
    pub max_args_bytes: usize,
    /// The deepest nesting of arrays and objects accepted in `args` and `principal`; the args
    /// object itself is level 1. Default 64.
    pub max_depth: usize,
    /// The longest tool id accepted, in bytes of its NFKC form. Default 256.
    pub max_tool_len: usize,
}

impl Limits {
    /// The default `max_args_bytes`: 256 KiB.
    pub const DEFAULT_MAX_ARGS_BYTES: usize = 256 * 1024;
    /// The default `max_depth`.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
    /// The default `max_tool_len`.
    pub const DEFAULT_MAX_TOOL_LEN: usize = 256;

    /// The longest request text [`canonicalize_json`] will parse: four times `max_args_bytes`
    /// (room for whitespace, escapes and the other fields) plus 64 KiB. With the defaults this
    /// is 1 MiB + 64 KiB. The canonical args are still held to `max_args_bytes` afterwards.
    pub fn max_text_bytes(&self) -> usize {
        self.max_args_bytes
            .saturating_mul(4)
            .saturating_add(64 * 1024)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args_bytes: Self::DEFAULT_MAX_ARGS_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_tool_len: Self::DEFAULT_MAX_TOOL_LEN,
        }
    }
}

/// The request after canonicalisation: what the engine evaluates and records.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalRequest {
    /// The agent, unchanged (non-empty, no NUL).
    pub agent: String,
    /// The session, unchanged.
    pub session: Option<String>,
    /// The tool id in NFKC.
    pub tool: String,
    /// The arguments: always a JSON object (absent or `null` args become `{}`).
    pub args: Value,
    /// The RFC 8785 (JCS) text of `args`.
    pub canonical_args: String,
    /// `"sha256:"` + lowercase hex of SHA-256 over the bytes of `canonical_args`; computed
    /// before any redaction.
    pub args_digest: String,
    /// The principal: a JSON object, or `Null` when absent.
    pub principal: Value,
    /// The adapter's call id.
    pub call_id: Option<String>,
    /// The adapter.
    pub adapter: Option<String>,
    /// The defer token of a retry.
    pub defer_token: Option<String>,
}

/// Why a request was refused: a human message saying what is wrong and where, such as
/// `args.customer.name contains a NUL byte`. The pipeline answers it with deny
/// `MALFORMED_REQUEST`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl Malformed {
    fn new(msg: impl Into<String>) -> Self {
        Malformed(msg.into())
    }
}

/// Checks and canonicalises a request.
///
/// Refused (as [`Malformed`]): an empty `agent` or `tool`; a tool id (after NFKC) longer than
/// `max_tool_len` bytes or containing whitespace, control characters or invisible formatting
/// characters (zero-width, bidi controls, …); `args` that are not an object (`null` or absent
/// become `{}`); a `principal` that is not an object; a NUL character in any string or key of
/// `args` or `principal`, or in `agent`, `session`, `tool`, `call_id`, `adapter` or
/// `defer_token`; nesting deeper than `max_depth`; canonical args longer than `max_args_bytes`.
pub fn canonicalize(req: ActionRequest, limits: &Limits) -> Result<CanonicalRequest, Malformed> {
    let (tool, canonical_args, args_digest) = {
        let (car, _) =
            canonicalize_marking(RequestRef::from(&req), limits, |_| Targets::None, None)?;
        (
            car.tool.into_owned(),
            car.canonical_args.into_owned(),
            car.args_digest,
        )
    };
    let ActionRequest {
        agent,
        session,
        args,
        principal,
        call_id,
        adapter,
        defer_token,
        ..
    } = req;
    Ok(CanonicalRequest {
        agent,
        session,
        tool,
        args: if args.is_null() {
            Value::Object(Map::new())
        } else {
            args
        },
        canonical_args,
        args_digest,
        principal: principal.unwrap_or(Value::Null),
        call_id,
        adapter,
        defer_token,
    })
}

/// A request the engine reads without owning: fields of an [`ActionRequest`] or of a parsed
/// request text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestRef<'a> {
    pub(crate) agent: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) tool: &'a str,
    /// `null` when absent.
    pub(crate) args: JsonRef<'a>,
    pub(crate) principal: Option<JsonRef<'a>>,
    pub(crate) call_id: Option<&'a str>,
    pub(crate) adapter: Option<&'a str>,
    pub(crate) defer_token: Option<&'a str>,
    /// No string in it holds a NUL: it was read by [`Doc::parse`], which gives up on one (in a
    /// string or key, escaped or not), so the NUL checks need not look again.
    pub(crate) nul_free: bool,
    /// The args' text and where it starts in the request text, when that text is exactly
    /// their canonical text (so it is copied, not written again).
    pub(crate) args_text: Option<(&'a str, usize)>,
}

impl<'a> From<&'a ActionRequest> for RequestRef<'a> {
    fn from(r: &'a ActionRequest) -> Self {
        RequestRef {
            agent: &r.agent,
            session: r.session.as_deref(),
            tool: &r.tool,
            args: JsonRef::tree(&r.args),
            principal: r.principal.as_ref().map(JsonRef::tree),
            call_id: r.call_id.as_deref(),
            adapter: r.adapter.as_deref(),
            defer_token: r.defer_token.as_deref(),
            nul_free: false,
            args_text: None,
        }
    }
}

impl<'a> RequestRef<'a> {
    /// The request in a parsed text, or `None` when a field has a type that
    /// [`ActionRequest`] does not take (`serde_json` then words the error).
    pub(crate) fn from_doc(doc: &'a Doc<'a>) -> Option<Self> {
        let (mut agent, mut tool) = (None, None);
        let mut req = RequestRef {
            agent: "",
            session: None,
            tool: "",
            args: JsonRef::null(),
            principal: None,
            call_id: None,
            adapter: None,
            defer_token: None,
            nul_free: true,
            args_text: None,
        };
        // Absent or `null` is `None`; a string is itself; anything else is refused.
        let optional = |v: JsonRef<'a>| {
            if v.is_null() {
                Some(None)
            } else {
                v.as_str().map(Some)
            }
        };
        for m in doc.root_members() {
            let v = JsonRef::node(doc, m.value());
            match Field::of(m.name()) {
                Some(Field::Agent) => agent = Some(v.as_str()?),
                Some(Field::Tool) => tool = Some(v.as_str()?),
                Some(Field::Session) => req.session = optional(v)?,
                Some(Field::Args) => {
                    req.args = v;
                    req.args_text = doc.canonical_text(m);
                }
                Some(Field::Principal) => req.principal = Some(v),
                Some(Field::CallId) => req.call_id = optional(v)?,
                Some(Field::Adapter) => req.adapter = optional(v)?,
                Some(Field::DeferToken) => req.defer_token = optional(v)?,
                None => {}
            }
        }
        req.agent = agent?;
        req.tool = tool?;
        Some(req)
    }
}

/// A field of an action request, as the keys of its JSON text name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Agent,
    Tool,
    Session,
    Args,
    Principal,
    CallId,
    Adapter,
    DeferToken,
}

impl Field {
    /// The field `key` names. Compared by length, then inline, word-wise: a `match` on the
    /// strings calls `memcmp` for each candidate.
    #[inline(always)]
    fn of(key: &str) -> Option<Field> {
        let key = key.as_bytes();
        let is = |name: &str| same_bytes(key, name.as_bytes());
        let field = match key.len() {
            4 if is("tool") => Field::Tool,
            4 if is("args") => Field::Args,
            5 if is("agent") => Field::Agent,
            7 if is("session") => Field::Session,
            7 if is("call_id") => Field::CallId,
            7 if is("adapter") => Field::Adapter,
            9 if is("principal") => Field::Principal,
            11 if is("defer_token") => Field::DeferToken,
            _ => return None,
        };
        Some(field)
    }
}

/// A canonical request borrowing what it can from the request it was made from: what the
/// engine evaluates and records.
#[derive(Debug)]
pub(crate) struct Car<'a> {
    pub(crate) session: Option<&'a str>,
    /// In NFKC.
    pub(crate) tool: Cow<'a, str>,
    /// Always an object.
    pub(crate) args: JsonRef<'a>,
    /// An object, or `null`.
    pub(crate) principal: JsonRef<'a>,
    /// Borrowed from the request text when that is the canonical text.
    pub(crate) canonical_args: Cow<'a, str>,
    pub(crate) args_digest: String,
}

/// [`canonicalize`], also finding where the values at some argument paths are in the canonical
/// text: `targets` names them, given the tool id in NFKC (redactions depend on it). Given the
/// redaction key, the HMACs of those values are computed with the args digest, side by side
/// (see [`crate::sha`]).
pub(crate) fn canonicalize_marking<'a, 't>(
    req: RequestRef<'a>,
    limits: &Limits,
    targets: impl FnOnce(&str) -> Targets<'t>,
    key: Option<&RedactionKey>,
) -> Result<(Car<'a>, Marks<'t>), Malformed> {
    if req.agent.is_empty() {
        return Err(Malformed::new("agent is empty"));
    }
    // One branch for all the ids: the first with a NUL is found again, in order, for the message.
    let nul = |v: Option<&str>| v.is_some_and(has_nul);
    if !req.nul_free
        && (has_nul(req.agent)
            | nul(req.session)
            | nul(req.call_id)
            | nul(req.adapter)
            | nul(req.defer_token))
    {
        no_nul("agent", req.agent)?;
        for (field, value) in [
            ("session", req.session),
            ("call_id", req.call_id),
            ("adapter", req.adapter),
            ("defer_token", req.defer_token),
        ] {
            if let Some(value) = value {
                no_nul(field, value)?;
            }
        }
    }

    let tool = canonical_tool(req.tool, limits)?;
    let mut marks = Marks::new(targets(&tool));

    let args = if req.args.is_null() {
        JsonRef::empty_object()
    } else if req.args.is_object() {
        req.args
    } else {
        return Err(Malformed(format!(
            "args must be a JSON object, not {}",
            req.args.kind()
        )));
    };
    // The canonical text is written first; on the way it notes NUL characters and excess
    // depth, which are still refused first, as before the principal and the size limit.
    let written = match (req.args_text, args.source()) {
        (Some((text, at)), Source::Doc(doc, i)) => match doc.view(i) {
            View::Object(members) => {
                CanonicalArgs::copy(text, at, doc, members, limits, &mut marks)
            }
            _ => CanonicalArgs::write(args, limits, &mut marks),
        },
        _ => CanonicalArgs::write(args, limits, &mut marks),
    };
    if !written.clean || written.text.is_err() {
        check_clean("args", args, limits.max_depth)?;
    }

    let principal = match req.principal {
        None => JsonRef::null(),
        Some(p) if p.is_null() => p,
        Some(p) if p.is_object() => {
            check_clean("principal", p, limits.max_depth)?;
            p
        }
        Some(other) => {
            return Err(Malformed(format!(
                "principal must be a JSON object, not {}",
                other.kind()
            )));
        }
    };

    // Matched here, not mapped into another `Result`: moving the text through one cost more
    // than the rest of this function.
    let canonical_args = match written.text {
        Ok(text) => text,
        Err(e) => return Err(unwritten(e, limits)),
    };
    let digest = match key {
        Some(key) if marks.found.len() > 0 => {
            let text = canonical_args.as_bytes();
            let values = marks.found.iter().map(|(_, range)| text.get(range.clone()));
            let (digest, have) = digest_and_hmacs(text, values, key.states(), &mut marks.hmacs);
            marks.have_hmacs = have;
            digest
        }
        _ => sha256(canonical_args.as_bytes()),
    };
    let args_digest = digest_text(&digest);

    let car = Car {
        session: req.session,
        tool,
        args,
        canonical_args,
        args_digest,
        principal,
    };
    Ok((car, marks))
}

/// Parses a request from JSON text (the daemon's real input) and canonicalises it; oversize
/// text (over [`Limits::max_text_bytes`]) is refused before parsing.
///
/// The text must be one JSON object. Duplicate keys anywhere in it are refused: parsers differ
/// on which duplicate wins, so a request with them means different things to different readers.
/// Fields other than those of [`ActionRequest`] are ignored.
pub fn canonicalize_json(text: &str, limits: &Limits) -> Result<CanonicalRequest, Malformed> {
    canonicalize(parse_request(text, limits)?, limits)
}

/// Reads a request from JSON text as [`canonicalize_json`] does, with `serde_json`: the
/// reference `Engine::decide_json` is held to.
pub fn parse_request(text: &str, limits: &Limits) -> Result<ActionRequest, Malformed> {
    let max = limits.max_text_bytes();
    if text.len() > max {
        return Err(Malformed(format!(
            "request is {} bytes, over the {max}-byte limit",
            text.len()
        )));
    }
    let Strict(value) = serde_json::from_str(text)
        .map_err(|e| Malformed(format!("request is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Malformed(format!(
            "request must be a JSON object, not {}",
            JsonRef::tree(&value).kind()
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| Malformed(format!("request is not a valid action request: {e}")))
}

fn no_nul(field: &str, value: &str) -> Result<(), Malformed> {
    if has_nul(value) {
        Err(Malformed(format!("{field} contains a NUL byte")))
    } else {
        Ok(())
    }
}

/// The prefix of `args_digest`.
const DIGEST_PREFIX: &str = "sha256:";

/// `sha256:` and the 64 lowercase hex digits of a digest. Only the digits are checked for
/// UTF-8 (to hand them out as `str` without `unsafe`).
fn digest_text(digest: &[u8; 32]) -> String {
    let mut text = String::with_capacity(DIGEST_PREFIX.len() + 64);
    text.push_str(DIGEST_PREFIX);
    push_hex(&mut text, digest);
    text
}

/// Appends the lowercase hex of a SHA-256 digest.
pub(crate) fn push_hex(out: &mut String, digest: &[u8; 32]) {
    out.push_str(Hex::of(digest).as_str());
}

/// The 64 lowercase hex digits of a SHA-256 digest. Aligned, so that checking them for UTF-8
/// (to hand them out as `str` without `unsafe`) runs a word at a time from the first byte.
#[repr(align(16))]
pub(crate) struct Hex(pub(crate) [u8; 64]);

impl Hex {
    /// Written as nibbles turned into digits by arithmetic, then interleaved, so that it
    /// compiles to SIMD (16 bytes at a time) rather than a table lookup per byte.
    #[inline(always)]
    pub(crate) fn of(digest: &[u8; 32]) -> Hex {
        let mut high = [0u8; 32];
        let mut low = [0u8; 32];
        for ((h, l), &b) in high.iter_mut().zip(&mut low).zip(digest) {
            *h = hex_digit(b >> 4);
            *l = hex_digit(b & 0x0f);
        }
        let mut hex = [0u8; 64];
        for ((pair, h), l) in hex.chunks_exact_mut(2).zip(high).zip(low) {
            pair[0] = h;
            pair[1] = l;
        }
        Hex(hex)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The lowercase hex digit of a nibble (`n` < 16).
#[inline(always)]
fn hex_digit(n: u8) -> u8 {
    n + b'0' + if n > 9 { b'a' - b'0' - 10 } else { 0 }
}

/// The tool id a decision on `raw` sees, in NFKC (SPEC §4), or `None` when such a request is
/// refused as `MALFORMED_REQUEST`. Whatever records a call (its DPR, an approval, a credential)
/// should name the tool so: two spellings of one id are one tool.
pub fn canonical_tool_id<'a>(raw: &'a str, limits: &Limits) -> Option<Cow<'a, str>> {
    canonical_tool(raw, limits).ok()
}

/// The tool id in NFKC, or why it is refused.
#[inline(always)]
fn canonical_tool<'a>(raw: &'a str, limits: &Limits) -> Result<Cow<'a, str>, Malformed> {
    // Printable ASCII other than the space (most tool ids): no NUL, its own NFKC form, and
    // nothing can object but the length. One pass instead of four, inline.
    if is_printable_ascii(raw.as_bytes()) && !raw.is_empty() && raw.len() <= limits.max_tool_len {
        return Ok(Cow::Borrowed(raw));
    }
    normalized_tool(raw, limits)
}

/// [`canonical_tool`] of any tool id.
#[inline(never)]
fn normalized_tool<'a>(raw: &'a str, limits: &Limits) -> Result<Cow<'a, str>, Malformed> {
    no_nul("tool", raw)?;
    // A string the quick check finds normalised (every ASCII string is) is its own NFKC form.
    let tool = if raw.is_ascii() || is_nfkc_quick(raw.chars()) == IsNormalized::Yes {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(raw.nfkc().collect())
    };
    let tool = checked_tool(tool, limits)?;
    if is_printable_ascii(tool.as_bytes()) {
        return Ok(tool);
    }
    let bad = tool.chars().find_map(|c| {
        if c.is_control() {
            Some(("a control character", c))
        } else if c.is_whitespace() {
            Some(("whitespace", c))
        } else if is_invisible(c) {
            Some(("an invisible formatting character", c))
        } else {
            None
        }
    });
    match bad {
        Some((what, c)) => Err(Malformed(format!(
            "tool {} contains {what} (U+{:04X})",
            shown(&tool),
            u32::from(c)
        ))),
        None => Ok(tool),
    }
}

/// A tool id in NFKC, refused when empty or too long.
fn checked_tool<'a>(tool: Cow<'a, str>, limits: &Limits) -> Result<Cow<'a, str>, Malformed> {
    if tool.is_empty() {
        return Err(Malformed::new("tool is empty"));
    }
    if tool.len() > limits.max_tool_len {
        return Err(Malformed(format!(
            "tool is {} bytes long, over the {}-byte limit",
            tool.len(),
            limits.max_tool_len
        )));
    }
    Ok(tool)
}

/// Every byte is printable ASCII other than the space (0x21 to 0x7E); true when empty.
#[inline(always)]
fn is_printable_ascii(s: &[u8]) -> bool {
    !swar::any(s, |x| swar::below(x, 0x21) | swar::above(x, 0x7e))
}

/// Format characters (Unicode category Cf) and other invisible code points that would let two
/// tool ids look identical while comparing different.
fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A string for a message: Rust-escaped and at most 64 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{:?}…", head)
    } else {
        format!("{s:?}")
    }
}

/// Refuses NUL characters, inexact numbers ([`is_exact`]) and excess depth in `v` (named
/// `root` in the message). The fast walk
/// decides; only a refused value is walked again, remembering the path, for the message. A
/// parsed document holds none of them: [`Doc::parse`] gives up on them.
fn check_clean(root: &'static str, v: JsonRef<'_>, max_depth: usize) -> Result<(), Malformed> {
    let Some(v) = v.as_tree() else {
        return Ok(());
    };
    if is_clean(v, 0, max_depth) {
        return Ok(());
    }
    Walk::new(root, max_depth).check(v)
}

/// Every integer up to this magnitude is exactly a double; above it, doubles skip integers.
const EXACT: u64 = 1 << 53;

/// False for a number that its double does not stand for exactly: an integer of magnitude
/// over 2^53, or any other number of magnitude 2^53 or more. As RFC 8785 text, `2^53 + 1` and
/// `2^53` would be one number, so an approval or a digest for one would hold for the other and
/// the log would record a value the tool never received: such arguments are refused.
pub(crate) fn is_exact(n: &Number) -> bool {
    if let Some(i) = n.as_i64() {
        return i.unsigned_abs() <= EXACT;
    }
    if let Some(u) = n.as_u64() {
        return u <= EXACT;
    }
    n.as_f64().is_some_and(|f| f.abs() < EXACT as f64)
}

/// True when [`Walk::check`] finds nothing wrong with `v` at `depth`.
fn is_clean(v: &Value, depth: usize, max_depth: usize) -> bool {
    match v {
        Value::Array(items) => {
            depth < max_depth && items.iter().all(|i| is_clean_in(i, depth + 1, max_depth))
        }
        Value::Object(map) => {
            depth < max_depth
                && map
                    .iter()
                    .all(|(k, i)| !has_nul(k) && is_clean_in(i, depth + 1, max_depth))
        }
        scalar => is_clean_in(scalar, depth, max_depth),
    }
}

/// [`is_clean`] of an item or member: scalars (most of them) are checked in place, without
/// the call.
#[inline(always)]
fn is_clean_in(v: &Value, depth: usize, max_depth: usize) -> bool {
    match v {
        Value::String(s) => !has_nul(s),
        Value::Number(n) => is_exact(n),
        Value::Null | Value::Bool(_) => true,
        Value::Array(_) | Value::Object(_) => is_clean(v, depth, max_depth),
    }
}

#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Walks a value for NUL characters, inexact numbers and excess depth, remembering the path
/// for the message.
struct Walk<'a> {
    root: &'static str,
    max_depth: usize,
    path: Vec<Seg<'a>>,
}

impl<'a> Walk<'a> {
    fn new(root: &'static str, max_depth: usize) -> Self {
        Walk {
            root,
            max_depth,
            path: Vec::new(),
        }
    }

    fn check(&mut self, v: &'a Value) -> Result<(), Malformed> {
        self.walk(v, 0)
    }

    fn walk(&mut self, v: &'a Value, depth: usize) -> Result<(), Malformed> {
        match v {
            Value::String(s) if s.contains('\0') => {
                Err(Malformed(format!("{} contains a NUL byte", self.here())))
            }
            Value::Number(n) if !is_exact(n) => Err(Malformed(format!(
                "{} is {n}, beyond ±2^53 (9007199254740992), where JSON numbers (doubles) \
                 are not exact: send it as a string",
                self.here()
            ))),
            Value::Array(items) => {
                self.enter(depth)?;
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    self.walk(item, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            Value::Object(map) => {
                self.enter(depth)?;
                for (key, item) in map {
                    self.path.push(Seg::Key(key));
                    if key.contains('\0') {
                        return Err(Malformed(format!(
                            "key {} contains a NUL byte",
                            self.here()
                        )));
                    }
                    self.walk(item, depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Entering a container at `depth` makes it level `depth + 1`.
    fn enter(&self, depth: usize) -> Result<(), Malformed> {
        if depth >= self.max_depth {
            Err(Malformed(format!(
                "{} nests deeper than {} levels",
                self.here(),
                self.max_depth
            )))
        } else {
            Ok(())
        }
    }

    /// The current path, such as `args.customer.name` or `args.items[2]["a b"]`.
    fn here(&self) -> String {
        let mut out = String::from(self.root);
        for seg in &self.path {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Key(k) => {
                    let _ = write!(out, "[{}]", shown(k));
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Why [`write_jcs`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JcsError {
    /// The text grew past the limit it was given.
    Over,
    /// A number is NaN or infinite (a `serde_json::Value` never holds one).
    NotFinite,
}

/// Appends the RFC 8785 (JCS) text of `v` to `out`; `Err(Over)` once more than `max` bytes
/// have been written.
///
/// The output is byte for byte that of `serde_json_canonicalizer` (the tests compare the two):
/// every number is formatted as an IEEE double the way ECMAScript does (`ryu-js`, which that
/// crate uses), strings are escaped as `serde_json` escapes them (`\"`, `\\`, `\b`, `\f`,
/// `\n`, `\r`, `\t`, other control characters as `\u00xx`, everything else as is), and object
/// members are sorted by the UTF-16 code units of their keys. It writes straight into `out`,
/// where that crate buffers every member of every object separately and parses each key back.
pub(crate) fn write_jcs(v: &Value, out: &mut String, max: usize) -> Result<(), JcsError> {
    let mut found = Found::default();
    let mut w = Jcs::new(std::mem::take(out), max, usize::MAX, &mut found);
    let written = w.value(JsonRef::tree(v), 0);
    *out = w.out;
    written
}

/// A JCS writer that also notes, on the way, what [`Walk`] would refuse, and where the values
/// at the targets of [`Jcs::object_marked`] are.
///
/// It owns the text it writes (one indirection less on every write than a `&mut String`).
struct Jcs<'f> {
    out: String,
    max: usize,
    max_depth: usize,
    /// False once a string or key holding NUL, or a container nested deeper than `max_depth`,
    /// has been written.
    clean: bool,
    /// (target, byte range) of each marked value, in text order: where the caller keeps
    /// them (moving them out at the end cost more than the few writes through it).
    found: &'f mut Found,
}

/// For each byte: 0 if it is written as is, else the letter of its escape (`u` for `\u00xx`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// For each byte of a key: 1 if it needs an escape, 2 if it is the lead byte of a character at
/// or above U+E000 (see [`is_high`]), else 0.
static KEY_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if ESCAPE[b] != 0 {
            t[b] = 1;
        } else if b >= 0xEE {
            t[b] = 2;
        }
        b += 1;
    }
    t
};

/// Whether a `serde_json::Map` iterates its keys in byte order (a `BTreeMap`), as it does unless
/// some crate in the build turns on serde_json's `preserve_order` (an insertion-ordered map).
/// Features are unified across the build, so the engine cannot know which when it is compiled:
/// asked once, of a map filled out of order.
static MAPS_ARE_SORTED: LazyLock<bool> = LazyLock::new(|| {
    let mut probe = Map::new();
    probe.insert("b".to_owned(), Value::Null);
    probe.insert("a".to_owned(), Value::Null);
    probe.keys().map(String::as_str).eq(["a", "b"])
});

/// Which targets the members of an object being written lead to: those in `mask`, whose paths
/// match the keys so far in their first `depth` segments. No mask, no targets.
#[derive(Clone, Copy)]
struct Way<'m, 't> {
    targets: &'m Targets<'t>,
    mask: u64,
    depth: usize,
    /// The [`sketch`] bits of the segments of those targets at `depth`: a key whose bit is not
    /// here is none of them, which saves comparing it with each (most keys).
    sketches: u64,
}

/// One bit of a `u64` for a key or path segment, from its length and its first and last bytes
/// (mixed by a multiplication, so that common keys seldom share a bit).
fn sketch(segment: &[u8]) -> u64 {
    let (first, last) = match segment {
        [] => (0, 0),
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
    };
    let n = (segment.len() as u32) ^ u32::from(first) << 8 ^ u32::from(last) << 16;
    1 << (n.wrapping_mul(0x9E37_79B1) >> 26)
}

/// Where an object member's value stands on the [`Way`] to the targets.
enum Step<'m, 't> {
    /// Off it: no target in or at the value.
    Off,
    /// At target `.0`: the value is marked whole, and not looked into (a target inside it
    /// goes with it).
    At(usize),
    /// On the way: targets lie inside the value, if it is an object (arrays and scalars end
    /// the way).
    Into(Way<'m, 't>),
}

static NO_TARGETS: Targets<'static> = Targets::None;

impl<'m, 't> Way<'m, 't> {
    const OFF: Way<'static, 'static> = Way {
        targets: &NO_TARGETS,
        mask: 0,
        depth: 0,
        sketches: 0,
    };

    fn new(targets: &'m Targets<'t>, mask: u64, depth: usize) -> Self {
        let mut sketches = 0;
        let mut rest = mask;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(segment) = targets.path(i).and_then(|p| p.segments.get(depth)) {
                sketches |= segment.sketch;
            }
        }
        Way {
            targets,
            mask,
            depth,
            sketches,
        }
    }

    /// Most keys are off the way: the sketch, inline, says so.
    #[inline(always)]
    fn step(self, key: &str) -> Step<'m, 't> {
        if self.sketches & sketch(key.as_bytes()) == 0 {
            return Step::Off;
        }
        self.step_on(key)
    }

    /// [`Way::step`] with the rest out of line: in the document's member loop an inline
    /// [`Way::step_on`] costs more (in spilled registers) than the call it saves.
    #[inline(always)]
    fn step_outlined(self, key: &str) -> Step<'m, 't> {
        if self.sketches & sketch(key.as_bytes()) == 0 {
            return Step::Off;
        }
        self.step_on_outlined(key)
    }

    #[inline(never)]
    fn step_on_outlined(self, key: &str) -> Step<'m, 't> {
        self.step_on(key)
    }

    /// The targets whose segment at `depth` is `key`: one that ends there, or those that go
    /// on into the value (with the sketches of their next segments). Inline in the tree's
    /// member loop, where the call cost more than the search.
    #[inline(always)]
    fn step_on(self, key: &str) -> Step<'m, 't> {
        // The kind of list is matched once, not at every target.
        match self.targets {
            Targets::None => Step::Off,
            Targets::One(paths) => self.step_among(key, |i| paths.get(i)),
            Targets::Many(paths) => self.step_among(key, |i| paths.get(i).copied()),
        }
    }

    /// [`Way::step_on`] over the targets' paths, `path(i)` being target `i`'s.
    #[inline(always)]
    fn step_among(self, key: &str, path: impl Fn(usize) -> Option<&'t TargetPath>) -> Step<'m, 't> {
        let head = swar::word(key.as_bytes());
        let (mut inner, mut sketches) = (0, 0);
        let mut rest = self.mask;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let Some(segments) = path(i).map(|p| &p.segments) else {
                continue;
            };
            if !segments.get(self.depth).is_some_and(|s| s.is(key, head)) {
                continue;
            }
            match segments.get(self.depth + 1) {
                // Targets are distinct paths, none inside another: the value is this one's.
                None => return Step::At(i),
                Some(next) => {
                    inner |= 1 << i;
                    sketches |= next.sketch;
                }
            }
        }
        if inner == 0 {
            return Step::Off;
        }
        Step::Into(Way {
            targets: self.targets,
            mask: inner,
            depth: self.depth + 1,
            sketches,
        })
    }
}

// Trees and documents are written by separate functions, each reading its own kind of value
// directly: a common view of both (`JsonRef::shape`) costs a dispatch at every value and
// member, which was most of the writer's time.
//
// The size of the text is checked at the end of each container and of the whole, and where
// writing stops for another reason, rather than after each value: past the limit by at most
// one container's text (bounded by the size of the input) before it stops, the answer is the
// same.
impl<'f> Jcs<'f> {
    fn new(out: String, max: usize, max_depth: usize, found: &'f mut Found) -> Self {
        Jcs {
            out,
            max,
            max_depth,
            clean: true,
            found,
        }
    }

    fn value(&mut self, v: JsonRef<'_>, depth: usize) -> Result<(), JcsError> {
        match v.source() {
            Source::Tree(tree) => self.tree(tree, depth)?,
            Source::Doc(doc, i) => self.doc(doc, i, depth)?,
        }
        self.check_size()
    }

    /// An object (the args), marking the values at the targets of `way`.
    fn marking(&mut self, v: JsonRef<'_>, way: Way<'_, '_>) -> Result<(), JcsError> {
        match v.source() {
            Source::Tree(Value::Object(map)) => self.tree_object(map, 0, way),
            Source::Doc(doc, i) => match doc.view(i) {
                View::Object(members) => self.doc_object(doc, members, 0, way),
                _ => self.value(v, 0),
            },
            Source::Tree(_) => self.value(v, 0),
        }
    }

    /// A value at target `target`: written, and its range noted.
    fn mark(
        &mut self,
        target: usize,
        write: impl FnOnce(&mut Self) -> Result<(), JcsError>,
    ) -> Result<(), JcsError> {
        let start = self.out.len();
        write(self)?;
        self.found.push((target, start..self.out.len()));
        Ok(())
    }

    /// Inline in the member loops, where most values are strings.
    #[inline(always)]
    fn tree(&mut self, v: &Value, depth: usize) -> Result<(), JcsError> {
        match v {
            Value::String(s) => self.string(s),
            Value::Number(n) => return self.number(n),
            Value::Object(map) => return self.tree_object(map, depth, Way::OFF),
            Value::Array(items) => return self.tree_array(items, depth),
            Value::Null => self.out.push_str("null"),
            Value::Bool(true) => self.out.push_str("true"),
            Value::Bool(false) => self.out.push_str("false"),
        }
        Ok(())
    }

    fn tree_array(&mut self, items: &[Value], depth: usize) -> Result<(), JcsError> {
        if self.too_deep(depth) {
            return Ok(());
        }
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.tree(item, depth + 1)?;
        }
        self.out.push(']');
        self.check_size()
    }

    /// `{`, the members in the order of the UTF-16 code units of their keys, `}`. A map's
    /// members come in the order of the bytes of their keys, which is the same unless a key
    /// holds a character at or above U+E000; they are written as they come while their order
    /// is checked, and in the rare case it is wrong written again, sorted.
    fn tree_object(
        &mut self,
        map: &Map<String, Value>,
        depth: usize,
        way: Way<'_, '_>,
    ) -> Result<(), JcsError> {
        if self.too_deep(depth) {
            return Ok(());
        }
        if map.is_empty() {
            self.out.push_str("{}");
            return self.check_size();
        }
        let (open, found) = (self.out.len(), self.found.len());
        let sorted = *MAPS_ARE_SORTED;
        let mut prev = None;
        for (key, value) in map {
            if !self.member_key(prev, key, sorted) {
                self.out.truncate(open);
                self.found.truncate(found);
                return self.tree_object_sorted(map, depth, way);
            }
            prev = Some(key.as_str());
            self.tree_member(key, value, depth, way)?;
        }
        self.out.push('}');
        self.check_size()
    }

    /// Writes `{"key":` (the first member, `prev` `None`) or `,"key":` if `key` may follow
    /// `prev` in the order of the UTF-16 code units, checked bytewise: neither may hold a
    /// character at or above U+E000 (see [`crate::doc::is_high`]; `prev` is known not to).
    /// Answers whether it may. One pass over its bytes finds both escapes and such characters
    /// (keys are short: a byte loop beats setting up words). `sorted`: keys come in strictly
    /// increasing byte order ([`MAPS_ARE_SORTED`]), so only the characters need a check.
    #[inline(always)]
    fn member_key(&mut self, prev: Option<&str>, key: &str, sorted: bool) -> bool {
        let class = key
            .bytes()
            .fold(0u8, |class, b| class | KEY_CLASS[usize::from(b)]);
        let follows =
            sorted || prev.is_none_or(|p| bytes_cmp(p.as_bytes(), key.as_bytes()).is_lt());
        if class & 2 != 0 || !follows {
            return false;
        }
        self.out
            .push_str(if prev.is_none() { "{\"" } else { ",\"" });
        if class == 0 {
            self.out.push_str(key);
        } else {
            self.escaped(key);
        }
        self.out.push_str("\":");
        true
    }

    /// The members of `map`, sorted, from its `{`.
    #[cold]
    fn tree_object_sorted(
        &mut self,
        map: &Map<String, Value>,
        depth: usize,
        way: Way<'_, '_>,
    ) -> Result<(), JcsError> {
        let mut sorted: Vec<(&String, &Value)> = map.iter().collect();
        sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));
        self.out.push('{');
        for (i, (key, value)) in sorted.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.string(key);
            self.out.push(':');
            self.tree_member(key, value, depth, way)?;
        }
        self.out.push('}');
        self.check_size()
    }

    /// The value of member `key` of an object at `depth` (its key is written).
    #[inline(always)]
    fn tree_member(
        &mut self,
        key: &str,
        value: &Value,
        depth: usize,
        way: Way<'_, '_>,
    ) -> Result<(), JcsError> {
        match way.step(key) {
            Step::Off => self.tree(value, depth + 1),
            Step::At(target) => self.mark(target, |w| w.tree(value, depth + 1)),
            Step::Into(way) => match value {
                Value::Object(map) => self.tree_object(map, depth + 1, way),
                _ => self.tree(value, depth + 1),
            },
        }
    }

    /// Inline in the member loops, where most values are strings.
    #[inline(always)]
    fn doc(&mut self, doc: &Doc<'_>, i: u32, depth: usize) -> Result<(), JcsError> {
        self.doc_view(doc, doc.view(i), depth)
    }

    #[inline(always)]
    fn doc_view(&mut self, doc: &Doc<'_>, view: View<'_>, depth: usize) -> Result<(), JcsError> {
        match view {
            View::Str(s, true) => self.plain(s),
            View::Str(s, false) => self.string(s),
            View::Num(n) => return self.number(n),
            View::Object(members) => return self.doc_object(doc, members, depth, Way::OFF),
            View::Array(items) => return self.doc_array(doc, items, depth),
            View::Null => self.out.push_str("null"),
            View::Bool(true) => self.out.push_str("true"),
            View::Bool(false) => self.out.push_str("false"),
        }
        Ok(())
    }

    fn doc_array(&mut self, doc: &Doc<'_>, items: &[u32], depth: usize) -> Result<(), JcsError> {
        if self.too_deep(depth) {
            return Ok(());
        }
        self.out.push('[');
        for (n, &item) in items.iter().enumerate() {
            if n > 0 {
                self.out.push(',');
            }
            self.doc(doc, item, depth + 1)?;
        }
        self.out.push(']');
        self.check_size()
    }

    /// A document's object: its members are sorted already.
    fn doc_object(
        &mut self,
        doc: &Doc<'_>,
        members: &[Key<'_>],
        depth: usize,
        way: Way<'_, '_>,
    ) -> Result<(), JcsError> {
        if self.too_deep(depth) {
            return Ok(());
        }
        if members.is_empty() {
            self.out.push_str("{}");
            return self.check_size();
        }
        let mut lead = "{\"";
        for m in members {
            self.out.push_str(lead);
            lead = ",\"";
            let key = m.name();
            if m.plain() {
                self.out.push_str(key);
            } else {
                self.escaped(key);
            }
            let value = m.value();
            let step = way.step_outlined(key);
            if let Step::Off = step {
                // `":"` in one push before a string that needs no escape (most values). (In
                // the tree's loop the same made the rest of the loop cost more.)
                match doc.view(value) {
                    View::Str(s, true) => {
                        self.out.push_str("\":\"");
                        self.out.push_str(s);
                        self.out.push('"');
                    }
                    view => {
                        self.out.push_str("\":");
                        self.doc_view(doc, view, depth + 1)?;
                    }
                }
                continue;
            }
            self.out.push_str("\":");
            match step {
                Step::Off => {}
                Step::At(target) => self.mark(target, |w| w.doc(doc, value, depth + 1))?,
                Step::Into(way) => match doc.view(value) {
                    View::Object(inner) => self.doc_object(doc, inner, depth + 1, way)?,
                    _ => self.doc(doc, value, depth + 1)?,
                },
            }
        }
        self.out.push('}');
        self.check_size()
    }

    /// A `serde_json::Number` is an `i64`, a `u64` or a finite `f64`; JCS formats each as a
    /// double, as serde_json_canonicalizer does (`value as f64`). An integer of magnitude up to
    /// 2^53 is exactly a double whose shortest form is its own digits, so it is written as an
    /// integer.
    fn number(&mut self, n: &Number) -> Result<(), JcsError> {
        if let Some(i) = n.as_i64()
            && i.unsigned_abs() <= EXACT
        {
            self.integer(i);
            return Ok(());
        }
        self.double(n)
    }

    /// Any other number: as its double (and noted when that is not exact).
    fn double(&mut self, n: &Number) -> Result<(), JcsError> {
        if !is_exact(n) {
            self.clean = false;
        }
        match n.as_f64() {
            Some(f) if f.is_finite() => {
                self.out.push_str(ryu_js::Buffer::new().format_finite(f));
                Ok(())
            }
            // Writing stops here: the size first, as if it were checked after every value.
            _ => self.check_size().and(Err(JcsError::NotFinite)),
        }
    }

    fn check_size(&self) -> Result<(), JcsError> {
        if self.out.len() > self.max {
            return Err(JcsError::Over);
        }
        Ok(())
    }

    /// Three digits at a time from [`DIGITS3`], each group a copy of known length (a call to
    /// `memcpy` costs more than the rest); most integers are one group.
    fn integer(&mut self, i: i64) {
        if i < 0 {
            self.out.push('-');
        }
        let n = i.unsigned_abs();
        if n < 1000 {
            self.lead_group(n);
        } else {
            self.long_integer(n);
        }
    }

    #[inline(never)]
    fn long_integer(&mut self, mut n: u64) {
        // Below 1000 each, least significant first; `n` ends as the leading group.
        let (mut groups, mut k) = ([0u64; 7], 0);
        while n >= 1000 {
            if let Some(g) = groups.get_mut(k) {
                *g = n % 1000;
            }
            n /= 1000;
            k += 1;
        }
        self.lead_group(n);
        for &g in groups.get(..k).unwrap_or_default().iter().rev() {
            let at = g as usize * 3;
            if let Some(d) = DIGITS3.get(at..at + 3) {
                self.out.push_str(d);
            }
        }
    }

    /// The digits of `n` (below 1000) without leading zeros.
    #[inline(always)]
    fn lead_group(&mut self, n: u64) {
        let at = n as usize * 3;
        if n >= 100 {
            if let Some(d) = DIGITS3.get(at..at + 3) {
                self.out.push_str(d);
            }
        } else if n >= 10 {
            if let Some(d) = DIGITS3.get(at + 1..at + 3) {
                self.out.push_str(d);
            }
        } else {
            self.out.push(char::from(b'0' + n as u8));
        }
    }

    /// Entering a container at `depth` makes it level `depth + 1` (as in [`Walk::enter`]). Past
    /// `max_depth` the value is refused, so its text does not matter: nothing deeper is
    /// written (or recursed into).
    fn too_deep(&mut self, depth: usize) -> bool {
        if depth >= self.max_depth {
            self.clean = false;
            return true;
        }
        false
    }

    /// A string known to need no escape.
    #[inline(always)]
    fn plain(&mut self, s: &str) {
        self.out.push('"');
        self.out.push_str(s);
        self.out.push('"');
    }

    /// A string as JSON text, escaped as `serde_json` escapes it.
    #[inline(always)]
    fn string(&mut self, s: &str) {
        // Most strings need no escape: found a word at a time, written in one piece.
        if !swar::any(s.as_bytes(), swar::escaped) {
            return self.plain(s);
        }
        self.quoted_escaped(s);
    }

    #[inline(never)]
    fn quoted_escaped(&mut self, s: &str) {
        self.out.push('"');
        self.escaped(s);
        self.out.push('"');
    }

    /// The characters of a string, escaped as `serde_json` escapes them (no quotes).
    fn escaped(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut start = 0;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            let escape = ESCAPE[usize::from(b)];
            if escape == 0 {
                continue;
            }
            // `i` is at an ASCII byte, so both slices end on character boundaries.
            self.out.push_str(s.get(start..i).unwrap_or_default());
            self.out.push('\\');
            self.out.push(char::from(escape));
            if escape == b'u' {
                if b == 0 {
                    self.clean = false;
                }
                self.out.push_str("00");
                self.out.push(char::from(HEX[usize::from(b >> 4)]));
                self.out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
            start = i + 1;
        }
        self.out.push_str(s.get(start..).unwrap_or_default());
    }
}

/// Distinct dotted argument paths (at most [`Targets::MAX`]) whose values the canonical writer
/// marks: the redaction paths that apply to a call.
#[derive(Debug, Clone, Default)]
pub(crate) enum Targets<'a> {
    #[default]
    None,
    /// The paths of one `redact` statement.
    One(&'a [TargetPath]),
    /// The paths of several.
    Many(Vec<&'a TargetPath>),
}

impl<'a> Targets<'a> {
    /// One bit per target in a `u64`.
    pub(crate) const MAX: usize = 64;

    pub(crate) fn len(&self) -> usize {
        match self {
            Targets::None => 0,
            Targets::One(paths) => paths.len(),
            Targets::Many(paths) => paths.len(),
        }
    }

    /// Target `i`'s dotted path.
    pub(crate) fn get(&self, i: usize) -> Option<&'a Arc<str>> {
        self.path(i).map(|p| &p.path)
    }

    fn path(&self, i: usize) -> Option<&'a TargetPath> {
        match self {
            Targets::None => None,
            Targets::One(paths) => paths.get(i),
            Targets::Many(paths) => paths.get(i).copied(),
        }
    }

    /// Every target's bit.
    fn all(&self) -> u64 {
        match self.len() {
            n if n >= Self::MAX => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }
}

/// A redaction path prepared for the canonical writer once, when the policy is compiled: split
/// at every `.` (as `redact::lookup` splits it), so a key is compared with a segment as it is.
#[derive(Debug, Clone)]
pub(crate) struct TargetPath {
    path: Arc<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone)]
struct Segment {
    text: Box<[u8]>,
    /// Its first eight bytes, as [`swar::word`] reads them.
    head: u64,
    /// Its [`sketch`] bit.
    sketch: u64,
}

impl TargetPath {
    pub(crate) fn new(path: Arc<str>) -> TargetPath {
        let segments = path
            .split('.')
            .map(|s| Segment {
                text: s.as_bytes().into(),
                head: swar::word(s.as_bytes()),
                sketch: sketch(s.as_bytes()),
            })
            .collect();
        TargetPath { path, segments }
    }
}

impl Segment {
    /// Whether `key`, whose [`swar::word`] is `head`, is this segment (which holds no `.`, so
    /// neither does such a key): keys are short, and most are compared in that one word.
    #[inline(always)]
    fn is(&self, key: &str, head: u64) -> bool {
        self.text.len() == key.len()
            && self.head == head
            && (key.len() <= 8 || self.text.get(8..) == key.as_bytes().get(8..))
    }
}

/// Where the values at the targets are in the canonical args text.
#[derive(Debug, Default)]
pub(crate) struct Marks<'a> {
    pub(crate) targets: Targets<'a>,
    /// (target, byte range), in text order; the ranges never overlap.
    pub(crate) found: Found,
    /// The HMACs of the first values found, computed with the args digest: the `i`th when bit
    /// `i` of `have_hmacs` is set. `redact::recorded` computes the others.
    pub(crate) hmacs: [[u8; 32]; SIDE_BY_SIDE],
    pub(crate) have_hmacs: u8,
}

impl<'a> Marks<'a> {
    fn new(targets: Targets<'a>) -> Self {
        Marks {
            targets,
            found: Found::default(),
            hmacs: [[0; 32]; SIDE_BY_SIDE],
            have_hmacs: 0,
        }
    }
}

#[cfg(test)]
impl Marks<'static> {
    /// Marks at `ranges`, the `i`th of target `i`.
    pub(crate) fn with_found(ranges: &[std::ops::Range<usize>]) -> Self {
        let mut marks = Marks::new(Targets::None);
        for (i, range) in ranges.iter().enumerate() {
            marks.found.push((i, range.clone()));
        }
        marks
    }
}

/// A marked value: its target and its byte range in the text.
pub(crate) type Mark = (usize, std::ops::Range<usize>);

/// The marks found, in text order. A call has a few redactions: the first [`Found::INLINE`]
/// are held in place, so that noting them allocates nothing (an allocation and its free cost
/// more than the rest of marking).
#[derive(Debug, Default)]
pub(crate) struct Found {
    inline: [Mark; Found::INLINE],
    /// How many of `inline` are used.
    len: usize,
    /// The marks after those.
    more: Vec<Mark>,
}

/// The marks in text order.
pub(crate) type FoundIter<'f> =
    std::iter::Chain<std::slice::Iter<'f, Mark>, std::slice::Iter<'f, Mark>>;

impl Found {
    const INLINE: usize = 4;

    pub(crate) fn len(&self) -> usize {
        self.len + self.more.len()
    }

    pub(crate) fn iter(&self) -> FoundIter<'_> {
        let inline = self.inline.get(..self.len).unwrap_or_default();
        inline.iter().chain(self.more.iter())
    }

    fn push(&mut self, mark: Mark) {
        match self.inline.get_mut(self.len) {
            Some(slot) if self.more.is_empty() => {
                *slot = mark;
                self.len += 1;
            }
            _ => self.more.push(mark),
        }
    }

    /// Puts the marks in text order. A few, already in order, most often: insertion sort.
    fn sort_by_start(&mut self) {
        if !self.more.is_empty() {
            let mut all: Vec<Mark> = self.iter().cloned().collect();
            all.sort_by_key(|(_, range)| range.start);
            self.truncate(0);
            for mark in all {
                self.push(mark);
            }
            return;
        }
        let marks = self.inline.get_mut(..self.len).unwrap_or_default();
        for i in 1..marks.len() {
            let mut j = i;
            while j > 0 && marks[j - 1].1.start > marks[j].1.start {
                marks.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    /// Keeps the first `n` marks.
    fn truncate(&mut self, n: usize) {
        if n <= self.len {
            self.len = n;
            self.more.clear();
        } else {
            self.more.truncate(n - self.len);
        }
    }
}

impl<'f> IntoIterator for &'f Found {
    type Item = &'f Mark;
    type IntoIter = FoundIter<'f>;

    fn into_iter(self) -> FoundIter<'f> {
        self.iter()
    }
}

/// The RFC 8785 (JCS) text of a JSON value, such as a decision's recorded arguments. Being
/// canonical, it can be hashed, compared or spliced into a larger JCS document as it is.
///
/// It serialises as the JSON value it is (through `serde_json`'s `RawValue`, so with
/// `serde_json` only), not as a string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalJson(String);

impl CanonicalJson {
    /// The JCS text of `v`.
    pub fn from_value(v: &Value) -> CanonicalJson {
        let mut text = String::new();
        if write_jcs(v, &mut text, usize::MAX).is_err() {
            // Never taken: a `Value` holds only finite numbers and no size limit applies.
            text = String::from("null");
        }
        CanonicalJson(text)
    }

    /// `null`.
    pub fn null() -> CanonicalJson {
        CanonicalJson(String::from("null"))
    }

    /// Text the engine's JCS writer produced (or spliced from such text).
    pub(crate) fn from_jcs(text: String) -> CanonicalJson {
        CanonicalJson(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The value the text stands for (parsed: for tests and tools, not the decision path).
    pub fn to_value(&self) -> Value {
        // Always valid JSON: it was written by the JCS writer.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for CanonicalJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalJson({})", self.0)
    }
}

impl fmt::Display for CanonicalJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CanonicalJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// The canonical (JCS) text of `args` as written, before it is accepted.
struct CanonicalArgs<'a> {
    text: Result<Cow<'a, str>, JcsError>,
    /// False when `args` hold what [`check_clean`] refuses (writing may stop at the size limit
    /// before seeing everything, so an error in `text` needs that check too).
    clean: bool,
}

impl<'a> CanonicalArgs<'a> {
    fn write(args: JsonRef<'_>, limits: &Limits, marks: &mut Marks<'_>) -> Self {
        let targets = marks.targets.len();
        let out = String::with_capacity(256);
        let way = Way::new(&marks.targets, marks.targets.all(), 0);
        marks.found.truncate(0);
        let mut w = Jcs::new(
            out,
            limits.max_args_bytes,
            limits.max_depth,
            &mut marks.found,
        );
        let written = if targets > 0 {
            w.marking(args, way)
        } else {
            w.value(args, 0)
        };
        let Jcs { out, clean, .. } = w;
        CanonicalArgs {
            text: written.map(|()| Cow::Owned(out)),
            clean,
        }
    }

    /// The args' own text `text` (an object's, starting at `at` in the request text), which
    /// is their canonical text: taken as it is, with the marks [`CanonicalArgs::write`] would
    /// find, from the spans of the values. Clean as a parsed document's always is (it holds no
    /// NUL, and the parser refuses the depths the writer would).
    fn copy(
        text: &'a str,
        at: usize,
        doc: &Doc<'_>,
        members: &[Key<'_>],
        limits: &Limits,
        marks: &mut Marks<'_>,
    ) -> Self {
        marks.found.truncate(0);
        if text.len() > limits.max_args_bytes {
            return CanonicalArgs {
                text: Err(JcsError::Over),
                clean: true,
            };
        }
        if marks.targets.len() > 0 {
            mark_spans(doc, members, at, &marks.targets, &mut marks.found);
        }
        CanonicalArgs {
            text: Ok(Cow::Borrowed(text)),
            clean: true,
        }
    }
}

/// Why canonical args could not be written, in words.
#[cold]
fn unwritten(e: JcsError, limits: &Limits) -> Malformed {
    match e {
        JcsError::Over => Malformed(format!(
            "args exceed the size limit: their canonical form is over {} bytes",
            limits.max_args_bytes
        )),
        JcsError::NotFinite => Malformed::new(
            "args cannot be canonicalised: NaN and +/-Infinity are not permitted in JSON",
        ),
    }
}

/// The marks of [`Jcs::doc_object`] in an object whose text is canonical: the spans of the
/// values at the targets, less `at` (where the args start in the request text), in text order.
/// Each target is looked up on its own, which takes a few length comparisons per segment (the
/// writer, which visits every member anyway, tests each key against all targets instead).
/// Targets are distinct and none lies inside another (as [`Targets`] are made), so each value
/// is one target's at most and none holds another's.
fn mark_spans(
    doc: &Doc<'_>,
    members: &[Key<'_>],
    at: usize,
    targets: &Targets<'_>,
    found: &mut Found,
) {
    for i in 0..targets.len() {
        let Some(path) = targets.path(i) else {
            continue;
        };
        let mut object = members;
        let mut segments = path.segments.iter();
        while let Some(segment) = segments.next() {
            let text = &*segment.text;
            let Some(m) = object
                .iter()
                .find(|m| same_bytes(m.name().as_bytes(), text))
            else {
                break;
            };
            if segments.len() == 0 {
                // Spans lie in the args by construction. If one did not, the wrapped range
                // would lie outside the text, and `redact::recorded` records `null` for such a
                // mark (never the value): fail closed, without a panic in a debug build.
                let span = m.span();
                found.push((i, span.start.wrapping_sub(at)..span.end.wrapping_sub(at)));
                break;
            }
            match doc.view(m.value()) {
                View::Object(inner) => object = inner,
                // Arrays and scalars end the way.
                _ => break,
            }
        }
    }
    found.sort_by_start();
}

/// Reads a JSON value with duplicate object keys refused (`#[serde(deserialize_with)]`).
///
/// A document with a key twice means different things to different readers (`serde_json` and
/// Python keep the last, others the first), so a policy could be decided on one value while the
/// tool acts on the other: such arguments are refused, never decided on.
pub fn strict_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Strict::deserialize(d).map(|Strict(v)| v)
}

/// [`strict_value`] for an optional field (`null` is `None`).
pub fn strict_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Some(strict_value(d)?).filter(|v| !v.is_null()))
}

/// A JSON value parsed with duplicate object keys refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number is not finite"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|Strict(v)| v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {}", shown(&key))));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Word-at-a-time tests on bytes (SWAR): eight bytes per step instead of one, for the short
/// keys, strings and ids of a request, where a byte loop costs more than the rest of the work.
///
/// Each test flags the bytes it finds by their high bit. The lowest flagged byte is always a
/// true match; above a true match a borrow or carry may flag more. So only "any?" and "which
/// first?" are asked of the flags, which this makes exact.
mod swar {
    pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
    pub(super) const HIGH: u64 = ONES * 0x80;

    /// Bytes below `n` (`n` at most 0x80).
    #[inline(always)]
    pub(super) fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }

    /// Bytes equal to `b`.
    #[inline(always)]
    pub(super) fn equal(x: u64, b: u8) -> u64 {
        below(x ^ (ONES * u64::from(b)), 1)
    }

    /// Bytes above `n` (`n` below 0x80).
    #[inline(always)]
    pub(super) fn above(x: u64, n: u8) -> u64 {
        (x.wrapping_add(ONES * u64::from(0x7f - n)) | x) & HIGH
    }

    /// Bytes that JSON text must escape: control characters, `"` and `\`.
    #[inline(always)]
    pub(super) fn escaped(x: u64) -> u64 {
        below(x, 0x20) | equal(x, b'"') | equal(x, b'\\')
    }

    /// The bytes of `s` (at most eight are read) as a little-endian word padded with zeros:
    /// at most three loads whatever the length, no loop.
    #[inline(always)]
    pub(super) fn word(s: &[u8]) -> u64 {
        match s.first_chunk::<8>() {
            Some(w) => u64::from_le_bytes(*w),
            None => crate::compile::tail_word(s),
        }
    }

    /// The high bits of the first `n` bytes of a word (all of them from eight on): flags on
    /// the padding of [`word`] are dropped with them.
    #[inline(always)]
    pub(super) fn valid(n: usize) -> u64 {
        if n >= 8 {
            HIGH
        } else {
            HIGH & ((1u64 << (n * 8)) - 1)
        }
    }

    /// Whether `test` flags any byte of `s`.
    #[inline(always)]
    pub(super) fn any(s: &[u8], test: impl Fn(u64) -> u64) -> bool {
        if s.len() <= 8 {
            return test(word(s)) & valid(s.len()) != 0;
        }
        let mut flags = 0;
        let mut chunks = s.chunks_exact(8);
        for chunk in &mut chunks {
            flags |= test(word(chunk));
        }
        if !chunks.remainder().is_empty() {
            // The last eight bytes, overlapping the chunk before.
            flags |= s
                .last_chunk::<8>()
                .map_or(0, |w| test(u64::from_le_bytes(*w)));
        }
        flags != 0
    }
}

/// True when `s` holds a NUL character. Strings of up to 16 bytes (most keys and fields) are
/// read in at most two overlapping loads, with no loop: only whether some byte read is zero
/// matters, not where.
#[inline(always)]
fn has_nul(s: &str) -> bool {
    has_zero(s.as_bytes())
}

/// [`has_nul`] of bytes.
#[inline(always)]
fn has_zero(b: &[u8]) -> bool {
    let zeros = |x: u64| swar::below(x, 1);
    if let (Some(lo), Some(hi)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
        if b.len() > 16 {
            return swar::any(b, zeros);
        }
        return zeros(u64::from_le_bytes(*lo)) | zeros(u64::from_le_bytes(*hi)) != 0;
    }
    if let (Some(lo), Some(hi)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        let (lo, hi) = (u32::from_le_bytes(*lo), u32::from_le_bytes(*hi));
        return zeros(u64::from(lo) | u64::from(hi) << 32) != 0;
    }
    match b {
        [] => false,
        [first, .., last] => (*first == 0) | (*last == 0) | (b.get(1) == Some(&0)),
        [only] => *only == 0,
    }
}

/// The three digits of each number below 1000, from `000` to `999`.
const DIGITS3: &str = {
    const BYTES: [u8; 3000] = {
        let mut t = [0u8; 3000];
        let mut n = 0;
        while n < 1000 {
            t[3 * n] = b'0' + (n / 100) as u8;
            t[3 * n + 1] = b'0' + (n / 10 % 10) as u8;
            t[3 * n + 2] = b'0' + (n % 10) as u8;
            n += 1;
        }
        t
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => "",
    }
};
const _: () = assert!(DIGITS3.len() == 3000);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    fn req(tool: &str, args: Value) -> ActionRequest {
        ActionRequest {
            agent: "support-bot".into(),
            tool: tool.into(),
            args,
            ..ActionRequest::default()
        }
    }

    fn ok(r: ActionRequest) -> CanonicalRequest {
        canonicalize(r, &Limits::default()).unwrap()
    }

    fn bad(r: ActionRequest) -> String {
        canonicalize(r, &Limits::default()).unwrap_err().0
    }

    fn bad_json(text: &str) -> String {
        canonicalize_json(text, &Limits::default()).unwrap_err().0
    }

    fn nested(depth: usize) -> Value {
        // `depth` levels of objects: {"a": {"a": … {}}}
        let mut v = json!({});
        for _ in 1..depth {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn defaults() {
        let l = Limits::default();
        assert_eq!(l.max_args_bytes, 256 * 1024);
        assert_eq!(l.max_depth, 64);
        assert_eq!(l.max_tool_len, 256);
        assert_eq!(l.max_text_bytes(), 1024 * 1024 + 64 * 1024);
    }

    #[test]
    fn a_plain_request_canonicalises() {
        let c = ok(ActionRequest {
            agent: "support-bot".into(),
            session: Some("s-1".into()),
            tool: "stripe/refund".into(),
            args: json!({"amount": 8000, "currency": "usd"}),
            principal: Some(json!({"sub": "u-1"})),
            call_id: Some("c-42".into()),
            adapter: Some("sdk".into()),
            defer_token: None,
        });
        assert_eq!(c.agent, "support-bot");
        assert_eq!(c.session.as_deref(), Some("s-1"));
        assert_eq!(c.tool, "stripe/refund");
        assert_eq!(c.canonical_args, r#"{"amount":8000,"currency":"usd"}"#);
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(br#"{"amount":8000,"currency":"usd"}"#))
        );
        assert_eq!(c.args_digest, expected);
        assert_eq!(c.args_digest.len(), "sha256:".len() + 64);
        assert_eq!(c.principal, json!({"sub": "u-1"}));
        assert_eq!(c.call_id.as_deref(), Some("c-42"));
        assert_eq!(c.adapter.as_deref(), Some("sdk"));
    }

    #[test]
    fn digest_of_empty_args_is_sha256_of_braces() {
        let c = ok(req("t", Value::Null));
        assert_eq!(c.args, json!({}));
        assert_eq!(c.canonical_args, "{}");
        assert_eq!(
            c.args_digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn key_order_whitespace_and_number_spelling_do_not_change_the_digest() {
        let a = canonicalize_json(
            r#"{"agent":"a","tool":"t","args":{"b":[1,2,{"y":1,"x":2}],"a":"é","n":1.0,"m":1e2}}"#,
            &Limits::default(),
        )
        .unwrap();
        let b = canonicalize_json(
            "{ \"tool\" : \"t\",\n  \"args\" : { \"n\": 1, \"a\": \"\\u00e9\", \"m\": 100,\n \
             \"b\": [ 1, 2, { \"x\": 2, \"y\": 1 } ] },\n  \"agent\": \"a\" }",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(a.canonical_args, b.canonical_args);
        assert_eq!(a.args_digest, b.args_digest);
        assert_eq!(
            a.canonical_args,
            r#"{"a":"é","b":[1,2,{"x":2,"y":1}],"m":100,"n":1}"#
        );
        // The same request built in code gives the same digest as from text.
        let c = ok(req(
            "t",
            json!({"n": 1, "m": 100, "a": "é", "b": [1, 2, {"x": 2, "y": 1}]}),
        ));
        assert_eq!(c.args_digest, a.args_digest);
    }

    #[test]
    fn different_args_give_different_digests() {
        let a = ok(req("t", json!({"amount": 8000})));
        let b = ok(req("t", json!({"amount": 8001})));
        let c = ok(req("t", json!({"amount": "8000"})));
        assert_ne!(a.args_digest, b.args_digest);
        assert_ne!(a.args_digest, c.args_digest);
    }

    #[test]
    fn numbers_follow_rfc_8785() {
        let c = ok(req(
            "t",
            json!({"a": 9e15, "b": 1e-7, "c": 0.1, "d": -0.0, "e": 123456789.5, "f": 1e15}),
        ));
        assert_eq!(
            c.canonical_args,
            r#"{"a":9000000000000000,"b":1e-7,"c":0.1,"d":0,"e":123456789.5,"f":1000000000000000}"#
        );
        // Beyond 2^53 args are refused (`numbers_beyond_2_to_the_53_…`), but the writer formats
        // such numbers for other canonical texts.
        let mut text = String::new();
        write_jcs(&json!([1e21, 1e20]), &mut text, usize::MAX).unwrap();
        assert_eq!(text, "[1e+21,100000000000000000000]");
    }

    #[test]
    fn strings_are_escaped_per_rfc_8785() {
        let c = ok(req("t", json!({"s": "a\"\\\n\u{1}\u{7f}€"})));
        assert_eq!(c.canonical_args, "{\"s\":\"a\\\"\\\\\\n\\u0001\u{7f}€\"}");
    }

    #[test]
    fn jcs_writer_agrees_on_hard_cases() {
        for v in [
            json!({"\u{e000}": 1, "\u{10000}": 2, "a": 3, "\u{ffff}": 4, "\u{1f600}": 5}),
            json!({"\u{d7ff}": 1, "\u{e000}": 2}),
            json!({"s": "\u{0}\u{1f}\u{7f}\"\\/\u{8}\u{c}\n\r\t\u{2028}", "e": ""}),
            json!([
                1e21,
                1e-7,
                0.1,
                -0.0,
                9007199254740993u64,
                -9007199254740993i64,
                u64::MAX,
                i64::MIN,
                5e-324,
                1.7976931348623157e308,
                123456789.5,
                1e20,
                0.000001
            ]),
            json!([
                0,
                -1,
                7,
                9007199254740992i64,
                -9007199254740992i64,
                9007199254740991u64,
                9007199254740994u64,
                1_000_000_000_000_000_000i64,
                100,
                -420
            ]),
            json!({"b": {"d": [], "c": {}}, "a": [null, true, false, "x"]}),
            json!("top-level string"),
            json!(42),
            json!(null),
        ] {
            let mut ours = String::new();
            write_jcs(&v, &mut ours, usize::MAX).unwrap();
            assert_eq!(
                ours,
                serde_json_canonicalizer::to_string(&v).unwrap(),
                "{v}"
            );
        }
        let mut out = String::new();
        assert_eq!(
            write_jcs(&json!({"s": "x".repeat(20)}), &mut out, 20),
            Err(JcsError::Over)
        );
    }

    #[test]
    fn marks_survive_members_written_again_in_utf16_order() {
        // "\u{10000}" sorts before "\u{e000}" in UTF-16 but after it bytewise.
        let args = json!({
            "\u{e000}": {"a": 1},
            "\u{10000}": {"a": [2, "x"]},
            "card": {"number": "4111"},
        });
        let paths: Vec<TargetPath> = ["\u{10000}.a", "\u{e000}.a", "card.number"]
            .into_iter()
            .map(|p| TargetPath::new(Arc::from(p)))
            .collect();
        let r = req("t", args.clone());
        let (car, marks) = canonicalize_marking(
            (&r).into(),
            &Limits::default(),
            |_| Targets::One(&paths),
            None,
        )
        .unwrap();
        assert_eq!(
            car.canonical_args,
            serde_json_canonicalizer::to_string(&args).unwrap()
        );
        let found: Vec<&str> = marks
            .found
            .iter()
            .map(|(_, range)| &car.canonical_args[range.clone()])
            .collect();
        assert_eq!(found, [r#""4111""#, r#"[2,"x"]"#, "1"]);
    }

    #[test]
    fn tool_is_nfkc_normalised() {
        // Fullwidth letters and the "ﬁ" ligature fold to ASCII; a decomposed é composes.
        let c = ok(req("ｓｔｒｉｐｅ/re\u{FB01}nd", json!({})));
        assert_eq!(c.tool, "stripe/refind");
        let c = ok(req("cafe\u{301}/x", json!({})));
        assert_eq!(c.tool, "caf\u{e9}/x");
    }

    #[test]
    fn agent_and_tool_must_be_non_empty() {
        let mut r = req("t", json!({}));
        r.agent = String::new();
        assert_eq!(bad(r), "agent is empty");
        assert_eq!(bad(req("", json!({}))), "tool is empty");
    }

    #[test]
    fn tool_may_not_hold_whitespace_control_or_invisible_characters() {
        let m = bad(req("stripe refund", json!({})));
        assert!(m.contains("whitespace (U+0020)"), "{m}");
        let m = bad(req("stripe/refund\n", json!({})));
        assert!(m.contains("control character (U+000A)"), "{m}");
        let m = bad(req("stripe/\u{2003}refund", json!({})));
        assert!(m.contains("whitespace"), "{m}");
        let m = bad(req("stripe/re\u{200B}fund", json!({})));
        assert!(m.contains("invisible formatting character (U+200B)"), "{m}");
        let m = bad(req("stripe/\u{202E}dnufer", json!({})));
        assert!(m.contains("U+202E"), "{m}");
    }

    #[test]
    fn tool_length_is_limited_after_normalisation() {
        let limits = Limits::default();
        assert!(canonicalize(req(&"a".repeat(256), json!({})), &limits).is_ok());
        let m = bad(req(&"a".repeat(257), json!({})));
        assert_eq!(m, "tool is 257 bytes long, over the 256-byte limit");
        // 256 fullwidth letters are 768 bytes raw but 256 after NFKC.
        assert!(canonicalize(req(&"ａ".repeat(256), json!({})), &limits).is_ok());
    }

    #[test]
    fn args_must_be_an_object() {
        assert_eq!(
            bad(req("t", json!([1, 2]))),
            "args must be a JSON object, not an array"
        );
        assert_eq!(
            bad(req("t", json!("x"))),
            "args must be a JSON object, not a string"
        );
        assert_eq!(
            bad(req("t", json!(3))),
            "args must be a JSON object, not a number"
        );
        assert_eq!(
            bad(req("t", json!(true))),
            "args must be a JSON object, not a boolean"
        );
        assert_eq!(ok(req("t", Value::Null)).args, json!({}));
        let absent = canonicalize_json(r#"{"agent":"a","tool":"t"}"#, &Limits::default());
        assert_eq!(absent.unwrap().canonical_args, "{}");
        let null = canonicalize_json(
            r#"{"agent":"a","tool":"t","args":null}"#,
            &Limits::default(),
        );
        assert_eq!(null.unwrap().canonical_args, "{}");
    }

    #[test]
    fn principal_must_be_an_object_or_absent() {
        let mut r = req("t", json!({}));
        r.principal = Some(json!("alice"));
        assert_eq!(bad(r), "principal must be a JSON object, not a string");
        let mut r = req("t", json!({}));
        r.principal = Some(Value::Null);
        assert_eq!(ok(r).principal, Value::Null);
        assert_eq!(ok(req("t", json!({}))).principal, Value::Null);
    }

    #[test]
    fn nul_is_refused_with_its_path() {
        assert_eq!(
            bad(req("t", json!({"customer": {"name": "bob\u{0}"}}))),
            "args.customer.name contains a NUL byte"
        );
        assert_eq!(
            bad(req(
                "t",
                json!({"items": [{"ok": 1}, {"sku": ["a", "b\u{0}"]}]})
            )),
            "args.items[1].sku[1] contains a NUL byte"
        );
        assert_eq!(
            bad(req("t", json!({"customer": {"na\u{0}me": "bob"}}))),
            "key args.customer[\"na\\0me\"] contains a NUL byte"
        );
        assert_eq!(
            bad(req("t", json!({"a b": "\u{0}"}))),
            "args[\"a b\"] contains a NUL byte"
        );
        let mut r = req("t", json!({}));
        r.principal = Some(json!({"groups": ["x\u{0}"]}));
        assert_eq!(bad(r), "principal.groups[0] contains a NUL byte");
        let mut r = req("t", json!({}));
        r.agent = "bot\u{0}".into();
        assert_eq!(bad(r), "agent contains a NUL byte");
        let mut r = req("t", json!({}));
        r.session = Some("\u{0}".into());
        assert_eq!(bad(r), "session contains a NUL byte");
        assert_eq!(
            bad(req("stripe/\u{0}refund", json!({}))),
            "tool contains a NUL byte"
        );
        let mut r = req("t", json!({}));
        r.call_id = Some("c\u{0}".into());
        assert_eq!(bad(r), "call_id contains a NUL byte");
        // And from JSON text, where NUL arrives escaped.
        assert_eq!(
            bad_json(r#"{"agent":"a","tool":"t","args":{"customer":{"name":"x\u0000"}}}"#),
            "args.customer.name contains a NUL byte"
        );
    }

    #[test]
    fn numbers_beyond_2_to_the_53_are_refused_with_their_path() {
        let exact = [
            json!(9_007_199_254_740_992u64),
            json!(-9_007_199_254_740_992i64),
            json!(1.5),
            json!(9_007_199_254_740_991.0),
        ];
        for n in exact {
            assert!(
                canonicalize(req("t", json!({ "n": n })), &Limits::default()).is_ok(),
                "{n}"
            );
        }
        let msg = |n: &str| {
            format!(
                "args.n is {n}, beyond ±2^53 (9007199254740992), where JSON numbers (doubles) are not exact: send it as a string"
            )
        };
        assert_eq!(
            bad(req("t", json!({"n": 9_007_199_254_740_993u64}))),
            msg("9007199254740993")
        );
        assert_eq!(
            bad(req("t", json!({"n": -9_007_199_254_740_993i64}))),
            msg("-9007199254740993")
        );
        assert_eq!(
            bad(req("t", json!({"n": u64::MAX}))),
            msg(&u64::MAX.to_string())
        );
        assert_eq!(bad(req("t", json!({"n": 1e30}))), msg("1e+30"));
        let m = bad(req("t", json!({"a": [{"id": 12_345_678_901_234_567u64}]})));
        assert!(m.starts_with("args.a[0].id is 12345678901234567,"), "{m}");
        let mut r = req("t", json!({}));
        r.principal = Some(json!({"uid": 9_007_199_254_740_993u64}));
        assert!(bad(r).starts_with("principal.uid is 9007199254740993,"));
        // From JSON text, including integers too long for a u64 (serde_json reads them as
        // doubles, which would make two different ids one).
        for text in [
            "9007199254740993",
            "-9007199254740993",
            "12345678901234567891",
            "123456789012345678901234",
            "9007199254740993.0",
            "1e16",
        ] {
            let m = bad_json(&format!(
                r#"{{"agent":"a","tool":"t","args":{{"n":{text}}}}}"#
            ));
            assert!(
                m.starts_with("args.n is ") && m.contains(", beyond ±2^53"),
                "{text}: {m}"
            );
        }
    }

    #[test]
    fn depth_is_limited() {
        assert!(canonicalize(req("t", nested(64)), &Limits::default()).is_ok());
        let m = bad(req("t", nested(65)));
        assert!(m.ends_with("nests deeper than 64 levels"), "{m}");
        assert!(m.starts_with("args.a.a."), "{m}");
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(canonicalize(req("t", json!({"a": [1]})), &limits).is_ok());
        let m = canonicalize(req("t", json!({"a": [[1]]})), &limits)
            .unwrap_err()
            .0;
        assert_eq!(m, "args.a[0] nests deeper than 2 levels");
        let mut r = req("t", json!({}));
        r.principal = Some(json!({"a": {"b": {}}}));
        let m = canonicalize(r, &limits).unwrap_err().0;
        assert_eq!(m, "principal.a.b nests deeper than 2 levels");
    }

    #[test]
    fn deep_json_text_is_refused_not_overflowed() {
        let text = format!(
            r#"{{"agent":"a","tool":"t","args":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let m = bad_json(&text);
        assert!(m.starts_with("request is not valid JSON"), "{m}");
    }

    #[test]
    fn args_size_is_limited_on_the_canonical_form() {
        let limits = Limits {
            max_args_bytes: 20,
            ..Limits::default()
        };
        // {"s":"<12 bytes>"} is exactly 20 bytes.
        let fits = req("t", json!({"s": "x".repeat(12)}));
        assert_eq!(
            canonicalize(fits, &limits).unwrap().canonical_args.len(),
            20
        );
        let over = req("t", json!({"s": "x".repeat(13)}));
        assert_eq!(
            canonicalize(over, &limits).unwrap_err().0,
            "args exceed the size limit: their canonical form is over 20 bytes"
        );
        // Whitespace in the text does not count against the args limit.
        let text = format!(
            "{{\"agent\":\"a\",\"tool\":\"t\",\"args\":{{   \"s\"  :  \"{}\"   }}}}",
            "x".repeat(12)
        );
        assert!(canonicalize_json(&text, &limits).is_ok());
        // The default limit: 256 KiB.
        let big = req("t", json!({"s": "x".repeat(256 * 1024)}));
        let m = bad(big);
        assert!(m.starts_with("args exceed the size limit"), "{m}");
    }

    #[test]
    fn oversize_text_is_refused_before_parsing() {
        let limits = Limits {
            max_args_bytes: 10,
            ..Limits::default()
        };
        let max = limits.max_text_bytes();
        // Not even JSON: the size check comes first.
        let text = "x".repeat(max + 1);
        assert_eq!(
            canonicalize_json(&text, &limits).unwrap_err().0,
            format!("request is {} bytes, over the {max}-byte limit", max + 1)
        );
    }

    #[test]
    fn json_errors_are_malformed() {
        assert!(bad_json("{").starts_with("request is not valid JSON"));
        assert!(bad_json("").starts_with("request is not valid JSON"));
        assert!(bad_json(r#"{"agent":"a","tool":"t"} x"#).starts_with("request is not valid JSON"));
        assert_eq!(
            bad_json("[1]"),
            "request must be a JSON object, not an array"
        );
        let m = bad_json(r#"{"tool":"t"}"#);
        assert!(m.contains("missing field `agent`"), "{m}");
        let m = bad_json(r#"{"agent":5,"tool":"t"}"#);
        assert!(
            m.starts_with("request is not a valid action request"),
            "{m}"
        );
        // A lone surrogate is not a string.
        assert!(
            bad_json(r#"{"agent":"a","tool":"t","args":{"s":"\ud800"}}"#)
                .starts_with("request is not valid JSON")
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let m = bad_json(r#"{"agent":"a","tool":"t","args":{"amount":1,"amount":9000}}"#);
        assert!(m.contains("duplicate key \"amount\""), "{m}");
        let m = bad_json(r#"{"agent":"a","tool":"t","tool":"u"}"#);
        assert!(m.contains("duplicate key \"tool\""), "{m}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c = canonicalize_json(
            r#"{"agent":"a","tool":"t","args":{},"delegation":[],"extra":1}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(c.tool, "t");
    }

    #[test]
    fn json_and_struct_paths_agree() {
        let text = r#"{"agent":"support-bot","session":"s-1","tool":"stripe/refund",
            "args":{"amount":8000},"principal":{"sub":"u"},"call_id":"c-42","adapter":"mcp",
            "defer_token":null}"#;
        let from_text = canonicalize_json(text, &Limits::default()).unwrap();
        let from_struct = ok(ActionRequest {
            agent: "support-bot".into(),
            session: Some("s-1".into()),
            tool: "stripe/refund".into(),
            args: json!({"amount": 8000}),
            principal: Some(json!({"sub": "u"})),
            call_id: Some("c-42".into()),
            adapter: Some("mcp".into()),
            defer_token: None,
        });
        assert_eq!(from_text, from_struct);
    }

    /// Every byte value in every position, against `format!`.
    #[test]
    fn hex_is_the_lowercase_hex_of_each_byte() {
        for first in 0..=255u8 {
            let digest: [u8; 32] = std::array::from_fn(|i| first.wrapping_add(i as u8));
            let want: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(Hex::of(&digest).as_str(), want);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The probe says what maps do: keys inserted in any order come out in byte order
            /// exactly when it says they do (so the writer skips the order check only then).
            #[test]
            fn maps_are_sorted_is_what_maps_do(
                keys in prop::collection::vec("[a-z\u{e9}\u{ffff}\u{10000}]{0,4}", 0..12),
            ) {
                let map: Map<String, Value> =
                    keys.iter().map(|k| (k.clone(), Value::Null)).collect();
                let in_order = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b);
                if *MAPS_ARE_SORTED {
                    prop_assert!(in_order);
                }
            }
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
                (-1e12f64..1e12).prop_map(Value::from),
                "[a-z\u{e9}\u{4e2d} \"\\\\]{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn args() -> impl Strategy<Value = Value> {
            prop::collection::btree_map("[a-zA-Z_]{1,6}", json_value(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        /// Values with keys and strings that exercise UTF-16 ordering and escaping, and
        /// numbers of every kind.
        fn wild_value() -> impl Strategy<Value = Value> {
            let text = "[a-c\u{0}-\u{1f}\"\\\\/\u{7f}\u{e9}\u{d7ff}\u{e000}\u{fffd}\u{ffff}\u{10000}\u{1f600}]{0,4}";
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (-(1i64 << 54)..(1i64 << 54)).prop_map(Value::from),
                (-1000i64..1000).prop_map(Value::from),
                any::<f64>().prop_filter_map("finite", |f| {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }),
                (-1e25f64..1e25).prop_map(Value::from),
                text.prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 8, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(text, inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Byte strings of every length up to 40 over bytes that sit on the edges of the word
        /// tests (NUL, controls, quote, backslash, dot, space, DEL, high bytes, 0xFF).
        fn edgy_bytes() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                4 => prop::sample::select(vec![
                    0u8, 1, 0x1f, 0x20, 0x21, b'"', b'\\', b'.', b'/', 0x7e, 0x7f, 0x80, 0xed,
                    0xee, 0xff,
                ]),
                4 => b'a'..=b'z',
                1 => any::<u8>(),
            ];
            prop::collection::vec(byte, 0..40)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]
            /// The word-at-a-time tests answer what a byte loop answers.
            #[test]
            fn word_tests_match_byte_loops(bytes in edgy_bytes()) {
                let escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
                prop_assert_eq!(
                    swar::any(&bytes, swar::escaped),
                    bytes.iter().any(|&b| escape(b))
                );
                prop_assert_eq!(
                    is_printable_ascii(&bytes),
                    bytes.iter().all(|b| (0x21..0x7f).contains(b))
                );
                prop_assert_eq!(swar::any(&bytes, |x| swar::below(x, 1)), bytes.contains(&0));
                let mut padded = [0u8; 8];
                let n = bytes.len().min(8);
                padded[..n].copy_from_slice(&bytes[..n]);
                prop_assert_eq!(swar::word(&bytes), u64::from_le_bytes(padded));
                prop_assert_eq!(has_zero(&bytes), bytes.contains(&0));
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    prop_assert_eq!(has_nul(text), text.contains('\0'));
                }
            }

            /// The inline tool check answers what the general one answers.
            #[test]
            fn canonical_tool_is_the_general_one(
                raw in "[a/ \u{0}\u{200b}\u{ff21}\u{7f}]{0,12}|[!-~]{0,12}",
                max_tool_len in 0usize..14,
            ) {
                let limits = Limits { max_tool_len, ..Limits::default() };
                prop_assert_eq!(
                    canonical_tool(&raw, &limits),
                    normalized_tool(&raw, &limits)
                );
            }

            /// The ids are refused for a NUL as checking them one by one, in order, refuses
            /// them; a parsed text holds none (so its ids are not looked at again).
            #[test]
            fn ids_with_a_nul_are_refused_in_order(
                agent in "[a\u{0}]{1,20}",
                ids in prop::collection::vec(prop::option::of("[a\u{0}]{0,20}"), 4),
            ) {
                let r = ActionRequest {
                    agent,
                    session: ids[0].clone(),
                    call_id: ids[1].clone(),
                    adapter: ids[2].clone(),
                    defer_token: ids[3].clone(),
                    ..req("t", json!({}))
                };
                let mut want = Ok(());
                for (field, value) in [
                    ("agent", Some(&r.agent)),
                    ("session", r.session.as_ref()),
                    ("call_id", r.call_id.as_ref()),
                    ("adapter", r.adapter.as_ref()),
                    ("defer_token", r.defer_token.as_ref()),
                ] {
                    if value.is_some_and(|v| v.contains('\0')) {
                        want = Err(format!("{field} contains a NUL byte"));
                        break;
                    }
                }
                let limits = Limits::default();
                let got = canonicalize_marking((&r).into(), &limits, |_| Targets::None, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                prop_assert_eq!(&got, &want);
                let text = serde_json::to_string(&r).unwrap();
                let decoded = crate::doc::Decoded::default();
                if let Some(doc) = Doc::parse(&text, &decoded, limits.max_depth + 1) {
                    let request = RequestRef::from_doc(&doc).unwrap();
                    prop_assert!(request.nul_free && want.is_ok());
                    let got = canonicalize_marking(request, &limits, |_| Targets::None, None)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    prop_assert_eq!(got, want);
                }
            }

            /// The digest text is `sha256:` and the hex of the streaming hasher's digest.
            #[test]
            fn digest_text_is_the_hex_sha256(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let want = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
                prop_assert_eq!(digest_text(&sha256(&bytes)), want);
            }

            /// The quick cleanliness check agrees with the walk that words the refusal.
            #[test]
            fn is_clean_agrees_with_the_walk(v in wild_value(), max_depth in 0usize..6) {
                prop_assert_eq!(
                    is_clean(&v, 0, max_depth),
                    Walk::new("args", max_depth).check(&v).is_ok()
                );
            }

            /// Marks held in place and spilled past them read back as a `Vec` of them would.
            #[test]
            fn found_keeps_marks_as_a_vec_would(
                ops in prop::collection::vec((any::<bool>(), 0usize..12), 0..30)
            ) {
                let (mut found, mut want) = (Found::default(), Vec::new());
                for (i, (push, n)) in ops.into_iter().enumerate() {
                    if push {
                        found.push((i, n..n + i));
                        want.push((i, n..n + i));
                    } else {
                        found.truncate(n);
                        want.truncate(n);
                    }
                    prop_assert_eq!(found.len(), want.len());
                    prop_assert!(found.iter().eq(want.iter()));
                    prop_assert!(found.iter().rev().eq(want.iter().rev()));
                }
            }
        }

        /// Args as text, written in any way: keys in any order (maybe escaped), strings with
        /// escapes or not, numbers in any form, whitespace or none.
        #[derive(Debug, Clone)]
        enum ArgsText {
            Scalar(String),
            Str(String, bool),
            Array(Vec<ArgsText>, bool),
            Object(Vec<(String, bool, ArgsText)>, bool),
        }

        fn args_text_string(s: &str, escape: bool, out: &mut String) {
            if escape {
                // `\u0061`-like escapes of every character, as a sender may write them.
                out.push('"');
                for u in s.encode_utf16() {
                    out.push_str(&format!("\\u{u:04x}"));
                }
                out.push('"');
            } else {
                out.push_str(&serde_json::to_string(s).unwrap());
            }
        }

        fn render_args(t: &ArgsText, out: &mut String) {
            match t {
                ArgsText::Scalar(s) => out.push_str(s),
                ArgsText::Str(s, escape) => args_text_string(s, *escape, out),
                ArgsText::Array(items, spaced) => {
                    let gap = if *spaced { " " } else { "" };
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        out.push_str(if i > 0 { "," } else { "" });
                        out.push_str(gap);
                        render_args(item, out);
                    }
                    out.push(']');
                }
                ArgsText::Object(members, spaced) => {
                    let gap = if *spaced { "\n" } else { "" };
                    out.push('{');
                    for (i, (k, escape, v)) in members.iter().enumerate() {
                        out.push_str(if i > 0 { "," } else { "" });
                        args_text_string(k, *escape, out);
                        out.push(':');
                        out.push_str(gap);
                        render_args(v, out);
                    }
                    out.push('}');
                }
            }
        }

        const ARGS_KEY: &str = "[ab.\"\u{7f}\u{e9}\u{e000}\u{ffff}\u{10000}]{0,2}";

        fn args_text() -> impl Strategy<Value = ArgsText> {
            let number = prop_oneof![
                prop::sample::select(vec![
                    "0",
                    "-0",
                    "1",
                    "-1",
                    "10",
                    "-10",
                    "9007199254740991",
                    "9007199254740992",
                    "-9007199254740992",
                    "9007199254740993",
                    "999999999999999",
                    "1000000000000000",
                    "-999999999999999",
                    "1.5",
                    "-0.5",
                    "1e2",
                    "1E2",
                    "1.0",
                    "0.0",
                    "2e-3",
                    "true",
                    "false",
                    "null",
                ])
                .prop_map(str::to_owned),
                // Mostly numbers the parser takes (up to 2^53), some just past it.
                (-(1i64 << 53)..=(1i64 << 53)).prop_map(|n| n.to_string()),
                ((1i64 << 53) - 2..=(1i64 << 53) + 2).prop_map(|n| n.to_string()),
                (-(1i64 << 53) - 2..=-(1i64 << 53) + 2).prop_map(|n| n.to_string()),
                (-1000i64..1000).prop_map(|n| n.to_string()),
            ]
            .prop_map(ArgsText::Scalar);
            let string = (
                "[a\"\\\\/\u{1}\u{7f}\u{e9}\u{10000}]{0,4}",
                prop::bool::weighted(0.2),
            )
                .prop_map(|(s, e)| ArgsText::Str(s, e));
            let leaf = prop_oneof![number, string];
            leaf.prop_recursive(4, 32, 5, |inner| {
                prop_oneof![
                    (
                        prop::collection::vec(inner.clone(), 0..4),
                        prop::bool::weighted(0.2)
                    )
                        .prop_map(|(items, spaced)| ArgsText::Array(items, spaced)),
                    args_object(inner),
                ]
            })
        }

        /// An object: its members sorted (as most senders write them) or in any order.
        fn args_object(value: impl Strategy<Value = ArgsText>) -> impl Strategy<Value = ArgsText> {
            (
                prop::collection::vec((ARGS_KEY, prop::bool::weighted(0.1), value), 0..5),
                prop::bool::weighted(0.8),
                prop::bool::weighted(0.2),
            )
                .prop_map(|(mut members, sorted, spaced)| {
                    if sorted {
                        members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
                    }
                    ArgsText::Object(members, spaced)
                })
        }

        /// The targets of a `redact` statement listing `listed` (repeats and paths inside
        /// another dropped, as the compiler does).
        fn redaction_targets(listed: &[String]) -> Vec<TargetPath> {
            let pattern = fpl::pattern::ToolPattern::parse("**").unwrap();
            crate::compile::Redaction::new(pattern, listed).targets
        }

        /// The canonical text and marks of `request`'s args, as (text, [(target, range)]).
        fn canonical_and_marks(
            request: RequestRef<'_>,
            limits: &Limits,
            paths: &[TargetPath],
        ) -> Result<(String, Vec<Mark>), String> {
            canonicalize_marking(request, limits, |_| Targets::One(paths), None)
                .map(|(car, marks)| {
                    (
                        car.canonical_args.into_owned(),
                        marks.found.iter().cloned().collect(),
                    )
                })
                .map_err(|e| e.to_string())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]
            /// Copying args whose text is canonical gives the writer's text and marks, and the
            /// same errors; args written otherwise are not copied.
            #[test]
            fn canonical_args_text_is_copied_as_the_writer_writes_it(
                args in args_object(args_text()),
                listed in prop::collection::vec("[ab.\u{e000}\u{10000}]{0,5}", 0..4),
                around in prop::sample::select(vec!["", " ", "\n "]),
                small in prop::option::weighted(0.1, 0usize..64),
            ) {
                let paths = redaction_targets(&listed);
                let mut limits = Limits::default();
                if let Some(max) = small {
                    limits.max_args_bytes = max;
                }
                let mut args_json = String::new();
                render_args(&args, &mut args_json);
                let text = format!(
                    r#"{{"agent":"a","args":{around}{args_json}{around},"tool":"t"}}"#
                );
                let decoded = crate::doc::Decoded::default();
                let Some(doc) = Doc::parse(&text, &decoded, limits.max_depth + 1) else {
                    return Ok(());
                };
                let request = RequestRef::from_doc(&doc).unwrap();
                let copied = canonical_and_marks(request, &limits, &paths);
                let written =
                    canonical_and_marks(RequestRef { args_text: None, ..request }, &limits, &paths);
                prop_assert_eq!(&copied, &written);
                // Copied exactly when the text is what the writer writes.
                let canonical = serde_json::from_str::<Value>(&args_json)
                    .ok()
                    .and_then(|v| serde_json_canonicalizer::to_string(&v).ok())
                    .is_some_and(|c| c == args_json);
                if request.args_text.is_some() {
                    prop_assert!(canonical, "copied {}", args_json);
                    prop_assert_eq!(request.args_text.map(|(t, _)| t), Some(args_json.as_str()));
                }
            }

            /// Compact text with keys in order, integers and strings without escapes (what
            /// `serde_json` writes from its default maps and Python's `json.dumps` with
            /// `sort_keys`) is copied.
            #[test]
            fn compact_sorted_args_are_copied(args in plain_args()) {
                let limits = Limits::default();
                let text =
                    serde_json::to_string(&json!({"agent": "a", "tool": "t", "args": args}))
                        .unwrap();
                let decoded = crate::doc::Decoded::default();
                let doc = Doc::parse(&text, &decoded, limits.max_depth + 1).unwrap();
                let request = RequestRef::from_doc(&doc).unwrap();
                prop_assert_eq!(
                    request.args_text.map(|(t, _)| t.to_owned()),
                    Some(serde_json::to_string(&args).unwrap())
                );
            }
        }

        /// Args `serde_json` writes as their canonical text: objects (keys below U+E000, where
        /// byte order is UTF-16 order), arrays, integers up to 2^53 and strings needing no escape.
        fn plain_args() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
                "[a-z @.\u{7f}\u{e9}\u{10000}]{0,8}".prop_map(Value::String),
            ];
            let key = "[a-z_\u{e9}]{0,4}";
            let value = leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map(key, inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            });
            prop::collection::btree_map(key, value, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        /// The benchmark's request (`benches/common`), as `serde_json` writes it: copied, with
        /// its two redacted values marked.
        #[test]
        fn the_benchmark_request_args_are_copied() {
            let args = json!({
                "amount": 420,
                "currency": "usd",
                "reference": "ord_88412",
                "card": {"number": "4111111111111111", "holder": "Ada Lovelace"},
                "customer": {"email": "ada@example.com", "tier": "gold"},
                "note": "refund for order 88412",
            });
            let limits = Limits::default();
            let text =
                serde_json::to_string(&json!({"agent": "a", "tool": "t", "args": args})).unwrap();
            let decoded = crate::doc::Decoded::default();
            let doc = Doc::parse(&text, &decoded, limits.max_depth + 1).unwrap();
            let request = RequestRef::from_doc(&doc).unwrap();
            assert!(request.args_text.is_some());
            let paths = [
                TargetPath::new(Arc::from("card.number")),
                TargetPath::new(Arc::from("customer.email")),
            ];
            let copied = canonical_and_marks(request, &limits, &paths).unwrap();
            let written = canonical_and_marks(
                RequestRef {
                    args_text: None,
                    ..request
                },
                &limits,
                &paths,
            )
            .unwrap();
            assert_eq!(copied, written);
            let marked: Vec<&str> = copied.1.iter().map(|(_, r)| &copied.0[r.clone()]).collect();
            assert_eq!(marked, ["\"4111111111111111\"", "\"ada@example.com\""]);
        }

        /// Args over a few short keys, so that generated paths often lead to values.
        fn keyed_args() -> impl Strategy<Value = Value> {
            let key = "[ab.\u{e000}\u{10000}]{0,2}";
            let leaf = prop_oneof![
                Just(Value::Null),
                (-1000i64..1000).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "[a\"\u{0}]{0,3}".prop_map(Value::String),
            ];
            let value = leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map(key, inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            });
            prop::collection::btree_map(key, value, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        /// The marks of the text written from a document and from its tree, as (path, text).
        fn marked(car: &Car<'_>, marks: &Marks<'_>) -> Vec<(String, String)> {
            marks
                .found
                .iter()
                .map(|(t, r)| {
                    let path = marks.targets.get(*t).map(|p| p.to_string());
                    (
                        path.unwrap_or_default(),
                        car.canonical_args[r.clone()].to_string(),
                    )
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            /// Writing a document's args finds the same text and marks as writing its tree.
            #[test]
            fn documents_and_trees_are_written_and_marked_alike(
                args in keyed_args(),
                listed in prop::collection::vec("[ab.\u{e000}\u{10000}]{0,5}", 0..4),
            ) {
                let paths = redaction_targets(&listed);
                let limits = Limits::default();
                let r = req("t", args.clone());
                let tree = canonicalize_marking((&r).into(), &limits, |_| Targets::One(&paths), None);
                let text = json!({"agent": "a", "tool": "t", "args": args}).to_string();
                // The engine reads what the document reader declines as a tree.
                let decoded = crate::doc::Decoded::default();
                let Some(doc) = Doc::parse(&text, &decoded, limits.max_depth + 1) else {
                    return Ok(());
                };
                let request = RequestRef::from_doc(&doc).unwrap();
                // A list of several statements' paths is walked as one statement's is.
                let many = || Targets::Many(paths.iter().collect());
                let from_doc = canonicalize_marking(request, &limits, |_| many(), None);
                match (tree, from_doc) {
                    (Ok((a, am)), Ok((b, bm))) => {
                        prop_assert_eq!(&a.canonical_args, &b.canonical_args);
                        prop_assert_eq!(
                            &a.canonical_args,
                            &serde_json_canonicalizer::to_string(&args).unwrap()
                        );
                        prop_assert_eq!(marked(&a, &am), marked(&b, &bm));
                        // Distinct paths, none inside another: each that leads (through
                        // objects) to a value marks that value's text.
                        let nested = |p: &String, q: &String| {
                            p == q || q.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('.'))
                        };
                        let apart = listed.iter().enumerate().all(|(i, p)| {
                            listed.iter().enumerate().all(|(j, q)| i == j || !nested(p, q))
                        });
                        if apart {
                            let mut want: Vec<(String, String)> = listed
                                .iter()
                                .filter_map(|p| {
                                    let v = p
                                        .split('.')
                                        .try_fold(&args, |v, k| v.as_object()?.get(k))?;
                                    Some((p.clone(), serde_json_canonicalizer::to_string(v).ok()?))
                                })
                                .collect();
                            let mut got = marked(&a, &am);
                            want.sort();
                            got.sort();
                            prop_assert_eq!(got, want);
                        }
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(false, "{:?} / {:?}", a.err(), b.err()),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            #[test]
            fn jcs_writer_matches_serde_json_canonicalizer(v in wild_value()) {
                let mut ours = String::new();
                write_jcs(&v, &mut ours, usize::MAX).unwrap();
                let theirs = serde_json_canonicalizer::to_string(&v).unwrap();
                prop_assert_eq!(ours, theirs);
            }

            /// Integers written three digits at a time read as `Display` writes them.
            #[test]
            fn integers_are_written_as_display_writes_them(
                i in prop_oneof![
                    -(1i64 << 53)..=(1i64 << 53),
                    -100_000i64..100_000,
                    (0u32..16, -9i64..=9).prop_map(|(e, d)| 10i64.pow(e) + d),
                ]
            ) {
                let mut ours = String::new();
                write_jcs(&Value::from(i), &mut ours, usize::MAX).unwrap();
                prop_assert_eq!(ours, i.to_string());
            }
        }

        #[test]
        fn integers_below_a_million_are_written_as_display_writes_them() {
            let mut ours = String::new();
            for i in -1_000_000i64..=1_000_000 {
                ours.clear();
                write_jcs(&Value::from(i), &mut ours, usize::MAX).unwrap();
                assert_eq!(ours, i.to_string());
            }
            for i in [
                1i64 << 53,
                -(1i64 << 53),
                (1 << 53) - 1,
                1_000_000_000_000_000,
            ] {
                ours.clear();
                write_jcs(&Value::from(i), &mut ours, usize::MAX).unwrap();
                assert_eq!(ours, i.to_string());
            }
        }

        proptest! {
            #[test]
            fn text_spelling_does_not_change_the_digest(args in args()) {
                let compact = json!({"agent": "a", "tool": "t", "args": args}).to_string();
                let pretty = serde_json::to_string_pretty(
                    &json!({"args": args, "tool": "t", "agent": "a"})).unwrap();
                let a = canonicalize_json(&compact, &Limits::default()).unwrap();
                let b = canonicalize_json(&pretty, &Limits::default()).unwrap();
                let c = canonicalize(req("t", args.clone()), &Limits::default()).unwrap();
                prop_assert_eq!(&a.canonical_args, &b.canonical_args);
                prop_assert_eq!(&a.args_digest, &b.args_digest);
                prop_assert_eq!(&a.args_digest, &c.args_digest);
                // The canonical text reads back as the same args and is its own canonical form.
                let back: Value = serde_json::from_str(&a.canonical_args).unwrap();
                let again = canonicalize(req("t", back), &Limits::default()).unwrap();
                prop_assert_eq!(&again.canonical_args, &a.canonical_args);
            }
        }
    }
}
