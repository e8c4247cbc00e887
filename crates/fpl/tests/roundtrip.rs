//! Property tests: the policy AST survives FPL, JSON and YAML round trips, the formatter is
//! idempotent, and the parser never panics on arbitrary input.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use base64::Engine;
use fpl::ast::*;
use fpl::format::format_policy;
use fpl::load::{Format, parse_text};
use fpl::span::{Meta, Span};
use proptest::prelude::*;
use rust_decimal::Decimal;

const CASES: u32 = 256;

// ---- building blocks ----

fn sp<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Span::default())
}

fn e(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

/// Strings that read as something else when unquoted, in FPL, YAML or JSON.
#[rustfmt::skip]
const LOOKS_LIKE: &[&str] = &[
    "", " ", "$500", "$2000.50", "30s", "500ms", "10mb", "1w", "true", "false", "null", "nil",
    "~", "yes", "no", "on", "123", "-3", "0.8", "1e3", ".5", "0x1f", "a: b", "- x", "{}", "[]",
    "#x", "&a", "*a", "!x", "%x", "@x", "`x", "ed25519:abc", "env", "deny!", "a/b", "**", "*",
];

/// Arbitrary text (never NUL: policy files cannot hold it), biased towards the characters that
/// need escaping or quoting in FPL, JSON and YAML, and towards strings that look like literals.
fn text() -> BoxedStrategy<String> {
    let tricky = prop::sample::select(vec![
        '"', '\'', '\\', '\n', '\t', '\r', '$', '#', '{', '}', '[', ']', ':', ',', ' ', '-', '*',
        '&', '!', '|', '>', '%', '@', '`', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{feff}',
        '\u{301}', 'é', 'ß', '😀',
    ]);
    let ch = prop_oneof![
        4 => any::<char>(),
        4 => prop::char::range('a', 'z'),
        3 => tricky,
    ];
    let looks_like = prop::sample::select(LOOKS_LIKE);
    prop_oneof![
        8 => prop::collection::vec(ch, 0..12)
            .prop_map(|cs| cs.into_iter().filter(|c| *c != '\0').collect::<String>()),
        2 => looks_like.prop_map(str::to_string),
    ]
    .boxed()
}

fn ident() -> BoxedStrategy<String> {
    "[a-z_][a-z0-9_]{0,6}".boxed()
}

/// Words that lex as literals or operators, so cannot start a path.
const NOT_A_NAME: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "matches",
    "contains",
    "starts_with",
    "ends_with",
    "true",
    "false",
    "null",
    "nil",
];

/// A dotted path. Clause words (`host`, `path`, `reason`, …) are allowed: SPEC §3.5 says they
/// are ordinary names in operand position.
fn path() -> BoxedStrategy<Vec<String>> {
    (
        prop_oneof![4 => ident(), 1 => "[a-zé_][a-z0-9é_-]{0,4}"]
            .prop_filter("a keyword", |s| !NOT_A_NAME.contains(&s.as_str())),
        // After a dot anything made of word characters is a name: `a.1s`, `x.not`, `y.a-b`.
        prop::collection::vec(
            prop_oneof![3 => ident(), 1 => "[a-z0-9é_-]{1,4}", 1 => "(not|in|true|and)"],
            0..3,
        ),
        prop::sample::select(vec![
            "amount", "host", "path", "method", "reason", "notify", "if", "when", "args",
        ]),
        any::<bool>(),
    )
        .prop_map(|(first, rest, clause_word, use_clause_word)| {
            let first = if use_clause_word {
                clause_word.to_string()
            } else {
                first
            };
            std::iter::once(first).chain(rest).collect()
        })
        .boxed()
}

fn decimal() -> BoxedStrategy<Decimal> {
    let mantissa = prop_oneof![-1000i64..1000, any::<i64>()];
    (mantissa, 0u32..=4)
        .prop_map(|(m, s)| Decimal::new(m, s))
        .boxed()
}

fn money() -> BoxedStrategy<Decimal> {
    let mantissa = prop_oneof![0i64..100_000, 0i64..=i64::MAX];
    (mantissa, 0u32..=4)
        .prop_map(|(m, s)| Decimal::new(m, s))
        .boxed()
}

fn amount() -> BoxedStrategy<u64> {
    prop_oneof![0u64..10_000, any::<u64>()].boxed()
}

fn literal() -> BoxedStrategy<Literal> {
    let duration_unit = prop::sample::select(DurationUnit::ALL.map(|(u, ..)| u).to_vec());
    let size_unit = prop::sample::select(SizeUnit::ALL.map(|(u, ..)| u).to_vec());
    prop_oneof![
        3 => text().prop_map(Literal::Str),
        2 => decimal().prop_map(Literal::Number),
        2 => money().prop_map(Literal::Money),
        1 => (amount(), duration_unit)
            .prop_map(|(amount, unit)| Literal::Duration(Quantity { amount, unit })),
        1 => (amount(), size_unit).prop_map(|(amount, unit)| Literal::Size(Quantity { amount, unit })),
        1 => any::<bool>().prop_map(Literal::Bool),
        1 => Just(Literal::Null),
    ]
    .boxed()
}

fn binop() -> BoxedStrategy<BinOp> {
    prop::sample::select(vec![
        BinOp::Or,
        BinOp::And,
        BinOp::Eq,
        BinOp::Ne,
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
        BinOp::In,
        BinOp::NotIn,
        BinOp::Matches,
        BinOp::Contains,
        BinOp::StartsWith,
        BinOp::EndsWith,
    ])
    .boxed()
}

/// The functions FPL has, with their arity, and sometimes one it has not (the checker reports
/// those; the syntax takes any name).
fn function() -> BoxedStrategy<(String, usize)> {
    prop_oneof![
        6 => prop::sample::select(FUNCTIONS.to_vec()).prop_map(|(f, n)| (f.to_string(), n)),
        1 => (
            prop_oneof![
                ident().prop_filter("a keyword", |s| !NOT_A_NAME.contains(&s.as_str())),
                prop::sample::select(vec!["env", "x.y", "a/b", "if", "host"]).prop_map(str::to_string),
            ],
            0usize..3,
        ),
    ]
    .boxed()
}

fn call(arg: BoxedStrategy<Expr>) -> BoxedStrategy<Expr> {
    function()
        .prop_flat_map(move |(name, arity)| {
            prop::collection::vec(arg.clone(), arity).prop_map(move |args| {
                e(ExprKind::Call {
                    func: sp(name.clone()),
                    args,
                })
            })
        })
        .boxed()
}

/// Any expression tree up to depth 4: the printer adds the parentheses the parser needs.
fn expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        literal().prop_map(|l| e(ExprKind::Literal(l))),
        path().prop_map(|p| e(ExprKind::Path(p))),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..3).prop_map(|v| e(ExprKind::List(v))),
            1 => inner.clone().prop_map(|x| e(ExprKind::Not(Box::new(x)))),
            4 => (binop(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| {
                e(ExprKind::Binary {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                })
            }),
            2 => call(inner),
        ]
    })
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        6 => literal().prop_map(Value::Lit),
        1 => text().prop_map(Value::Env),
        2 => expr().prop_map(Value::Expr),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop::collection::vec(inner.prop_map(sp), 0..4).prop_map(Value::List)
    })
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "mode", "type", "path", "ttl", "on", "notify", "allow", "deny", "max", "warn_at",
            "on_exceed", "source", "key", "cache", "on_error", "tools", "provider", "a-b", "x.y",
            "ed25519", "env", "true",
        ])
        .prop_map(str::to_string),
        2 => ident(),
        1 => text(),
    ]
    .boxed()
}

/// Keys of one block are distinct: YAML/JSON blocks are maps.
fn entries() -> BoxedStrategy<Vec<Entry>> {
    let value = prop_oneof![
        4 => value(),
        // `on_exceed deny` is printed bare.
        1 => prop_oneof![ident(), "[a-z]{1,4}/[a-z*]{1,4}", text()].prop_map(|s| Value::Lit(Literal::Str(s))),
    ];
    prop::collection::vec((key(), value), 0..5)
        .prop_map(|kvs| {
            let mut seen = HashSet::new();
            kvs.into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| Entry {
                    meta: Meta::default(),
                    key: sp(k),
                    value: sp(v),
                })
                .collect()
        })
        .boxed()
}

fn block() -> BoxedStrategy<Block> {
    entries()
        .prop_map(|entries| Block {
            meta: Meta::default(),
            entries,
        })
        .boxed()
}

/// Named blocks of one kind have distinct names: YAML/JSON write them as a map.
fn named_blocks(max: usize) -> BoxedStrategy<Vec<NamedBlock>> {
    let name = prop_oneof![ident(), text()];
    prop::collection::vec((name, entries()), 0..=max)
        .prop_map(|blocks| {
            let mut seen = HashSet::new();
            blocks
                .into_iter()
                .filter(|(n, _)| seen.insert(n.clone()))
                .map(|(name, entries)| NamedBlock {
                    meta: Meta::default(),
                    name: sp(name),
                    entries,
                })
                .collect()
        })
        .boxed()
}

/// A selector's `key` is always an expression in FPL (`key = statement` is the path
/// `statement`, not a string), so its value is one here too.
fn selectors() -> BoxedStrategy<Vec<NamedBlock>> {
    (named_blocks(2), expr())
        .prop_map(|(mut blocks, key)| {
            for e in blocks.iter_mut().flat_map(|b| &mut b.entries) {
                if e.key.value == "key" && !matches!(e.value.value, Value::Expr(_)) {
                    e.value.value = Value::Expr(key.clone());
                }
            }
            blocks
        })
        .boxed()
}

fn tool_pattern() -> BoxedStrategy<String> {
    let segment = prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,5}",
        1 => Just("*".to_string()),
        1 => Just("**".to_string()),
        1 => "[a-z]{1,3}\\*",
    ];
    prop_oneof![
        8 => prop::collection::vec(segment, 1..4).prop_map(|s| s.join("/")),
        1 => prop::sample::select(vec!["*", "**", "if", "host", "deny", "permit", "ed25519"])
            .prop_map(str::to_string),
        1 => text(),
    ]
    .boxed()
}

fn effect() -> BoxedStrategy<Effect> {
    prop::sample::select(vec![
        Effect::Permit,
        Effect::Deny,
        Effect::Defer,
        Effect::DenyMandatory,
    ])
    .boxed()
}

fn rule() -> BoxedStrategy<Rule> {
    let method = prop_oneof![
        prop::sample::select(vec!["GET", "POST", "delete", "if", "a/b"]).prop_map(str::to_string),
        text(),
    ];
    let host = prop_oneof!["[a-z*]{1,5}\\.[a-z]{2,3}", text()];
    let path = prop_oneof!["(/[a-z*]{1,4}){1,3}", text()];
    (
        effect(),
        tool_pattern(),
        prop::option::weighted(0.2, method),
        prop::option::weighted(0.2, host),
        prop::option::weighted(0.2, path),
        prop::option::weighted(0.6, expr()),
        prop::option::weighted(0.3, text()),
        prop::option::weighted(0.2, text()),
    )
        .prop_map(
            |(effect, tool, method, host, path, condition, reason, notify)| Rule {
                meta: Meta::default(),
                effect: sp(effect),
                tool: sp(tool),
                method: method.map(sp),
                host: host.map(sp),
                path: path.map(sp),
                condition,
                reason: reason.map(sp),
                notify: notify.map(sp),
            },
        )
        .boxed()
}

fn rate_limit() -> BoxedStrategy<RateLimit> {
    let unit = prop::sample::select(RateUnit::ALL.map(|(u, ..)| u).to_vec());
    (
        tool_pattern(),
        prop_oneof![1u64..1000, 1u64..=u64::MAX],
        unit,
        any::<bool>(),
    )
        .prop_map(|(tool, limit, per, per_session)| RateLimit {
            meta: Meta::default(),
            tool: sp(tool),
            limit: sp(limit),
            per: sp(per),
            per_session,
        })
        .boxed()
}

fn redact() -> BoxedStrategy<Redact> {
    let arg = prop_oneof!["[a-z_]{1,6}(\\.[a-z_]{1,6}){0,2}", text()];
    (tool_pattern(), prop::collection::vec(arg, 0..4))
        .prop_map(|(tool, args)| Redact {
            meta: Meta::default(),
            tool: sp(tool),
            args: args.into_iter().map(sp).collect(),
        })
        .boxed()
}

fn cost() -> BoxedStrategy<Cost> {
    (tool_pattern(), expr())
        .prop_map(|(tool, amount)| Cost {
            meta: Meta::default(),
            tool: sp(tool),
            amount,
        })
        .boxed()
}

fn budget() -> BoxedStrategy<Budget> {
    let window = prop::sample::select(BudgetWindow::ALL.map(|(w, _)| w).to_vec());
    // In YAML/JSON the window is the budget's `window` key, so no entry may use that key.
    let entries = entries().prop_map(|es| {
        es.into_iter()
            .filter(|e| e.key.value != "window")
            .collect::<Vec<_>>()
    });
    (window, entries)
        .prop_map(|(window, entries)| Budget {
            meta: Meta::default(),
            window: sp(window),
            entries,
        })
        .boxed()
}

fn agent() -> BoxedStrategy<Agent> {
    // `default deny!` is not FPL: a mandatory deny is a rule, not a default.
    let default = prop::sample::select(vec![Effect::Permit, Effect::Deny, Effect::Defer]);
    (
        prop_oneof![ident(), text()],
        prop::option::of(default),
        prop::collection::vec(rule(), 0..4),
        prop::collection::vec(rate_limit(), 0..3),
        prop::collection::vec(redact(), 0..2),
        prop::collection::vec(cost(), 0..2),
        prop::collection::vec(budget(), 0..2),
        prop::option::weighted(0.3, block()),
        named_blocks(2),
        prop::collection::vec(block(), 0..2),
    )
        .prop_map(
            |(
                id,
                default,
                rules,
                rate_limits,
                redact,
                costs,
                budgets,
                egress,
                credentials,
                alerts,
            )| {
                Agent {
                    id: sp(id),
                    default: default.map(sp),
                    rules,
                    rate_limits,
                    redact,
                    costs,
                    budgets,
                    egress,
                    credentials,
                    alerts,
                    ..Agent::default()
                }
            },
        )
        .boxed()
}

fn import() -> BoxedStrategy<Import> {
    let path = (
        "[a-z]{1,8}\\.(com|io|dev)",
        ident(),
        ident(),
        prop::sample::select(vec!["frameworks", "policies", "tools"]),
        "[a-z][a-z0-9-]{0,8}",
        (0u32..20, 0u32..20, 0u32..20),
    )
        .prop_map(|(host, org, repo, kind, name, (a, b, c))| {
            format!("{host}/{org}/{repo}/{kind}/{name}@{a}.{b}.{c}")
        });
    let path = prop_oneof![8 => path, 1 => text()];
    let alias = prop::option::weighted(0.4, prop_oneof![ident(), text()]);
    (path, alias)
        .prop_map(|(path, alias)| Import {
            meta: Meta::default(),
            path: sp(path),
            alias: alias.map(sp),
        })
        .boxed()
}

fn trust_keys() -> BoxedStrategy<Vec<TrustKey>> {
    let key = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 32)
            .prop_map(|b| format!("ed25519:{}", base64::engine::general_purpose::STANDARD.encode(b))),
        1 => text(),
    ];
    let registry = prop_oneof!["github\\.com/[a-z]{1,6}/[a-z-]{1,8}", text()];
    prop::collection::vec((registry, key), 0..3)
        .prop_map(|keys| {
            let mut seen = HashSet::new();
            keys.into_iter()
                .filter(|(r, _)| seen.insert(r.clone()))
                .map(|(registry, key)| TrustKey {
                    meta: Meta::default(),
                    registry: sp(registry),
                    key: sp(key),
                })
                .collect()
        })
        .boxed()
}

fn policy() -> BoxedStrategy<Policy> {
    (
        prop::collection::vec(import(), 0..3),
        prop::option::weighted(0.5, block()),
        named_blocks(2),
        named_blocks(1),
        selectors(),
        trust_keys(),
        prop::collection::vec(rule(), 0..4),
        prop::collection::vec(agent(), 0..3),
        prop::option::of(prop::sample::select(vec![
            Effect::Permit,
            Effect::Deny,
            Effect::Defer,
        ])),
    )
        .prop_map(
            |(
                imports,
                runtime,
                providers,
                identities,
                selectors,
                trust,
                rules,
                agents,
                default,
            )| Policy {
                default: default.map(sp),
                meta: Meta::default(),
                imports,
                runtime,
                providers,
                identities,
                selectors,
                trust,
                rules,
                agents,
                ..Policy::default()
            },
        )
        .boxed()
}

// ---- round trips ----

/// Parses text the formatter wrote: it must parse cleanly, without even a warning.
fn reparse(text: &str) -> Result<Policy, TestCaseError> {
    let parsed = fpl::parse(text);
    prop_assert!(
        parsed.diagnostics.is_empty(),
        "the formatted policy does not parse cleanly:\n{text}\n{:#?}",
        parsed.diagnostics
    );
    Ok(parsed.policy)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn fpl_round_trip(ast in policy()) {
        let text = format_policy(&ast);
        let back = reparse(&text)?;
        prop_assert_eq!(back, ast, "formatted as:\n{}", text);
    }

    #[test]
    fn format_is_idempotent(ast in policy()) {
        let text = format_policy(&ast);
        let again = format_policy(&fpl::parse(&text).policy);
        prop_assert_eq!(again, text);
    }

    #[test]
    fn json_round_trip(ast in policy()) {
        let json = serde_json::to_string(&ast).unwrap();
        let back = serde_json::from_str::<Policy>(&json);
        prop_assert!(back.is_ok(), "{json}\n{:?}", back.err());
        prop_assert_eq!(&back.unwrap(), &ast, "as JSON:\n{}", json);
        // The loader `check` and `fmt` use reads it the same way.
        let (loaded, diags) = parse_text(&json, Format::Json);
        prop_assert!(diags.is_empty(), "{json}\n{diags:#?}");
        prop_assert_eq!(loaded, ast, "as JSON:\n{}", json);
    }

    #[test]
    fn yaml_round_trip(ast in policy()) {
        let yaml = serde_saphyr::to_string(&ast).unwrap();
        let back = serde_saphyr::from_str::<Policy>(&yaml);
        prop_assert!(back.is_ok(), "{yaml}\n{:?}", back.err());
        prop_assert_eq!(&back.unwrap(), &ast, "as YAML:\n{}", yaml);
        let (loaded, diags) = parse_text(&yaml, Format::Yaml);
        prop_assert!(diags.is_empty(), "{yaml}\n{diags:#?}");
        prop_assert_eq!(loaded, ast, "as YAML:\n{}", yaml);
    }

    #[test]
    fn fpl_json_fpl_keeps_the_text(ast in policy()) {
        let text = format_policy(&ast);
        let json = serde_json::to_string_pretty(&reparse(&text)?).unwrap();
        let back = serde_json::from_str::<Policy>(&json);
        prop_assert!(back.is_ok(), "{json}\n{:?}", back.err());
        prop_assert_eq!(format_policy(&back.unwrap()), text, "via JSON:\n{}", json);
    }
}

// ---- parser robustness ----

/// FPL's words and punctuation, well and badly formed literals, comments and whitespace.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "import", "as", "runtime", "provider", "identity", "selector", "trust", "key", "agent",
    "default", "rules", "rate_limit", "redact", "args", "cost", "budget", "daily", "egress",
    "credential", "alert", "permit", "allow", "approve", "deny", "deny!", "block", "reject",
    "defer", "if", "when", "reason", "notify", "method", "host", "path", "port", "per", "minute",
    "session", "and", "or", "not", "in", "not in", "matches", "contains", "starts_with",
    "ends_with", "&&", "||", "!", "==", "!=", "<", "<=", ">", ">=", "=", "=~", "true", "false",
    "null", "nil", "len(", "count(", "env(", "in(", "{", "}", "(", ")", "[", "]", ",", ";", ":",
    "\"", "'", "\"s\"", "\"a\\\"b\"", "\"\\u{e9}\"", "\"\\u{0}\"", "\"\\d\"", "\\", "$", "$5",
    "$1_000.50", "$x", "-", "-3", "0.8", "30s", "10mb", "3parsecs", "1.5s",
    "99999999999999999999999999999", "ed25519:", "ed25519:AAAA+/=", "a", "a.b", "a/*", "**", "*",
    "x.", ".x", "#", "# note", "\n", "\n\n", " ", "\t", "\r", "\u{0}", "é", "😀",
];

/// Random mixes of FPL tokens, brackets, quotes, `$`, digits and newlines.
fn token_soup() -> BoxedStrategy<String> {
    let token = prop::sample::select(TOKENS);
    prop::collection::vec((token, prop::sample::select(vec!["", " ", "\n"])), 0..40)
        .prop_map(|parts| parts.into_iter().flat_map(|(t, sep)| [t, sep]).collect())
        .boxed()
}

/// A valid policy's text with a few characters deleted, duplicated or swapped in.
fn mutated_policy() -> BoxedStrategy<String> {
    let edit = (
        any::<prop::sample::Index>(),
        0usize..3,
        prop::sample::select(vec![
            "", "{", "}", "(", ")", "[", "]", "\"", "\n", " ", "not ", "$", "!", ",", "#",
        ]),
    );
    (policy(), prop::collection::vec(edit, 1..4))
        .prop_map(|(ast, edits)| {
            let mut text: Vec<char> = format_policy(&ast).chars().collect();
            for (at, cut, insert) in edits {
                let at = at.index(text.len() + 1);
                let end = (at + cut).min(text.len());
                text.splice(at..end, insert.chars());
            }
            text.into_iter().collect()
        })
        .boxed()
}

/// A valid policy's text rewritten into the other spellings FPL accepts (aliases, `&&`, `key
/// value`, `;`, comments, continuation lines, …). A rewrite may also break it; that is fine too.
fn respelled_policy() -> BoxedStrategy<String> {
    let rewrite = prop::sample::select(vec![
        (" = ", " "),
        (" = ", ": "),
        (" = ", "="),
        ("\n", ";\n"),
        ("\n", "\n\n"),
        ("\n", "  # note\n"),
        ("{\n", "{ # note\n# more\n"),
        ("\n}", "\n  # last\n}"),
        ("  ", "\t"),
        ("permit ", "allow "),
        ("permit ", "approve "),
        ("deny ", "block "),
        ("deny ", "reject "),
        (" and ", " && "),
        (" or ", " || "),
        (" and ", "\n    and "),
        ("not ", "!"),
        ("(", "( "),
        (")", " )"),
        ("[", "[\n"),
        (", ", ",\n"),
        (", ", " , "),
        (" if ", " when "),
        (" if ", "\n    if "),
        (" reason ", " reason: "),
        (" notify ", "\n  notify "),
        (" method ", " method: "),
        ("per minute", "per minutes"),
        ("\"", "'"),
        ("}\n\n", "}\n"),
    ]);
    (policy(), prop::collection::vec(rewrite, 0..4))
        .prop_map(|(ast, rewrites)| {
            let mut text = format!("# header\n\n{}", format_policy(&ast));
            for (from, to) in rewrites {
                text = text.replace(from, to);
            }
            text
        })
        .boxed()
}

fn arbitrary_input() -> BoxedStrategy<String> {
    prop_oneof![
        1 => any::<String>(),
        3 => token_soup(),
        2 => mutated_policy(),
        4 => respelled_policy(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 4))]

    #[test]
    fn parser_never_panics_and_clean_parses_round_trip(src in arbitrary_input()) {
        let parsed = fpl::parse(&src);
        if parsed.diagnostics.iter().all(|d| !d.is_error()) {
            let text = format_policy(&parsed.policy);
            let back = reparse(&text)?;
            prop_assert_eq!(&back, &parsed.policy, "input:\n{}\nformatted as:\n{}", src, text);
            // Comments included, formatting twice changes nothing.
            prop_assert_eq!(format_policy(&back), text, "input:\n{}", src);
        }
    }
}
