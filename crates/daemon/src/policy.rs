//! A stack's policy as the daemon needs it: checked and compiled, plus what the engine does not
//! read — the `runtime` block, alerts and providers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::compile::{CompiledPolicy, compile};
use fpl::ast::{Block, DurationUnit, Entry, Literal, NamedBlock, Policy, Value};
use fpl::load::{Format, LoadOptions, load};
use rust_decimal::prelude::ToPrimitive;

/// The file name rule refs point into when the stack's file has no usable name.
const DEFAULT_FILE: &str = "governance.fms";

/// A checked, compiled policy and everything around it.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub compiled: Arc<CompiledPolicy>,
    /// The stack's own policy text (stored with each applied version, for rollback).
    pub source: String,
    /// The policy file's name, e.g. `governance.fms` (rule refs point into it).
    pub file_name: String,
    pub format: Format,
    pub runtime: Runtime,
    /// Alerts by agent id.
    pub alerts: HashMap<String, Vec<AlertSpec>>,
    pub providers: Vec<ProviderSpec>,
}

impl LoadedPolicy {
    /// The policy version as the store and the audit log hold it: 64 hex digits.
    pub fn version(&self) -> &str {
        version_hex(&self.compiled.version)
    }
}

/// `sha256:<hex>` → `<hex>`.
pub fn version_hex(version: &str) -> &str {
    version.strip_prefix("sha256:").unwrap_or(version)
}

/// SPEC §3.3 `runtime` keys the daemon reads. Absent keys are `None`: the caller's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    pub audit_mode: bool,
    pub backend: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub approval_ttl_ms: Option<u64>,
    pub cold_start_deny_window_ms: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub durability: Option<String>,
}

impl Runtime {
    /// The keys whose values differ between `self` and `other`, other than `mode` (which a
    /// swap applies).
    pub fn changed_keys(&self, other: &Runtime) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key, differ: bool| {
            if differ {
                keys.push(key);
            }
        };
        check("backend", self.backend != other.backend);
        check("data_dir", self.data_dir != other.data_dir);
        check("socket", self.socket != other.socket);
        check("http_listen", self.http_listen != other.http_listen);
        check(
            "approval_ttl",
            self.approval_ttl_ms != other.approval_ttl_ms,
        );
        check(
            "cold_start_deny_window",
            self.cold_start_deny_window_ms != other.cold_start_deny_window_ms,
        );
        check(
            "checkpoint_every",
            self.checkpoint_every != other.checkpoint_every,
        );
        check("durability", self.durability != other.durability);
        keys
    }
}

/// `alert { on = …; notify = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSpec {
    /// deny | defer | permit | approved | rejected | budget_warning | budget_exceeded |
    /// rate_exceeded
    pub on: Vec<String>,
    pub notify: String,
}

/// `provider "name" { type = "…"; key = value … }` with `env()` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: String,
    pub settings: BTreeMap<String, String>,
}

/// Loads, checks and compiles the policy of a stack directory or file. The error is the
/// diagnostics to show, rendered.
pub fn load_policy(path: &Path) -> Result<LoadedPolicy, String> {
    let loaded = load(path, &LoadOptions::from_env());
    if loaded.errors() > 0 || loaded.unresolved_import {
        let shown: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.diagnostic.is_error())
            .map(|d| d.render(false))
            .collect();
        return Err(format!(
            "{} does not check:\n{}",
            path.display(),
            shown.join("\n")
        ));
    }
    let Some(root) = &loaded.root else {
        return Err(format!("{} could not be read", path.display()));
    };
    let file_name = root
        .file
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(DEFAULT_FILE)
        .to_string();
    let source = (root.file.format == Format::Fpl).then_some(root.file.text.as_str());
    let compiled = compile(&loaded.policy, &file_name, source).map_err(|e| e.to_string())?;
    Ok(LoadedPolicy {
        compiled: Arc::new(compiled),
        source: root.file.text.to_string(),
        file_name,
        format: root.file.format,
        runtime: runtime(&loaded.policy)?,
        alerts: alerts(&loaded.policy),
        providers: providers(&loaded.policy),
    })
}

fn runtime(policy: &Policy) -> Result<Runtime, String> {
    let Some(block) = &policy.runtime else {
        return Ok(Runtime::default());
    };
    let text = |k: &str| block.get(k).and_then(|e| text(&e.value.value));
    let ms = |k: &str| block.get(k).and_then(|e| millis(&e.value.value));
    let checkpoint_every = match block.get("checkpoint_every") {
        None => None,
        Some(e) => {
            Some(count(e).ok_or("runtime: checkpoint_every must be a positive whole number")?)
        }
    };
    Ok(Runtime {
        audit_mode: text("mode").as_deref() == Some("audit"),
        backend: text("backend"),
        data_dir: text("data_dir").map(PathBuf::from),
        socket: text("socket").map(PathBuf::from),
        http_listen: text("http_listen"),
        approval_ttl_ms: ms("approval_ttl"),
        cold_start_deny_window_ms: ms("cold_start_deny_window"),
        checkpoint_every,
        durability: text("durability"),
    })
}

fn alerts(policy: &Policy) -> HashMap<String, Vec<AlertSpec>> {
    policy
        .agents
        .iter()
        .map(|a| {
            (
                a.id.value.clone(),
                a.alerts.iter().filter_map(alert).collect(),
            )
        })
        .collect()
}

fn alert(block: &Block) -> Option<AlertSpec> {
    let on = match &block.get("on")?.value.value {
        Value::List(items) => items.iter().filter_map(|i| text(&i.value)).collect(),
        other => vec![text(other)?],
    };
    let notify = text(&block.get("notify")?.value.value)?;
    Some(AlertSpec { on, notify })
}

fn providers(policy: &Policy) -> Vec<ProviderSpec> {
    policy.providers.iter().map(provider).collect()
}

fn provider(block: &NamedBlock) -> ProviderSpec {
    let mut settings: BTreeMap<String, String> = block
        .entries
        .iter()
        .filter_map(|e| Some((e.key.value.clone(), text(&e.value.value)?)))
        .collect();
    let kind = settings.remove("type").unwrap_or_default();
    ProviderSpec {
        name: block.name.value.clone(),
        kind,
        settings,
    }
}

/// A value as text: strings, numbers, booleans, durations as written; `env("X")` read now.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Lit(Literal::Str(s)) => Some(s.clone()),
        Value::Lit(Literal::Number(n) | Literal::Money(n)) => Some(n.to_string()),
        Value::Lit(Literal::Bool(b)) => Some(b.to_string()),
        Value::Lit(Literal::Duration(_)) => millis(v).map(|ms| format!("{ms}ms")),
        Value::Env(name) => std::env::var(name).ok(),
        _ => None,
    }
}

fn millis(v: &Value) -> Option<u64> {
    let Value::Lit(Literal::Duration(q)) = v else {
        return None;
    };
    let factor = DurationUnit::ALL
        .iter()
        .find(|(u, _, _)| *u == q.unit)
        .map(|(_, _, f)| *f)?;
    q.amount.checked_mul(factor)
}

fn count(e: &Entry) -> Option<u64> {
    match &e.value.value {
        Value::Lit(Literal::Number(n)) => n.to_u64().filter(|n| *n > 0),
        _ => None,
    }
}

/// Compiles a stored policy text again (`faramesh rollback`): the text goes into a file of
/// the stack's own name inside the stack, so imports and rule refs resolve as they did.
pub fn load_source(stack: &Path, source: &str, file_name: &str) -> Result<LoadedPolicy, String> {
    let dir = crate::stack::run_dir(stack).join("rollback");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(file_name);
    std::fs::write(&path, source).map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = load_policy(&path);
    let _ = std::fs::remove_file(&path);
    loaded
}
