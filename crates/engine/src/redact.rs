//! Redaction of argument values (SPEC §3.10).
//!
//! `redact PATTERN args: [paths]` replaces those values, before anything is written anywhere,
//! with `{"redacted": "hmac-sha256:<hex>"}`: an HMAC-SHA256, under a per-stack secret key, of
//! the RFC 8785 (JCS) text of the original value. Nobody can read the value back, but an
//! auditor holding the key can test it for equality against a known value with
//! [`redaction_of`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::car::{CanonicalJson, Hex, Marks, TargetPath, Targets, push_hex};
use crate::compile::Redaction;
use crate::sha;

/// The prefix of every redaction token.
pub const TOKEN_PREFIX: &str = "hmac-sha256:";

/// What a redacted value's text begins with.
const REDACTION_OPEN: &str = "{\"redacted\":\"hmac-sha256:";
/// The length of a redacted value's text: the opening, 64 hex digits and `"}`.
const REDACTION_LEN: usize = REDACTION_OPEN.len() + 64 + 2;

/// A per-stack secret key for HMAC-SHA256.
#[derive(Clone)]
pub struct RedactionKey {
    /// The SHA-256 states after the key's inner and outer padded blocks (RFC 2104), computed
    /// once, so a token of a short value costs two compressions and nothing else (the tests
    /// compare it with the `hmac` crate).
    inner: [u32; 8],
    outer: [u32; 8],
}

impl RedactionKey {
    /// The key with these bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        // HMAC zero-pads a key shorter than the hash's 64-byte block (RFC 2104 §2).
        let keyed = |pad: u8| {
            let mut block = [pad; 64];
            for (x, k) in block.iter_mut().zip(b) {
                *x ^= k;
            }
            sha::after_block(sha::H0, block)
        };
        RedactionKey {
            inner: keyed(0x36),
            outer: keyed(0x5c),
        }
    }

    /// HMAC-SHA256 of `msg` under this key.
    pub(crate) fn hmac(&self, msg: &[u8]) -> [u8; 32] {
        sha::hmac(self.inner, self.outer, msg)
    }

    /// The states after the key's inner and outer padded blocks.
    pub(crate) fn states(&self) -> (sha::State, sha::State) {
        (self.inner, self.outer)
    }

    /// Appends `hmac-sha256:` and the hex HMAC of `jcs`, the JCS text of a value.
    fn push_token(&self, jcs: &str, out: &mut String) {
        out.push_str(TOKEN_PREFIX);
        push_hex(out, &self.hmac(jcs.as_bytes()));
    }
}

impl fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactionKey(…)")
    }
}

/// The string an auditor computes to test equality against a known value:
/// `hmac-sha256:` followed by 64 lowercase hex digits of HMAC-SHA256(key, JCS(value)).
pub fn redaction_of(value: &Value, key: &RedactionKey) -> String {
    let jcs = CanonicalJson::from_value(value);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    key.push_token(jcs.as_str(), &mut token);
    token
}

/// How the redactions that apply to a call are done.
#[derive(Debug)]
pub(crate) enum Plan<'a> {
    /// By splicing tokens into the canonical text, at the values the writer marked.
    Splice(Targets<'a>),
    /// Statements whose paths meet (one holds, or is, another's path): applied to the tree
    /// one after another, as [`recorded_from_tree`] documents.
    Tree(Vec<&'a Redaction>),
}

/// The plan for the statements among `redactions` whose pattern matches `tool`.
pub(crate) fn plan<'a>(redactions: &'a [Redaction], tool: &str) -> Plan<'a> {
    let mut applying = redactions.iter().filter(|r| r.matcher.matches(tool));
    let Some(first) = applying.next() else {
        return Plan::Splice(Targets::None);
    };
    let Some(second) = applying.next() else {
        if first.paths.len() > Targets::MAX {
            return Plan::Tree(vec![first]);
        }
        return Plan::Splice(Targets::One(&first.targets));
    };
    let statements: Vec<&Redaction> = [first, second].into_iter().chain(applying).collect();
    let paths: Vec<&TargetPath> = statements.iter().flat_map(|r| &r.targets).collect();
    if paths.len() > Targets::MAX || meet_across(&statements) {
        return Plan::Tree(statements);
    }
    Plan::Splice(Targets::Many(paths))
}

/// Whether a path of one statement is, or holds, or lies in, a path of another.
fn meet_across(statements: &[&Redaction]) -> bool {
    statements.iter().enumerate().any(|(i, a)| {
        statements[i + 1..].iter().any(|b| {
            a.paths.iter().any(|p| {
                b.paths
                    .iter()
                    .any(|q| p == q || within(p, q) || within(q, p))
            })
        })
    })
}

/// `path` lies inside `outer` (`outer` followed by a `.`).
fn within(path: &str, outer: &str) -> bool {
    path.len() > outer.len() && path.starts_with(outer) && path.as_bytes()[outer.len()] == b'.'
}

/// What is recorded of canonical args `text` whose marked values are redacted: the text with
/// each of them replaced by `{"redacted":"hmac-sha256:<hex>"}` (the HMAC over the value's own
/// text, which is its JCS form), and the paths redacted, in target order. This is the JCS
/// text of the tree [`redact`] leaves, without building that tree.
pub(crate) fn recorded(
    text: Cow<'_, str>,
    marks: &Marks<'_>,
    key: &RedactionKey,
) -> (CanonicalJson, Vec<Arc<str>>) {
    if marks.found.len() == 0 {
        return (CanonicalJson::from_jcs(text.into_owned()), Vec::new());
    }
    let mut done = 0u64;
    // `None` never happens (marks lie in the text, in order, on character boundaries): record
    // nothing rather than a value that should have been redacted.
    let text = redacted_text(&text, marks, key, &mut done).unwrap_or_else(|| String::from("null"));
    let mut redacted = Vec::with_capacity(marks.found.len());
    while done != 0 {
        let target = done.trailing_zeros() as usize;
        done &= done - 1;
        redacted.extend(marks.targets.get(target).cloned());
    }
    (CanonicalJson::from_jcs(text), redacted)
}

/// `text` with the value at each mark replaced by its token, written piece by piece into a new
/// string (splicing the text in place would move its tail once per token and leave bytes to
/// check for UTF-8 again). Sets the bit of each target in `done`.
fn redacted_text(
    text: &str,
    marks: &Marks<'_>,
    key: &RedactionKey,
    done: &mut u64,
) -> Option<String> {
    let mut out = String::with_capacity(text.len() + marks.found.len() * REDACTION_LEN);
    let mut at = 0;
    for ((target, range), i) in marks.found.iter().zip(0..) {
        let value = text.get(range.clone())?;
        out.push_str(text.get(at..range.start)?);
        // Computed with the args digest when it could be.
        let hmac = match marks.hmacs.get(i) {
            Some(hmac) if marks.have_hmacs & (1 << i) != 0 => *hmac,
            _ => key.hmac(value.as_bytes()),
        };
        out.push_str(REDACTION_OPEN);
        out.push_str(Hex::of(&hmac).as_str());
        out.push_str("\"}");
        at = range.end;
        *done |= 1 << target;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// What is recorded of `args` under statements applied one after another, each to the
/// arguments the previous ones left (so a statement can redact a token an earlier one put
/// there): the JCS text of the redacted tree and the paths redacted, each once.
pub(crate) fn recorded_from_tree(
    mut args: Value,
    statements: &[&Redaction],
    key: &RedactionKey,
) -> (CanonicalJson, Vec<Arc<str>>) {
    let mut redacted: Vec<String> = Vec::new();
    for r in statements {
        redact_into(&mut args, &r.paths, key, &mut redacted);
    }
    (
        CanonicalJson::from_value(&args),
        redacted.into_iter().map(Arc::from).collect(),
    )
}

/// Replaces each path's value in `args` with `{"redacted": "hmac-sha256:<64 hex>"}`, the HMAC
/// being over the JCS text of the original value. Returns the paths that were actually
/// redacted, in the order given.
///
/// Paths are dotted object keys (`card.holder`). A path that is absent, or that would pass
/// through an array or a scalar, redacts nothing and is not an error. The whole value at a path
/// is replaced, whatever it is (objects and arrays included).
///
/// Every token is computed from the original arguments: listing both `card` and `card.holder`
/// redacts `card` whole (with the token of its original value, which an auditor can
/// reproduce), and `card.holder` — gone with it — is not reported. A path listed twice is
/// reported once.
pub fn redact(args: &mut Value, paths: &[&str], key: &RedactionKey) -> Vec<String> {
    let mut redacted = Vec::new();
    redact_into(args, paths, key, &mut redacted);
    redacted
}

/// [`redact`], adding each path redacted to `redacted` unless it is there already.
pub(crate) fn redact_into<P: AsRef<str>>(
    args: &mut Value,
    paths: &[P],
    key: &RedactionKey,
    redacted: &mut Vec<String>,
) {
    // (path, token). Paths are compared as text: two paths have equal segment lists exactly
    // when they are equal strings, and one's segments begin with the other's exactly when it
    // starts with the other followed by a `.`.
    // A few paths (the usual case) are kept on the stack.
    let mut small: [(&str, String); 4] = Default::default();
    let mut large: Vec<(&str, String)>;
    let slots: &mut [(&str, String)] = if paths.len() <= small.len() {
        &mut small
    } else {
        large = vec![Default::default(); paths.len()];
        &mut large
    };
    let mut n = 0;
    for path in paths {
        let path = path.as_ref();
        if slots[..n].iter().any(|(p, _)| *p == path) {
            continue;
        }
        if let Some(value) = lookup(args, path) {
            slots[n] = (path, redaction_of(value, key));
            n += 1;
        }
    }
    let found = &mut slots[..n];
    for i in 0..found.len() {
        let path = found[i].0;
        if is_covered(path, found) {
            continue;
        }
        if let Some(slot) = lookup_mut(args, path) {
            let token = std::mem::take(&mut found[i].1);
            let mut replacement = Map::new();
            replacement.insert("redacted".to_owned(), Value::String(token));
            *slot = Value::Object(replacement);
            if !redacted.iter().any(|p| p == path) {
                redacted.push(path.to_owned());
            }
        }
    }
}

/// Whether a shorter path among `found` holds `path` (so it goes with that one).
fn is_covered(path: &str, found: &[(&str, String)]) -> bool {
    found.iter().any(|(other, _)| {
        path.len() > other.len() && path.starts_with(other) && path.as_bytes()[other.len()] == b'.'
    })
}

/// The value at a dotted path of object keys.
fn lookup<'v>(mut v: &'v Value, path: &str) -> Option<&'v Value> {
    for seg in Segments(Some(path)) {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

fn lookup_mut<'v>(mut v: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    for seg in Segments(Some(path)) {
        v = v.as_object_mut()?.get_mut(seg)?;
    }
    Some(v)
}

/// The segments of a dotted path, as `path.split('.')` gives them, without its searcher.
struct Segments<'p>(Option<&'p str>);

impl<'p> Iterator for Segments<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'.') {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use serde_json::json;

    type HmacSha256 = Hmac<sha2::Sha256>;

    fn key(b: u8) -> RedactionKey {
        RedactionKey::from_bytes([b; 32])
    }

    fn token_of(v: &Value) -> &str {
        v["redacted"].as_str().unwrap()
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = RedactionKey::from_bytes([0xAB; 32]);
        let s = format!("{k:?}");
        assert_eq!(s, "RedactionKey(…)");
        assert!(!s.to_lowercase().contains("ab"));
        assert!(!format!("{k:#?}").contains("171"));
    }

    #[test]
    fn token_is_hmac_sha256_of_the_jcs_text() {
        let k = key(7);
        let v = json!({"b": 1, "a": "x"});
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(br#"{"a":"x","b":1}"#);
        let expected = format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(redaction_of(&v, &k), expected);
        let t = redaction_of(&json!("4111 1111 1111 1111"), &k);
        assert!(t.starts_with("hmac-sha256:"));
        let hex = &t["hmac-sha256:".len()..];
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    }

    #[test]
    fn rfc_4231_vectors() {
        // HMAC zero-pads keys, so 20 bytes of key and 12 zeros are the 20-byte key of the RFC.
        let mut bytes = [0u8; 32];
        bytes[..20].copy_from_slice(&[0x0b; 20]);
        let k = RedactionKey::from_bytes(bytes);
        assert_eq!(
            hex::encode(k.hmac(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2: key "Jefe".
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(b"Jefe");
        let k = RedactionKey::from_bytes(bytes);
        assert_eq!(
            hex::encode(k.hmac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        /// Every message length around the one- and two-block paddings, and longer ones.
        #[test]
        fn hmac_matches_the_hmac_crate(
            key_bytes in proptest::prelude::any::<[u8; 32]>(),
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut reference = <HmacSha256 as Mac>::new_from_slice(&key_bytes).unwrap();
            reference.update(&msg);
            let k = RedactionKey::from_bytes(key_bytes);
            proptest::prop_assert_eq!(k.hmac(&msg), <[u8; 32]>::from(reference.finalize().into_bytes()));
        }
    }

    #[test]
    fn same_value_gives_the_same_token_so_equality_can_be_tested() {
        let k = key(1);
        let mut a = json!({"card": {"holder": "Ada Lovelace"}});
        let mut b = json!({"other": 1, "card": {"holder": "Ada Lovelace", "x": 2}});
        redact(&mut a, &["card.holder"], &k);
        redact(&mut b, &["card.holder"], &k);
        assert_eq!(a["card"]["holder"], b["card"]["holder"]);
        // The auditor's check against a known value.
        assert_eq!(
            token_of(&a["card"]["holder"]),
            redaction_of(&json!("Ada Lovelace"), &k)
        );
        assert_ne!(
            token_of(&a["card"]["holder"]),
            redaction_of(&json!("Ada Lovelac"), &k)
        );
        // Equal values in different key order give the same token (JCS).
        assert_eq!(
            redaction_of(&json!({"a": 1, "b": [1.0, 2]}), &k),
            redaction_of(&json!({"b": [1, 2], "a": 1}), &k)
        );
        // Type matters: 1 and "1" differ.
        assert_ne!(redaction_of(&json!(1), &k), redaction_of(&json!("1"), &k));
    }

    #[test]
    fn different_key_gives_a_different_token() {
        let v = json!("secret");
        assert_ne!(redaction_of(&v, &key(1)), redaction_of(&v, &key(2)));
    }

    #[test]
    fn nested_paths_are_redacted_in_place() {
        let k = key(3);
        let mut args = json!({
            "amount": 8000,
            "card": {"number": "4111111111111111", "holder": {"first": "Ada", "last": "L"}},
        });
        let done = redact(&mut args, &["card.number", "card.holder.first"], &k);
        assert_eq!(done, vec!["card.number", "card.holder.first"]);
        assert_eq!(args["amount"], json!(8000));
        assert_eq!(args["card"]["holder"]["last"], json!("L"));
        assert_eq!(
            args["card"]["number"],
            json!({"redacted": redaction_of(&json!("4111111111111111"), &k)})
        );
        assert_eq!(
            args["card"]["holder"]["first"],
            json!({"redacted": redaction_of(&json!("Ada"), &k)})
        );
    }

    #[test]
    fn absent_paths_are_ignored() {
        let k = key(4);
        let mut args = json!({"a": {"b": 1}, "s": "x", "items": [{"c": "y"}]});
        let before = args.clone();
        let done = redact(
            &mut args,
            &[
                "nope",
                "a.nope",
                "a.b.c",
                "s.x",
                "items.c",
                "items.0",
                "items.0.c",
                "",
            ],
            &k,
        );
        assert!(done.is_empty());
        assert_eq!(args, before);
        // Not an object at all.
        let mut scalar = json!("x");
        assert!(redact(&mut scalar, &["x"], &k).is_empty());
        assert_eq!(scalar, json!("x"));
    }

    #[test]
    fn only_present_paths_are_reported_in_order() {
        let k = key(5);
        let mut args = json!({"a": 1, "b": 2, "c": 3});
        let done = redact(&mut args, &["c", "missing", "a"], &k);
        assert_eq!(done, vec!["c", "a"]);
        assert_eq!(args["b"], json!(2));
    }

    #[test]
    fn objects_arrays_and_null_are_replaced_whole() {
        let k = key(6);
        // Secrets spelled with letters outside hex, so a token cannot contain them by chance.
        let original_card = json!({"number": "qrstuvwx", "cvc": "zyx", "tags": ["gx", "gy"]});
        let mut args = json!({"card": original_card, "list": ["pq", {"q": "rs"}], "n": null});
        let done = redact(&mut args, &["card", "list", "n"], &k);
        assert_eq!(done, vec!["card", "list", "n"]);
        assert_eq!(
            args,
            json!({
                "card": {"redacted": redaction_of(&original_card, &k)},
                "list": {"redacted": redaction_of(&json!(["pq", {"q": "rs"}]), &k)},
                "n": {"redacted": redaction_of(&Value::Null, &k)},
            })
        );
        let text = args.to_string();
        for secret in [
            "qrstuvwx", "zyx", "gx", "gy", "pq", "rs", "number", "cvc", "tags",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn overlapping_paths_redact_the_outer_value_from_the_original() {
        let k = key(8);
        let card = json!({"holder": "Ada", "number": "4111"});
        for paths in [["card.holder", "card"], ["card", "card.holder"]] {
            let mut args = json!({"card": card});
            let done = redact(&mut args, &paths, &k);
            assert_eq!(done, vec!["card"]);
            assert_eq!(args, json!({"card": {"redacted": redaction_of(&card, &k)}}));
        }
        // Duplicates are reported once.
        let mut args = json!({"card": card});
        assert_eq!(redact(&mut args, &["card", "card"], &k), vec!["card"]);
        assert_eq!(args, json!({"card": {"redacted": redaction_of(&card, &k)}}));
    }

    mod redacted_text {
        use super::*;
        use crate::car::Marks;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            /// Writing the pieces gives what `replace_range` gives, from the last mark back,
            /// for values longer and shorter than the token alike. A mark off a character
            /// boundary or out of the text, or marks out of order, give nothing.
            #[test]
            fn is_replace_range_at_each_mark(
                text in "[a-z\"{}\u{e9}\u{1f600}]{0,120}",
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 4),
                shuffle in any::<bool>(),
                key_bytes in any::<[u8; 32]>(),
            ) {
                let k = RedactionKey::from_bytes(key_bytes);
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 2)).collect();
                at.sort();
                let mut ranges = vec![at[0]..at[1], at[2]..at[3]];
                if shuffle {
                    ranges.reverse();
                }
                let marks = Marks::with_found(&ranges);
                let got = redacted_text(&text, &marks, &k, &mut 0);
                let in_order = ranges[0].end <= ranges[1].start;
                let on_boundaries = ranges.iter().all(|r| text.get(r.clone()).is_some());
                if in_order && on_boundaries {
                    let mut want = text.clone();
                    for r in ranges.iter().rev() {
                        let mut token = String::new();
                        k.push_token(&text[r.clone()], &mut token);
                        want.replace_range(r.clone(), &format!("{{\"redacted\":\"{token}\"}}"));
                    }
                    prop_assert_eq!(got, Some(want));
                } else {
                    prop_assert_eq!(got, None);
                }
            }
        }
    }

    mod splice {
        use super::*;
        use crate::car::{ActionRequest, Limits, canonicalize_marking};
        use fpl::pattern::ToolPattern;
        use proptest::prelude::*;

        /// Keys that paths can name, and some they cannot (a dot, the empty key, non-ASCII).
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[abc]".prop_map(String::from),
                1 => Just(String::new()),
                1 => Just("a.b".to_string()),
                1 => Just("\u{e9}".to_string()),
                1 => Just("\u{1f600}".to_string()),
                1 => Just("\u{ff61}".to_string()),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
                (-1e6f64..1e6).prop_map(Value::from),
                "[a-z\"\\\n\u{e9}]{0,5}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(segment(), inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn args() -> impl Strategy<Value = Value> {
            prop::collection::btree_map(segment(), value(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        /// Paths of one to three segments over the same keys (so many exist), with repeats.
        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 1..4).prop_map(|segs| segs.join("."))
        }

        fn statements() -> impl Strategy<Value = Vec<Vec<String>>> {
            prop::collection::vec(prop::collection::vec(path(), 0..5), 1..4)
        }

        /// The old way, kept as the oracle: each statement's listed paths redacted in the
        /// tree, one statement after another, then the JCS text of the tree.
        fn oracle(
            args: &Value,
            statements: &[Vec<String>],
            k: &RedactionKey,
        ) -> (String, Vec<String>) {
            let mut tree = args.clone();
            let mut redacted = Vec::new();
            for paths in statements {
                redact_into(&mut tree, paths, k, &mut redacted);
            }
            (
                serde_json_canonicalizer::to_string(&tree).unwrap(),
                redacted,
            )
        }

        /// The engine's way: a plan, marks while writing the canonical text, then a splice.
        fn spliced(
            args: &Value,
            statements: &[Vec<String>],
            k: &RedactionKey,
        ) -> (String, Vec<String>, bool) {
            let compiled: Vec<Redaction> = statements
                .iter()
                .map(|paths| Redaction::new(ToolPattern::parse("**").unwrap(), paths))
                .collect();
            let req = ActionRequest {
                agent: "a".into(),
                tool: "t".into(),
                args: args.clone(),
                ..ActionRequest::default()
            };
            let mut tree = None;
            let (car, marks) = canonicalize_marking(
                (&req).into(),
                &Limits::default(),
                |tool| match plan(&compiled, tool) {
                    Plan::Splice(targets) => targets,
                    Plan::Tree(statements) => {
                        tree = Some(statements);
                        Targets::None
                    }
                },
                Some(k),
            )
            .unwrap();
            // Each marked slice is the JCS text of the value at its path.
            for (target, range) in &marks.found {
                let path = marks.targets.get(*target).unwrap();
                let value = lookup(car.args.as_tree().unwrap(), path).unwrap();
                let jcs = serde_json_canonicalizer::to_string(value).unwrap();
                assert_eq!(&car.canonical_args[range.clone()], jcs, "{path}");
            }
            let spliced = tree.is_none();
            let (text, redacted) = match tree {
                Some(statements) => recorded_from_tree(car.args.to_value(), &statements, k),
                None => recorded(car.canonical_args, &marks, k),
            };
            let redacted = redacted.iter().map(|p| p.to_string()).collect();
            (text.into_string(), redacted, spliced)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3_000))]
            #[test]
            fn splicing_records_what_tree_redaction_recorded(
                args in args(),
                statements in statements(),
                key_bytes in any::<[u8; 32]>(),
            ) {
                let k = RedactionKey::from_bytes(key_bytes);
                let (want, want_paths) = oracle(&args, &statements, &k);
                let (got, got_paths, _) = spliced(&args, &statements, &k);
                prop_assert_eq!(got, want);
                prop_assert_eq!(got_paths, want_paths);
            }
        }

        #[test]
        fn one_statement_or_disjoint_statements_splice_others_use_the_tree() {
            let k = key(9);
            let args = json!({"a": {"b": "x", "c": 1}, "b": [1, {"c": 2}], "c": "y"});
            let cases: [(&[&[&str]], bool); 5] = [
                (&[&["a.b", "c", "a", "a.b", "zz"]], true),
                (&[&["a.b"], &["c"]], true),
                (&[&["a.b"], &["a"]], false),
                (&[&["c"], &["c"]], false),
                (&[&["a"], &["a.redacted"]], false),
            ];
            for (statements, splices) in cases {
                let statements: Vec<Vec<String>> = statements
                    .iter()
                    .map(|s| s.iter().map(|p| p.to_string()).collect())
                    .collect();
                let (got, got_paths, spliced) = spliced(&args, &statements, &k);
                assert_eq!(spliced, splices, "{statements:?}");
                assert_eq!(
                    (got, got_paths),
                    oracle(&args, &statements, &k),
                    "{statements:?}"
                );
            }
            // A later statement redacts the token an earlier one left: kept as it was.
            let statements = vec![vec!["a".to_string()], vec!["a.redacted".to_string()]];
            let (text, paths, _) = spliced(&args, &statements, &k);
            assert_eq!(paths, ["a", "a.redacted"]);
            let token = redaction_of(&json!(redaction_of(&args["a"], &k)), &k);
            assert!(text.contains(&token), "{text}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// How a secret is placed in the args.
        #[derive(Debug, Clone, Copy)]
        enum Shape {
            Leaf,
            InObject,
            InArray,
            Deep,
        }

        fn shape() -> impl Strategy<Value = Shape> {
            prop_oneof![
                Just(Shape::Leaf),
                Just(Shape::InObject),
                Just(Shape::InArray),
                Just(Shape::Deep)
            ]
        }

        proptest! {
            #[test]
            fn redacted_values_appear_nowhere(
                // Fixed-length strings from [g-z]: none is a substring of another distinct one,
                // of a key, of "redacted", or of a token (hex and "hmac-sha256:").
                secrets in prop::collection::hash_set("[g-z]{12}", 1..10),
                layout in prop::collection::vec((shape(), any::<bool>(), any::<bool>()), 10),
                key_bytes in any::<[u8; 32]>(),
            ) {
                let k = RedactionKey::from_bytes(key_bytes);
                let mut args = Map::new();
                let mut paths = Vec::new();
                let mut kept = Vec::new();
                let mut gone = Vec::new();
                for (i, (secret, (shape, redact_it, outer))) in
                    secrets.iter().zip(layout).enumerate()
                {
                    let name = format!("k{i}");
                    let (value, inner) = match shape {
                        Shape::Leaf => (json!(secret), None),
                        Shape::InObject => (json!({"v": secret, "n": i}), Some("v")),
                        Shape::InArray => (json!([i, secret]), None),
                        Shape::Deep => (json!({"a": {"b": {"v": secret}}}), Some("a.b.v")),
                    };
                    args.insert(name.clone(), value);
                    if redact_it {
                        // Redact either the value that holds the secret or its enclosing key.
                        let path = match inner {
                            Some(inner) if !outer => format!("{name}.{inner}"),
                            _ => name,
                        };
                        paths.push(path);
                        gone.push(secret.clone());
                    } else {
                        kept.push(secret.clone());
                    }
                }
                let mut args = Value::Object(args);
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                let done = redact(&mut args, &refs, &k);
                prop_assert_eq!(&done, &paths);
                let text = args.to_string();
                for s in &gone {
                    prop_assert!(!text.contains(s.as_str()), "{} survived in {}", s, text);
                }
                for s in &kept {
                    prop_assert!(text.contains(s.as_str()), "{} lost from {}", s, text);
                }
                // Each redacted slot holds the auditor-reproducible token of a secret-bearing value.
                for p in &paths {
                    let slot = lookup(&args, p).unwrap();
                    let t = token_of(slot);
                    prop_assert!(t.starts_with(TOKEN_PREFIX));
                    prop_assert_eq!(t.len(), TOKEN_PREFIX.len() + 64);
                }
            }
        }
    }
}
