//! The decision pipeline (SPEC §5 steps 1–7): kill switch, agent, canonical request, session,
//! history, selectors, rules, then rate limits, budgets and egress on a permit.

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::path::PathBuf;
use std::sync::Arc;

use fpl::ast::BudgetWindow;
use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::car::{
    ActionRequest, CanonicalJson, Car, Limits, Marks, RequestRef, Targets, canonicalize_marking,
    parse_request,
};
use crate::clock::{Clock, TimeFacts, time_facts_in, window_start_ms};
use crate::compile::{
    Candidate, CompiledAgent, CompiledPolicy, CompiledRule, KnownRedaction, KnownTool, RateSpec,
    Verdict,
};
use crate::decision::{CredentialBinding, Decision, Event, Outcome, ReasonCode, TraceStep};
use crate::doc::{Decoded, Doc, JsonRef};
use crate::eval::{EvalError, Facts, Tri, V, cond, eval};
use crate::redact::{Plan, RedactionKey, plan, recorded, recorded_from_tree};
use crate::selector::SelectorCache;
use crate::state::{Permit, RateKey, RateUse, SessionStats, StateStore};

/// Everything besides the policy that shapes decisions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where relative `file://` selector sources are found.
    pub stack_dir: PathBuf,
    pub redaction_key: RedactionKey,
    pub limits: Limits,
}

#[derive(Debug)]
pub struct Engine {
    policy: Arc<CompiledPolicy>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    selectors: SelectorCache,
}

/// The end of a decision before it is written up.
struct Verdicts<'r> {
    effect: Verdict,
    code: ReasonCode,
    reason: Arc<str>,
    rule: Option<&'r CompiledRule>,
    retry_after_ms: Option<u64>,
    /// What a final permit reserved in its agent's budgets.
    cost: Decimal,
}

impl<'r> Verdicts<'r> {
    fn new(effect: Verdict, code: ReasonCode, reason: impl Into<Arc<str>>) -> Self {
        Verdicts {
            effect,
            code,
            reason: reason.into(),
            rule: None,
            retry_after_ms: None,
            cost: Decimal::ZERO,
        }
    }

    fn at(mut self, rule: &'r CompiledRule) -> Self {
        self.rule = Some(rule);
        self
    }
}

impl Engine {
    pub fn new(
        policy: Arc<CompiledPolicy>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Engine {
        Engine {
            policy,
            state,
            clock,
            config,
            selectors: SelectorCache::default(),
        }
    }

    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    /// Reconciles what a permitted call of `agent` reserved in its budgets (`reserved`, the
    /// decision's [`Decision::cost`]) with what it really cost, as its adapter reports after
    /// running it (SPEC §3.7, `report`): `actual − reserved` is added to every budget window the
    /// call counts in — those of the agent's budgets when it was decided, at `decided_ms`, in
    /// `session` — and to the session's cost (`session.cost`), so later calls are decided on
    /// what was really spent. A call that reserved nothing (no `cost` rule) is counted at its
    /// reported cost.
    pub fn reconcile_cost(
        &self,
        agent: &str,
        session: Option<&str>,
        decided_ms: i64,
        reserved: Decimal,
        actual: Decimal,
    ) {
        let Some(agent) = find_agent(&self.policy, agent) else {
            return;
        };
        // Both are at least zero, so the difference cannot overflow.
        let delta = actual - reserved;
        if delta.is_zero() {
            return;
        }
        if let Some(session) = session {
            self.state.session_cost_add(session, delta);
        }
        let session = session.unwrap_or("");
        let windows = agent.budgets.iter().map(|b| b.window);
        for window in windows.chain(agent.spent_windows.iter().copied()) {
            let key = budget_key(&agent.id, window, decided_ms, session);
            self.state.budget_add(&key, delta);
        }
    }

    /// The tool id this engine decides on for `raw` ([`crate::car::canonical_tool_id`]).
    pub fn canonical_tool<'a>(&self, raw: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        crate::car::canonical_tool_id(raw, &self.config.limits)
    }

    /// Decides one call. Every path ends in a decision: errors deny (fail closed). The request
    /// is only read: the caller frees it after the answer has left.
    pub fn decide(&self, request: &ActionRequest) -> Decision {
        self.decide_ref(RequestRef::from(request), false)
    }

    /// Decides the retry of a call an operator approved (SPEC §5 step 8): a defer — from its
    /// rule, the default or a budget's `on_exceed` — becomes a permit with `APPROVED`, which
    /// must still pass rate limits, budgets that deny and egress. Denials, `deny!` included,
    /// stand. The caller checks that the approval binds this very call.
    pub fn decide_approved(&self, request: &ActionRequest) -> Decision {
        self.decide_ref(RequestRef::from(request), true)
    }

    /// Decides one call given as JSON text (the `params` of the daemon's request): the decision
    /// [`Engine::decide`] makes on the [`ActionRequest`] the text holds, read as
    /// [`crate::car::canonicalize_json`] reads it (text over [`Limits::max_text_bytes`] and
    /// duplicate keys refused, unknown fields ignored); deny `MALFORMED_REQUEST` when it holds
    /// none. Most requests are read in one pass into a [`Doc`]; the rest (NUL, deep nesting,
    /// duplicate keys, wrong types, errors) go through `serde_json`, which words the refusal.
    pub fn decide_json(&self, params: &str) -> Decision {
        let limits = &self.config.limits;
        let decoded = Decoded::default();
        // Read in place, not moved out of its `Option`: the document is large.
        let doc = if params.len() <= limits.max_text_bytes() {
            Doc::parse(params, &decoded, limits.max_depth.saturating_add(1))
        } else {
            None
        };
        if let Some(request) = doc.as_ref().and_then(RequestRef::from_doc) {
            return self.decide_ref(request, false);
        }
        match parse_request(params, limits) {
            Ok(request) => self.decide(&request),
            Err(e) => self.refused(e.to_string()),
        }
    }

    /// The decision on a text that holds no request.
    fn refused(&self, reason: String) -> Decision {
        let v = Verdicts::new(Verdict::Deny, ReasonCode::MalformedRequest, reason);
        let recorded = (String::new(), (CanonicalJson::null(), Vec::new()));
        self.write_up(v, recorded, Vec::new(), Vec::new(), None, Vec::new())
    }

    fn decide_ref(&self, request: RequestRef<'_>, approved: bool) -> Decision {
        let agent = find_agent(&self.policy, request.agent);
        let early = if self.state.is_killed(request.agent) {
            Some(Verdicts::new(
                Verdict::Deny,
                ReasonCode::KillSwitch,
                format!("agent `{}` is stopped by a kill switch", request.agent),
            ))
        } else if agent.is_none() {
            Some(Verdicts::new(
                Verdict::Deny,
                ReasonCode::UnknownAgent,
                format!("no agent `{}` in the policy", request.agent),
            ))
        } else {
            None
        };
        // The redactions are planned once the tool id is canonical, so the canonical writer can
        // mark the values to redact as it writes them; what the policy lists for the tool is
        // looked up there too, once.
        let mut tree = None;
        let mut known = None;
        let targets = |tool: &str| {
            let Some(agent) = agent else {
                return Targets::None;
            };
            known = agent.known_tools.get(tool);
            match redaction_plan(agent, known, tool) {
                Plan::Splice(targets) => targets,
                Plan::Tree(statements) => {
                    tree = Some(statements);
                    Targets::None
                }
            }
        };
        let key = Some(&self.config.redaction_key);
        let mut canonical = canonicalize_marking(request, &self.config.limits, targets, key);
        let early = early.or_else(|| {
            canonical
                .as_ref()
                .err()
                .map(|e| Verdicts::new(Verdict::Deny, ReasonCode::MalformedRequest, e.to_string()))
        });
        let mut trace = Vec::new();
        let mut events = Vec::new();
        let mut credential = None;
        let mut selectors_used = Vec::new();
        let verdicts = match (early, &canonical, agent) {
            (Some(v), ..) => v,
            (None, Ok((car, _)), Some(agent)) => {
                // `known` is `None` only if the tool was never looked up, and then the
                // decision tests every pattern, which answers the same.
                let facts = CallFacts::new(self, agent, car, known);
                let v = self.evaluate(agent, car, &facts, &mut trace, &mut events, approved);
                if v.effect == Verdict::Permit {
                    credential = self.credential(agent, &car.tool);
                }
                selectors_used = facts.used.into_inner();
                v
            }
            // Unreachable by construction; still, never permit.
            _ => Verdicts::new(
                Verdict::Deny,
                ReasonCode::MalformedRequest,
                "the request could not be read",
            ),
        };
        // The texts are taken out of the canonical request where it lies: it holds the marks
        // inline and is too large to move for the sake of two strings.
        let recorded = match (&mut canonical, agent) {
            (Ok((car, marks)), Some(_)) => (
                std::mem::take(&mut car.args_digest),
                self.recorded(
                    std::mem::take(&mut car.canonical_args),
                    car.args,
                    marks,
                    tree,
                ),
            ),
            (Ok((car, _)), None) => (
                std::mem::take(&mut car.args_digest),
                (CanonicalJson::null(), Vec::new()),
            ),
            (Err(_), _) => (String::new(), (CanonicalJson::null(), Vec::new())),
        };
        self.write_up(
            verdicts,
            recorded,
            trace,
            events,
            credential,
            selectors_used,
        )
    }

    fn write_up(
        &self,
        verdicts: Verdicts<'_>,
        (digest, (recorded_args, redacted)): (String, (CanonicalJson, Vec<Arc<str>>)),
        trace: Vec<TraceStep>,
        events: Vec<Event>,
        credential: Option<CredentialBinding>,
        selectors_used: Vec<(String, Json)>,
    ) -> Decision {
        Decision {
            effect: verdicts.effect,
            reason_code: verdicts.code,
            reason: verdicts.reason,
            rule_line: verdicts.rule.map(|r| r.line),
            rule_ref: verdicts.rule.map(|r| r.rule_ref.clone()),
            recorded_args,
            redacted,
            args_digest: digest,
            retry_after_ms: verdicts.retry_after_ms,
            cost: verdicts.cost,
            events,
            credential,
            selectors: selectors_used,
            policy_version: self.policy.version.clone(),
            trace,
        }
    }

    /// The arguments with every matching redaction applied: the only form ever recorded.
    fn recorded(
        &self,
        text: Cow<'_, str>,
        args: JsonRef<'_>,
        marks: &Marks<'_>,
        tree: Option<Vec<&crate::compile::Redaction>>,
    ) -> (CanonicalJson, Vec<Arc<str>>) {
        let key = &self.config.redaction_key;
        match tree {
            Some(statements) => recorded_from_tree(args.to_value(), &statements, key),
            None => recorded(text, marks, key),
        }
    }

    fn credential(&self, agent: &CompiledAgent, tool: &str) -> Option<CredentialBinding> {
        agent
            .credentials
            .iter()
            .find(|c| c.tools.iter().any(|t| t.matches(tool)))
            .map(|c| CredentialBinding {
                name: c.name.clone(),
                provider: c.provider.clone(),
                path: c.path.clone(),
                ttl_ms: c.ttl_ms,
            })
    }

    fn evaluate<'a>(
        &self,
        agent: &'a CompiledAgent,
        car: &Car<'_>,
        facts: &CallFacts<'_>,
        trace: &mut Vec<TraceStep>,
        events: &mut Vec<Event>,
        approved: bool,
    ) -> Verdicts<'a> {
        let tool = car.tool.as_ref();
        let decided = match facts.known {
            Some(known) => {
                // Room for a step per rule that may be tried (a few at most: the first to fire
                // ends the search), made at once rather than grown.
                let steps = known.mandatory.len() + known.rules.len();
                *trace = Vec::with_capacity(steps.min(8));
                self.first_match(
                    &agent.mandatory,
                    KnownTool::candidates(&known.mandatory),
                    tool,
                    facts,
                    trace,
                )
                .or_else(|| {
                    let candidates = KnownTool::candidates(&known.rules);
                    self.first_match(&agent.rules, candidates, tool, facts, trace)
                })
            }
            None => self
                .first_match(
                    &agent.mandatory,
                    agent.mandatory_index.candidates(tool),
                    tool,
                    facts,
                    trace,
                )
                .or_else(|| {
                    let candidates = agent.index.candidates(tool);
                    self.first_match(&agent.rules, candidates, tool, facts, trace)
                }),
        };
        let verdicts = match decided {
            Some(Ok(rule)) => {
                let code = match rule.verdict {
                    Verdict::Permit => ReasonCode::RulePermit,
                    Verdict::Deny => ReasonCode::RuleDeny,
                    Verdict::Defer => ReasonCode::RuleDefer,
                };
                Verdicts::new(rule.verdict, code, rule.explanation.clone()).at(rule)
            }
            Some(Err((rule, err))) => self.error_verdict(rule, err),
            None => {
                let code = match agent.default {
                    Verdict::Permit => ReasonCode::DefaultPermit,
                    Verdict::Deny => ReasonCode::DefaultDeny,
                    Verdict::Defer => ReasonCode::DefaultDefer,
                };
                let effect = match agent.default {
                    Verdict::Permit => "permit",
                    Verdict::Deny => "deny",
                    Verdict::Defer => "defer",
                };
                Verdicts::new(
                    agent.default,
                    code,
                    format!("no rule matched `{tool}`; the default is {effect}"),
                )
            }
        };
        let verdicts = match verdicts.effect {
            Verdict::Defer if approved => Verdicts {
                effect: Verdict::Permit,
                code: ReasonCode::Approved,
                ..verdicts
            },
            Verdict::Permit => verdicts,
            _ => return verdicts,
        };
        self.admit(agent, car, facts, verdicts, events, approved)
    }

    /// Tries rules in written order; the first that fires decides.
    fn first_match<'r>(
        &self,
        rules: &'r [CompiledRule],
        candidates: impl Iterator<Item = Candidate>,
        tool: &str,
        facts: &CallFacts<'_>,
        trace: &mut Vec<TraceStep>,
    ) -> Option<Result<&'r CompiledRule, (&'r CompiledRule, EvalError)>> {
        for candidate in candidates {
            let rule = &rules[candidate.index];
            if !candidate.matches && !rule.matcher.matches(tool) {
                continue;
            }
            let outcome = fires(rule, facts);
            let step = |o: Outcome| TraceStep {
                line: rule.line,
                rule: rule.text.clone(),
                outcome: o,
            };
            match outcome {
                Ok(Outcome::Matched) => {
                    trace.push(step(Outcome::Matched));
                    return Some(Ok(rule));
                }
                Ok(other) => trace.push(step(other)),
                Err(err) => {
                    let message = match &err {
                        EvalError::Type(m) => m.clone(),
                        EvalError::Selector { message, .. } => message.clone(),
                    };
                    trace.push(step(Outcome::Error(message)));
                    return Some(Err((rule, err)));
                }
            }
        }
        None
    }

    fn error_verdict<'r>(&self, rule: &'r CompiledRule, err: EvalError) -> Verdicts<'r> {
        match err {
            EvalError::Type(message) => Verdicts::new(
                Verdict::Deny,
                ReasonCode::EvalError,
                format!("rule on line {}: {message}", rule.line),
            )
            .at(rule),
            EvalError::Selector { index, message } => {
                let spec = &self.policy.selectors[index];
                // `on_error = "defer"` must not open a way around a `deny!`.
                let effect = if rule.mandatory {
                    Verdict::Deny
                } else {
                    spec.on_error
                };
                Verdicts::new(
                    effect,
                    ReasonCode::SelectorUnavailable,
                    format!("selector `{}` is unavailable: {message}", spec.name),
                )
                .at(rule)
            }
        }
    }

    /// A permit must also pass rate limits, budgets and egress; only then is state changed.
    fn admit<'a>(
        &self,
        agent: &'a CompiledAgent,
        car: &Car<'_>,
        facts: &CallFacts<'_>,
        permit: Verdicts<'a>,
        events: &mut Vec<Event>,
        approved: bool,
    ) -> Verdicts<'a> {
        let now = facts.now_ms;
        let session = car.session.unwrap_or("");
        let costs_nothing = !agent.costs.iter().any(|(p, _)| p.matches(&car.tool));
        if costs_nothing && agent.egress.is_unrestricted() {
            return self.admit_on_rates(agent, facts.known, car, now, permit, events);
        }
        for r in applying_rates(agent, facts.known, &car.tool) {
            let rate = rate_use(r, session);
            if let Err(retry_after_ms) = self.state.rate_check(rate.key, r.limit, r.period_ms, now)
            {
                return rate_exceeded(&r.text, retry_after_ms, events);
            }
        }
        let cost = match self.cost(agent, car, facts) {
            Ok(c) => c,
            Err(message) => return Verdicts::new(Verdict::Deny, ReasonCode::EvalError, message),
        };
        let mut spends = Vec::new();
        // Warnings belong to spend that happens: they join the events only on a final permit.
        let mut warnings = Vec::new();
        if cost > Decimal::ZERO {
            for b in &agent.budgets {
                let key = budget_key(&agent.id, b.window, now, session);
                let spent = self.state.budget_spent(&key);
                let after = spent + cost;
                let window = b.window.word().to_string();
                // An operator's approval is the human a budget that defers asks for.
                if after > b.max && !(approved && b.on_exceed == Verdict::Defer) {
                    events.push(Event::BudgetExceeded {
                        window: window.clone(),
                        spent,
                        max: b.max,
                    });
                    // The reason names no amount: the cost may come from a redacted argument.
                    return Verdicts::new(
                        b.on_exceed,
                        ReasonCode::BudgetExceeded,
                        format!(
                            "this call would take the {window} budget of ${} past its limit",
                            b.max
                        ),
                    );
                }
                if let Some(warn) = b.warn_at {
                    let line = warn * b.max;
                    if spent < line && after >= line {
                        warnings.push(Event::BudgetWarning {
                            window,
                            spent: after,
                            max: b.max,
                        });
                    }
                }
                spends.push(key);
            }
            spends.extend(
                agent
                    .spent_windows
                    .iter()
                    .map(|w| budget_key(&agent.id, *w, now, session)),
            );
        }
        if !self.egress_allows(agent, car.args) {
            // The reason names no host: the destination may be a redacted argument.
            return Verdicts::new(
                Verdict::Deny,
                ReasonCode::EgressDenied,
                format!(
                    "a destination in the arguments is outside the egress policy of agent `{}`",
                    agent.id
                ),
            );
        }
        events.append(&mut warnings);
        // Every limit that applies has passed.
        let rates = applying_rates(agent, facts.known, &car.tool);
        with_uses(rates, session, |rates| {
            self.state.record_permit(&Permit {
                agent: &agent.id,
                tool: &car.tool,
                session: car.session,
                cost,
                now_ms: now,
                rates,
                spends: &spends,
            });
        });
        Verdicts { cost, ..permit }
    }

    /// [`Engine::admit`] for a permit that costs nothing and may reach any host: only its rate
    /// limits can still refuse it and no budget is touched, so the state checks them and
    /// records the permit in one call.
    fn admit_on_rates<'a>(
        &self,
        agent: &'a CompiledAgent,
        known: Option<&KnownTool>,
        car: &Car<'_>,
        now_ms: i64,
        permit: Verdicts<'a>,
        events: &mut Vec<Event>,
    ) -> Verdicts<'a> {
        let session = car.session.unwrap_or("");
        let rates = applying_rates(agent, known, &car.tool);
        let recorded = with_uses(rates, session, |rates| {
            self.state.record_permit_within_rates(&Permit {
                agent: &agent.id,
                tool: &car.tool,
                session: car.session,
                cost: Decimal::ZERO,
                now_ms,
                rates,
                spends: &[],
            })
        });
        match recorded {
            Ok(()) => permit,
            Err((index, retry_after_ms)) => {
                let limit = applying_rates(agent, known, &car.tool).nth(index);
                rate_exceeded(limit.map_or("", |r| &r.text), retry_after_ms, events)
            }
        }
    }

    /// Whether every destination in the arguments is within the agent's egress policy.
    fn egress_allows(&self, agent: &CompiledAgent, args: JsonRef<'_>) -> bool {
        let egress = &agent.egress;
        match args.as_tree() {
            Some(tree) => egress.check_args(tree).is_ok(),
            None => egress.is_unrestricted() || egress.check_args(&args.to_value()).is_ok(),
        }
    }

    /// What the call costs: the first matching `cost` rule, else nothing.
    fn cost(
        &self,
        agent: &CompiledAgent,
        car: &Car<'_>,
        facts: &CallFacts<'_>,
    ) -> Result<Decimal, String> {
        let Some((pattern, expr)) = agent.costs.iter().find(|(p, _)| p.matches(&car.tool)) else {
            return Ok(Decimal::ZERO);
        };
        match eval(expr, facts) {
            Ok(Some(V::Num(n))) if n >= Decimal::ZERO => Ok(n),
            Ok(Some(V::Num(_))) => Err(format!("cost of `{}` is negative", pattern.as_str())),
            // Spend that cannot be known cannot be accounted for: refuse rather than guess.
            Ok(None) => Err(format!(
                "cost of `{}` is unknown: the field it reads is missing",
                pattern.as_str()
            )),
            Ok(Some(_)) => Err(format!("cost of `{}` is not a number", pattern.as_str())),
            Err(EvalError::Type(m)) => Err(format!("cost of `{}`: {m}", pattern.as_str())),
            Err(EvalError::Selector { message, .. }) => {
                Err(format!("cost of `{}`: {message}", pattern.as_str()))
            }
        }
    }
}

/// The agent `id` of the policy. The only one of a policy (a common case) is found by comparing
/// its id: no hash, no probe.
fn find_agent<'p>(policy: &'p CompiledPolicy, id: &str) -> Option<&'p CompiledAgent> {
    let agents = &policy.agents;
    if agents.len() == 1 {
        let (only, agent) = agents.iter().next()?;
        crate::compile::same_bytes(only.as_bytes(), id.as_bytes()).then_some(agent)
    } else {
        agents.get(id)
    }
}

/// The redaction plan of a call of `tool`: compiled for a known tool, else made now.
fn redaction_plan<'a>(agent: &'a CompiledAgent, known: Option<&KnownTool>, tool: &str) -> Plan<'a> {
    match known.map(|k| k.redaction) {
        Some(KnownRedaction::None) => Plan::Splice(Targets::None),
        Some(KnownRedaction::One(i)) => match agent.redactions.get(i as usize) {
            Some(r) => Plan::Splice(Targets::One(&r.targets)),
            None => plan(&agent.redactions, tool),
        },
        _ => plan(&agent.redactions, tool),
    }
}

/// The agent's rate limits that apply to `tool`, in written order: listed when the policy
/// names the tool (`known`), else found by testing each.
fn applying_rates<'a>(
    agent: &'a CompiledAgent,
    known: Option<&'a KnownTool>,
    tool: &'a str,
) -> impl Iterator<Item = &'a RateSpec> {
    let (listed, tested): (&[u32], &[RateSpec]) = match known {
        Some(k) => (&k.rates, &[]),
        None => (&[], &agent.rate_limits),
    };
    let listed = listed.iter().map(|&i| &agent.rate_limits[i as usize]);
    listed.chain(tested.iter().filter(move |r| r.matcher.matches(tool)))
}

/// The cell and limit of `r` that a call in `session` uses.
fn rate_use<'a>(r: &'a RateSpec, session: &'a str) -> RateUse<'a> {
    RateUse {
        key: RateKey {
            limit: &r.key,
            session: r.per_session.then_some(session),
        },
        limit: r.limit,
        period_ms: r.period_ms,
    }
}

/// Calls `f` with the uses of `rates` by a call in `session`, in order; the usual one or two
/// are kept on the stack.
fn with_uses<'a, R>(
    rates: impl Iterator<Item = &'a RateSpec>,
    session: &'a str,
    f: impl FnOnce(&[RateUse<'a>]) -> R,
) -> R {
    let mut uses = rates.map(|r| rate_use(r, session));
    let Some(first) = uses.next() else {
        return f(&[]);
    };
    let Some(second) = uses.next() else {
        return f(std::slice::from_ref(&first));
    };
    match uses.next() {
        None => f(&[first, second]),
        Some(third) => f(&[first, second, third]
            .into_iter()
            .chain(uses)
            .collect::<Vec<_>>()),
    }
}

/// The denial of a call that rate limit `limit` (its text) refuses for `retry_after_ms`.
fn rate_exceeded<'a>(limit: &str, retry_after_ms: u64, events: &mut Vec<Event>) -> Verdicts<'a> {
    events.push(Event::RateExceeded {
        limit: limit.to_owned(),
        retry_after_ms,
    });
    let mut v = Verdicts::new(
        Verdict::Deny,
        ReasonCode::RateExceeded,
        format!("`{limit}` is used up; retry in {retry_after_ms} ms"),
    );
    v.retry_after_ms = Some(retry_after_ms);
    v
}

fn budget_key(agent: &str, window: BudgetWindow, now_ms: i64, session: &str) -> String {
    match window {
        BudgetWindow::Session => format!("{agent}|session|{session}"),
        w => format!("{agent}|{}|{}", w.word(), window_start_ms(w, now_ms)),
    }
}

/// Whether a rule fires: its clauses, then its condition.
fn fires(rule: &CompiledRule, facts: &CallFacts<'_>) -> Result<Outcome, EvalError> {
    let args = facts.car.args;
    if let Some(method) = &rule.method {
        let ok = args
            .get("method")
            .and_then(JsonRef::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case(method));
        if !ok {
            return Ok(Outcome::ClauseNotMet("method"));
        }
    }
    if let Some(host) = &rule.host {
        let value = match args.get("host") {
            Some(h) => h.as_str().and_then(crate::egress::host_value),
            None => args
                .get("url")
                .and_then(JsonRef::as_str)
                .and_then(crate::egress::url_host),
        };
        if !value.is_some_and(|h| host.matches(&h)) {
            return Ok(Outcome::ClauseNotMet("host"));
        }
    }
    if let Some(path) = &rule.path
        && !args
            .get("path")
            .and_then(JsonRef::as_str)
            .is_some_and(|p| path.matches(p))
    {
        return Ok(Outcome::ClauseNotMet("path"));
    }
    let Some(condition) = &rule.condition else {
        return Ok(Outcome::Matched);
    };
    Ok(match cond(condition, facts).map_err(|err| *err)? {
        Tri::True => Outcome::Matched,
        Tri::False => Outcome::ConditionFalse,
        Tri::Unknown => Outcome::ConditionUnknown,
    })
}

/// A selector's answer for one call, or why there is none.
type SelectorAnswer = Result<Option<Json>, String>;

/// The facts of one call, fetched lazily: a decision that never reads the clock's calendar or
/// the session pays nothing for them.
struct CallFacts<'a> {
    engine: &'a Engine,
    agent: &'a CompiledAgent,
    car: &'a Car<'a>,
    /// What the policy lists for the call's tool when it names it.
    known: Option<&'a KnownTool>,
    now_ms: i64,
    time: OnceCell<TimeFacts>,
    session: OnceCell<SessionStats>,
    answers: RefCell<Vec<Option<SelectorAnswer>>>,
    used: RefCell<Vec<(String, Json)>>,
}

impl<'a> CallFacts<'a> {
    fn new(
        engine: &'a Engine,
        agent: &'a CompiledAgent,
        car: &'a Car<'a>,
        known: Option<&'a KnownTool>,
    ) -> Self {
        CallFacts {
            engine,
            agent,
            car,
            known,
            now_ms: engine.clock.now_ms(),
            time: OnceCell::new(),
            session: OnceCell::new(),
            answers: RefCell::new(Vec::new()),
            used: RefCell::new(Vec::new()),
        }
    }

    fn time(&self) -> &TimeFacts {
        self.time
            .get_or_init(|| time_facts_in(self.now_ms, &self.engine.policy.timezone))
    }

    fn session_stats(&self) -> SessionStats {
        *self.session.get_or_init(|| {
            self.car
                .session
                .map_or_else(SessionStats::default, |s| self.engine.state.session(s))
        })
    }

    fn fetch_selector(&self, index: usize) -> Result<Option<Json>, String> {
        let spec = &self.engine.policy.selectors[index];
        let key = match eval(&spec.key, self) {
            Ok(Some(V::Str(s))) => s.into_owned(),
            Ok(Some(V::Num(n))) => n.to_string(),
            Ok(Some(V::Bool(b))) => b.to_string(),
            Ok(None) => return Ok(None),
            Ok(Some(_)) => return Err("its key is not a string or number".into()),
            Err(EvalError::Type(m)) | Err(EvalError::Selector { message: m, .. }) => return Err(m),
        };
        let answer = self.engine.selectors.get(
            index,
            spec,
            &key,
            self.now_ms,
            &self.engine.config.stack_dir,
        )?;
        if let Some(a) = &answer {
            self.used.borrow_mut().push((spec.name.clone(), a.clone()));
        }
        Ok(answer)
    }
}

impl Facts for CallFacts<'_> {
    fn args(&self) -> JsonRef<'_> {
        self.car.args
    }

    fn principal(&self) -> JsonRef<'_> {
        self.car.principal
    }

    fn agent_id(&self) -> &str {
        &self.agent.id
    }

    fn tool_id(&self) -> &str {
        &self.car.tool
    }

    fn session_id(&self) -> Option<&str> {
        self.car.session
    }

    fn session_calls(&self) -> u64 {
        self.session_stats().calls
    }

    fn session_cost(&self) -> Decimal {
        self.session_stats().cost
    }

    fn time_hour(&self) -> u8 {
        self.time().hour
    }

    fn time_weekday(&self) -> &str {
        self.time().weekday
    }

    fn time_date(&self) -> String {
        self.time().date.clone()
    }

    fn count(&self, pattern: &fpl::pattern::ToolPattern, window_ms: u64) -> u64 {
        let since = self
            .now_ms
            .saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
        self.engine
            .state
            .history_count(&self.agent.id, pattern, since)
    }

    fn spent(&self, window: BudgetWindow) -> Decimal {
        let key = budget_key(
            &self.agent.id,
            window,
            self.now_ms,
            self.car.session.unwrap_or(""),
        );
        self.engine.state.budget_spent(&key)
    }

    fn selector(&self, index: usize) -> Result<Option<Json>, String> {
        if let Some(Some(answer)) = self.answers.borrow().get(index) {
            return answer.clone();
        }
        let answer = self.fetch_selector(index);
        let mut answers = self.answers.borrow_mut();
        if answers.len() <= index {
            answers.resize(index + 1, None);
        }
        answers[index] = Some(answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The agent found is the one the map holds under the id, however many there are.
        #[test]
        fn find_agent_finds_what_the_map_holds(
            ids in proptest::collection::btree_set("[ab.-]{1,3}", 1..4),
            other in "[ab.-]{0,4}",
            member in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
        ) {
            // Half the time an id the policy holds.
            let id = match member {
                Some(i) => i.get(&ids.iter().collect::<Vec<_>>()).to_string(),
                None => other,
            };
            let mut text = String::new();
            for a in &ids {
                text.push_str(&format!("agent \"{a}\" {{\n  default deny\n}}\n"));
            }
            let parsed = fpl::parse(&text);
            let policy = crate::compile::compile(&parsed.policy, "f", None).unwrap();
            proptest::prop_assert_eq!(policy.agents.len(), ids.len());
            let found = find_agent(&policy, &id).map(|a| a as *const CompiledAgent);
            let held = policy.agents.get(&id).map(|a| a as *const CompiledAgent);
            proptest::prop_assert_eq!(found, held);
        }
    }

    /// However many limits apply, `f` sees the uses of all of them, in order.
    #[test]
    fn with_uses_passes_every_use_in_order() {
        for n in 0..7 {
            let mut text = String::from("agent \"a\" {\n");
            for i in 0..n {
                text.push_str(&format!("  rate_limit \"t{i}\": {} per second\n", i + 1));
            }
            text.push_str("}\n");
            let policy = crate::compile::compile(&fpl::parse(&text).policy, "f", None).unwrap();
            let rates = &policy.agents["a"].rate_limits;
            assert_eq!(rates.len(), n);
            for session in ["", "s"] {
                let want: Vec<RateUse<'_>> = rates.iter().map(|r| rate_use(r, session)).collect();
                let got = with_uses(rates.iter(), session, |uses| uses.to_vec());
                assert_eq!(got, want, "{n} limits");
            }
        }
    }
}
