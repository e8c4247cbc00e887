//! Shared helpers for the engine's integration tests: an [`Engine`] built from FPL text, with a
//! [`ManualClock`] the test drives and a fresh [`MemoryState`].

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::car::{ActionRequest, Limits};
use engine::clock::{ManualClock, parse_rfc3339_ms};
use engine::compile::{CompiledPolicy, Verdict, compile};
use engine::decision::{Decision, ReasonCode};
use engine::engine::{Engine, EngineConfig};
use engine::redact::RedactionKey;
use engine::state::MemoryState;
use serde_json::Value;

/// The file name rule refs point into.
pub const FILE: &str = "governance.fms";

/// The per-stack redaction key every harness uses.
pub const REDACTION_KEY: [u8; 32] = [0x5a; 32];

/// Where every clock starts unless told otherwise: a Monday, 10:00 UTC.
pub const START: &str = "2026-03-02T10:00:00Z";

/// Unix milliseconds of an RFC 3339 instant.
pub fn at(rfc3339: &str) -> i64 {
    parse_rfc3339_ms(rfc3339).expect("a valid RFC 3339 instant")
}

/// Parses and compiles `src`, failing the test on any parse or check error (warnings, such as a
/// missing `default`, are allowed).
pub fn policy(src: &str) -> CompiledPolicy {
    let parsed = fpl::parse(src);
    let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "parse errors: {errors:#?}\n{src}");
    let env = |_: &str| None;
    let diags = fpl::check::check(
        &parsed.policy,
        &fpl::check::CheckEnv {
            source: Some(src),
            env: &env,
        },
    );
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "check errors: {errors:#?}\n{src}");
    compile(&parsed.policy, FILE, Some(src)).expect("the policy compiles")
}

/// Parses and compiles `src` without the static checks (parse errors still fail the test):
/// for generated policies, where `check` would refuse rules that can never fire but the
/// engine's answer is still defined.
pub fn unchecked_policy(src: &str) -> CompiledPolicy {
    let parsed = fpl::parse(src);
    let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "parse errors: {errors:#?}\n{src}");
    compile(&parsed.policy, FILE, Some(src)).expect("the policy compiles")
}

/// An engine, the clock it reads and the state it keeps.
#[derive(Debug)]
pub struct Harness {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub state: Arc<MemoryState>,
    /// Calls so far: every other one goes to the engine as JSON text, so every test also
    /// checks `Engine::decide_json`.
    calls: Cell<u64>,
}

/// An engine for a checked policy, its clock at [`START`], selectors read relative to the
/// system temp dir.
pub fn harness(src: &str) -> Harness {
    from_policy(policy(src), &std::env::temp_dir(), at(START))
}

/// An engine for a checked policy whose stack (for `file://` selectors) is `dir`.
pub fn harness_in(src: &str, dir: &Path) -> Harness {
    from_policy(policy(src), dir, at(START))
}

/// An engine for a compiled policy.
pub fn from_policy(policy: CompiledPolicy, dir: &Path, start_ms: i64) -> Harness {
    let clock = Arc::new(ManualClock::new(start_ms));
    let state = Arc::new(MemoryState::new());
    let engine = Engine::new(
        Arc::new(policy),
        state.clone(),
        clock.clone(),
        EngineConfig {
            stack_dir: PathBuf::from(dir),
            redaction_key: RedactionKey::from_bytes(REDACTION_KEY),
            limits: Limits::default(),
        },
    );
    Harness {
        engine,
        clock,
        state,
        calls: Cell::new(0),
    }
}

/// A request of `agent` to call `tool` with `args`, nothing else set.
pub fn request(agent: &str, tool: &str, args: Value) -> ActionRequest {
    ActionRequest {
        agent: agent.into(),
        tool: tool.into(),
        args,
        ..Default::default()
    }
}

impl Harness {
    /// Decides a call without session or principal.
    pub fn decide(&self, agent: &str, tool: &str, args: Value) -> Decision {
        self.send(&request(agent, tool, args))
    }

    /// Decides a call in a session.
    pub fn decide_in(&self, session: &str, agent: &str, tool: &str, args: Value) -> Decision {
        self.send(&ActionRequest {
            session: Some(session.into()),
            ..request(agent, tool, args)
        })
    }

    /// Decides a call made for a principal.
    pub fn decide_as(&self, principal: Value, agent: &str, tool: &str, args: Value) -> Decision {
        self.send(&ActionRequest {
            principal: Some(principal),
            ..request(agent, tool, args)
        })
    }

    /// Decides a request, as a struct or (every other call) as JSON text.
    pub fn send(&self, req: &ActionRequest) -> Decision {
        let n = self.calls.get();
        self.calls.set(n + 1);
        if n.is_multiple_of(2) {
            self.engine.decide(req)
        } else {
            self.engine
                .decide_json(&serde_json::to_string(req).expect("a request serialises"))
        }
    }

    /// Moves the clock to an RFC 3339 instant.
    pub fn set(&self, rfc3339: &str) {
        self.clock.set(at(rfc3339));
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.clock.advance(ms);
    }
}

/// The 1-based line of `src` holding `needle` (exactly one line must).
pub fn line_of(src: &str, needle: &str) -> usize {
    let lines: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "`{needle}` must be on exactly one line");
    lines[0]
}

/// Asserts effect and reason code, printing the whole decision when they differ.
#[track_caller]
pub fn expect(d: &Decision, effect: Verdict, code: ReasonCode) {
    assert!(
        d.effect == effect && d.reason_code == code,
        "expected {effect:?} {}, got {:?} {}: {}\n{d:#?}",
        code.as_str(),
        d.effect,
        d.reason_code.as_str(),
        d.reason
    );
}

/// Asserts effect, reason code and the deciding rule's line.
#[track_caller]
pub fn expect_rule(d: &Decision, effect: Verdict, code: ReasonCode, line: usize) {
    expect(d, effect, code);
    assert_eq!(d.rule_line, Some(line), "deciding rule line\n{d:#?}");
    assert_eq!(
        d.rule_ref.as_deref(),
        Some(format!("{FILE}:{line}").as_str()),
        "rule ref"
    );
}

#[track_caller]
pub fn permitted(d: &Decision) {
    assert_eq!(
        d.effect,
        Verdict::Permit,
        "expected a permit, got {:?} {}: {}",
        d.effect,
        d.reason_code.as_str(),
        d.reason
    );
}
