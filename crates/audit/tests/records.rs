//! The DPR: its body is RFC 8785 text of every field, and its hash covers every field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::record::{Approval, Canonical, Credential, Defer, Dpr, Hash, PolicyChange, Stored};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A record with every field set.
fn full() -> Dpr {
    let mut d = Dpr::decision(
        "dpr_0123456789abcdef0123456789abcdef".into(),
        1_795_251_600_123,
        "sha256:ab".into(),
    );
    d.seq = 42;
    d.chain = "chain-1".into();
    d.dev = true;
    d.agent = Some("support-bot".into());
    d.session = Some("s-1".into());
    d.principal = Some(Canonical::of(&json!({"sub": "alice", "roles": ["ops"]})).unwrap());
    d.tool = Some("stripe/refund".into());
    d.args = Some(
        Canonical::of(&json!({"amount": 80, "card": {"redacted": "hmac-sha256:00"}})).unwrap(),
    );
    d.args_digest = Some("9f".repeat(32));
    d.effect = Some("permit".into());
    d.mode = Some("enforce".into());
    d.reason_code = Some("APPROVED".into());
    d.reason = Some("refunds under $100 are fine \"quoted\"\n".into());
    d.rule_ref = Some("governance.fms:12".into());
    d.adapter = Some("socket".into());
    d.defer = Some(Defer {
        token: "dfr_1".into(),
        status: "consumed".into(),
    });
    d.approval = Some(Approval {
        approver: "operator:ana".into(),
        time_ms: 1_795_251_000_000,
        comment: Some("ok".into()),
    });
    d.credential = Some(Credential {
        provider: "vault".into(),
        scope: "stripe/refund".into(),
        lease_id: "l-1".into(),
        ttl_ms: 30_000,
    });
    d.selectors = Some(Canonical::of(&json!({"tier": "gold"})).unwrap());
    d.events = Some(Canonical::of(&json!([{"event": "budget_warning"}])).unwrap());
    d.trace = Some(Canonical::of(&json!([{"line": 7, "outcome": "matched"}])).unwrap());
    d.latency_us = Some(17);
    d.change = Some(PolicyChange {
        from: Some("v1".into()),
        to: "v2".into(),
        by: "ana".into(),
    });
    d.prev_hash = Hash([3; 32]);
    d
}

/// Every way of changing one value, at any depth, of a JSON document.
fn mutations(v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    fn walk(path: String, v: &Value, root: &Value, out: &mut Vec<(String, Value)>) {
        let replaced = |new: Value| {
            let mut r = root.clone();
            *r.pointer_mut(&path).unwrap() = new;
            r
        };
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    walk(format!("{path}/{k}"), child, root, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(format!("{path}/{i}"), child, root, out);
                }
            }
            Value::String(s) => {
                // Change one character, keep the length and the form (hex stays hex, times stay times).
                let mut c: Vec<char> = s.chars().collect();
                let i = c
                    .iter()
                    .rposition(|c| c.is_ascii_digit())
                    .unwrap_or(c.len().saturating_sub(1));
                if c.is_empty() {
                    out.push((path.clone(), replaced(Value::from("x"))));
                } else {
                    c[i] = match c[i] {
                        '0' => '1',
                        '1' => '2',
                        'a' => 'b',
                        _ if c[i].is_ascii_digit() => '0',
                        _ => 'a',
                    };
                    out.push((
                        path.clone(),
                        replaced(Value::from(c.into_iter().collect::<String>())),
                    ));
                }
            }
            Value::Number(n) => {
                out.push((path.clone(), replaced(json!(n.as_u64().unwrap_or(0) + 1))))
            }
            Value::Bool(b) => out.push((path.clone(), replaced(Value::Bool(!b)))),
            Value::Null => out.push((path.clone(), replaced(json!(0)))),
        }
    }
    walk(String::new(), v, v, &mut out);
    out
}

#[test]
fn the_body_is_the_jcs_text_of_every_field_but_hash() {
    let d = full();
    let body = d.body();
    let as_value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        serde_json_canonicalizer::to_string(&as_value).unwrap(),
        body
    );
    assert_eq!(as_value, serde_json::to_value(&d).unwrap());
    assert!(as_value.get("hash").is_none());
    // Every field of the struct is in the body.
    assert_eq!(as_value.as_object().unwrap().len(), 28, "{body}");
}

#[test]
fn changing_any_field_at_any_depth_changes_the_hash() {
    let d = full();
    let h = d.hash();
    let v = serde_json::to_value(&d).unwrap();
    let muts = mutations(&v);
    assert!(muts.len() > 35, "{}", muts.len());
    let mut unrepresentable = Vec::new();
    for (path, changed) in muts {
        let Ok(changed) = serde_json::from_value::<Dpr>(changed) else {
            unrepresentable.push(path);
            continue;
        };
        assert_ne!(changed, d, "{path}: the mutation changed nothing");
        assert_ne!(changed.hash(), h, "{path}: the hash did not change");
    }
    assert_eq!(
        unrepresentable,
        ["/kind"],
        "only the enum can be mutated out of its type"
    );
    // Removing any optional field, or adding `dev`, changes it too.
    let obj = v.as_object().unwrap();
    for key in obj.keys() {
        let mut less = obj.clone();
        less.remove(key);
        if let Ok(changed) = serde_json::from_value::<Dpr>(Value::Object(less)) {
            assert_ne!(changed.hash(), h, "without {key}");
        }
    }
}

#[test]
fn the_full_record_round_trips_through_its_json_pretty_or_not() {
    let d = full();
    let stored = Stored {
        hash: d.hash(),
        dpr: d.clone(),
    };
    let line = stored.to_json();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        serde_json_canonicalizer::to_string(&v).unwrap(),
        line,
        "the full record is JCS too"
    );
    assert_eq!(v["hash"], json!(d.hash().to_hex()));
    let back = Stored::from_json(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
    assert_eq!(back, stored);
    assert_eq!(back.dpr.hash(), stored.hash);
    // A field the hash does not cover is refused.
    let mut extra = v.clone();
    extra["note"] = json!("injected");
    assert!(Stored::from_json(&extra.to_string()).is_err());
}

#[test]
fn genesis_values_differ_per_chain() {
    assert_ne!(Hash::genesis("a"), Hash::genesis("b"));
    assert_eq!(
        Hash::from_hex(&Hash::genesis("a").to_hex()),
        Some(Hash::genesis("a"))
    );
    assert_eq!(Hash::from_hex(&"A".repeat(64)), None);
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_/.-]{0,12}", any::<String>()]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_record_body_is_jcs_and_round_trips(
        agent in proptest::option::of(arb_text()),
        tool in proptest::option::of(arb_text()),
        reason in proptest::option::of(arb_text()),
        args in proptest::option::of(arb_json()),
        seq in 1u64..1 << 53,
        time_ms in 0i64..253_402_300_799_999,
    ) {
        let mut d = Dpr::decision("dpr_x".into(), time_ms, "v".into());
        d.seq = seq;
        d.chain = "c".into();
        d.agent = agent;
        d.tool = tool;
        d.reason = reason;
        d.args = args.map(|a| Canonical::of(&a).unwrap());
        let body = d.body();
        let v: Value = serde_json::from_str(&body).unwrap();
        prop_assert_eq!(serde_json_canonicalizer::to_string(&v).unwrap(), body.clone());
        let stored = Stored { hash: d.hash(), dpr: d.clone() };
        let back = Stored::from_json(&stored.to_json()).unwrap();
        prop_assert_eq!(back.dpr.body(), body);
        prop_assert_eq!(back, stored);
    }
}
