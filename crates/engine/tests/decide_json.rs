//! `Engine::decide_json` decides exactly as `Engine::decide` on the request `parse_request`
//! reads from the same text (and refuses what it refuses, with the same words): twin engines,
//! one fed structs and one fed text, compared field for field over random requests spelled in
//! random ways (escapes, key order, whitespace, unknown fields, duplicate keys, damage) and
//! over the shared corpus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{START, at, unchecked_policy};
use engine::car::{ActionRequest, Limits, parse_request};
use engine::clock::{ManualClock, parse_rfc3339_ms};
use engine::compile::{CompiledPolicy, Verdict};
use engine::decision::{Decision, ReasonCode};
use engine::engine::{Engine, EngineConfig};
use engine::redact::RedactionKey;
use engine::state::MemoryState;
use proptest::prelude::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
agent "bot" {
  default deny
  rules {
    deny!  **/admin/**  reason "never automated"
    permit pay/*  if amount < $100.5 and currency in ["usd", "eur"] and principal.role == "sre"
    defer  pay/*  if amount >= $100.5
    permit http/get  method GET  if len(tags) <= 3
    permit http/fetch
    deny   note/*  if text matches "(?i)secret"
    permit note/*  if not (meta.kind == "x") or meta.level > 2
    permit **/list  if items contains "a"
  }
  cost pay/*: amount
  rate_limit "http/*": 3 per minute
  redact pay/** args: ["card.number", "customer.email"]
  redact pay/refund args: ["card"]
  redact note/** args: ["text", "meta"]
  egress { allow = ["*.example.com"] }
  budget daily {
    max       $1000
    warn_at   0.5
    on_exceed deny
  }
}

agent "open" {
  default permit
}
"#;

fn engine(policy: &Arc<CompiledPolicy>, clock: &Arc<ManualClock>, limits: Limits) -> Engine {
    Engine::new(
        policy.clone(),
        Arc::new(MemoryState::new()),
        clock.clone(),
        EngineConfig {
            stack_dir: std::env::temp_dir(),
            redaction_key: RedactionKey::from_bytes([9; 32]),
            limits,
        },
    )
}

/// A struct engine and a text engine over the same policy and clock.
struct Twins {
    by_struct: Engine,
    by_text: Engine,
    limits: Limits,
}

impl Twins {
    fn new(policy: &Arc<CompiledPolicy>, clock: &Arc<ManualClock>, limits: Limits) -> Self {
        Twins {
            by_struct: engine(policy, clock, limits),
            by_text: engine(policy, clock, limits),
            limits,
        }
    }

    /// Both engines decide `text`; the decisions must be identical.
    fn check(&self, text: &str) -> Result<Decision, TestCaseError> {
        let fast = self.by_text.decide_json(text);
        match parse_request(text, &self.limits) {
            Ok(req) => {
                let reference = self.by_struct.decide(&req);
                prop_assert_eq!(format!("{reference:?}"), format!("{fast:?}"), "{}", text);
            }
            Err(e) => {
                prop_assert_eq!(fast.reason_code, ReasonCode::MalformedRequest, "{}", text);
                prop_assert_eq!(fast.effect, Verdict::Deny);
                prop_assert_eq!(&*fast.reason, e.0.as_str());
                prop_assert_eq!(fast.recorded_args.as_str(), "null");
                prop_assert!(fast.args_digest.is_empty() && fast.trace.is_empty());
                prop_assert!(fast.rule_ref.is_none() && fast.redacted.is_empty());
            }
        }
        Ok(fast)
    }
}

/// A small deterministic generator for the spelling choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn ws(r: &mut Rng, out: &mut String) {
    if r.one_in(3) {
        out.push_str(r.pick(&[" ", "\n  ", "\t", "\r\n", "  "]));
    }
}

fn spell_string(s: &str, r: &mut Rng, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if r.one_in(2) => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            '/' if r.one_in(2) => out.push_str("\\/"),
            c if r.one_in(8) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn spell_number(n: &serde_json::Number, r: &mut Rng, out: &mut String) {
    match n.as_i64() {
        Some(i) if r.one_in(4) => out.push_str(&format!("{i}.0")),
        Some(i) if r.one_in(4) => out.push_str(&format!("{i}e0")),
        Some(0) if r.one_in(3) => out.push_str("-0"),
        _ => match n.as_f64() {
            Some(f) if n.is_f64() && r.one_in(3) => out.push_str(&format!("{f:e}")),
            _ => out.push_str(&n.to_string()),
        },
    }
}

/// `v` as JSON text spelled in one of many ways; now and then with a duplicate key.
fn spell(v: &Value, r: &mut Rng, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => spell_number(n, r, out),
        Value::String(s) => spell_string(s, r, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(r, out);
                spell(item, r, out);
                ws(r, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            for i in (1..members.len()).rev() {
                members.swap(i, (r.next() % (i as u64 + 1)) as usize);
            }
            if !members.is_empty() && r.one_in(40) {
                members.push(members[0]);
            }
            out.push('{');
            for (i, (k, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(r, out);
                spell_string(k, r, out);
                ws(r, out);
                out.push(':');
                ws(r, out);
                spell(item, r, out);
            }
            ws(r, out);
            out.push('}');
        }
    }
}

/// The request as the text a daemon might receive: its fields (absent ones sometimes as
/// `null`), now and then unknown fields, the whole spelled by `spell`, sometimes damaged.
fn text_of(req: &ActionRequest, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let mut v = serde_json::to_value(req).unwrap();
    let map = v.as_object_mut().unwrap();
    map.retain(|_, field| !field.is_null() || r.one_in(2));
    if r.one_in(3) {
        map.insert("principal_token".into(), json!("eyJhbGciOi.x.y"));
        map.insert(
            "extra".into(),
            json!({"nested": [1, {"b": null}], "n": 1.5e3}),
        );
    }
    let mut out = String::new();
    ws(&mut r, &mut out);
    spell(&v, &mut r, &mut out);
    ws(&mut r, &mut out);
    if r.one_in(12) {
        damage(&mut out, &mut r);
    }
    out
}

fn damage(text: &mut String, r: &mut Rng) {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let at = boundaries[(r.next() % boundaries.len() as u64) as usize];
    if r.one_in(2) {
        text.remove(at);
    } else {
        text.insert_str(
            at,
            r.pick(&[",", "]", "}", "\"", "\\", "{", "1", "\\u0000", "nul"]),
        );
    }
}

fn wild_value() -> impl Strategy<Value = Value> {
    let text =
        "[a-c\u{0}-\u{1f}\"\\\\/\u{7f}\u{e9}\u{d7ff}\u{e000}\u{fffd}\u{10000}\u{1f600}]{0,5}";
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        // Exact numbers are decided on; the ones beyond 2^53 (above) are refused by both.
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-1e25f64..1e25).prop_map(Value::from),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(text, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..300).prop_map(Value::from),
        (0.0f64..300.0).prop_map(Value::from),
        Just(json!(100.5)),
        Just(json!("12")),
        Just(Value::Null),
    ]
}

/// Arguments the policy reads (with values of the right and the wrong types), plus wild ones.
fn args() -> impl Strategy<Value = Value> {
    let typed = (
        amount(),
        prop::sample::select(vec!["usd", "eur", "gbp"]),
        "[0-9]{4,16}",
        prop::sample::select(vec!["GET", "get", "POST"]),
        prop::sample::select(vec![
            "https://api.example.com/x",
            "https://evil.io/",
            "/relative",
            "not a url",
        ]),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..5),
        "[a-zA-Z ]{0,12}",
        (prop::sample::select(vec!["x", "y"]), 0i64..5),
        prop::collection::btree_map("[a-z_]{1,5}", wild_value(), 0..3),
    )
        .prop_map(
            |(amount, currency, card, method, url, tags, text, meta, wild)| {
                let mut v = json!({
                    "amount": amount,
                    "currency": currency,
                    "card": {"number": card, "holder": "Ada"},
                    "customer": {"email": "ada@example.com", "tier": "gold"},
                    "method": method,
                    "url": url,
                    "tags": tags,
                    "items": tags,
                    "text": text,
                    "meta": {"kind": meta.0, "level": meta.1},
                });
                let map = v.as_object_mut().unwrap();
                map.extend(wild);
                v
            },
        );
    prop_oneof![
        6 => typed,
        1 => wild_value(),
        1 => Just(Value::Null),
    ]
}

fn optional(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.7, s)
}

fn request() -> impl Strategy<Value = ActionRequest> {
    let agent = prop::sample::select(vec!["bot", "bot", "bot", "open", "ghost", "", "b\u{0}t"]);
    let tool = prop::sample::select(vec![
        "pay/charge",
        "pay/refund",
        "http/get",
        "http/fetch",
        "note/a",
        "x/list",
        "a/admin/b",
        "ｐａｙ/charge",
        "pay/\u{200b}x",
        "",
        "pay charge",
    ]);
    let principal = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        prop::sample::select(vec!["sre", "dev"]).prop_map(|r| Some(json!({"role": r}))),
        wild_value().prop_map(Some),
    ];
    (
        agent,
        optional("s[0-9]|s\u{0}".prop_map(String::from)),
        tool,
        args(),
        principal,
        optional("c-[0-9]{1,3}"),
        optional("sdk|mcp|\u{0}"),
        optional("dt-[a-z]{2}"),
    )
        .prop_map(
            |(agent, session, tool, args, principal, call_id, adapter, defer_token)| {
                ActionRequest {
                    agent: agent.into(),
                    session,
                    tool: tool.into(),
                    args,
                    principal,
                    call_id,
                    adapter,
                    defer_token,
                }
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        1 => Just(Limits {
            max_args_bytes: 300,
            max_depth: 3,
            max_tool_len: 10,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn text_and_struct_decide_alike(
        limits in limits(),
        calls in prop::collection::vec((request(), any::<u64>()), 1..6),
    ) {
        let policy = Arc::new(unchecked_policy(POLICY));
        let clock = Arc::new(ManualClock::new(at(START)));
        let twins = Twins::new(&policy, &clock, limits);
        for (req, seed) in &calls {
            twins.check(&text_of(req, *seed))?;
            clock.advance(5_000);
        }
    }
}

#[test]
fn refusals_read_as_serde_json_words_them() {
    let policy = Arc::new(unchecked_policy(POLICY));
    let clock = Arc::new(ManualClock::new(at(START)));
    let twins = Twins::new(&policy, &clock, Limits::default());
    let big = format!(
        r#"{{"agent":"bot","tool":"t","args":{{"s":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let deep = format!(
        r#"{{"agent":"bot","tool":"t","args":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for text in [
        "",
        "[]",
        "{",
        "{}",
        r#"{"tool":"t"}"#,
        r#"{"agent":5,"tool":"t"}"#,
        r#"{"agent":"bot","tool":"t"} x"#,
        r#"{"agent":"bot","tool":"t","tool":"u"}"#,
        r#"{"agent":"bot","tool":"t","args":{"a":1,"\u0061":2}}"#,
        r#"{"agent":"bot","tool":"t","args":{"s":"\ud800"}}"#,
        r#"{"agent":"bot","tool":"t","args":{"s":"x\u0000"}}"#,
        r#"{"agent":"bot","tool":"t","args":{"n":1e400}}"#,
        r#"{"agent":"bot","tool":"t","args":{"n":01}}"#,
        r#"{"agent":"bot","tool":"t","args":[1]}"#,
        r#"{"agent":"bot","tool":"t","principal":"p"}"#,
        r#"{"agent":"bot","tool":"t","session":7}"#,
        "{\"agent\":\"bot\",\"tool\":\"t\",\"args\":{\"s\":\"a\tb\"}}",
        &big,
        &deep,
    ] {
        twins.check(text).unwrap();
    }
}

/// The corpus's cases, as structs, as compact text and as spelled text.
#[test]
fn corpus_cases_decide_alike() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/policies");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: no shared corpus at {}", dir.display());
        return;
    };
    let mut fixtures: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".fmtest.json"))
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty());
    let mut cases = 0;
    for fixture in &fixtures {
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        let src = std::fs::read_to_string(dir.join(spec["policy"].as_str().unwrap())).unwrap();
        let policy = Arc::new(unchecked_policy(&src));
        let clock = Arc::new(ManualClock::new(at(START)));
        let (plain, spelled) = (
            Twins::new(&policy, &clock, Limits::default()),
            Twins::new(&policy, &clock, Limits::default()),
        );
        let agent = spec["agent"].as_str().unwrap();
        for (i, case) in spec["cases"].as_array().unwrap().iter().enumerate() {
            if let Some(t) = case["at"].as_str() {
                clock.set(parse_rfc3339_ms(t).unwrap());
            }
            let req = ActionRequest {
                agent: agent.into(),
                session: case["session"].as_str().map(String::from),
                tool: case["tool"].as_str().unwrap().into(),
                args: case["args"].clone(),
                principal: case.get("principal").cloned(),
                adapter: Some("test".into()),
                ..ActionRequest::default()
            };
            for _ in 0..case["repeat"].as_u64().unwrap_or(1).max(1) {
                plain.check(&serde_json::to_string(&req).unwrap()).unwrap();
                spelled.check(&text_of(&req, i as u64 * 7919 + 1)).unwrap();
                cases += 1;
            }
        }
    }
    assert!(cases > 50, "{cases} corpus calls");
}
