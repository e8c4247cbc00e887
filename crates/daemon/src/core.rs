//! The one decision path (SPEC §5): every adapter — agent socket, HTTP, `govern` — hands its
//! call here. The engine decides (steps 1–7), approvals settle a defer (step 8), the record is
//! made durable through the store's group commit before the answer leaves (step 9), and alerts
//! and metrics follow off the hot path (step 10).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use audit::record::{self, Canonical, Dpr};
use engine::car::{ActionRequest, CanonicalJson};
use engine::clock::Clock;
use engine::compile::Verdict;
use engine::decision::{Decision, Event, Outcome as StepOutcome, ReasonCode};
use engine::engine::{Engine, EngineConfig};
use rust_decimal::Decimal;
use serde::Serialize;
use store::Store;

use crate::approvals;
use crate::credentials::Broker;
use crate::metrics::Metrics;
use crate::notify::{Notice, Notices};
use crate::policy::{AlertSpec, LoadedPolicy, version_hex};
use crate::reports::{PermittedCall, Reports};
use crate::rpc::{RpcError, RpcResult};

/// SPEC §5 step 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Initializing = 1,
    Ready = 2,
    Draining = 3,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "STARTING",
            Phase::Initializing => "INITIALIZING",
            Phase::Ready => "READY",
            Phase::Draining => "DRAINING",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Initializing,
            2 => Phase::Ready,
            _ => Phase::Draining,
        }
    }
}

/// How long a caller should wait before retrying while the daemon is not ready.
const NOT_READY_RETRY_MS: u64 = 1_000;

/// The policy in force and what comes with it. Swapped whole on apply: a decision in flight
/// finishes on the policy it started with.
#[derive(Debug)]
pub struct Active {
    pub engine: Engine,
    /// 64 hex digits (the store's and the audit log's form).
    pub version: String,
    pub alerts: HashMap<String, Vec<AlertSpec>>,
    pub audit_mode: bool,
    pub file_name: String,
    pub applied_ms: i64,
    /// The `runtime` block this policy was loaded with (its keys take effect at start).
    pub runtime: crate::policy::Runtime,
}

/// What the daemon is configured with besides the policy.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub stack: PathBuf,
    pub engine: EngineConfig,
    pub dev: bool,
    pub cold_start_deny_window_ms: u64,
    /// The providers (secrets, notifiers) set up at start: a swap cannot change them.
    pub providers: Vec<crate::policy::ProviderSpec>,
}

#[derive(Debug)]
pub struct Core {
    pub config: CoreConfig,
    active: RwLock<Arc<Active>>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub broker: Broker,
    pub metrics: Metrics,
    pub notices: Notices,
    pub reports: Reports,
    phase: AtomicU8,
    stop: tokio::sync::watch::Sender<bool>,
    pub started: Instant,
    pub started_ms: i64,
    ids: Ids,
}

/// The answer to `decide` (SPEC §8).
#[derive(Debug, Serialize)]
pub struct Answer {
    pub effect: &'static str,
    pub reason_code: &'static str,
    pub reason: String,
    pub rule_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defer_token: Option<String>,
    /// Returned to the caller only: never recorded, never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<crate::credentials::IssuedCredential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub dpr_id: String,
    pub latency_us: u64,
    /// Present in audit mode: the call may run whatever `effect` says would have happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Under `faramesh dev`: the agent's SPIFFE-style identity, as the dev identity stub
    /// attests it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// The outcome being built: the engine's, then settled by approvals, the broker and the log.
#[derive(Debug)]
pub struct Outcome {
    pub effect: Verdict,
    pub code: ReasonCode,
    pub reason: String,
    pub rule_ref: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub defer: Option<record::Defer>,
    pub approval: Option<record::Approval>,
    pub credential: Option<crate::credentials::IssuedCredential>,
}

impl Outcome {
    pub fn deny(code: ReasonCode, reason: impl Into<String>) -> Outcome {
        Outcome {
            effect: Verdict::Deny,
            code,
            reason: reason.into(),
            rule_ref: None,
            retry_after_ms: None,
            defer: None,
            approval: None,
            credential: None,
        }
    }

    pub fn of(d: &Decision) -> Outcome {
        Outcome {
            effect: d.effect,
            code: d.reason_code,
            reason: d.reason.to_string(),
            rule_ref: d.rule_ref.as_deref().map(str::to_string),
            retry_after_ms: d.retry_after_ms,
            defer: None,
            approval: None,
            credential: None,
        }
    }

    /// Turns the outcome into a deny, keeping the rule that decided for the record.
    pub fn into_deny(mut self, code: ReasonCode, reason: impl Into<String>) -> Outcome {
        self.effect = Verdict::Deny;
        self.code = code;
        self.reason = reason.into();
        self.credential = None;
        self
    }
}

pub fn effect_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Permit => "permit",
        Verdict::Deny => "deny",
        Verdict::Defer => "defer",
    }
}

/// What the record of a call holds about the call itself.
#[derive(Debug, Default)]
struct CallFacts {
    agent: Option<String>,
    session: Option<String>,
    tool: Option<String>,
    principal: Option<Canonical>,
    adapter: Option<String>,
}

impl CallFacts {
    fn of(req: &ActionRequest) -> CallFacts {
        CallFacts {
            agent: Some(req.agent.clone()),
            session: req.session.clone(),
            tool: Some(req.tool.clone()),
            principal: req
                .principal
                .as_ref()
                .filter(|p| !p.is_null())
                .map(|p| Canonical::from_jcs(CanonicalJson::from_value(p).into_string())),
            adapter: req.adapter.clone(),
        }
    }
}

impl Core {
    pub fn new(
        config: CoreConfig,
        policy: &LoadedPolicy,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        broker: Broker,
        notices: Notices,
    ) -> Result<Core, String> {
        let now = clock.now_ms();
        let active = Arc::new(active(policy, &config, &store, &clock, now));
        let ids = Ids::new().map_err(|e| e.to_string())?;
        Ok(Core {
            config,
            active: RwLock::new(active),
            store,
            clock,
            broker,
            metrics: Metrics::new(),
            notices,
            reports: Reports::new(ids.boot),
            phase: AtomicU8::new(Phase::Initializing as u8),
            stop: tokio::sync::watch::channel(false).0,
            started: Instant::now(),
            started_ms: now,
            ids,
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// Asks the daemon to drain and stop.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a new policy in force for every decision that starts from now on.
    pub fn swap(&self, policy: &LoadedPolicy) {
        let now = self.clock.now_ms();
        let next = Arc::new(active(policy, &self.config, &self.store, &self.clock, now));
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// `report {dpr_id, outcome, cost?}` (SPEC §8): takes the report of a recent permit, once,
    /// and when it gives a cost, reconciles the agent's budgets with it (SPEC §3.7).
    pub fn report(&self, dpr_id: &str, outcome: &str, cost: Option<Decimal>) -> RpcResult {
        if outcome != "ok" && outcome != "error" {
            return Err(RpcError::params("outcome must be \"ok\" or \"error\""));
        }
        if cost.is_some_and(|c| c < Decimal::ZERO) {
            return Err(RpcError::params("cost must not be negative"));
        }
        let call = self.reports.record(dpr_id, outcome, cost)?;
        if let Some(actual) = cost {
            self.active().engine.reconcile_cost(
                &call.agent,
                call.session.as_deref(),
                call.decided_ms,
                call.reserved,
                actual,
            );
        }
        Ok(serde_json::json!({"dpr_id": dpr_id, "outcome": outcome}))
    }

    pub fn new_id(&self, prefix: &str) -> String {
        self.ids.next(prefix, self.clock.now_ms())
    }

    /// Decides one call, records it durably and answers. Never fails: every error is a deny,
    /// recorded when the log can take it.
    pub async fn decide(&self, request: Result<ActionRequest, String>) -> Answer {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let active = self.active();
        let dpr_id = self.new_id("dpr");
        let (facts, outcome, decision) = match request {
            Err(msg) => (
                CallFacts::default(),
                Outcome::deny(ReasonCode::MalformedRequest, msg),
                None,
            ),
            Ok(req) => self.evaluate(&active, req, &dpr_id, now).await,
        };
        self.finish(&active, facts, outcome, decision, dpr_id, now, started)
            .await
    }

    async fn evaluate(
        &self,
        active: &Active,
        mut req: ActionRequest,
        dpr_id: &str,
        now: i64,
    ) -> (CallFacts, Outcome, Option<Decision>) {
        // Recorded, approved and given credentials under the id the policy decides on (NFKC):
        // two spellings of one tool are one tool in the log too.
        let canonical = match active.engine.canonical_tool(&req.tool) {
            Some(Cow::Owned(tool)) => Some(tool),
            _ => None,
        };
        if let Some(tool) = canonical {
            req.tool = tool;
        }
        let facts = CallFacts::of(&req);
        let key = CallKey {
            agent: &req.agent,
            tool: &req.tool,
            dpr_id,
        };
        if let Some(wait) = self.not_ready(now) {
            let mut o = Outcome::deny(
                ReasonCode::DaemonNotReady,
                format!("the daemon is {}", self.phase().as_str()),
            );
            o.retry_after_ms = Some(wait);
            return (facts, o, None);
        }
        let decision = active.engine.decide(&req);
        // An approved retry is decided again, as approved.
        let retry = req.defer_token.as_deref().map(|t| (t, &req));
        let (mut outcome, decision) = if decision.effect == Verdict::Defer {
            approvals::settle(self, &active.engine, decision, &key, retry, now).await
        } else {
            (Outcome::of(&decision), decision)
        };
        if outcome.effect == Verdict::Permit
            && let Some(binding) = &decision.credential
        {
            outcome = self.broker.mint(outcome, binding, &key, now);
        }
        (facts, outcome, Some(decision))
    }

    /// `Some(retry_after_ms)` while decisions must be refused.
    fn not_ready(&self, now: i64) -> Option<u64> {
        if self.phase() != Phase::Ready {
            return Some(NOT_READY_RETRY_MS);
        }
        let window = i64::try_from(self.config.cold_start_deny_window_ms).unwrap_or(i64::MAX);
        let left = self.started_ms.saturating_add(window).saturating_sub(now);
        (left > 0).then(|| u64::try_from(left).unwrap_or(NOT_READY_RETRY_MS))
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        active: &Active,
        facts: CallFacts,
        mut outcome: Outcome,
        decision: Option<Decision>,
        dpr_id: String,
        now: i64,
        started: Instant,
    ) -> Answer {
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let dpr = self.record(
            active,
            &facts,
            &outcome,
            decision.as_ref(),
            &dpr_id,
            now,
            latency_us,
        );
        if let Err(e) = self.store.append(dpr).await {
            tracing::error!(dpr_id, error = %e, "the decision could not be recorded: denied");
            outcome = outcome.into_deny(
                ReasonCode::AuditUnavailable,
                "the audit log cannot record this decision, so it is denied",
            );
        }
        if outcome.effect == Verdict::Permit
            && let Some(agent) = &facts.agent
        {
            let call = PermittedCall {
                agent: agent.clone(),
                session: facts.session.clone(),
                decided_ms: now,
                reserved: decision.as_ref().map_or(Decimal::ZERO, |d| d.cost),
            };
            self.reports.permitted(&dpr_id, call);
        }
        let elapsed = started.elapsed();
        self.metrics
            .decided(effect_str(outcome.effect), outcome.code.as_str(), elapsed);
        self.raise_alerts(active, &facts, &outcome, decision.as_ref(), &dpr_id, now);
        let audit = active.audit_mode && decision.is_some();
        Answer {
            effect: if audit && outcome.code != ReasonCode::AuditUnavailable {
                "permit"
            } else {
                effect_str(outcome.effect)
            },
            reason_code: outcome.code.as_str(),
            defer_token: outcome.defer.as_ref().map(|d| d.token.clone()),
            reason: outcome.reason,
            rule_ref: outcome.rule_ref,
            credential: outcome.credential,
            retry_after_ms: outcome.retry_after_ms,
            dpr_id,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            mode: audit.then_some("audit"),
            identity: self
                .config
                .dev
                .then(|| facts.agent.as_deref().map(broker::spiffe_id))
                .flatten(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        active: &Active,
        facts: &CallFacts,
        outcome: &Outcome,
        decision: Option<&Decision>,
        id: &str,
        now: i64,
        latency_us: u64,
    ) -> Dpr {
        let mut d = Dpr::decision(id.to_string(), now, active.version.clone());
        d.dev = self.config.dev;
        d.agent = facts.agent.clone();
        d.session = facts.session.clone();
        d.tool = facts.tool.clone();
        d.principal = facts.principal.clone();
        d.adapter = facts.adapter.clone();
        d.effect = Some(effect_str(outcome.effect).to_string());
        d.mode = Some(
            if active.audit_mode {
                "audit"
            } else {
                "enforce"
            }
            .to_string(),
        );
        d.reason_code = Some(outcome.code.as_str().to_string());
        d.reason = Some(outcome.reason.clone());
        d.rule_ref = outcome.rule_ref.clone();
        d.defer = outcome.defer.clone();
        d.approval = outcome.approval.clone();
        d.credential = outcome.credential.as_ref().map(|c| c.record());
        d.latency_us = Some(latency_us);
        if let Some(dec) = decision {
            d.policy_version = version_hex(&dec.policy_version).to_string();
            if !dec.args_digest.is_empty() {
                d.args = Some(Canonical::from_jcs(dec.recorded_args.as_str()));
                d.args_digest = Some(dec.args_digest.clone());
            }
            d.selectors = selectors(dec);
            d.events = events(dec);
            d.trace = trace(dec);
        }
        d
    }

    fn raise_alerts(
        &self,
        active: &Active,
        facts: &CallFacts,
        outcome: &Outcome,
        decision: Option<&Decision>,
        dpr_id: &str,
        now: i64,
    ) {
        let Some(agent) = &facts.agent else { return };
        let mut events = vec![effect_str(outcome.effect)];
        for e in decision.map(|d| d.events.as_slice()).unwrap_or_default() {
            events.push(match e {
                Event::BudgetWarning { .. } => "budget_warning",
                Event::BudgetExceeded { .. } => "budget_exceeded",
                Event::RateExceeded { .. } => "rate_exceeded",
            });
        }
        let template = Notice {
            event: String::new(),
            agent: agent.clone(),
            tool: facts.tool.clone().unwrap_or_default(),
            effect: effect_str(outcome.effect).to_string(),
            reason_code: outcome.code.as_str().to_string(),
            reason: outcome.reason.clone(),
            rule_ref: outcome.rule_ref.clone(),
            dpr_id: dpr_id.to_string(),
            defer_token: outcome.defer.as_ref().map(|d| d.token.clone()),
            time_ms: now,
            target: String::new(),
            dev: self.config.dev,
        };
        self.alert(active, &events, &template);
    }

    /// One alert per `alert` block of the agent whose `on` names one of `events`.
    pub fn alert(&self, active: &Active, events: &[&str], template: &Notice) {
        let Some(specs) = active.alerts.get(&template.agent) else {
            return;
        };
        for spec in specs {
            for e in events.iter().filter(|e| spec.on.iter().any(|o| o == *e)) {
                let mut n = template.clone();
                n.event = (*e).to_string();
                n.target = spec.notify.clone();
                self.notices.alert(n);
            }
        }
    }
}

/// Agent, tool and whatever else approvals and the broker key on.
#[derive(Debug, Clone, Copy)]
pub struct CallKey<'a> {
    pub agent: &'a str,
    pub tool: &'a str,
    pub dpr_id: &'a str,
}

fn selectors(d: &Decision) -> Option<Canonical> {
    if d.selectors.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = d.selectors.iter().cloned().collect();
    Canonical::of(&serde_json::Value::Object(map)).ok()
}

/// `[{"line":N,"outcome":"…"}]`, written as RFC 8785 text directly (keys sorted, integers,
/// fixed words). Error details stay out: the record's reason carries what may be said.
fn trace(d: &Decision) -> Option<Canonical> {
    if d.trace.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(40 * d.trace.len());
    out.push('[');
    for (i, step) in d.trace.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let outcome = match step.outcome {
            StepOutcome::Matched => "matched",
            StepOutcome::ClauseNotMet(clause) => clause_word(clause),
            StepOutcome::ConditionFalse => "condition_false",
            StepOutcome::ConditionUnknown => "condition_unknown",
            StepOutcome::Error(_) => "error",
        };
        out.push_str(&format!(
            "{{\"line\":{},\"outcome\":\"{outcome}\"}}",
            step.line
        ));
    }
    out.push(']');
    Some(Canonical::from_jcs(out))
}

fn clause_word(clause: &str) -> &'static str {
    match clause {
        "method" => "method_not_met",
        "host" => "host_not_met",
        _ => "path_not_met",
    }
}

fn events(d: &Decision) -> Option<Canonical> {
    if d.events.is_empty() {
        return None;
    }
    serde_json::to_value(&d.events)
        .ok()
        .and_then(|v| Canonical::of(&v).ok())
}

fn active(
    policy: &LoadedPolicy,
    config: &CoreConfig,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    now: i64,
) -> Active {
    let engine = Engine::new(
        Arc::clone(&policy.compiled),
        store.state(),
        Arc::clone(clock),
        config.engine.clone(),
    );
    Active {
        engine,
        version: policy.version().to_string(),
        alerts: policy.alerts.clone(),
        audit_mode: policy.runtime.audit_mode,
        file_name: policy.file_name.clone(),
        applied_ms: now,
        runtime: policy.runtime.clone(),
    }
}

/// Record ids: time-ordered, unique within a boot by a counter, across boots by a random
/// boot id.
#[derive(Debug)]
struct Ids {
    boot: u32,
    next: AtomicU64,
}

impl Ids {
    fn new() -> std::io::Result<Ids> {
        Ok(Ids {
            boot: u32::from_le_bytes(crate::stack::random::<4>()?),
            next: AtomicU64::new(0),
        })
    }

    fn next(&self, prefix: &str, now_ms: i64) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{now_ms:012x}{:08x}{n:010x}", self.boot)
    }
}
