//! The agent socket's request text, as arbitrary bytes, through `Engine::decide_json` (the
//! daemon's reader: a flat document that borrows the text) and through the reference path
//! (`car::parse_request` with `serde_json`, then `Engine::decide`). Neither may panic, and the
//! two engines, fed the same inputs in the same order, must decide identically: same effect,
//! code, reason, recorded arguments, digest and trace.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use engine::car::{Limits, parse_request};
use engine::clock::ManualClock;
use engine::compile::{CompiledPolicy, Verdict, compile};
use engine::decision::ReasonCode;
use engine::engine::{Engine, EngineConfig};
use engine::redact::RedactionKey;
use engine::state::MemoryState;
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
agent "bot" {
  default deny
  rules {
    deny!  **/admin/**  reason "never automated"
    permit pay/*  if amount < $100.5 and currency in ["usd", "eur"] and principal.role == "sre"
    defer  pay/*  if amount >= $100.5
    permit http/get  method GET  if len(tags) <= 3
    deny   note/*  if text matches "(?i)secret"
    permit note/*  if not (meta.kind == "x") or meta.level > 2
    permit **/list  if items contains "a"
  }
  cost pay/*: amount
  rate_limit "http/*": 3 per minute
  redact pay/** args: ["card.number", "customer.email"]
  redact note/** args: ["text", "meta"]
  budget daily {
    max       $1000
    warn_at   0.5
    on_exceed deny
  }
}
"#;

struct Twins {
    by_text: Engine,
    by_struct: Engine,
    limits: Limits,
}

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

fn twins() -> &'static Mutex<Twins> {
    static TWINS: OnceLock<Mutex<Twins>> = OnceLock::new();
    TWINS.get_or_init(|| {
        let parsed = fpl::parse(POLICY);
        assert!(
            !parsed.diagnostics.iter().any(fpl::Diagnostic::is_error),
            "{:?}",
            parsed.diagnostics
        );
        let compiled = compile(&parsed.policy, "governance.fms", Some(POLICY)).expect("compiles");
        let policy = Arc::new(compiled);
        let clock = Arc::new(ManualClock::new(1_795_251_600_000));
        // Small limits, so the fuzzer reaches the size and depth refusals too.
        let limits = Limits {
            max_args_bytes: 512,
            max_depth: 6,
            ..Limits::default()
        };
        Mutex::new(Twins {
            by_text: engine(&policy, &clock, limits),
            by_struct: engine(&policy, &clock, limits),
            limits,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let twins = twins().lock().unwrap_or_else(|e| e.into_inner());
    let fast = twins.by_text.decide_json(text);
    match parse_request(text, &twins.limits) {
        Ok(req) => {
            let reference = twins.by_struct.decide(&req);
            assert_eq!(format!("{reference:?}"), format!("{fast:?}"), "{text}");
        }
        Err(e) => {
            assert_eq!(fast.reason_code, ReasonCode::MalformedRequest, "{text}");
            assert_eq!(fast.effect, Verdict::Deny, "{text}");
            assert_eq!(&*fast.reason, e.0.as_str(), "{text}");
        }
    }
});
