//! What the engine answers: effect, reason code, the deciding rule, what is recorded, and a
//! trace of every rule tried.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::car::CanonicalJson;
use crate::compile::Verdict;

/// SPEC §3.12. Never reuse a code for a different meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    RulePermit,
    RuleDeny,
    RuleDefer,
    DefaultPermit,
    DefaultDeny,
    DefaultDefer,
    RateExceeded,
    BudgetExceeded,
    EgressDenied,
    EvalError,
    KillSwitch,
    DaemonNotReady,
    UnknownAgent,
    MalformedRequest,
    SelectorUnavailable,
    Approved,
    ApprovalRejected,
    ApprovalExpired,
    /// The defer token given does not approve this call (another agent, tool or arguments,
    /// or no such approval).
    ApprovalMismatch,
    /// The approval was already spent on one permitted retry.
    ApprovalConsumed,
    /// The approval could not be created or read (storage failure): fail closed.
    ApprovalUnavailable,
    CredentialUnavailable,
    AuditUnavailable,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::RulePermit => "RULE_PERMIT",
            ReasonCode::RuleDeny => "RULE_DENY",
            ReasonCode::RuleDefer => "RULE_DEFER",
            ReasonCode::DefaultPermit => "DEFAULT_PERMIT",
            ReasonCode::DefaultDeny => "DEFAULT_DENY",
            ReasonCode::DefaultDefer => "DEFAULT_DEFER",
            ReasonCode::RateExceeded => "RATE_EXCEEDED",
            ReasonCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ReasonCode::EgressDenied => "EGRESS_DENIED",
            ReasonCode::EvalError => "EVAL_ERROR",
            ReasonCode::KillSwitch => "KILL_SWITCH",
            ReasonCode::DaemonNotReady => "DAEMON_NOT_READY",
            ReasonCode::UnknownAgent => "UNKNOWN_AGENT",
            ReasonCode::MalformedRequest => "MALFORMED_REQUEST",
            ReasonCode::SelectorUnavailable => "SELECTOR_UNAVAILABLE",
            ReasonCode::Approved => "APPROVED",
            ReasonCode::ApprovalRejected => "APPROVAL_REJECTED",
            ReasonCode::ApprovalExpired => "APPROVAL_EXPIRED",
            ReasonCode::ApprovalMismatch => "APPROVAL_MISMATCH",
            ReasonCode::ApprovalConsumed => "APPROVAL_CONSUMED",
            ReasonCode::ApprovalUnavailable => "APPROVAL_UNAVAILABLE",
            ReasonCode::CredentialUnavailable => "CREDENTIAL_UNAVAILABLE",
            ReasonCode::AuditUnavailable => "AUDIT_UNAVAILABLE",
        }
    }
}

/// Something a decision makes happen besides its effect (alerts act on these).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BudgetWarning {
        window: String,
        spent: Decimal,
        max: Decimal,
    },
    BudgetExceeded {
        window: String,
        spent: Decimal,
        max: Decimal,
    },
    RateExceeded {
        limit: String,
        retry_after_ms: u64,
    },
}

/// Why a rule did or did not decide.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule fired.
    Matched,
    /// The `method`, `host` or `path` clause did not hold (or its field is missing).
    ClauseNotMet(&'static str),
    ConditionFalse,
    /// A field the condition reads is missing: unknown never fires a rule.
    ConditionUnknown,
    /// A type error or an unavailable selector ended the decision here.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStep {
    /// Line of the rule in the policy file.
    pub line: usize,
    /// The rule as written in canonical FPL (shared with the compiled policy).
    pub rule: Arc<str>,
    pub outcome: Outcome,
}

/// A credential the broker must mint for this permitted call (never the value itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialBinding {
    pub name: String,
    pub provider: String,
    pub path: Option<String>,
    pub ttl_ms: u64,
}

/// One decision. The strings that come from the policy (reasons of rules, rule refs, rule texts,
/// the policy version, redacted paths) are shared with the compiled policy, not copied.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub effect: Verdict,
    pub reason_code: ReasonCode,
    pub reason: Arc<str>,
    pub rule_line: Option<usize>,
    /// `governance.fms:LINE`
    pub rule_ref: Option<Arc<str>>,
    /// The RFC 8785 text of the arguments after redaction: what may be written anywhere.
    /// `null` when the request was malformed or its agent unknown.
    pub recorded_args: CanonicalJson,
    /// The argument paths that were redacted, in the order the policy lists them.
    pub redacted: Vec<Arc<str>>,
    /// SHA-256 of the canonical arguments before redaction.
    pub args_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// What a permit reserved in its agent's budgets (its `cost` rule's amount; zero otherwise
    /// and for any other effect). A `report` of the call reconciles it with what it really cost
    /// ([`crate::engine::Engine::reconcile_cost`]).
    #[serde(skip_serializing_if = "Decimal::is_zero")]
    pub cost: Decimal,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialBinding>,
    /// Selector answers the decision used, by selector name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<(String, serde_json::Value)>,
    pub policy_version: Arc<str>,
    pub trace: Vec<TraceStep>,
}
