//! SPEC §3.5–3.6 and §5 steps 1–3, seen through decisions: operators, functions, reserved
//! roots, clauses, three-valued logic on missing fields, fail-closed type errors, short-circuit,
//! rule order, defaults, and the requests refused before any rule is read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{expect, expect_rule, harness, line_of, permitted};
use engine::compile::Verdict::{Defer, Deny, Permit};
use engine::decision::{Outcome, ReasonCode as R};
use serde_json::{Value, json};

/// Calls `tool` with `args` and asserts whether the (only) rule for it fired: a permit with
/// `RULE_PERMIT` if so, the default deny otherwise.
#[track_caller]
fn fires(h: &common::Harness, tool: &str, args: Value, want: bool) {
    let d = h.decide("bot", tool, args.clone());
    let (effect, code) = if want {
        (Permit, R::RulePermit)
    } else {
        (Deny, R::DefaultDeny)
    };
    assert!(
        d.effect == effect && d.reason_code == code,
        "{tool} {args}: expected {effect:?} {}, got {:?} {}: {}",
        code.as_str(),
        d.effect,
        d.reason_code.as_str(),
        d.reason
    );
}

const OPERATORS: &str = r#"
agent "bot" {
  default deny
  rules {
    permit op/eq        if n == 5
    permit op/eq_str    if s == "abc"
    permit op/eq_bool   if flag == true
    permit op/ne        if s != "abc"
    permit op/lt        if amount < $500
    permit op/le        if n <= 5
    permit op/gt        if n > 5
    permit op/ge        if n >= 5
    permit op/in        if s in ["a", "b"]
    permit op/in_num    if n in [1, 2, 3]
    permit op/not_in    if s not in ["a", "b"]
    permit op/matches   if s matches "^ab+c$"
    permit op/contains  if s contains "needle"
    permit op/has       if tags contains "red"
    permit op/starts    if s starts_with "pre"
    permit op/ends      if s ends_with "fix"
    permit op/decimal   if price == 19.99
  }
}
"#;

#[test]
fn every_comparison_operator() {
    let h = harness(OPERATORS);
    let cases: &[(&str, Value, bool)] = &[
        ("op/eq", json!({"n": 5}), true),
        ("op/eq", json!({"n": 5.0}), true),
        ("op/eq", json!({"n": 6}), false),
        ("op/eq_str", json!({"s": "abc"}), true),
        ("op/eq_str", json!({"s": "ABC"}), false),
        ("op/eq_bool", json!({"flag": true}), true),
        ("op/eq_bool", json!({"flag": false}), false),
        ("op/ne", json!({"s": "abd"}), true),
        ("op/ne", json!({"s": "abc"}), false),
        ("op/lt", json!({"amount": 499.99}), true),
        ("op/lt", json!({"amount": 500}), false),
        ("op/lt", json!({"amount": -1}), true),
        ("op/le", json!({"n": 5}), true),
        ("op/le", json!({"n": 5.000_001}), false),
        ("op/gt", json!({"n": 6}), true),
        ("op/gt", json!({"n": 5}), false),
        ("op/ge", json!({"n": 5}), true),
        ("op/ge", json!({"n": 4.999}), false),
        ("op/in", json!({"s": "b"}), true),
        ("op/in", json!({"s": "c"}), false),
        ("op/in_num", json!({"n": 2}), true),
        ("op/in_num", json!({"n": 2.5}), false),
        ("op/not_in", json!({"s": "c"}), true),
        ("op/not_in", json!({"s": "a"}), false),
        ("op/matches", json!({"s": "abbbc"}), true),
        ("op/matches", json!({"s": "xabc"}), false),
        (
            "op/contains",
            json!({"s": "haystack with a needle in it"}),
            true,
        ),
        ("op/contains", json!({"s": "haystack"}), false),
        ("op/has", json!({"tags": ["blue", "red"]}), true),
        ("op/has", json!({"tags": ["blue", "reddish"]}), false),
        ("op/has", json!({"tags": []}), false),
        ("op/starts", json!({"s": "prefix"}), true),
        ("op/starts", json!({"s": "suffix-pre"}), false),
        ("op/ends", json!({"s": "prefix"}), true),
        ("op/ends", json!({"s": "fixed"}), false),
        // JSON numbers are read as exact decimals: 19.99 is 19.99, not 19.989999…
        ("op/decimal", json!({"price": 19.99}), true),
        ("op/decimal", json!({"price": 19.990001}), false),
    ];
    for (tool, args, want) in cases {
        fires(&h, tool, args.clone(), *want);
    }
}

#[test]
fn the_deciding_rule_is_named_by_line() {
    let h = harness(OPERATORS);
    let d = h.decide("bot", "op/gt", json!({"n": 9}));
    expect_rule(
        &d,
        Permit,
        R::RulePermit,
        line_of(OPERATORS, "permit op/gt "),
    );
    assert_eq!(d.trace.len(), 1, "only the one candidate rule is tried");
    assert_eq!(d.trace[0].outcome, Outcome::Matched);
}

const FUNCTIONS: &str = r#"
agent "bot" {
  default deny
  rules {
    permit fn/len_str      if len(s) == 3
    permit fn/len_list     if len(items) >= 2
    permit fn/lower        if lower(s) == "hello"
    permit fn/upper        if upper(s) == "HELLO"
    permit fn/domain_email if domain(to) == "acme.com"
    permit fn/domain_url   if domain(url) == "api.acme.com"
    permit fn/host         if host(url) == "example.org"
    permit fn/nested       if upper(domain(to)) ends_with ".COM"
  }
}
"#;

#[test]
fn functions() {
    let h = harness(FUNCTIONS);
    let cases: &[(&str, Value, bool)] = &[
        // len counts characters, not bytes.
        ("fn/len_str", json!({"s": "héé"}), true),
        ("fn/len_str", json!({"s": "abcd"}), false),
        ("fn/len_list", json!({"items": [1, 2]}), true),
        ("fn/len_list", json!({"items": [1]}), false),
        ("fn/lower", json!({"s": "HeLLo"}), true),
        ("fn/lower", json!({"s": "hello!"}), false),
        ("fn/upper", json!({"s": "hello"}), true),
        ("fn/upper", json!({"s": "help"}), false),
        ("fn/domain_email", json!({"to": "bob@acme.com"}), true),
        ("fn/domain_email", json!({"to": "Bob@ACME.com"}), true),
        (
            "fn/domain_email",
            json!({"to": "bob@acme.com.evil.io"}),
            false,
        ),
        // A display name cannot smuggle a second `@`: the domain is after the last one.
        ("fn/domain_email", json!({"to": "acme.com@evil.io"}), false),
        (
            "fn/domain_url",
            json!({"url": "https://api.acme.com/v1/x"}),
            true,
        ),
        (
            "fn/domain_url",
            json!({"url": "https://acme.com/v1/x"}),
            false,
        ),
        (
            "fn/host",
            json!({"url": "https://user@Example.ORG:8443/p?q#f"}),
            true,
        ),
        (
            "fn/host",
            json!({"url": "https://example.org.evil.io/"}),
            false,
        ),
        ("fn/nested", json!({"to": "x@acme.com"}), true),
        ("fn/nested", json!({"to": "x@acme.org"}), false),
    ];
    for (tool, args, want) in cases {
        fires(&h, tool, args.clone(), *want);
    }
}

#[test]
fn count_sees_permitted_calls_in_a_sliding_window() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit report/export if count("report/*", 1h) < 2
    permit report/other
    permit misc/ping
  }
}
"#;
    let h = harness(src);
    let export = || h.decide("bot", "report/export", json!({}));
    // Calls of other tools, even matching ones elsewhere, and of other patterns do not count
    // until they are in the window and match.
    permitted(&h.decide("bot", "misc/ping", json!({})));
    permitted(&export()); // 10:00, count 0
    h.advance(60_000);
    permitted(&export()); // 10:01, count 1
    h.advance(60_000);
    expect(&export(), Deny, R::DefaultDeny); // 10:02, count 2
    // Refused calls are not history: many refusals change nothing.
    for _ in 0..5 {
        expect(&export(), Deny, R::DefaultDeny);
    }
    // 10:59: both permits still in the last hour.
    h.set("2026-03-02T10:59:00Z");
    expect(&export(), Deny, R::DefaultDeny);
    // 11:00:30: the 10:00 call has left the window, the 10:01 one has not.
    h.set("2026-03-02T11:00:30Z");
    permitted(&export());
    // That permit counts again: two in the window (10:01 and 11:00:30).
    expect(&export(), Deny, R::DefaultDeny);
    // `report/other` matches the counted pattern `report/*`.
    h.set("2026-03-02T12:30:00Z");
    permitted(&h.decide("bot", "report/other", json!({})));
    permitted(&h.decide("bot", "report/other", json!({})));
    expect(&export(), Deny, R::DefaultDeny);
}

#[test]
fn count_is_per_agent() {
    let src = r#"
agent "a" {
  default deny
  rules {
    permit x if count("x", 1d) < 1
  }
}
agent "b" {
  default deny
  rules {
    permit x if count("x", 1d) < 1
  }
}
"#;
    let h = harness(src);
    permitted(&h.decide("a", "x", json!({})));
    expect(&h.decide("a", "x", json!({})), Deny, R::DefaultDeny);
    permitted(&h.decide("b", "x", json!({})));
}

#[test]
fn spent_reads_the_budget_window_so_far() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit pay/send if spent(daily) < $50
  }
  cost pay/send: amount
  budget daily { max $1000 }
}
"#;
    let h = harness(src);
    let send = |amount: i64| h.decide("bot", "pay/send", json!({ "amount": amount }));
    permitted(&send(30)); // spent 0
    permitted(&send(19)); // spent 30
    permitted(&send(1)); // spent 49
    expect(&send(1), Deny, R::DefaultDeny); // spent 50
    // A new UTC day starts from nothing.
    h.set("2026-03-03T00:00:00Z");
    permitted(&send(40));
}

const ROOTS: &str = r#"
agent "bot" {
  default deny
  rules {
    permit r/role     if principal.role == "admin" and principal.mfa == true
    permit r/groups   if principal.groups contains "ops"
    permit r/tenant   if customer.tenant == principal.tenant
    permit r/agent    if agent.id == "bot"
    permit r/tools/*  if tool.id == "r/tools/a"
    permit r/sid      if session.id starts_with "s-"
    permit r/calls    if session.calls < 2
    permit r/cost     if session.cost < $20
    permit r/hours    if time.hour >= 9 and time.hour < 17
    permit r/weekend  if time.weekday in ["Sat", "Sun"]
    permit r/date     if time.date == "2026-03-02"
    permit r/args     if args.agent == "not-the-agent-id"
  }
  cost r/cost: $15
}
agent "other" {
  default deny
  rules {
    permit r/agent    if agent.id == "bot"
  }
}
"#;

#[test]
fn principal_fields() {
    let h = harness(ROOTS);
    let admin =
        json!({"id": "u1", "role": "admin", "mfa": true, "groups": ["ops"], "tenant": "t1"});
    permitted(&h.decide_as(admin.clone(), "bot", "r/role", json!({})));
    permitted(&h.decide_as(admin.clone(), "bot", "r/groups", json!({})));
    permitted(&h.decide_as(
        admin.clone(),
        "bot",
        "r/tenant",
        json!({"customer": {"tenant": "t1"}}),
    ));
    let no_mfa = json!({"role": "admin", "mfa": false, "groups": ["dev"], "tenant": "t2"});
    let deny = |p: &Value, tool: &str, args: Value| {
        expect(
            &h.decide_as(p.clone(), "bot", tool, args),
            Deny,
            R::DefaultDeny,
        );
    };
    deny(&no_mfa, "r/role", json!({}));
    deny(&no_mfa, "r/groups", json!({}));
    deny(&no_mfa, "r/tenant", json!({"customer": {"tenant": "t1"}}));
    // An argument cannot stand in for the verified principal.
    deny(
        &json!({}),
        "r/role",
        json!({"role": "admin", "mfa": true, "principal": {"role": "admin", "mfa": true}}),
    );
    // No principal at all: every principal field is missing.
    expect(
        &h.decide("bot", "r/tenant", json!({"customer": {"tenant": "t1"}})),
        Deny,
        R::DefaultDeny,
    );
}

#[test]
fn agent_tool_and_args_roots() {
    let h = harness(ROOTS);
    permitted(&h.decide("bot", "r/agent", json!({})));
    expect(
        &h.decide("other", "r/agent", json!({})),
        Deny,
        R::DefaultDeny,
    );
    permitted(&h.decide("bot", "r/tools/a", json!({})));
    expect(
        &h.decide("bot", "r/tools/b", json!({})),
        Deny,
        R::DefaultDeny,
    );
    // `args.x` is always the argument, even when `x` is a reserved word.
    permitted(&h.decide("bot", "r/args", json!({"agent": "not-the-agent-id"})));
    expect(&h.decide("bot", "r/args", json!({})), Deny, R::DefaultDeny);
}

#[test]
fn session_roots() {
    let h = harness(ROOTS);
    permitted(&h.decide_in("s-1", "bot", "r/sid", json!({})));
    expect(
        &h.decide_in("t-1", "bot", "r/sid", json!({})),
        Deny,
        R::DefaultDeny,
    );
    // No session: `session.id` is missing, so the rule does not fire.
    expect(&h.decide("bot", "r/sid", json!({})), Deny, R::DefaultDeny);

    // session.calls counts the permitted calls of this session only.
    permitted(&h.decide_in("s-a", "bot", "r/calls", json!({})));
    permitted(&h.decide_in("s-a", "bot", "r/calls", json!({})));
    expect(
        &h.decide_in("s-a", "bot", "r/calls", json!({})),
        Deny,
        R::DefaultDeny,
    );
    permitted(&h.decide_in("s-b", "bot", "r/calls", json!({})));

    // session.cost adds the cost of the session's permitted calls ($15 each).
    permitted(&h.decide_in("s-c", "bot", "r/cost", json!({})));
    permitted(&h.decide_in("s-c", "bot", "r/cost", json!({})));
    expect(
        &h.decide_in("s-c", "bot", "r/cost", json!({})),
        Deny,
        R::DefaultDeny,
    );
    permitted(&h.decide_in("s-d", "bot", "r/cost", json!({})));
}

#[test]
fn time_roots_follow_the_clock_in_utc() {
    let h = harness(ROOTS);
    let call = |tool: &str| h.decide("bot", tool, json!({}));
    // START is Monday 2026-03-02 10:00 UTC.
    permitted(&call("r/hours"));
    permitted(&call("r/date"));
    expect(&call("r/weekend"), Deny, R::DefaultDeny);
    h.set("2026-03-02T08:59:59.999Z");
    expect(&call("r/hours"), Deny, R::DefaultDeny);
    h.set("2026-03-02T16:59:59Z");
    permitted(&call("r/hours"));
    h.set("2026-03-02T17:00:00Z");
    expect(&call("r/hours"), Deny, R::DefaultDeny);
    h.set("2026-03-02T23:59:59.999Z");
    permitted(&call("r/date"));
    h.set("2026-03-03T00:00:00Z");
    expect(&call("r/date"), Deny, R::DefaultDeny);
    // Saturday and Sunday, in UTC (an offset in the instant does not change the day).
    h.set("2026-03-07T00:00:00Z");
    permitted(&call("r/weekend"));
    h.set("2026-03-08T23:30:00Z");
    permitted(&call("r/weekend"));
    h.set("2026-03-09T01:00:00+02:00"); // Sunday 23:00 UTC
    permitted(&call("r/weekend"));
    h.set("2026-03-09T00:00:00Z");
    expect(&call("r/weekend"), Deny, R::DefaultDeny);
}

const CLAUSES: &str = r#"
agent "bot" {
  default deny
  rules {
    deny   http/request method DELETE
    permit http/request method GET host "*.example.com" path "/api/*"
    permit http/request method post host "upload.example.com"
  }
}
"#;

#[test]
fn method_host_and_path_clauses() {
    let h = harness(CLAUSES);
    let get = line_of(CLAUSES, "method GET");
    let post = line_of(CLAUSES, "method post");
    let call = |args: Value| h.decide("bot", "http/request", args);

    let d = call(json!({"method": "GET", "host": "api.example.com", "path": "/api/v1/users"}));
    expect_rule(&d, Permit, R::RulePermit, get);
    // The method is compared ignoring case, both ways round.
    let d = call(json!({"method": "get", "host": "api.example.com", "path": "/api/x"}));
    expect_rule(&d, Permit, R::RulePermit, get);
    let d = call(json!({"method": "POST", "host": "upload.example.com"}));
    expect_rule(&d, Permit, R::RulePermit, post);
    // The host comes from `url` when there is no `host`, and is compared ignoring case.
    let d =
        call(json!({"method": "GET", "url": "https://API.Example.com/api/x", "path": "/api/x"}));
    expect_rule(&d, Permit, R::RulePermit, get);

    let refused = [
        // Another method.
        json!({"method": "PUT", "host": "api.example.com", "path": "/api/x"}),
        // `*.example.com` is subdomains only.
        json!({"method": "GET", "host": "example.com", "path": "/api/x"}),
        json!({"method": "GET", "host": "api.example.com.evil.io", "path": "/api/x"}),
        // Path outside the glob.
        json!({"method": "GET", "host": "api.example.com", "path": "/admin"}),
        // A missing field never satisfies a clause.
        json!({"host": "api.example.com", "path": "/api/x"}),
        json!({"method": "GET", "path": "/api/x"}),
        json!({"method": "GET", "host": "api.example.com"}),
        // A field of the wrong type is not the field.
        json!({"method": ["GET"], "host": "api.example.com", "path": "/api/x"}),
    ];
    for args in refused {
        let d = call(args.clone());
        expect(&d, Deny, R::DefaultDeny);
        assert!(
            d.trace
                .iter()
                .all(|s| matches!(s.outcome, Outcome::ClauseNotMet(_))),
            "{args}: {:#?}",
            d.trace
        );
    }
    // A deny clause holds only when its field is there.
    let d = call(json!({"method": "delete"}));
    expect_rule(&d, Deny, R::RuleDeny, line_of(CLAUSES, "method DELETE"));
}

const MISSING: &str = r#"
agent "bot" {
  default deny
  rules {
    permit stripe/refund if amount < $500
    defer  stripe/refund if not (amount < $500)
  }
}
agent "lenient" {
  default permit
  rules {
    deny stripe/refund if not (amount < $500)
    deny stripe/refund if amount >= $500
    deny crm/read if customer.tenant != principal.tenant
  }
}
"#;

#[test]
fn missing_fields_and_null_never_fire_a_rule() {
    let h = harness(MISSING);
    permitted(&h.decide("bot", "stripe/refund", json!({"amount": 100})));
    expect(
        &h.decide("bot", "stripe/refund", json!({"amount": 8000})),
        Defer,
        R::RuleDefer,
    );
    for args in [
        json!({}),
        json!({"amount": null}),
        json!({"amount_cents": 100}),
    ] {
        let d = h.decide("bot", "stripe/refund", args.clone());
        expect(&d, Deny, R::DefaultDeny);
        assert!(
            d.trace
                .iter()
                .all(|s| s.outcome == Outcome::ConditionUnknown),
            "{args}: {:#?}",
            d.trace
        );
        // Under a permissive default, a deny written with `not` does not fire on unknown
        // either: the default decides.
        let d = h.decide("lenient", "stripe/refund", args.clone());
        expect(&d, Permit, R::DefaultPermit);
    }
    // Missing on either side of a comparison between two fields.
    expect(
        &h.decide("lenient", "crm/read", json!({"customer": {"tenant": "t1"}})),
        Permit,
        R::DefaultPermit,
    );
    expect(
        &h.decide_as(
            json!({"tenant": "t2"}),
            "lenient",
            "crm/read",
            json!({"customer": {"tenant": "t1"}}),
        ),
        Deny,
        R::RuleDeny,
    );
}

#[test]
fn null_inside_an_argument_list_is_never_equal_to_anything() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    permit t/has if items contains "x"
  }
}
"#;
    let h = harness(src);
    permitted(&h.decide("bot", "t/has", json!({"items": [null, "x"]})));
    expect(
        &h.decide("bot", "t/has", json!({"items": [null]})),
        Deny,
        R::DefaultDeny,
    );
}

const TYPES: &str = r#"
agent "bot" {
  default permit
  rules {
    deny t/lt       if amount < $500
    deny t/eq       if flag == true
    deny t/matches  if name matches "^adm"
    deny t/len      if len(count) > 3
    deny t/in       if role in allowed
    deny t/inlist   if amount in [1, "a"]
    deny t/starts   if name starts_with "x"
    deny t/fields   if amount > limit
    deny t/princ    if principal.mfa == true
    deny t/cond     if flag
    deny t/lower    if lower(name) == "x"
    permit t/later  if amount < $500
  }
}
"#;

#[test]
fn type_errors_deny_with_eval_error_naming_the_field() {
    let h = harness(TYPES);
    let cases: &[(&str, Value, &str)] = &[
        // Numeric strings are not coerced.
        ("t/lt", json!({"amount": "100"}), "amount"),
        ("t/eq", json!({"flag": "true"}), "flag"),
        ("t/matches", json!({"name": 42}), "name"),
        ("t/len", json!({"count": 12345}), "count"),
        ("t/in", json!({"role": "a", "allowed": "a,b"}), "allowed"),
        ("t/in", json!({"role": 1, "allowed": ["1"]}), "role"),
        ("t/starts", json!({"name": ["x"]}), "name"),
        ("t/fields", json!({"amount": 5, "limit": "10"}), "limit"),
        ("t/cond", json!({"flag": "yes"}), "flag"),
        ("t/lower", json!({"name": 7}), "name"),
        ("t/inlist", json!({"amount": 2}), "amount"),
    ];
    for (tool, args, field) in cases {
        let d = h.decide("bot", tool, args.clone());
        let line = line_of(TYPES, &format!("deny {tool} "));
        expect_rule(&d, Deny, R::EvalError, line);
        assert!(
            d.reason.contains(&format!("`{field}`")),
            "{tool} {args}: reason must name `{field}`: {}",
            d.reason
        );
        assert!(
            d.reason.contains(&format!("line {line}")),
            "{tool}: reason must name the rule: {}",
            d.reason
        );
        assert!(
            matches!(d.trace.last().map(|s| &s.outcome), Some(Outcome::Error(_))),
            "{:#?}",
            d.trace
        );
    }
    // Literals are named as FPL spells them, not as the engine holds them.
    let d = h.decide("bot", "t/lt", json!({"amount": "5"}));
    assert!(
        d.reason
            .contains("`amount` is a string and `500` is a number"),
        "{}",
        d.reason
    );
    let d = h.decide("bot", "t/eq", json!({"flag": 1}));
    assert!(d.reason.contains("and `true` is a boolean"), "{}", d.reason);
    // An element of a literal list is named too; elements before it were compared.
    let d = h.decide("bot", "t/inlist", json!({"amount": 2}));
    assert!(
        d.reason
            .contains("`amount` is a number and `\"a\"` in the list is a string"),
        "{}",
        d.reason
    );
    expect(
        &h.decide("bot", "t/inlist", json!({"amount": 1})),
        Deny,
        R::RuleDeny,
    );
    // A principal field is named as such.
    let d = h.decide_as(json!({"mfa": "yes"}), "bot", "t/princ", json!({}));
    expect(&d, Deny, R::EvalError);
    assert!(d.reason.contains("`principal.mfa`"), "{}", d.reason);
    // Well-typed values behave normally, under the same permissive default.
    expect(
        &h.decide("bot", "t/lt", json!({"amount": 100})),
        Deny,
        R::RuleDeny,
    );
    expect(
        &h.decide("bot", "t/lt", json!({"amount": 900})),
        Permit,
        R::DefaultPermit,
    );
}

#[test]
fn an_error_ends_the_decision_even_when_a_later_rule_would_permit() {
    let src = r#"
agent "bot" {
  default permit
  rules {
    deny   pay if amount > limit
    permit pay
  }
}
"#;
    let h = harness(src);
    let d = h.decide("bot", "pay", json!({"amount": 5, "limit": "ten"}));
    expect_rule(&d, Deny, R::EvalError, line_of(src, "deny   pay"));
    assert_eq!(d.trace.len(), 1, "nothing after the error is tried");
}

const SHORT_CIRCUIT: &str = r#"
agent "bot" {
  default deny
  rules {
    permit t/and if enabled == true and amount < limit
    permit t/or  if vip == true or amount < limit
    permit t/not if not (enabled == false or amount < limit)
    permit t/later
    permit t/clause method GET if amount < limit
  }
}
"#;

#[test]
fn a_skipped_operand_cannot_err() {
    let h = harness(SHORT_CIRCUIT);
    let bad = json!({"amount": 5, "limit": "x"});
    let with = |extra: Value| {
        let mut a = bad.clone();
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    // `false and <error>` is false: the right side is never read.
    expect(
        &h.decide("bot", "t/and", with(json!({"enabled": false}))),
        Deny,
        R::DefaultDeny,
    );
    // `true or <error>` is true.
    expect(
        &h.decide("bot", "t/or", with(json!({"vip": true}))),
        Permit,
        R::RulePermit,
    );
    // Inside `not`, the same: `not (true or <error>)` is false.
    expect(
        &h.decide("bot", "t/not", with(json!({"enabled": false}))),
        Deny,
        R::DefaultDeny,
    );
    // When the left side does not decide, the right side is read and errs.
    expect(
        &h.decide("bot", "t/and", with(json!({"enabled": true}))),
        Deny,
        R::EvalError,
    );
    expect(
        &h.decide("bot", "t/or", with(json!({"vip": false}))),
        Deny,
        R::EvalError,
    );
    // Unknown does not stop evaluation: `unknown and <error>` errs.
    expect(&h.decide("bot", "t/and", bad.clone()), Deny, R::EvalError);
    expect(&h.decide("bot", "t/or", bad.clone()), Deny, R::EvalError);
    // A rule whose pattern does not match the tool is never evaluated.
    permitted(&h.decide("bot", "t/later", bad.clone()));
    // Clauses come before the condition: a failed clause skips the condition.
    expect(
        &h.decide("bot", "t/clause", with(json!({"method": "POST"}))),
        Deny,
        R::DefaultDeny,
    );
    expect(
        &h.decide("bot", "t/clause", with(json!({"method": "GET"}))),
        Deny,
        R::EvalError,
    );
}

const MANDATORY: &str = r#"
agent "bot" {
  default permit
  rules {
    defer  fs/write if size > 1000
    permit fs/**
    deny!  fs/write if file starts_with "/etc/"
    deny!  fs/secret
  }
}
"#;

#[test]
fn mandatory_deny_is_tried_first_wherever_written() {
    let h = harness(MANDATORY);
    let secret = line_of(MANDATORY, "deny!  fs/secret");
    let etc = line_of(MANDATORY, "deny!  fs/write");
    let d = h.decide("bot", "fs/secret", json!({}));
    expect_rule(&d, Deny, R::RuleDeny, secret);
    let d = h.decide(
        "bot",
        "fs/write",
        json!({"file": "/etc/passwd", "size": 5000}),
    );
    expect_rule(&d, Deny, R::RuleDeny, etc);
    // The mandatory deny is tried before the earlier defer and permit: it is the only step.
    assert_eq!(d.trace.len(), 1, "{:#?}", d.trace);
    assert_eq!(d.trace[0].line, etc);
    let d = h.decide("bot", "fs/write", json!({"file": "/tmp/x", "size": 5000}));
    expect_rule(
        &d,
        Defer,
        R::RuleDefer,
        line_of(MANDATORY, "defer  fs/write"),
    );
    // Where the mandatory deny does not fire, first match wins as usual.
    let d = h.decide("bot", "fs/write", json!({"file": "/tmp/x", "size": 5}));
    expect_rule(
        &d,
        Permit,
        R::RulePermit,
        line_of(MANDATORY, "permit fs/**"),
    );
    let outcomes: Vec<_> = d
        .trace
        .iter()
        .map(|s| (s.line, s.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (etc, Outcome::ConditionFalse),
            (
                line_of(MANDATORY, "defer  fs/write"),
                Outcome::ConditionFalse
            ),
            (line_of(MANDATORY, "permit fs/**"), Outcome::Matched),
        ]
    );
    let d = h.decide("bot", "fs/read", json!({}));
    expect_rule(
        &d,
        Permit,
        R::RulePermit,
        line_of(MANDATORY, "permit fs/**"),
    );
}

#[test]
fn first_match_wins_in_written_order_across_pattern_kinds() {
    // One rule per kind of pattern the engine indexes: a leading wildcard, a literal first
    // segment with a wildcard, and an exact tool.
    let src = r#"
agent "bot" {
  default deny
  rules {
    defer  **/refund if amount > 100
    deny   stripe/* if amount > 50
    permit stripe/refund if amount < 50
    deny   stripe/refund if amount < 10
  }
}
"#;
    let h = harness(src);
    let refund = |amount: i64| h.decide("bot", "stripe/refund", json!({ "amount": amount }));
    expect_rule(&refund(200), Defer, R::RuleDefer, line_of(src, "**/refund"));
    expect_rule(&refund(70), Deny, R::RuleDeny, line_of(src, "stripe/* "));
    // The later deny would match, but the earlier permit already decided.
    expect_rule(
        &refund(5),
        Permit,
        R::RulePermit,
        line_of(src, "permit stripe/refund"),
    );
    // Nothing fires for 50: the default decides.
    expect(&refund(50), Deny, R::DefaultDeny);
    expect_rule(
        &h.decide("bot", "paypal/refund", json!({"amount": 101})),
        Defer,
        R::RuleDefer,
        line_of(src, "**/refund"),
    );
    expect(
        &h.decide("bot", "paypal/refund", json!({"amount": 5})),
        Deny,
        R::DefaultDeny,
    );
}

#[test]
fn a_rule_reason_is_the_decision_reason() {
    let src = r#"
agent "bot" {
  default deny
  rules {
    deny   stripe/payouts reason "payouts are done by finance"
    permit stripe/refund if amount < $500
  }
}
"#;
    let h = harness(src);
    let d = h.decide("bot", "stripe/payouts", json!({}));
    expect(&d, Deny, R::RuleDeny);
    assert_eq!(&*d.reason, "payouts are done by finance");
    // Without a reason, the rule itself explains the decision.
    let d = h.decide("bot", "stripe/refund", json!({"amount": 1}));
    permitted(&d);
    assert!(d.reason.contains("stripe/refund"), "{}", d.reason);
    assert!(d.reason.contains("amount < $500"), "{}", d.reason);
}

#[test]
fn defaults() {
    let src = r#"
agent "open" {
  default permit
  rules {
    deny x
  }
}
agent "closed" {
  default deny
  rules {
    permit x
  }
}
agent "careful" {
  default defer
  rules {
    permit x
  }
}
agent "silent" {
  rules {
    permit x
  }
}
"#;
    let h = harness(src);
    let y = |agent: &str| h.decide(agent, "y", json!({}));
    let d = y("open");
    expect(&d, Permit, R::DefaultPermit);
    assert_eq!(d.rule_line, None);
    assert_eq!(d.rule_ref, None);
    expect(&y("closed"), Deny, R::DefaultDeny);
    expect(&y("careful"), Defer, R::DefaultDefer);
    // No default written: deny.
    expect(&y("silent"), Deny, R::DefaultDeny);
    expect(&h.decide("open", "x", json!({})), Deny, R::RuleDeny);
}

#[test]
fn flat_rules_are_the_default_agent() {
    let src = "default permit\ndeny stripe/payouts\n";
    let h = harness(src);
    expect_rule(
        &h.decide("default", "stripe/payouts", json!({})),
        Deny,
        R::RuleDeny,
        2,
    );
    expect(
        &h.decide("default", "stripe/refund", json!({})),
        Permit,
        R::DefaultPermit,
    );
}

#[test]
fn tool_ids_are_compared_after_nfkc() {
    let src = r#"
agent "bot" {
  default permit
  rules {
    deny stripe/payouts
  }
}
"#;
    let h = harness(src);
    // Fullwidth letters normalise to ASCII under NFKC.
    expect(
        &h.decide("bot", "ｓｔｒｉｐｅ/payouts", json!({})),
        Deny,
        R::RuleDeny,
    );
}

#[test]
fn unknown_agent() {
    let h = harness(MISSING);
    let d = h.decide("nobody", "stripe/refund", json!({"amount": 1}));
    expect(&d, Deny, R::UnknownAgent);
    assert!(d.reason.contains("nobody"), "{}", d.reason);
    assert!(d.trace.is_empty());
    // Agent ids are exact.
    expect(
        &h.decide("Bot", "stripe/refund", json!({"amount": 1})),
        Deny,
        R::UnknownAgent,
    );
}

#[test]
fn malformed_requests_are_refused_before_any_rule() {
    let src = r#"
agent "bot" {
  default permit
  rules {
    permit *
  }
}
"#;
    let h = harness(src);
    permitted(&h.decide("bot", "anything", json!({"a": "b"})));
    let cases = [
        ("tool", json!({"note": "a\u{0}b"})),
        ("tool", json!({"a\u{0}": 1})),
        ("tool", json!({"nested": {"list": ["ok", "x\u{0}"]}})),
        ("to\u{0}ol", json!({})),
        ("tool", json!([1, 2])),
        ("tool", json!("text")),
        ("", json!({})),
        ("bad tool", json!({})),
    ];
    for (tool, args) in cases {
        let d = h.decide("bot", tool, args.clone());
        expect(&d, Deny, R::MalformedRequest);
        assert!(d.trace.is_empty(), "{tool:?} {args}: no rule was tried");
        assert!(d.rule_line.is_none());
    }
    let d = h.decide("bot", "tool", json!({"note": "a\u{0}b"}));
    assert!(d.reason.contains("NUL"), "{}", d.reason);
    // A NUL in the principal or the session is refused too.
    expect(
        &h.decide_as(json!({"id": "u\u{0}"}), "bot", "tool", json!({})),
        Deny,
        R::MalformedRequest,
    );
    expect(
        &h.decide_in("s\u{0}", "bot", "tool", json!({})),
        Deny,
        R::MalformedRequest,
    );
}

#[test]
fn kill_switch() {
    let src = r#"
agent "a" {
  default permit
}
agent "b" {
  default permit
}
"#;
    let h = harness(src);
    permitted(&h.decide("a", "x", json!({})));
    h.engine.state().set_killed(Some("a"), true);
    let d = h.decide("a", "x", json!({}));
    expect(&d, Deny, R::KillSwitch);
    assert!(d.reason.contains('a'), "{}", d.reason);
    assert!(d.trace.is_empty());
    permitted(&h.decide("b", "x", json!({})));
    // The global switch stops everyone, even an agent the policy does not know and a
    // malformed request: it is step 1.
    h.engine.state().set_killed(None, true);
    expect(&h.decide("b", "x", json!({})), Deny, R::KillSwitch);
    expect(&h.decide("nobody", "x", json!({})), Deny, R::KillSwitch);
    expect(
        &h.decide("b", "x", json!({"n": "\u{0}"})),
        Deny,
        R::KillSwitch,
    );
    h.engine.state().set_killed(None, false);
    permitted(&h.decide("b", "x", json!({})));
    expect(&h.decide("a", "x", json!({})), Deny, R::KillSwitch);
    h.engine.state().set_killed(Some("a"), false);
    permitted(&h.decide("a", "x", json!({})));
}
