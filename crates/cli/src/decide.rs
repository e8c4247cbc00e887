//! `faramesh decide` and `faramesh test`: decisions from the command line, no daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use engine::car::{ActionRequest, Limits};
use engine::clock::{ManualClock, SystemClock, parse_rfc3339_ms};
use engine::compile::CompiledPolicy;
use engine::decision::Decision;
use engine::engine::{Engine, EngineConfig};
use engine::redact::RedactionKey;
use engine::state::MemoryState;
use serde::Deserialize;

use crate::write_stdout;

/// `decide` and `test` are not the daemon: they redact with a fixed, public key so their output
/// is reproducible. The daemon uses the stack's secret key.
const CLI_REDACTION_KEY: [u8; 32] = *b"faramesh-cli-not-a-secret-key!!!";

/// When a fixture gives no `start`, its clock starts here.
pub const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// Loads, checks and compiles a policy as the daemon does; the error is what to print.
pub fn compiled(path: &Path) -> Result<(Arc<CompiledPolicy>, PathBuf), String> {
    let loaded = daemon::policy::load_policy(path)?;
    let file = fpl::load::policy_path(path)?;
    let dir = file.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    Ok((loaded.compiled, dir))
}

fn engine(
    policy: Arc<CompiledPolicy>,
    dir: PathBuf,
    clock: Arc<dyn engine::clock::Clock>,
) -> Engine {
    Engine::new(
        policy,
        Arc::new(MemoryState::default()),
        clock,
        EngineConfig {
            stack_dir: dir,
            redaction_key: RedactionKey::from_bytes(CLI_REDACTION_KEY),
            limits: Limits::default(),
        },
    )
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The policy: a stack directory or a policy file.
    #[arg(long)]
    pub policy: PathBuf,
    /// The agent making the call.
    #[arg(long)]
    pub agent: String,
    /// The tool id, e.g. `stripe/refund`.
    #[arg(long)]
    pub tool: String,
    /// The call's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// The verified principal as a JSON object.
    #[arg(long)]
    pub principal: Option<String>,
    /// The session the call belongs to (rate limits and budgets per session).
    #[arg(long)]
    pub session: Option<String>,
}

pub fn run_decide(a: DecideArgs) -> ExitCode {
    let (policy, dir) = match compiled(&a.policy) {
        Ok(p) => p,
        Err(msg) => return fail(&msg),
    };
    let args: serde_json::Value = match serde_json::from_str(&a.args) {
        Ok(v) => v,
        Err(e) => return fail(&format!("--args is not JSON: {e}")),
    };
    let principal = match a
        .principal
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return fail(&format!("--principal is not JSON: {e}")),
    };
    let engine = engine(policy, dir, Arc::new(SystemClock));
    let decision = engine.decide(&ActionRequest {
        agent: a.agent,
        session: a.session,
        tool: a.tool,
        args,
        principal,
        adapter: Some("cli".into()),
        ..ActionRequest::default()
    });
    match serde_json::to_string_pretty(&decision) {
        Ok(json) => write_stdout(&format!("{json}\n")),
        Err(e) => return fail(&format!("cannot print the decision: {e}")),
    }
    ExitCode::SUCCESS
}

/// SPEC §3.13.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    policy: PathBuf,
    agent: String,
    #[serde(default)]
    start: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    tool: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    principal: Option<serde_json::Value>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    repeat: Option<u32>,
    #[serde(default)]
    at: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    effect: String,
    #[serde(default)]
    reason_code: Option<String>,
    #[serde(default)]
    rule_line: Option<usize>,
    #[serde(default)]
    redacted: Option<Vec<String>>,
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    report: String,
}

pub fn run_test(paths: &[PathBuf]) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for p in &paths {
        if let Err(msg) = fixtures_in(p, &mut files) {
            return fail(&msg);
        }
    }
    if files.is_empty() {
        return fail("no *.fmtest.json fixtures found");
    }
    let mut tally = Tally::default();
    for f in &files {
        run_fixture(f, &mut tally);
    }
    tally.report.push_str(&format!(
        "{} passed, {} failed\n",
        tally.passed, tally.failed
    ));
    write_stdout(&tally.report);
    if tally.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A fixture file, or every `*.fmtest.json` in a directory and its `tests/` directory.
fn fixtures_in(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !path.is_dir() {
        return Err(format!("{} does not exist", path.display()));
    }
    for dir in [path.to_path_buf(), path.join("tests")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".fmtest.json"))
            .collect();
        found.sort();
        out.extend(found);
    }
    Ok(())
}

fn run_fixture(path: &Path, tally: &mut Tally) {
    let fixture: Fixture = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => {
            tally.failed += 1;
            tally
                .report
                .push_str(&format!("FAIL {}: not a fixture: {e}\n", path.display()));
            return;
        }
    };
    let policy_path = path
        .parent()
        .map_or_else(|| fixture.policy.clone(), |d| d.join(&fixture.policy));
    let (policy, dir) = match compiled(&policy_path) {
        Ok(p) => p,
        Err(msg) => {
            tally.failed += fixture.cases.len().max(1);
            tally
                .report
                .push_str(&format!("FAIL {}: {msg}\n", path.display()));
            return;
        }
    };
    let start = fixture.start.as_deref().unwrap_or(DEFAULT_START);
    let clock = match parse_rfc3339_ms(start) {
        Ok(ms) => Arc::new(ManualClock::new(ms)),
        Err(e) => {
            tally.failed += 1;
            tally
                .report
                .push_str(&format!("FAIL {}: start: {e}\n", path.display()));
            return;
        }
    };
    let engine = engine(policy, dir, clock.clone());
    for case in &fixture.cases {
        match run_case(&engine, &clock, &fixture.agent, case) {
            Ok(()) => tally.passed += 1,
            Err(diff) => {
                tally.failed += 1;
                tally
                    .report
                    .push_str(&format!("FAIL {} › {}\n{diff}", path.display(), case.name));
            }
        }
    }
}

fn run_case(engine: &Engine, clock: &ManualClock, agent: &str, case: &Case) -> Result<(), String> {
    if let Some(at) = &case.at {
        clock.set(parse_rfc3339_ms(at).map_err(|e| format!("  at: {e}\n"))?);
    }
    let mut last = None;
    for _ in 0..case.repeat.unwrap_or(1).max(1) {
        last = Some(engine.decide(&ActionRequest {
            agent: agent.to_string(),
            session: case.session.clone(),
            tool: case.tool.clone(),
            args: case.args.clone(),
            principal: case.principal.clone(),
            adapter: Some("test".into()),
            ..ActionRequest::default()
        }));
    }
    let Some(d) = last else {
        return Err("  no call was made\n".into());
    };
    judge(&case.expect, &d)
}

fn judge(want: &Expect, d: &Decision) -> Result<(), String> {
    let mut diffs = Vec::new();
    let effect = serde_json::to_value(d.effect)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if want.effect != effect {
        diffs.push(format!("effect: expected {}, got {effect}", want.effect));
    }
    if let Some(code) = &want.reason_code
        && code != d.reason_code.as_str()
    {
        diffs.push(format!(
            "reason_code: expected {code}, got {}",
            d.reason_code.as_str()
        ));
    }
    if let Some(line) = want.rule_line
        && Some(line) != d.rule_line
    {
        diffs.push(format!(
            "rule_line: expected {line}, got {}",
            d.rule_line
                .map_or_else(|| "none".to_string(), |l| l.to_string())
        ));
    }
    if let Some(paths) = &want.redacted {
        let missing: Vec<&String> = paths
            .iter()
            .filter(|p| !d.redacted.iter().any(|r| **r == ***p))
            .collect();
        if !missing.is_empty() {
            diffs.push(format!(
                "redacted: expected {paths:?} redacted, {missing:?} are not (redacted: {:?})",
                d.redacted
            ));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "  {}\n  decision: {} {} — {}\n",
        diffs.join("\n  "),
        effect,
        d.reason_code.as_str(),
        d.reason
    ))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}
