//! The policy AST: what the user wrote, in a canonical order.
//!
//! The same AST is read from FPL, YAML and JSON (`serde` derives the YAML/JSON shape; see
//! `docs/fpl.md`). Spans and comments live in [`Meta`] and [`Spanned`], which never take part in
//! equality or serialization.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::span::{Meta, Span};

mod serde_impls;

/// A value with the place it was written. Equality and serde look at the value only.
#[derive(Debug, Clone, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

/// One policy file (or a whole stack once imports are merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(skip)]
    pub meta: Meta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<Import>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Block>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_impls::named_blocks"
    )]
    pub providers: Vec<NamedBlock>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_impls::named_blocks"
    )]
    pub identities: Vec<NamedBlock>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_impls::named_blocks"
    )]
    pub selectors: Vec<NamedBlock>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_impls::trust_keys"
    )]
    pub trust: Vec<TrustKey>,
    /// The `default` of the flat rules' agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Spanned<Effect>>,
    #[serde(skip)]
    pub default_meta: Meta,
    /// Rules written outside any agent: they form the agent named `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<Agent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    #[serde(skip)]
    pub meta: Meta,
    /// `registry/kind/name@version` as written.
    pub path: Spanned<String>,
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<Spanned<String>>,
}

/// `trust { key "<registry>" ed25519:<base64> }`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustKey {
    pub meta: Meta,
    pub registry: Spanned<String>,
    pub key: Spanned<String>,
}

/// A `{ key = value … }` block whose keys the checker validates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Block {
    #[serde(skip)]
    pub meta: Meta,
    #[serde(with = "serde_impls::entries")]
    pub entries: Vec<Entry>,
}

/// `provider "name" { … }`, `credential stripe { … }` and the like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedBlock {
    pub meta: Meta,
    pub name: Spanned<String>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub meta: Meta,
    pub key: Spanned<String>,
    pub value: Spanned<Value>,
}

impl Block {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.value == key)
    }
}

/// A value in a block. Bare words are strings: `on_exceed deny` and `on_exceed "deny"` are the
/// same value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Lit(Literal),
    List(Vec<Spanned<Value>>),
    /// `env("NAME")`, resolved at check/apply.
    Env(String),
    /// Anything else an expression can say, e.g. a selector's `key = lower(email)`.
    Expr(Expr),
}

impl Default for Value {
    fn default() -> Self {
        Value::Lit(Literal::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Str(String),
    Number(Decimal),
    Money(Decimal),
    Duration(Quantity<DurationUnit>),
    Size(Quantity<SizeUnit>),
    Bool(bool),
    Null,
}

/// An amount with the unit it was written in (`30s` stays `30s`, not `30000ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity<U> {
    pub amount: u64,
    pub unit: U,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    Millis,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl DurationUnit {
    pub const ALL: [(DurationUnit, &'static str, u64); 6] = [
        (DurationUnit::Millis, "ms", 1),
        (DurationUnit::Seconds, "s", 1_000),
        (DurationUnit::Minutes, "m", 60_000),
        (DurationUnit::Hours, "h", 3_600_000),
        (DurationUnit::Days, "d", 86_400_000),
        (DurationUnit::Weeks, "w", 604_800_000),
    ];

    pub fn suffix(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or("ms", |(_, s, _)| s)
    }

    pub fn millis(self) -> u64 {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or(1, |(.., m)| *m)
    }
}

impl Quantity<DurationUnit> {
    /// `None` when the duration does not fit in 64-bit milliseconds.
    pub fn millis(&self) -> Option<u64> {
        self.amount.checked_mul(self.unit.millis())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnit {
    Bytes,
    Kb,
    Mb,
    Gb,
    Tb,
}

impl SizeUnit {
    /// Sizes are binary: `1kb` is 1024 bytes.
    pub const ALL: [(SizeUnit, &'static str, u64); 5] = [
        (SizeUnit::Bytes, "b", 1),
        (SizeUnit::Kb, "kb", 1 << 10),
        (SizeUnit::Mb, "mb", 1 << 20),
        (SizeUnit::Gb, "gb", 1 << 30),
        (SizeUnit::Tb, "tb", 1 << 40),
    ];

    pub fn suffix(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or("b", |(_, s, _)| s)
    }

    pub fn bytes(self) -> u64 {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or(1, |(.., b)| *b)
    }
}

impl Quantity<SizeUnit> {
    pub fn bytes(&self) -> Option<u64> {
        self.amount.checked_mul(self.unit.bytes())
    }
}

/// Whether `id` may name an agent: no `|`, which separates the parts of the keys that rate limits
/// and budgets are stored under (so `a|0` could meet agent `a`'s cells), and no control
/// characters.
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.chars().any(|c| c == '|' || c.is_control())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    #[serde(skip)]
    pub meta: Meta,
    pub id: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Spanned<Effect>>,
    /// Comments on the `default` line.
    #[serde(skip)]
    pub default_meta: Meta,
    /// Comments on the `rules { … }` block itself.
    #[serde(skip)]
    pub rules_meta: Meta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<Redact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs: Vec<Cost>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Block>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_impls::named_blocks"
    )]
    pub credentials: Vec<NamedBlock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Block>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    #[serde(rename = "permit")]
    Permit,
    #[serde(rename = "deny")]
    #[default]
    Deny,
    #[serde(rename = "defer")]
    Defer,
    /// `deny!`: tried before every other rule; nothing overrides it.
    #[serde(rename = "deny!")]
    DenyMandatory,
}

impl Effect {
    /// Every spelling FPL accepts, with the effect it means.
    pub const SPELLINGS: [(&'static str, Effect); 6] = [
        ("permit", Effect::Permit),
        ("allow", Effect::Permit),
        ("deny", Effect::Deny),
        ("block", Effect::Deny),
        ("reject", Effect::Deny),
        ("defer", Effect::Defer),
    ];

    pub fn from_word(word: &str) -> Option<Effect> {
        Self::SPELLINGS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, e)| *e)
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Deny => "deny",
            Effect::Defer => "defer",
            Effect::DenyMandatory => "deny!",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(skip)]
    pub meta: Meta,
    pub effect: Spanned<Effect>,
    pub tool: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(
        rename = "if",
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_impls::opt_expr"
    )]
    pub condition: Option<Expr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Spanned<String>>,
}

impl Rule {
    /// A rule with no condition and no clause fires on every call its pattern matches.
    pub fn is_unconditional(&self) -> bool {
        self.condition.is_none()
            && self.method.is_none()
            && self.host.is_none()
            && self.path.is_none()
    }
}

/// `rate_limit "PATTERN": N per UNIT [per session]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(skip)]
    pub meta: Meta,
    pub tool: Spanned<String>,
    pub limit: Spanned<u64>,
    pub per: Spanned<RateUnit>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_session: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    Second,
    #[default]
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    pub const ALL: [(RateUnit, &'static str, u64); 4] = [
        (RateUnit::Second, "second", 1_000),
        (RateUnit::Minute, "minute", 60_000),
        (RateUnit::Hour, "hour", 3_600_000),
        (RateUnit::Day, "day", 86_400_000),
    ];

    pub fn word(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or("minute", |(_, w, _)| w)
    }

    pub fn millis(self) -> u64 {
        Self::ALL
            .iter()
            .find(|(u, ..)| *u == self)
            .map_or(60_000, |(.., m)| *m)
    }
}

/// `redact PATTERN args: ["card_number", "card.holder"]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redact {
    #[serde(skip)]
    pub meta: Meta,
    pub tool: Spanned<String>,
    pub args: Vec<Spanned<String>>,
}

/// `cost PATTERN: EXPR`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    #[serde(skip)]
    pub meta: Meta,
    pub tool: Spanned<String>,
    #[serde(with = "serde_impls::expr")]
    pub amount: Expr,
}

/// `budget daily { max $50000; warn_at 0.8; on_exceed deny }`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budget {
    pub meta: Meta,
    pub window: Spanned<BudgetWindow>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BudgetWindow {
    Hourly,
    #[default]
    Daily,
    Monthly,
    Session,
}

impl BudgetWindow {
    pub const ALL: [(BudgetWindow, &'static str); 4] = [
        (BudgetWindow::Hourly, "hourly"),
        (BudgetWindow::Daily, "daily"),
        (BudgetWindow::Monthly, "monthly"),
        (BudgetWindow::Session, "session"),
    ];

    pub fn word(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(w, _)| *w == self)
            .map_or("daily", |(_, s)| s)
    }

    pub fn from_word(word: &str) -> Option<BudgetWindow> {
        Self::ALL.iter().find(|(_, s)| *s == word).map(|(w, _)| *w)
    }
}

/// A condition or a cost expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Default for Expr {
    fn default() -> Self {
        Expr::new(ExprKind::Literal(Literal::Null), Span::default())
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Expr { kind, span }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// A bare name or dotted path: `amount`, `to.domain`, `principal.role`.
    Path(Vec<String>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        func: Spanned<String>,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Matches,
    Contains,
    StartsWith,
    EndsWith,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Matches => "matches",
            BinOp::Contains => "contains",
            BinOp::StartsWith => "starts_with",
            BinOp::EndsWith => "ends_with",
        }
    }

    /// Binding power: `or` loosest, then `and`, then `not`, then every comparison.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            _ => 4,
        }
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

/// Precedence of prefix `not`.
pub const NOT_PRECEDENCE: u8 = 3;

/// The functions a condition may call, with their arity.
pub const FUNCTIONS: [(&str, usize); 7] = [
    ("len", 1),
    ("lower", 1),
    ("upper", 1),
    ("domain", 1),
    ("host", 1),
    ("count", 2),
    ("spent", 1),
];
