//! Redaction of argument values (SPEC §3.10).
//!
//! `redact PATTERN args: [paths]` replaces those values, before anything is written anywhere,
//! with `{"redacted": "hmac-sha256:<hex>"}`: an HMAC-SHA256, under a per-stack secret key, of
//! the RFC 8785 (JCS) text of the original value. Nobody can read the value back, but an
//! auditor holding the key can test it for equality against a known value with
//! [`redaction_of`].

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::car::{JcsSink, push_hex, write_jcs};

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every redaction token.
pub const TOKEN_PREFIX: &str = "hmac-sha256:";

/// A per-stack secret key for HMAC-SHA256.
#[derive(Clone)]
pub struct RedactionKey {
    /// The HMAC keyed once: its inner and outer hash states after the padded key blocks, so a
    /// token costs the hashing of the value only.
    keyed: HmacSha256,
}

impl RedactionKey {
    /// The key with these bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        // HMAC zero-pads a key shorter than the hash's block size (RFC 2104 §2), so this
        // 64-byte block is the same key as the 32 bytes, and needs no fallible length check.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&b);
        RedactionKey {
            keyed: <HmacSha256 as KeyInit>::new(&block.into()),
        }
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
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
    // The JCS text goes straight into the MAC.
    let mut mac = key.mac();
    if write_jcs(value, &mut MacSink(&mut mac), usize::MAX).is_err() {
        // A `Value` always has a JCS form (its numbers are finite); never taken.
        mac = key.mac();
        mac.update(value.to_string().as_bytes());
    }
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    push_hex(&mut token, &mac.finalize().into_bytes());
    token
}

/// Feeds JCS text to a MAC.
struct MacSink<'m>(&'m mut HmacSha256);

impl JcsSink for MacSink<'_> {
    fn put(&mut self, s: &str) {
        self.0.update(s.as_bytes());
    }

    fn written(&self) -> usize {
        0
    }
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
    use serde_json::json;

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
    fn rfc_4231_vector_with_a_32_byte_key() {
        // The zero-padded 64-byte key used by `RedactionKey::mac` is the same HMAC key as the
        // 32 bytes: check against the library's slice constructor, and check the padding
        // against RFC 4231 test case 1 (a 20-byte key of 0x0b, message "Hi There").
        let k = RedactionKey::from_bytes([0x0b; 32]);
        let mut a = k.mac();
        a.update(b"Hi There");
        let mut b = <HmacSha256 as Mac>::new_from_slice(&[0x0b; 32]).unwrap();
        b.update(b"Hi There");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
        // RFC 4231 test case 1 through the same padding: a 20-byte key padded to 64.
        let mut block = [0u8; 64];
        block[..20].copy_from_slice(&[0x0b; 20]);
        let mut c = <HmacSha256 as KeyInit>::new(&block.into());
        c.update(b"Hi There");
        assert_eq!(
            hex::encode(c.finalize().into_bytes()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
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
