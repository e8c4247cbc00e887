//! Properties of the decision engine over small random policies and calls (SPEC §3.5–3.6, §3.10,
//! and "the same input always gives the same decision").
//!
//! Policies are random rules over a small tool alphabet (patterns with `*` and `**`, effects
//! including `deny!`) with random conditions over two numeric and two string arguments. A small
//! reference model of the rule semantics (its own pattern matcher, Kleene logic with
//! short-circuit and fail-closed type errors) predicts each decision; the engine must agree with
//! it, and the named properties are also checked on their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fmt::Write as _;

use common::{START, at, from_policy, unchecked_policy};
use engine::compile::Verdict;
use engine::decision::{Decision, ReasonCode as R};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// ---- the generated language ----

const TOOLS: &[&str] = &["a", "a/b", "a/c", "b/c", "b/c/d", "c"];
const PATTERNS: &[&str] = &[
    "a", "a/b", "b/c", "a/*", "*/c", "b/*/d", "a/**", "b/**", "**/c", "**/d", "*", "**", "c",
];
const WORDS: &[&str] = &["x", "y", "z"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Permit,
    Deny,
    Defer,
    Mandatory,
}

impl Effect {
    fn keyword(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Deny => "deny",
            Effect::Defer => "defer",
            Effect::Mandatory => "deny!",
        }
    }

    fn verdict(self) -> Verdict {
        match self {
            Effect::Permit => Verdict::Permit,
            Effect::Deny | Effect::Mandatory => Verdict::Deny,
            Effect::Defer => Verdict::Defer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn apply(self, l: i64, r: i64) -> bool {
        match self {
            Op::Lt => l < r,
            Op::Le => l <= r,
            Op::Gt => l > r,
            Op::Ge => l >= r,
            Op::Eq => l == r,
            Op::Ne => l != r,
        }
    }
}

#[derive(Debug, Clone)]
enum Atom {
    /// `n|m OP k`
    Num(&'static str, Op, i64),
    /// `s|t == "w"` or `!=`
    StrEq(&'static str, bool, &'static str),
    /// `s|t in [...]` or `not in`
    StrIn(&'static str, bool, Vec<&'static str>),
    /// `secret starts_with "zq"`: reads a redacted argument.
    Secret,
}

#[derive(Debug, Clone)]
enum Cond {
    Atom(Atom),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

#[derive(Debug, Clone)]
struct RuleG {
    effect: Effect,
    pattern: &'static str,
    cond: Option<Cond>,
}

#[derive(Debug, Clone)]
struct PolicyG {
    default: Effect,
    rules: Vec<RuleG>,
    /// `rate_limit PATTERN: N per minute` (N >= 1: a first call always passes).
    rate: Option<(&'static str, u64)>,
    /// `cost ** : $C` with `budget daily { max $M }`, C <= M: a first call always fits.
    budget: Option<(u32, u32)>,
}

/// An argument as the call sends it.
#[derive(Debug, Clone)]
enum Field<T> {
    Absent,
    Null,
    Good(T),
    /// A value of the wrong type (a numeric string for numbers, a number for strings).
    Bad,
}

#[derive(Debug, Clone)]
struct CallG {
    tool: &'static str,
    n: Field<i64>,
    m: Field<i64>,
    s: Field<&'static str>,
    t: Field<&'static str>,
    secret: String,
    card: String,
}

/// The first line of the rules (see [`PolicyG::text`]).
const FIRST_RULE_LINE: usize = 4;

fn atom_text(a: &Atom) -> String {
    match a {
        Atom::Num(f, op, k) => format!("{f} {} {k}", op.symbol()),
        Atom::StrEq(f, neg, w) => format!("{f} {} \"{w}\"", if *neg { "!=" } else { "==" }),
        Atom::StrIn(f, neg, ws) => {
            let list: Vec<String> = ws.iter().map(|w| format!("\"{w}\"")).collect();
            format!(
                "{f} {}in [{}]",
                if *neg { "not " } else { "" },
                list.join(", ")
            )
        }
        Atom::Secret => "secret starts_with \"zq\"".into(),
    }
}

fn cond_text(c: &Cond) -> String {
    match c {
        Cond::Atom(a) => atom_text(a),
        Cond::Not(c) => format!("not ({})", cond_text(c)),
        Cond::And(a, b) => format!("({}) and ({})", cond_text(a), cond_text(b)),
        Cond::Or(a, b) => format!("({}) or ({})", cond_text(a), cond_text(b)),
    }
}

impl PolicyG {
    fn text(&self) -> String {
        let mut s = String::new();
        writeln!(s, "agent \"bot\" {{").unwrap();
        writeln!(s, "  default {}", self.default.keyword()).unwrap();
        writeln!(s, "  rules {{").unwrap();
        for r in &self.rules {
            write!(s, "    {} {}", r.effect.keyword(), r.pattern).unwrap();
            if let Some(c) = &r.cond {
                write!(s, " if {}", cond_text(c)).unwrap();
            }
            writeln!(s).unwrap();
        }
        writeln!(s, "  }}").unwrap();
        if let Some((p, n)) = self.rate {
            writeln!(s, "  rate_limit \"{p}\": {n} per minute").unwrap();
        }
        if let Some((cost, max)) = self.budget {
            writeln!(s, "  cost **: ${cost}").unwrap();
            writeln!(s, "  budget daily {{ max ${max} }}").unwrap();
        }
        writeln!(s, "  redact ** args: [\"secret\", \"card.number\"]").unwrap();
        writeln!(s, "}}").unwrap();
        s
    }

    fn has_limits(&self) -> bool {
        self.rate.is_some() || self.budget.is_some()
    }
}

impl CallG {
    fn args(&self) -> Value {
        let mut o = Map::new();
        let mut num = |name: &str, f: &Field<i64>| match f {
            Field::Absent => {}
            Field::Null => {
                o.insert(name.into(), Value::Null);
            }
            Field::Good(v) => {
                o.insert(name.into(), json!(v));
            }
            Field::Bad => {
                o.insert(name.into(), json!("3"));
            }
        };
        num("n", &self.n);
        num("m", &self.m);
        let mut text = |name: &str, f: &Field<&str>| match f {
            Field::Absent => {}
            Field::Null => {
                o.insert(name.into(), Value::Null);
            }
            Field::Good(v) => {
                o.insert(name.into(), json!(v));
            }
            Field::Bad => {
                o.insert(name.into(), json!(1));
            }
        };
        text("s", &self.s);
        text("t", &self.t);
        o.insert("secret".into(), json!(self.secret));
        o.insert(
            "card".into(),
            json!({ "number": self.card, "exp": "12/30" }),
        );
        Value::Object(o)
    }

    fn well_typed(&self) -> bool {
        ![
            matches!(self.n, Field::Bad),
            matches!(self.m, Field::Bad),
            matches!(self.s, Field::Bad),
            matches!(self.t, Field::Bad),
        ]
        .contains(&true)
    }
}

// ---- the reference model ----

/// Does `tool` match `pattern`? (SPEC §3.5: `*` within a segment, `**` across segments, `*`
/// alone matches every tool.) Written independently of the engine's matcher.
fn model_matches(pattern: &str, tool: &str) -> bool {
    fn glob(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], t) || (!t.is_empty() && glob(p, &t[1..])),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &t[1..]),
            _ => false,
        }
    }
    fn segs(p: &[&str], t: &[&str]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(&"**"), _) => segs(&p[1..], t) || (!t.is_empty() && segs(p, &t[1..])),
            (Some(ps), Some(ts)) => glob(ps.as_bytes(), ts.as_bytes()) && segs(&p[1..], &t[1..]),
            _ => false,
        }
    }
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = tool.split('/').collect();
    segs(&p, &t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    T,
    F,
    U,
}

fn not3(v: Tri) -> Tri {
    match v {
        Tri::T => Tri::F,
        Tri::F => Tri::T,
        Tri::U => Tri::U,
    }
}

/// Kleene logic; `Err(())` is a type error. `and` stops at the first false, `or` at the first
/// true; unknown does not stop either.
fn model_eval(c: &Cond, call: &CallG) -> Result<Tri, ()> {
    let b = |x: bool| if x { Tri::T } else { Tri::F };
    Ok(match c {
        Cond::Atom(a) => match a {
            Atom::Num(f, op, k) => match if *f == "n" { &call.n } else { &call.m } {
                Field::Absent | Field::Null => Tri::U,
                Field::Bad => return Err(()),
                Field::Good(v) => b(op.apply(*v, *k)),
            },
            Atom::StrEq(f, neg, w) => match if *f == "s" { &call.s } else { &call.t } {
                Field::Absent | Field::Null => Tri::U,
                Field::Bad => return Err(()),
                Field::Good(v) => b((v == w) != *neg),
            },
            Atom::StrIn(f, neg, ws) => match if *f == "s" { &call.s } else { &call.t } {
                Field::Absent | Field::Null => Tri::U,
                Field::Bad => return Err(()),
                Field::Good(v) => b(ws.contains(v) != *neg),
            },
            Atom::Secret => b(call.secret.starts_with("zq")),
        },
        Cond::Not(c) => not3(model_eval(c, call)?),
        Cond::And(l, r) => match model_eval(l, call)? {
            Tri::F => Tri::F,
            lv => match (lv, model_eval(r, call)?) {
                (_, Tri::F) => Tri::F,
                (Tri::T, Tri::T) => Tri::T,
                _ => Tri::U,
            },
        },
        Cond::Or(l, r) => match model_eval(l, call)? {
            Tri::T => Tri::T,
            lv => match (lv, model_eval(r, call)?) {
                (_, Tri::T) => Tri::T,
                (Tri::F, Tri::F) => Tri::F,
                _ => Tri::U,
            },
        },
    })
}

/// What the model says decides a call: a rule (index) that fires, a rule that errs, or the
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decides {
    Rule(usize),
    Error(usize),
    Default,
}

fn model_decides(p: &PolicyG, call: &CallG) -> Decides {
    let order = p
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.effect == Effect::Mandatory)
        .chain(
            p.rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.effect != Effect::Mandatory),
        );
    for (i, r) in order {
        if !model_matches(r.pattern, call.tool) {
            continue;
        }
        match r.cond.as_ref().map_or(Ok(Tri::T), |c| model_eval(c, call)) {
            Ok(Tri::T) => return Decides::Rule(i),
            Ok(_) => {}
            Err(()) => return Decides::Error(i),
        }
    }
    Decides::Default
}

fn default_code(e: Effect) -> R {
    match e {
        Effect::Permit => R::DefaultPermit,
        Effect::Deny | Effect::Mandatory => R::DefaultDeny,
        Effect::Defer => R::DefaultDefer,
    }
}

fn rule_code(e: Effect) -> R {
    match e {
        Effect::Permit => R::RulePermit,
        Effect::Deny | Effect::Mandatory => R::RuleDeny,
        Effect::Defer => R::RuleDefer,
    }
}

/// The model's (effect, reason code, rule line) for a call without rate limits or budgets in
/// play.
fn model_decision(p: &PolicyG, call: &CallG) -> (Verdict, R, Option<usize>) {
    match model_decides(p, call) {
        Decides::Rule(i) => {
            let e = p.rules[i].effect;
            (e.verdict(), rule_code(e), Some(FIRST_RULE_LINE + i))
        }
        Decides::Error(i) => (Verdict::Deny, R::EvalError, Some(FIRST_RULE_LINE + i)),
        Decides::Default => (p.default.verdict(), default_code(p.default), None),
    }
}

// ---- strategies ----

fn atom() -> impl Strategy<Value = Atom> {
    let op = prop_oneof![
        Just(Op::Lt),
        Just(Op::Le),
        Just(Op::Gt),
        Just(Op::Ge),
        Just(Op::Eq),
        Just(Op::Ne)
    ];
    let word = proptest::sample::select(WORDS);
    prop_oneof![
        4 => (prop_oneof![Just("n"), Just("m")], op, 0i64..5)
            .prop_map(|(f, op, k)| Atom::Num(f, op, k)),
        3 => (prop_oneof![Just("s"), Just("t")], any::<bool>(), word.clone())
            .prop_map(|(f, neg, w)| Atom::StrEq(f, neg, w)),
        2 => (
            prop_oneof![Just("s"), Just("t")],
            any::<bool>(),
            proptest::sample::subsequence(WORDS, 1..=2)
        )
            .prop_map(|(f, neg, ws)| Atom::StrIn(f, neg, ws)),
        1 => Just(Atom::Secret),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    atom()
        .prop_map(Cond::Atom)
        .prop_recursive(3, 10, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            ]
        })
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![
        3 => Just(Effect::Permit),
        2 => Just(Effect::Deny),
        2 => Just(Effect::Defer),
        1 => Just(Effect::Mandatory),
    ]
}

fn rule() -> impl Strategy<Value = RuleG> {
    (
        effect(),
        proptest::sample::select(PATTERNS),
        proptest::option::weighted(0.7, cond()),
    )
        .prop_map(|(effect, pattern, cond)| RuleG {
            effect,
            pattern,
            cond,
        })
}

fn policy_with(limits: bool) -> impl Strategy<Value = PolicyG> {
    let rate = proptest::option::of((proptest::sample::select(PATTERNS), 1u64..4));
    let budget = proptest::option::of((1u32..20, 0u32..40).prop_map(|(c, extra)| (c, c + extra)));
    (
        prop_oneof![
            Just(Effect::Permit),
            Just(Effect::Deny),
            Just(Effect::Defer)
        ],
        proptest::collection::vec(rule(), 0..7),
        rate,
        budget,
    )
        .prop_map(move |(default, rules, rate, budget)| PolicyG {
            default,
            rules,
            rate: if limits { rate } else { None },
            budget: if limits { budget } else { None },
        })
}

fn field<T: Clone + std::fmt::Debug + 'static>(
    good: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Field<T>> {
    prop_oneof![
        2 => Just(Field::Absent),
        1 => Just(Field::Null),
        6 => good.prop_map(Field::Good),
        1 => Just(Field::Bad),
    ]
}

/// A string that cannot occur by chance in a decision: `zq` is not hex, and no policy text,
/// reason or key contains it.
fn secret() -> impl Strategy<Value = String> {
    "zq[a-z0-9]{14}"
}

fn call() -> impl Strategy<Value = CallG> {
    (
        proptest::sample::select(TOOLS),
        field(0i64..5),
        field(0i64..5),
        field(proptest::sample::select(WORDS)),
        field(proptest::sample::select(WORDS)),
        secret(),
        secret(),
    )
        .prop_filter("the two secrets differ", |c| c.5 != c.6)
        .prop_map(|(tool, n, m, s, t, secret, card)| CallG {
            tool,
            n,
            m,
            s,
            t,
            secret,
            card,
        })
}

// ---- running ----

fn engine_for(p: &PolicyG) -> common::Harness {
    from_policy(
        unchecked_policy(&p.text()),
        &std::env::temp_dir(),
        at(START),
    )
}

fn decide(h: &common::Harness, c: &CallG) -> Decision {
    h.decide("bot", c.tool, c.args())
}

fn as_json(d: &Decision) -> Value {
    serde_json::to_value(d).unwrap()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// (a) The same input gives the same decision: in two fresh engines fed the same calls
    /// (rate limits and budgets included), and, without limits, again in one engine.
    #[test]
    fn decisions_are_deterministic(
        p in policy_with(true),
        calls in proptest::collection::vec(call(), 1..6),
    ) {
        let (a, b) = (engine_for(&p), engine_for(&p));
        for (i, c) in calls.iter().enumerate() {
            let (da, db) = (decide(&a, c), decide(&b, c));
            prop_assert_eq!(as_json(&da), as_json(&db), "call {}\n{}", i, p.text());
            a.advance(7_000);
            b.advance(7_000);
        }
        if !p.has_limits() {
            let one = engine_for(&p);
            for c in &calls {
                let first = as_json(&decide(&one, c));
                for _ in 0..2 {
                    prop_assert_eq!(&as_json(&decide(&one, c)), &first, "\n{}", p.text());
                }
            }
        }
    }

    /// The engine agrees with the reference model on effect, reason code and deciding rule,
    /// and (b), (c), (d) hold on their own.
    #[test]
    fn decisions_follow_the_rules(p in policy_with(true), c in call()) {
        let h = engine_for(&p);
        let d = decide(&h, &c);
        let text = p.text();

        // A fresh engine's first call is never refused by a limit (see `PolicyG`).
        let (effect, code, line) = model_decision(&p, &c);
        prop_assert_eq!(
            (d.effect, d.reason_code, d.rule_line),
            (effect, code, line),
            "{}\n{}\n{:#?}", text, c.args(), d.trace
        );

        // (b) No rule's pattern matches the tool: the agent's default decides.
        if !p.rules.iter().any(|r| model_matches(r.pattern, c.tool)) {
            prop_assert_eq!(d.effect, p.default.verdict());
            prop_assert_eq!(d.reason_code, default_code(p.default));
            prop_assert!(d.trace.is_empty(), "no rule was tried: {:?}", d.trace);
        }

        // (c) An unconditional `deny!` matches the tool: deny, whatever else is written.
        if p.rules.iter().any(|r| {
            r.effect == Effect::Mandatory && r.cond.is_none() && model_matches(r.pattern, c.tool)
        }) {
            prop_assert_eq!(d.effect, Verdict::Deny);
            if c.well_typed() {
                prop_assert_eq!(d.reason_code, R::RuleDeny);
            } else {
                // An earlier conditional `deny!` may err first: still a deny.
                prop_assert!(matches!(d.reason_code, R::RuleDeny | R::EvalError));
            }
        }

        // (d) The first rule that fires is a defer: never a permit.
        if let Decides::Rule(i) = model_decides(&p, &c)
            && p.rules[i].effect == Effect::Defer
        {
            prop_assert_ne!(d.effect, Verdict::Permit);
            prop_assert_eq!(d.reason_code, R::RuleDefer);
        }
    }

    /// (d) holds over a sequence of calls too, with limits in play: rate limits and budgets
    /// only ever turn a permit into a refusal.
    #[test]
    fn limits_never_permit_what_the_rules_do_not(
        p in policy_with(true),
        calls in proptest::collection::vec(call(), 1..8),
    ) {
        let h = engine_for(&p);
        for c in &calls {
            let d = decide(&h, c);
            let (effect, code, _) = model_decision(&p, c);
            if effect == Verdict::Permit {
                prop_assert!(
                    d.effect == Verdict::Permit
                        || matches!(d.reason_code, R::RateExceeded | R::BudgetExceeded),
                    "{:?} {:?}", d.effect, d.reason_code
                );
            } else {
                prop_assert_eq!((d.effect, d.reason_code), (effect, code));
            }
            h.advance(3_000);
        }
    }

    /// (e) Redacted values appear nowhere in a decision, whatever it is.
    #[test]
    fn redacted_values_are_never_in_a_decision(
        p in policy_with(true),
        calls in proptest::collection::vec(call(), 1..4),
    ) {
        let h = engine_for(&p);
        for c in &calls {
            let d = decide(&h, c);
            let text = serde_json::to_string(&d).unwrap();
            prop_assert!(!text.contains(&c.secret), "{} leaked: {}", c.secret, text);
            prop_assert!(!text.contains(&c.card), "{} leaked: {}", c.card, text);
            let mut redacted: Vec<&str> = d.redacted.iter().map(|p| &**p).collect();
            redacted.sort();
            prop_assert_eq!(redacted, vec!["card.number", "secret"]);
        }
    }
}

// ---- (f) three-valued logic, through the engine ----

/// A condition over atoms of known truth: `t == 1` is true (t = 1), `f == 1` is false (f = 0),
/// `u == 1` is unknown (u absent).
#[derive(Debug, Clone)]
enum L {
    T,
    F,
    U,
    Not(Box<L>),
    And(Box<L>, Box<L>),
    Or(Box<L>, Box<L>),
}

fn l_text(l: &L) -> String {
    match l {
        L::T => "t == 1".into(),
        L::F => "f == 1".into(),
        L::U => "u == 1".into(),
        L::Not(a) => format!("not ({})", l_text(a)),
        L::And(a, b) => format!("({}) and ({})", l_text(a), l_text(b)),
        L::Or(a, b) => format!("({}) or ({})", l_text(a), l_text(b)),
    }
}

fn kleene(l: &L) -> Tri {
    match l {
        L::T => Tri::T,
        L::F => Tri::F,
        L::U => Tri::U,
        L::Not(a) => not3(kleene(a)),
        L::And(a, b) => match (kleene(a), kleene(b)) {
            (Tri::F, _) | (_, Tri::F) => Tri::F,
            (Tri::T, Tri::T) => Tri::T,
            _ => Tri::U,
        },
        L::Or(a, b) => match (kleene(a), kleene(b)) {
            (Tri::T, _) | (_, Tri::T) => Tri::T,
            (Tri::F, Tri::F) => Tri::F,
            _ => Tri::U,
        },
    }
}

/// The truth of `l` as the engine sees it: `permit yes if L` fires iff true, `permit no if
/// not (L)` fires iff false; neither fires when it is unknown.
fn engine_truth(l: &L) -> Tri {
    let text = l_text(l);
    let src = format!(
        "agent \"bot\" {{\n  default deny\n  rules {{\n    permit yes if {text}\n    permit no if not ({text})\n  }}\n}}\n"
    );
    let h = from_policy(unchecked_policy(&src), &std::env::temp_dir(), at(START));
    let args = json!({"t": 1, "f": 0});
    let yes = h.decide("bot", "yes", args.clone()).effect == Verdict::Permit;
    let no = h.decide("bot", "no", args).effect == Verdict::Permit;
    match (yes, no) {
        (true, false) => Tri::T,
        (false, true) => Tri::F,
        (false, false) => Tri::U,
        (true, true) => panic!("`{text}` is both true and false"),
    }
}

fn l_tree() -> impl Strategy<Value = L> {
    prop_oneof![Just(L::T), Just(L::F), Just(L::U)].prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| L::Not(Box::new(a))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| L::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| L::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn not(a: L) -> L {
    L::Not(Box::new(a))
}
fn and(a: L, b: L) -> L {
    L::And(Box::new(a), Box::new(b))
}
fn or(a: L, b: L) -> L {
    L::Or(Box::new(a), Box::new(b))
}

#[test]
fn three_valued_laws_from_the_spec() {
    use L::{F, T, U};
    let cases = [
        (T, Tri::T),
        (F, Tri::F),
        (U, Tri::U),
        // `not unknown` is unknown: the rule fires neither way.
        (not(U), Tri::U),
        (not(not(U)), Tri::U),
        // `false and unknown` is false, either way round.
        (and(F, U), Tri::F),
        (and(U, F), Tri::F),
        // `true or unknown` is true, either way round.
        (or(T, U), Tri::T),
        (or(U, T), Tri::T),
        // Otherwise unknown stays unknown.
        (and(T, U), Tri::U),
        (or(F, U), Tri::U),
        (and(U, U), Tri::U),
        (or(U, U), Tri::U),
    ];
    for (l, want) in cases {
        assert_eq!(engine_truth(&l), want, "{}", l_text(&l));
    }
}

proptest! {
    #![proptest_config(config(120))]

    /// (f) Any condition over true, false and unknown atoms evaluates as Kleene logic says.
    #[test]
    fn conditions_follow_kleene_logic(l in l_tree()) {
        prop_assert_eq!(engine_truth(&l), kleene(&l), "{}", l_text(&l));
    }

    /// (f) De Morgan and double negation hold for unknown as for true and false.
    #[test]
    fn de_morgan_and_double_negation(a in l_tree(), b in l_tree()) {
        prop_assert_eq!(
            engine_truth(&not(and(a.clone(), b.clone()))),
            engine_truth(&or(not(a.clone()), not(b.clone())))
        );
        prop_assert_eq!(
            engine_truth(&not(or(a.clone(), b.clone()))),
            engine_truth(&and(not(a.clone()), not(b.clone())))
        );
        prop_assert_eq!(engine_truth(&not(not(a.clone()))), engine_truth(&a));
    }
}
