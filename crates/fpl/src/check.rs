//! The static checks of SPEC §3.11 over one parsed file.
//!
//! Cross-file checks (imports, an imported `deny!` covering a local rule) live in [`crate::load`];
//! everything that one file can get wrong on its own is found here.

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic, did_you_mean, suggestion};
use crate::format::format_expr;
use crate::pattern::{CoverIndex, ToolPattern};
use crate::span::{Span, line_col};

/// Compiled regexes may not exceed this (bytes of program): evaluation stays cheap.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What the checker may consult besides the AST.
pub struct CheckEnv<'a> {
    /// The file's text, for line numbers in messages (`None` for YAML/JSON).
    pub source: Option<&'a str>,
    /// Looks up an environment variable (`env("NAME")`).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for CheckEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckEnv").finish_non_exhaustive()
    }
}

pub fn check(policy: &Policy, env: &CheckEnv<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        env,
        diags: Vec::new(),
        regexes: HashMap::new(),
        context: Vec::new(),
        selectors: policy
            .selectors
            .iter()
            .map(|s| s.name.value.clone())
            .collect(),
    };
    c.policy(policy);
    c.diags.sort_by_key(|d| d.span.map(|s| s.start));
    c.diags
}

struct Checker<'a> {
    env: &'a CheckEnv<'a>,
    diags: Vec<Diagnostic>,
    /// Each distinct regex is validated once.
    regexes: HashMap<String, Result<(), String>>,
    /// Where the checker is, for findings that cannot point at a line.
    context: Vec<String>,
    selectors: Vec<String>,
}

// ---- block schemas ----

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Enum(&'static [&'static str]),
    /// One of the words, or a list of them.
    EnumList(&'static [&'static str]),
    Duration,
    PosInt,
    Port,
    Bool,
    Money,
    Fraction,
    Hosts,
    Patterns,
    StrOrList,
    Url(&'static [&'static str]),
    Expr,
}

struct Schema {
    what: &'static str,
    keys: &'static [(&'static str, Kind)],
    required: &'static [&'static str],
    /// Other keys are allowed (provider-specific settings).
    open: bool,
}

const EFFECT_EVENTS: &[&str] = &[
    "deny",
    "defer",
    "permit",
    "approved",
    "rejected",
    "budget_warning",
    "budget_exceeded",
    "rate_exceeded",
];

const RUNTIME: Schema = Schema {
    what: "runtime",
    keys: &[
        ("mode", Kind::Enum(&["enforce", "audit"])),
        ("backend", Kind::Enum(&["sqlite", "postgres"])),
        ("dsn", Kind::Str),
        ("data_dir", Kind::Str),
        ("socket", Kind::Str),
        ("http_listen", Kind::Str),
        ("mcp_proxy_port", Kind::Port),
        ("http_proxy_port", Kind::Port),
        ("approval_ttl", Kind::Duration),
        ("cold_start_deny_window", Kind::Duration),
        ("os_tier", Kind::Enum(&["strong", "moderate", "off"])),
        ("strip_ambient_credentials", Kind::Bool),
        ("supervised_command", Kind::StrOrList),
        ("checkpoint_every", Kind::PosInt),
        ("durability", Kind::Enum(&["sync", "interval"])),
        ("timezone", Kind::Str),
    ],
    required: &[],
    open: false,
};

const PROVIDER: Schema = Schema {
    what: "provider",
    keys: &[("type", Kind::Str)],
    required: &["type"],
    open: true,
};

const IDENTITY: Schema = Schema {
    what: "identity",
    keys: &[("type", Kind::Enum(&["spiffe", "oidc", "static"]))],
    required: &["type"],
    open: true,
};

const SELECTOR: Schema = Schema {
    what: "selector",
    keys: &[
        ("source", Kind::Url(&["file", "http"])),
        ("key", Kind::Expr),
        ("cache", Kind::Duration),
        ("timeout", Kind::Duration),
        ("on_error", Kind::Enum(&["deny", "defer"])),
    ],
    required: &["source", "key"],
    open: false,
};

const BUDGET: Schema = Schema {
    what: "budget",
    keys: &[
        ("max", Kind::Money),
        ("warn_at", Kind::Fraction),
        ("on_exceed", Kind::Enum(&["deny", "defer"])),
    ],
    required: &["max"],
    open: false,
};

const EGRESS: Schema = Schema {
    what: "egress",
    keys: &[("allow", Kind::Hosts), ("deny", Kind::Hosts)],
    required: &[],
    open: false,
};

const CREDENTIAL: Schema = Schema {
    what: "credential",
    keys: &[
        ("provider", Kind::Str),
        ("path", Kind::Str),
        ("tools", Kind::Patterns),
        ("ttl", Kind::Duration),
        ("scope", Kind::StrOrList),
    ],
    required: &["provider", "tools"],
    open: false,
};

const NOTIFY_URL: Kind = Kind::Url(&["slack", "pagerduty", "webhook", "http", "https"]);

const ALERT: Schema = Schema {
    what: "alert",
    keys: &[
        ("on", Kind::EnumList(EFFECT_EVENTS)),
        (
            "notify",
            Kind::Url(&["slack", "pagerduty", "webhook", "http", "https"]),
        ),
    ],
    required: &["on", "notify"],
    open: false,
};

/// Keys whose literal string value would be a secret written into the policy.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "private_key",
        "credentials",
        "auth",
    ]
    .iter()
    .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

/// `scheme://user:password@host…`
fn url_with_password(v: &str) -> bool {
    let Some((_, rest)) = v.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty())
}

/// Values that are recognisably credentials whatever their key.
fn looks_like_secret(v: &str) -> bool {
    [
        "hvs.",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "xoxb-",
        "xoxp-",
        "ghp_",
        "github_pat_",
        "AKIA",
        "-----BEGIN",
    ]
    .iter()
    .any(|p| v.starts_with(p))
}

impl Checker<'_> {
    /// Without source text (YAML/JSON) a finding has no line, so its message says where.
    fn push(&mut self, mut d: Diagnostic) {
        if self.env.source.is_none() && !self.context.is_empty() {
            d.message = format!("{} (in {})", d.message, self.context.join(", "));
        }
        self.diags.push(d);
    }

    /// Runs `f` with `place` added to the context of its findings.
    fn within(&mut self, place: String, f: impl FnOnce(&mut Self)) {
        self.context.push(place);
        f(self);
        self.context.pop();
    }

    fn line(&self, span: Span) -> Option<usize> {
        self.env.source.map(|s| line_col(s, span.start).0)
    }

    fn where_(&self, span: Span) -> String {
        self.line(span)
            .map(|l| format!(" on line {l}"))
            .unwrap_or_default()
    }

    fn policy(&mut self, p: &Policy) {
        for import in &p.imports {
            self.import(import);
        }
        if let Some(rt) = &p.runtime {
            self.within("runtime".into(), |c| {
                c.entries(&RUNTIME, &rt.entries, false)
            });
        }
        self.named_blocks(&PROVIDER, &p.providers, true);
        self.named_blocks(&IDENTITY, &p.identities, true);
        self.named_blocks(&SELECTOR, &p.selectors, false);
        for key in &p.trust {
            if !key.key.value.starts_with("ed25519:") {
                self.push(
                    Diagnostic::new(Code::BadValue, "a trust key must be an Ed25519 public key")
                        .at(key.key.span)
                        .help("write `key \"<registry>\" ed25519:<base64 public key>`"),
                );
            }
        }
        let providers: Vec<&str> = p.providers.iter().map(|b| b.name.value.as_str()).collect();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        if !p.rules.is_empty() || p.default.is_some() {
            let at = p.rules.first().map_or_else(
                || p.default.as_ref().map_or(Span::default(), |d| d.span),
                |r| r.effect.span,
            );
            seen.insert("default", at);
            self.default_effect(p.default.as_ref());
            if p.default.is_none() {
                self.push(
                    Diagnostic::new(Code::MissingDefault, "the flat rules have no `default`")
                        .at(at)
                        .label("calls that match no rule are denied")
                        .help("say so explicitly: add `default deny` at the top level"),
                );
            }
            self.rules(&p.rules);
        }
        for agent in &p.agents {
            if let Some(first) = seen.get(agent.id.value.as_str()) {
                let first_line = self.where_(*first);
                self.push(
                    Diagnostic::new(Code::DuplicateAgent, format!("duplicate agent id `{}`", agent.id.value))
                        .at(agent.id.span)
                        .label("this id is already used")
                        .help(format!(
                            "the first agent with this id is{first_line}; merge the two or rename one (flat rules form the agent `default`)"
                        )),
                );
            } else {
                seen.insert(&agent.id.value, agent.id.span);
            }
            if !crate::ast::is_valid_agent_id(&agent.id.value) {
                self.push(
                    Diagnostic::new(
                        Code::BadAgentId,
                        format!("agent id {:?} holds `|` or a control character", agent.id.value),
                    )
                    .at(agent.id.span)
                    .label("not allowed in an agent id")
                    .help("`|` separates the parts of the keys rate limits and budgets are stored under; use `-`, `_`, `.` or `/` instead"),
                );
            }
            self.within(format!("agent `{}`", agent.id.value), |c| {
                c.agent(agent, &providers)
            });
        }
    }

    fn import(&mut self, import: &Import) {
        let path = &import.path.value;
        let span = import.path.span;
        let Some((_, version)) = path.rsplit_once('@') else {
            self.push(
                Diagnostic::new(
                    Code::UnpinnedImport,
                    format!("import `{path}` has no version"),
                )
                .at(span)
                .help(format!("pin an exact version: `\"{path}@1.0.0\"`")),
            );
            return;
        };
        if let Some((name, _)) = path.rsplit_once('@')
            && let Err(why) = registry_relative(name)
        {
            self.push(
                Diagnostic::new(Code::BadValue, format!("import `{path}` is not a registry path: {why}"))
                    .at(span)
                    .help("write `<registry>/<kind>/<name>@<version>`, e.g. `github.com/faramesh/faramesh-registry/frameworks/mcp@1.0.0`"),
            );
        }
        if !is_exact_semver(version) {
            let why = if version == "latest" {
                "`@latest` is not a pinned version".to_string()
            } else {
                format!("`@{version}` is not an exact version")
            };
            self.push(
                Diagnostic::new(Code::UnpinnedImport, format!("unpinned import: {why}"))
                    .at(span)
                    .label("imports must name one exact version")
                    .help("pin a semver such as `@1.0.0`, so the policy cannot change under you"),
            );
        }
    }

    fn named_blocks(&mut self, schema: &Schema, blocks: &[NamedBlock], secrets: bool) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for b in blocks {
            if let Some(first) = seen.insert(&b.name.value, b.name.span) {
                let first_line = self.where_(first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateName,
                        format!("{} `{}` is declared twice", schema.what, b.name.value),
                    )
                    .at(b.name.span)
                    .help(format!("the first declaration is{first_line}; keep one")),
                );
            }
            self.within(format!("{} `{}`", schema.what, b.name.value), |c| {
                c.entries(schema, &b.entries, secrets);
            });
        }
    }

    fn entries(&mut self, schema: &Schema, entries: &[Entry], secrets: bool) {
        let known: Vec<&str> = schema.keys.iter().map(|(k, _)| *k).collect();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for e in entries {
            let key = e.key.value.as_str();
            if let Some(first) = seen.insert(key, e.key.span) {
                let first_line = self.where_(first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateKey,
                        format!("`{key}` is set twice in this {} block", schema.what),
                    )
                    .at(e.key.span)
                    .help(format!("the first setting is{first_line}; keep one")),
                );
            }
            self.env_refs(&e.value);
            match schema.keys.iter().find(|(k, _)| *k == key) {
                Some((_, kind)) => self.value(key, *kind, &e.value),
                None if schema.open => {}
                None => self.push(
                    Diagnostic::new(
                        Code::UnknownKey,
                        format!("unknown key `{key}` in {}", schema.what),
                    )
                    .at(e.key.span)
                    .label(format!("not a {} setting", schema.what))
                    .suggest(key, &known, &format!("{} keys are", schema.what)),
                ),
            }
            self.inline_secret(schema, e, secrets);
        }
        for req in schema.required {
            if !entries.iter().any(|e| e.key.value == *req) {
                let span = entries.first().map(|e| e.key.span);
                let mut d = Diagnostic::new(
                    Code::MissingKey,
                    format!("this {} block needs `{req}`", schema.what),
                )
                .help(format!("add `{req} = …`"));
                if let Some(s) = span {
                    d = d.at(s);
                }
                self.push(d);
            }
        }
    }

    /// Secrets by key name (in provider and identity blocks, `secret_keys`), and anywhere
    /// by shape: a known token prefix or a URL with a password.
    fn inline_secret(&mut self, schema: &Schema, e: &Entry, secret_keys: bool) {
        self.secret_in(schema, &e.key.value, &e.value, secret_keys);
    }

    /// Looks at a value and, for lists, at every item in it.
    fn secret_in(&mut self, schema: &Schema, key: &str, value: &Spanned<Value>, secret_keys: bool) {
        let text = match &value.value {
            Value::Lit(Literal::Str(text)) => text,
            Value::List(items) => {
                items
                    .iter()
                    .for_each(|i| self.secret_in(schema, key, i, secret_keys));
                return;
            }
            _ => return,
        };
        if (secret_keys && is_secret_key(key)) || looks_like_secret(text) || url_with_password(text)
        {
            let var = format!("{}_{key}", schema.what).to_ascii_uppercase();
            self.push(
                Diagnostic::new(
                    Code::InlineSecret,
                    format!("`{key}` holds a secret written inline; use env(\"…\")"),
                )
                .at(value.span)
                .label("secrets must not live in the policy file")
                .help(format!(
                    "read it from the environment: `{key} = env(\"{var}\")`"
                )),
            );
        }
    }

    fn env_refs(&mut self, v: &Spanned<Value>) {
        match &v.value {
            Value::Env(name) if (self.env.env)(name).is_none() => self.push(
                Diagnostic::new(
                    Code::UnsetEnv,
                    format!("environment variable `{name}` is not set"),
                )
                .at(v.span)
                .help("set it before `faramesh apply`; `faramesh dev` runs without it"),
            ),
            Value::List(items) => items.iter().for_each(|i| self.env_refs(i)),
            _ => {}
        }
    }

    fn value(&mut self, key: &str, kind: Kind, v: &Spanned<Value>) {
        if let Err(msg) = check_kind(kind, &v.value) {
            self.push(
                Diagnostic::new(Code::BadValue, format!("`{key}` {msg}"))
                    .at(v.span)
                    .help(format!("`{key}` takes {}", describe(kind))),
            );
            return;
        }
        match (kind, &v.value) {
            (Kind::Patterns, Value::List(items)) => {
                for i in items {
                    if let Value::Lit(Literal::Str(p)) = &i.value {
                        self.pattern(p, i.span);
                    }
                }
            }
            (Kind::Expr, Value::Lit(Literal::Str(text))) => {
                if let Err(diags) = crate::parser::parse_expr(text) {
                    let msg = diags
                        .first()
                        .map_or_else(String::new, |d| d.message.clone());
                    self.push(
                        Diagnostic::new(
                            Code::BadValue,
                            format!("`{key}` is not a valid expression: {msg}"),
                        )
                        .at(v.span),
                    );
                }
            }
            (Kind::Expr, Value::Expr(e)) => {
                self.expr(e);
            }
            _ => {}
        }
    }

    fn pattern(&mut self, text: &str, span: Span) -> Option<ToolPattern> {
        match ToolPattern::parse(text) {
            Ok(p) => Some(p),
            Err(msg) => {
                self.push(
                    Diagnostic::new(Code::BadPattern, msg)
                        .at(span)
                        .help("tool patterns are `/`-separated segments: `stripe/refund`, `stripe/*`, `repo/**`, or `*`"),
                );
                None
            }
        }
    }

    // ---- agents ----

    /// YAML and JSON can say what FPL cannot: `default: deny!`.
    fn default_effect(&mut self, default: Option<&Spanned<Effect>>) {
        if let Some(d) = default
            && d.value == Effect::DenyMandatory
        {
            self.push(
                Diagnostic::new(Code::BadValue, "`deny!` cannot be a default")
                    .at(d.span)
                    .help("write `default deny`"),
            );
        }
    }

    fn agent(&mut self, agent: &Agent, providers: &[&str]) {
        self.default_effect(agent.default.as_ref());
        if agent.id.value.is_empty() {
            // Already reported by the parser.
        } else if agent.default.is_none() {
            self.push(
                Diagnostic::new(
                    Code::MissingDefault,
                    format!("agent `{}` has no `default`", agent.id.value),
                )
                .at(agent.id.span)
                .label("calls that match no rule are denied")
                .help("say so explicitly: add `default deny` to the agent"),
            );
        }
        self.rules(&agent.rules);
        for r in &agent.rate_limits {
            self.pattern(&r.tool.value, r.tool.span);
            if r.limit.value == 0 {
                self.push(
                    Diagnostic::new(
                        Code::BadValue,
                        "a rate limit must be a whole number greater than 0",
                    )
                    .at(r.limit.span)
                    .help("write e.g. `20 per minute`; to forbid a tool, deny it"),
                );
            }
        }
        for r in &agent.redact {
            self.pattern(&r.tool.value, r.tool.span);
            for a in &r.args {
                if a.value.is_empty() || a.value.split('.').any(str::is_empty) {
                    self.push(
                        Diagnostic::new(
                            Code::BadValue,
                            format!("`{}` is not an argument path", a.value),
                        )
                        .at(a.span)
                        .help("name a field, or nested fields joined by dots: `card.holder`"),
                    );
                }
            }
        }
        for c in &agent.costs {
            self.pattern(&c.tool.value, c.tool.span);
            let ty = self.expr(&c.amount);
            if !matches!(ty, Ty::Unknown | Ty::Num) {
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        format!("a cost must be money or a number, not {}", ty.name()),
                    )
                    .at(c.amount.span)
                    .help("write a money literal (`$10`) or an argument that holds one (`amount`)"),
                );
            }
        }
        let mut windows: HashMap<BudgetWindow, Span> = HashMap::new();
        for b in &agent.budgets {
            if let Some(first) = windows.insert(b.window.value, b.window.span) {
                let first_line = self.where_(first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateName,
                        format!("two `{}` budgets", b.window.value.word()),
                    )
                    .at(b.window.span)
                    .help(format!("the first is{first_line}; keep one")),
                );
            }
            self.within(format!("budget {}", b.window.value.word()), |c| {
                c.entries(&BUDGET, &b.entries, false);
            });
        }
        if let Some(e) = &agent.egress {
            self.within("egress".into(), |c| c.entries(&EGRESS, &e.entries, false));
        }
        let mut names: HashMap<&str, Span> = HashMap::new();
        for c in &agent.credentials {
            if let Some(first) = names.insert(&c.name.value, c.name.span) {
                let first_line = self.where_(first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateName,
                        format!("credential `{}` is declared twice", c.name.value),
                    )
                    .at(c.name.span)
                    .help(format!("the first is{first_line}; keep one")),
                );
            }
            self.within(format!("credential `{}`", c.name.value), |ck| {
                ck.entries(&CREDENTIAL, &c.entries, false);
            });
            self.provider_ref(c, providers);
        }
        for a in &agent.alerts {
            self.within("alert".into(), |c| c.entries(&ALERT, &a.entries, false));
        }
    }

    fn provider_ref(&mut self, c: &NamedBlock, providers: &[&str]) {
        let Some(e) = c.entries.iter().find(|e| e.key.value == "provider") else {
            return;
        };
        let Value::Lit(Literal::Str(name)) = &e.value.value else {
            return;
        };
        if !providers.contains(&name.as_str()) {
            self.push(
                Diagnostic::new(
                    Code::UndeclaredProvider,
                    format!("provider `{name}` is not declared"),
                )
                .at(e.value.span)
                .label("`faramesh dev` stubs it; `faramesh apply` needs it")
                .help(format!(
                    "declare it: `provider \"{name}\" {{ type = \"…\" }}`"
                )),
            );
        }
    }

    fn rules(&mut self, rules: &[Rule]) {
        let patterns: Vec<Option<ToolPattern>> = rules
            .iter()
            .map(|r| self.pattern(&r.tool.value, r.tool.span))
            .collect();
        for (i, r) in rules.iter().enumerate() {
            self.within(
                format!(
                    "rule {} (`{} {}`)",
                    i + 1,
                    r.effect.value.keyword(),
                    r.tool.value
                ),
                |c| {
                    c.rule(r);
                },
            );
        }
        self.unreachable(rules, &patterns);
    }

    fn rule(&mut self, r: &Rule) {
        if let Some(cond) = &r.condition {
            let ty = self.expr(cond);
            if !matches!(ty, Ty::Unknown | Ty::Bool) {
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        format!("a condition must be true or false, not {}", ty.name()),
                    )
                    .at(cond.span)
                    .help("compare it: `amount > $0`, `name == \"x\"`"),
                );
            }
        }
        // A rule may name a channel (`notify "finance"`); a URL must be one alerts can reach.
        if let Some(n) = &r.notify
            && n.value.contains("://")
            && let Err(msg) = check_kind(NOTIFY_URL, &Value::Lit(Literal::Str(n.value.clone())))
        {
            self.push(
                Diagnostic::new(Code::BadValue, format!("`notify` {msg}"))
                    .at(n.span)
                    .help(format!("`notify` takes {}", describe(NOTIFY_URL))),
            );
        }
        if let Some(m) = &r.method {
            let ok = !m.value.is_empty() && m.value.chars().all(|c| c.is_ascii_alphabetic());
            if !ok {
                self.push(
                    Diagnostic::new(
                        Code::BadValue,
                        format!("`{}` is not an HTTP method", m.value),
                    )
                    .at(m.span)
                    .help("write a method such as `GET` or `POST`"),
                );
            }
        }
    }

    /// `deny!` covering a permit/defer, and earlier unconditional rules covering later ones.
    fn unreachable(&mut self, rules: &[Rule], patterns: &[Option<ToolPattern>]) {
        let mut mandatory: CoverIndex<usize> = CoverIndex::default();
        for (i, (rule, pat)) in rules.iter().zip(patterns).enumerate() {
            if let Some(pat) = pat
                && rule.effect.value == Effect::DenyMandatory
                && rule.is_unconditional()
            {
                mandatory.insert(pat, i);
            }
        }
        let mut earlier: CoverIndex<usize> = CoverIndex::default();
        for (i, (rule, pat)) in rules.iter().zip(patterns).enumerate() {
            let Some(pat) = pat else { continue };
            if rule.effect.value == Effect::DenyMandatory {
                continue;
            }
            if matches!(rule.effect.value, Effect::Permit | Effect::Defer)
                && let Some((mp, m)) = mandatory.covering(pat)
            {
                let at = self.where_(rules[*m].effect.span);
                self.push(
                    Diagnostic::new(
                        Code::ShadowedByMandatoryDeny,
                        format!("this rule can never fire: `deny! {mp}`{at} covers `{}`", pat.as_str()),
                    )
                    .at(rule.effect.span.to(rule.tool.span))
                    .label("unreachable")
                    .help("`deny!` is tried before every other rule and nothing overrides it; remove this rule or narrow the `deny!`"),
                );
            } else if let Some((ep, j)) = earlier.covering(pat) {
                let prev = &rules[*j];
                let at = self.where_(prev.effect.span);
                self.push(
                    Diagnostic::new(
                        Code::ShadowedByEarlierRule,
                        format!(
                            "unreachable rule: `{} {}`{at} already decides every call this rule matches",
                                                        prev.effect.value.keyword(),
                            ep
                        ),
                    )
                    .at(rule.effect.span.to(rule.tool.span))
                    .label("this rule can never fire")
                    .help("first match wins: move this rule above the broader one, or give the broader one a condition"),
                );
            }
            if rule.is_unconditional() {
                earlier.insert(pat, i);
            }
        }
    }

    // ---- expressions ----

    /// Checks an expression and returns its static type (`Unknown` when only run time knows).
    fn expr(&mut self, e: &Expr) -> Ty {
        match &e.kind {
            ExprKind::Literal(l) => Ty::of(l),
            ExprKind::Path(segments) => self.path(segments, e.span),
            ExprKind::List(items) => {
                for i in items {
                    self.expr(i);
                }
                Ty::List
            }
            ExprKind::Not(inner) => {
                let ty = self.expr(inner);
                self.expect_bool("not", inner, ty);
                Ty::Bool
            }
            ExprKind::Call { func, args } => self.call(func, args, e.span),
            ExprKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs),
        }
    }

    fn expect_bool(&mut self, op: &str, operand: &Expr, ty: Ty) {
        if !matches!(ty, Ty::Unknown | Ty::Bool) {
            self.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!(
                        "`{op}` needs true or false, but `{}` is {}",
                        format_expr(operand),
                        ty.name()
                    ),
                )
                .at(operand.span)
                .help("compare it first: `amount > $0`"),
            );
        }
    }

    fn type_error(&mut self, op: BinOp, operand: &Expr, ty: Ty, wants: &str, help: &str) {
        self.push(
            Diagnostic::new(
                Code::TypeMismatch,
                format!(
                    "`{}` {wants}, but `{}` is {}",
                    op.symbol(),
                    format_expr(operand),
                    ty.name()
                ),
            )
            .at(operand.span)
            .label(format!("{} here", ty.name()))
            .help(help.to_string()),
        );
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr) -> Ty {
        let lt = self.expr(lhs);
        let rt = self.expr(rhs);
        match op {
            BinOp::And | BinOp::Or => {
                self.expect_bool(op.symbol(), lhs, lt);
                self.expect_bool(op.symbol(), rhs, rt);
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                for (side, ty) in [(lhs, lt), (rhs, rt)] {
                    if !matches!(ty, Ty::Unknown | Ty::Num | Ty::Duration) {
                        self.type_error(op, side, ty, "compares numbers, money or durations", "ordering needs numbers on both sides: `amount < $500`; use `==` for strings");
                    }
                }
                if let (Ty::Num, Ty::Duration) | (Ty::Duration, Ty::Num) = (lt, rt) {
                    self.type_error(
                        op,
                        rhs,
                        rt,
                        "compares values of one kind",
                        "compare a duration with a duration (`30s`), a number with a number",
                    );
                }
            }
            BinOp::Eq | BinOp::Ne => {
                if lt.known() && rt.known() && lt != rt && lt != Ty::Null && rt != Ty::Null {
                    self.type_error(
                        op,
                        rhs,
                        rt,
                        &format!(
                            "compares values of one type, and the left side is {}",
                            lt.name()
                        ),
                        "numbers are never equal to strings; `$` amounts compare with numbers",
                    );
                }
            }
            BinOp::In | BinOp::NotIn => {
                if rt.known() && rt != Ty::List {
                    self.type_error(
                        op,
                        rhs,
                        rt,
                        "needs a list on the right",
                        "write `x in [\"a\", \"b\"]`",
                    );
                }
            }
            BinOp::Matches => {
                if !matches!(lt, Ty::Unknown | Ty::Str) {
                    self.type_error(
                        op,
                        lhs,
                        lt,
                        "tests strings",
                        "`matches` applies a regex to a string",
                    );
                }
                self.regex(rhs);
            }
            BinOp::StartsWith | BinOp::EndsWith => {
                for (side, ty) in [(lhs, lt), (rhs, rt)] {
                    if !matches!(ty, Ty::Unknown | Ty::Str) {
                        self.type_error(
                            op,
                            side,
                            ty,
                            "works on strings",
                            "both sides must be strings",
                        );
                    }
                }
            }
            BinOp::Contains => {
                if !matches!(lt, Ty::Unknown | Ty::Str | Ty::List) {
                    self.type_error(
                        op,
                        lhs,
                        lt,
                        "needs a string or a list on the left",
                        "write `tags contains \"x\"` or `name contains \"x\"`",
                    );
                }
                if lt == Ty::Str && rt.known() && rt != Ty::Str {
                    self.type_error(
                        op,
                        rhs,
                        rt,
                        "looks for a string inside a string",
                        "write `name contains \"x\"`",
                    );
                }
            }
        }
        Ty::Bool
    }

    fn regex(&mut self, rhs: &Expr) {
        match &rhs.kind {
            ExprKind::Literal(Literal::Str(re)) => {
                let verdict = self
                    .regexes
                    .entry(re.clone())
                    .or_insert_with(|| validate_regex(re))
                    .clone();
                if let Err(why) = verdict {
                    self.push(
                        Diagnostic::new(Code::BadRegex, format!("invalid regex {}: {why}", crate::format::quote(re)))
                            .at(rhs.span)
                            .label("does not compile")
                            .help("FPL regexes use RE2 syntax (no look-around or backreferences); escape a backslash as `\\\\`"),
                    );
                }
            }
            _ => self.push(
                Diagnostic::new(Code::TypeMismatch, "the regex after `matches` must be a string literal")
                    .at(rhs.span)
                    .help("write the pattern in quotes, e.g. `path matches \"^src/\"`, so it is checked and compiled once"),
            ),
        }
    }

    fn call(&mut self, func: &Spanned<String>, args: &[Expr], span: Span) -> Ty {
        let name = func.value.as_str();
        let Some((_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) else {
            let names: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
            let help = if name == "env" {
                "`env(\"NAME\")` is for settings blocks; conditions read the call, not the environment".to_string()
            } else {
                suggestion(name, &names, "functions are")
            };
            self.push(
                Diagnostic::new(Code::UnknownFunction, format!("unknown function `{name}`"))
                    .at(func.span)
                    .help(help),
            );
            return Ty::Unknown;
        };
        if args.len() != *arity {
            self.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!(
                        "`{name}` takes {arity} argument{}, not {}",
                        if *arity == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .at(span)
                .help(function_help(name)),
            );
            return Ty::Unknown;
        }
        match name {
            "count" => {
                match &args[0].kind {
                    ExprKind::Literal(Literal::Str(p)) => {
                        self.pattern(p, args[0].span);
                    }
                    _ => self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            "`count` needs a tool pattern in quotes first",
                        )
                        .at(args[0].span)
                        .help(function_help(name)),
                    ),
                }
                if !matches!(args[1].kind, ExprKind::Literal(Literal::Duration(_))) {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            "`count` needs a duration window second",
                        )
                        .at(args[1].span)
                        .help(function_help(name)),
                    );
                }
                Ty::Num
            }
            "spent" => {
                let ok = matches!(&args[0].kind, ExprKind::Path(p) if p.len() == 1 && BudgetWindow::from_word(&p[0]).is_some());
                if !ok {
                    self.push(
                        Diagnostic::new(Code::TypeMismatch, "`spent` takes a budget window")
                            .at(args[0].span)
                            .help(function_help(name)),
                    );
                }
                Ty::Num
            }
            _ => {
                let ty = self.expr(&args[0]);
                let fine = match name {
                    "len" => matches!(ty, Ty::Unknown | Ty::Str | Ty::List),
                    _ => matches!(ty, Ty::Unknown | Ty::Str),
                };
                if !fine {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("`{name}` cannot take {}", ty.name()),
                        )
                        .at(args[0].span)
                        .help(function_help(name)),
                    );
                }
                if name == "len" { Ty::Num } else { Ty::Str }
            }
        }
    }

    fn path(&mut self, segments: &[String], span: Span) -> Ty {
        let root = segments[0].as_str();
        let field = segments.get(1).map(String::as_str);
        let known: Option<&[(&str, Ty)]> = match root {
            "principal" => Some(&[
                ("id", Ty::Str),
                ("role", Ty::Str),
                ("tenant", Ty::Str),
                ("mfa", Ty::Bool),
                ("groups", Ty::List),
            ]),
            "agent" | "tool" => Some(&[("id", Ty::Str)]),
            "session" => Some(&[("id", Ty::Str), ("calls", Ty::Num), ("cost", Ty::Num)]),
            "time" => Some(&[("hour", Ty::Num), ("weekday", Ty::Str), ("date", Ty::Str)]),
            _ => None,
        };
        if let Some(fields) = known {
            let Some(field) = field else {
                return Ty::Unknown;
            };
            return match fields.iter().find(|(f, _)| *f == field) {
                Some((_, ty)) if segments.len() == 2 => *ty,
                Some(_) => Ty::Unknown,
                None => {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    self.push(
                        Diagnostic::new(
                            Code::UnknownKey,
                            format!("`{root}` has no field `{field}`"),
                        )
                        .at(span)
                        .suggest(field, &names, &format!("`{root}` has")),
                    );
                    Ty::Unknown
                }
            };
        }
        if root != "args"
            && root.len() >= 3
            && !self.selectors.iter().any(|s| s == root)
            && let Some(sel) = did_you_mean(
                root,
                self.selectors
                    .iter()
                    .map(String::as_str)
                    .filter(|s| s.len() >= 3),
            )
        {
            self.push(
                Diagnostic::new(
                    Code::UnknownSelector,
                    format!("`{root}` is not a selector, so it reads the call's argument `{root}`"),
                )
                .at(span)
                .help(format!("did you mean the selector `{sel}`?")),
            );
        }
        Ty::Unknown
    }
}

/// Validates a regex the way the engine will compile it (the `regex` crate's syntax, Unicode
/// on, the same size limit), without building the matching engines `check` does not need.
fn validate_regex(re: &str) -> Result<(), String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(re)
        .map_err(|e| {
            let detail = e.to_string();
            detail
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .trim_start_matches("error:")
                .trim()
                .to_string()
        })?;
    // Building the NFA is most of the cost of validating; skip it when a generous upper bound
    // of its size is already well inside the limit.
    if nfa_bytes_upper_bound(&hir) <= REGEX_SIZE_LIMIT / 2 {
        return Ok(());
    }
    regex_automata::nfa::thompson::Compiler::new()
        .configure(
            regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)),
        )
        .build_from_hir(&hir)
        .map(drop)
        .map_err(|_| format!("it compiles to more than {} KiB", REGEX_SIZE_LIMIT >> 10))
}

/// An over-estimate of the Thompson NFA's heap size: a Unicode range may split into 8 UTF-8
/// sequences of up to 4 byte ranges, and every state is counted at 32 bytes.
fn nfa_bytes_upper_bound(hir: &regex_syntax::hir::Hir) -> usize {
    use regex_syntax::hir::{Class, HirKind};
    const STATE: usize = 32;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => STATE,
        HirKind::Literal(lit) => lit.0.len().saturating_add(1).saturating_mul(STATE),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .len()
            .saturating_mul(32 * STATE)
            .saturating_add(STATE),
        HirKind::Class(Class::Bytes(c)) => c.ranges().len().saturating_add(1).saturating_mul(STATE),
        HirKind::Repetition(rep) => {
            let copies = rep.max.unwrap_or(rep.min).saturating_add(1);
            nfa_bytes_upper_bound(&rep.sub)
                .saturating_add(STATE)
                .saturating_mul(copies as usize)
        }
        HirKind::Capture(cap) => nfa_bytes_upper_bound(&cap.sub).saturating_add(2 * STATE),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs
            .iter()
            .map(nfa_bytes_upper_bound)
            .fold(STATE, usize::saturating_add),
    }
}

fn function_help(name: &str) -> &'static str {
    match name {
        "count" => {
            "`count(\"tool/pattern\", 1h)` counts this agent's permitted calls in the window"
        }
        "spent" => {
            "`spent(daily)` is the budget spent so far; windows are hourly, daily, monthly, session"
        }
        "len" => "`len(x)` is the length of a string or a list",
        "domain" => "`domain(x)` is the part after `@` of an email, or the host of a URL",
        "host" => "`host(url)` is the host of a URL",
        _ => "`lower(x)` and `upper(x)` change the case of a string",
    }
}

/// An import name must stay inside the registry: relative, `/`-separated, no `.` or `..`.
pub(crate) fn registry_relative(name: &str) -> Result<(), &'static str> {
    if name.starts_with('/') || name.contains('\\') {
        return Err("it must be relative to the registry");
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("its segments must be names, not empty, `.` or `..`");
    }
    if name.split('/').count() < 2 {
        return Err("it needs a registry and a name");
    }
    Ok(())
}

pub(crate) fn is_exact_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

/// Static types, as far as the checker can know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Unknown,
    Str,
    /// Numbers and money: money is a number.
    Num,
    Duration,
    Bool,
    Null,
    List,
}

impl Ty {
    fn of(l: &Literal) -> Ty {
        match l {
            Literal::Str(_) => Ty::Str,
            Literal::Number(_) | Literal::Money(_) => Ty::Num,
            Literal::Duration(_) => Ty::Duration,
            Literal::Size(_) => Ty::Num,
            Literal::Bool(_) => Ty::Bool,
            Literal::Null => Ty::Null,
        }
    }

    fn known(self) -> bool {
        self != Ty::Unknown
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Unknown => "unknown",
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Duration => "a duration",
            Ty::Bool => "a boolean",
            Ty::Null => "null",
            Ty::List => "a list",
        }
    }
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Str => "a string".into(),
        Kind::Enum(words) => format!("one of: {}", words.join(", ")),
        Kind::EnumList(words) => format!("one of, or a list of: {}", words.join(", ")),
        Kind::Duration => "a duration such as `30s` or `24h`".into(),
        Kind::PosInt => "a whole number greater than 0".into(),
        Kind::Port => "a port number (1-65535)".into(),
        Kind::Bool => "`true` or `false`".into(),
        Kind::Money => "a money amount such as `$500`".into(),
        Kind::Fraction => "a fraction between 0 and 1, such as `0.8`".into(),
        Kind::Hosts => "a list of hosts, such as `[\"api.stripe.com\", \"*.example.com\"]`".into(),
        Kind::Patterns => "a list of tool patterns, such as `[\"stripe/*\"]`".into(),
        Kind::StrOrList => "a string or a list of strings".into(),
        Kind::Url(schemes) => format!("a URL with scheme {}", schemes.join(", ")),
        Kind::Expr => "an expression over the call, such as `statement` or `lower(email)`".into(),
    }
}

/// Checks a settings value against its kind; `Err` says what is wrong.
fn check_kind(kind: Kind, v: &Value) -> Result<(), String> {
    use Literal as L;
    if matches!(v, Value::Env(_)) {
        return Ok(());
    }
    let str_of = |v: &Value| match v {
        Value::Lit(L::Str(s)) => Some(s.clone()),
        _ => None,
    };
    match kind {
        Kind::Str => str_of(v)
            .map(|_| ())
            .ok_or_else(|| "must be a string".into()),
        Kind::Enum(words) => match str_of(v) {
            Some(s) if words.contains(&s.as_str()) => Ok(()),
            Some(s) => Err(match did_you_mean(&s, words.iter().copied()) {
                Some(c) => format!("cannot be `{s}`; did you mean `{c}`?"),
                None => format!("cannot be `{s}`"),
            }),
            None => Err("must be a word such as `deny`".into()),
        },
        Kind::EnumList(words) => match v {
            Value::List(items) => items
                .iter()
                .try_for_each(|i| check_kind(Kind::Enum(words), &i.value)),
            other => check_kind(Kind::Enum(words), other),
        },
        Kind::Duration => match v {
            Value::Lit(L::Duration(d)) if d.millis().is_some() => Ok(()),
            Value::Lit(L::Duration(_)) => Err("is too long a duration".into()),
            _ => Err("must be a duration".into()),
        },
        Kind::PosInt => match v {
            Value::Lit(L::Number(n)) if n.is_integer() && n.is_sign_positive() && !n.is_zero() => {
                Ok(())
            }
            _ => Err("must be a whole number greater than 0".into()),
        },
        Kind::Port => match v {
            Value::Lit(L::Number(n))
                if n.is_integer()
                    && *n >= rust_decimal::Decimal::ONE
                    && *n <= rust_decimal::Decimal::from(65_535) =>
            {
                Ok(())
            }
            _ => Err("must be a port number between 1 and 65535".into()),
        },
        Kind::Bool => match v {
            Value::Lit(L::Bool(_)) => Ok(()),
            _ => Err("must be `true` or `false`".into()),
        },
        Kind::Money => match v {
            Value::Lit(L::Money(m)) if m.is_sign_positive() => Ok(()),
            Value::Lit(L::Number(_)) => Err("must be money, written with `$`".into()),
            _ => Err("must be a money amount".into()),
        },
        Kind::Fraction => match v {
            Value::Lit(L::Number(n))
                if *n > rust_decimal::Decimal::ZERO && *n <= rust_decimal::Decimal::ONE =>
            {
                Ok(())
            }
            Value::Lit(L::Number(n)) => Err(format!("must be between 0 and 1, not {n}")),
            _ => Err("must be a fraction between 0 and 1".into()),
        },
        Kind::Hosts => match v {
            Value::List(items) => items.iter().try_for_each(|i| match str_of(&i.value) {
                Some(h) if valid_host_pattern(&h) => Ok(()),
                Some(h) => Err(format!(
                    "has `{h}`, which is not a host or `*.domain` pattern"
                )),
                None => Err("must list hosts as strings".into()),
            }),
            _ => Err("must be a list of hosts".into()),
        },
        Kind::Patterns => match v {
            Value::List(items) if items.iter().all(|i| str_of(&i.value).is_some()) => Ok(()),
            Value::Lit(L::Str(_)) => Err("must be a list: write `[\"stripe/*\"]`".into()),
            _ => Err("must be a list of tool patterns in quotes".into()),
        },
        Kind::StrOrList => match v {
            Value::Lit(L::Str(_)) => Ok(()),
            Value::List(items) if items.iter().all(|i| str_of(&i.value).is_some()) => Ok(()),
            _ => Err("must be a string or a list of strings".into()),
        },
        Kind::Url(schemes) => match str_of(v) {
            Some(u) => match u.split_once("://") {
                Some((scheme, rest)) if schemes.contains(&scheme) && !rest.is_empty() => Ok(()),
                _ => Err(format!(
                    "`{u}` must start with {}",
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            None => Err("must be a URL in quotes".into()),
        },
        Kind::Expr => match v {
            Value::Lit(L::Str(_)) | Value::Expr(_) => Ok(()),
            _ => Err("must be an expression over the call".into()),
        },
    }
}

fn valid_host_pattern(h: &str) -> bool {
    let host = h.strip_prefix("*.").unwrap_or(h);
    !host.is_empty()
        && !host.contains('*')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_validated_as_the_engine_compiles_them() {
        assert_eq!(validate_regex("(?i)\\b(drop|delete)\\b"), Ok(()));
        assert_eq!(validate_regex("(unclosed"), Err("unclosed group".into()));
        assert!(
            validate_regex("(?=look-ahead)").is_err(),
            "RE2 syntax has no look-around"
        );
        let huge = validate_regex("\\w{1000}{1000}").unwrap_err();
        assert!(huge.contains("KiB"), "{huge}");
    }

    #[test]
    fn url_passwords_are_secrets_and_plain_urls_are_not() {
        assert!(url_with_password("postgres://app:hunter2@db/x"));
        assert!(!url_with_password("postgres://app@db/x"));
        assert!(!url_with_password("https://example.com/a:b@c"));
        assert!(!url_with_password("no url"));
    }

    #[test]
    fn exact_versions_only() {
        for ok in ["1.0.0", "10.2.33", "1.0.0-rc.1"] {
            assert!(is_exact_semver(ok), "{ok}");
        }
        for bad in ["latest", "1.0", "^1.0.0", "01.0.0", "1.x.0", ""] {
            assert!(!is_exact_semver(bad), "{bad}");
        }
    }
}
