//! Operator operations, shared by the admin socket and the HTTP API: status, approvals, kill
//! switches, apply, rollback, stop.

use serde_json::{Value, json};
use store::{Approval, ApprovalStatus, PolicyApply, Resolution, StoreError};

use crate::approvals::blocking;
use crate::core::Core;
use crate::notify::Notice;
use crate::policy::{LoadedPolicy, load_policy, load_source};
use crate::rpc::{self, RpcError, RpcResult};

fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::UnknownApproval(_)
        | StoreError::NotPending { .. }
        | StoreError::NotApproved { .. }
        | StoreError::DigestMismatch(_)
        | StoreError::UnknownPolicy(_)
        | StoreError::Invalid(_) => RpcError::refused(e.to_string()),
        other => RpcError::new(rpc::INTERNAL_ERROR, other.to_string()),
    }
}

pub async fn status(core: &Core) -> Value {
    let now = core.clock.now_ms();
    let pending = blocking(core, move |s| {
        s.approvals(Some(ApprovalStatus::Pending), now)
    })
    .await
    .map(|v| v.len());
    if let Ok(n) = &pending {
        core.metrics.set_pending(*n);
    }
    let active = core.active();
    let health = core.store.health();
    json!({
        "state": core.phase().as_str(),
        "pid": std::process::id(),
        "dev": core.config.dev,
        "policy_version": active.version,
        "policy_applied": audit::time::format_ms(active.applied_ms),
        "mode": if active.audit_mode { "audit" } else { "enforce" },
        "started": audit::time::format_ms(core.started_ms),
        "uptime_s": core.started.elapsed().as_secs(),
        "pending_approvals": pending.ok(),
        // No OS tier runs yet: credentials and policy are what is enforced (SPEC §11).
        "trust_level": "CREDENTIAL",
        "store": {
            "backend": "sqlite",
            "chain": core.store.chain_id(),
            "healthy": health.healthy,
            "failures": health.failures,
            "last_error": health.last_error,
        },
        "alerts_dropped": core.notices.dropped(),
    })
}

pub fn approval_json(a: &Approval) -> Value {
    let args: Value = serde_json::from_str(&a.args).unwrap_or(Value::String(a.args.clone()));
    json!({
        "token": a.token,
        "status": a.status.as_str(),
        "agent": a.agent,
        "tool": a.tool,
        "args": args,
        "args_digest": a.args_digest,
        "rule_ref": a.rule_ref,
        "reason": a.reason,
        "created": audit::time::format_ms(a.created_ms),
        "expires": audit::time::format_ms(a.expires_ms),
        "approver": a.approver,
        "resolved": a.resolved_ms.map(audit::time::format_ms),
        "comment": a.comment,
        "consumed": a.consumed_ms.map(audit::time::format_ms),
    })
}

pub async fn approvals(core: &Core, status: Option<&str>) -> RpcResult {
    let status = match status {
        None | Some("all") => None,
        Some(s) => Some(
            s.parse::<ApprovalStatus>()
                .map_err(|_| RpcError::params(format!("unknown status `{s}`")))?,
        ),
    };
    let now = core.clock.now_ms();
    let list = blocking(core, move |s| s.approvals(status, now))
        .await
        .map_err(store_err)?;
    Ok(Value::Array(list.iter().map(approval_json).collect()))
}

pub async fn approval(core: &Core, token: &str) -> RpcResult {
    let now = core.clock.now_ms();
    let t = token.to_string();
    let found = blocking(core, move |s| s.approval(&t, now))
        .await
        .map_err(store_err)?;
    found
        .map(|a| approval_json(&a))
        .ok_or_else(|| RpcError::refused(format!("no approval {token}")))
}

/// Approves or rejects a pending approval as `approver`.
pub async fn resolve(
    core: &Core,
    token: &str,
    approve: bool,
    approver: String,
    comment: Option<String>,
) -> RpcResult {
    let now = core.clock.now_ms();
    let t = token.to_string();
    let who = approver.clone();
    let a = blocking(core, move |s| {
        s.resolve_approval(
            &t,
            Resolution {
                approve,
                approver: who,
                comment,
            },
            now,
        )
    })
    .await
    .map_err(store_err)?;
    core.notices.approvals_changed();
    tracing::info!(token, approver, approve, "approval resolved");
    let event = if approve { "approved" } else { "rejected" };
    let template = Notice {
        event: String::new(),
        agent: a.agent.clone(),
        tool: a.tool.clone(),
        effect: "defer".into(),
        reason_code: if approve {
            "APPROVED"
        } else {
            "APPROVAL_REJECTED"
        }
        .into(),
        reason: format!("{event} by {approver}"),
        rule_ref: a.rule_ref.clone(),
        dpr_id: String::new(),
        defer_token: Some(a.token.clone()),
        time_ms: now,
        target: String::new(),
        dev: core.config.dev,
    };
    core.alert(&core.active(), &[event], &template);
    Ok(approval_json(&a))
}

pub async fn kill(core: &Core, agent: Option<String>, on: bool, by: String) -> RpcResult {
    let now = core.clock.now_ms();
    let a = agent.clone();
    blocking(core, move |s| {
        if on {
            s.kill(a.as_deref(), &by, now)
        } else {
            s.unkill(a.as_deref())
        }
    })
    .await
    .map_err(store_err)?;
    let who = agent.as_deref().unwrap_or("every agent");
    tracing::warn!(agent = who, on, "kill switch changed");
    Ok(json!({"agent": agent, "killed": on}))
}

/// Loads the stack's policy again and puts it in force, recording the change. A policy that
/// does not check or compile changes nothing.
pub async fn apply(core: &Core, by: String) -> RpcResult {
    let stack = core.config.stack.clone();
    let loaded = tokio::task::spawn_blocking(move || load_policy(&stack))
        .await
        .map_err(|e| RpcError::new(rpc::INTERNAL_ERROR, e.to_string()))?
        .map_err(RpcError::refused)?;
    put_in_force(core, loaded, by).await
}

/// Records the change of version (unless it is the version in force) and swaps.
pub async fn put_in_force(core: &Core, loaded: LoadedPolicy, by: String) -> RpcResult {
    let active = core.active();
    let from = active.version.clone();
    // Sockets, the store and its settings, the secrets and alert providers are set up at
    // start: say so rather than pretend.
    let mut restart = active.runtime.changed_keys(&loaded.runtime);
    if loaded.providers != core.config.providers {
        restart.push("providers");
    }
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "runtime keys changed: they take effect when the daemon restarts");
    }
    let to = loaded.version().to_string();
    if from == to {
        return Ok(json!({"changed": false, "version": to, "restart_needed_for": restart}));
    }
    let apply = PolicyApply {
        version: to.clone(),
        source: loaded.source.clone(),
        by: by.clone(),
        now_ms: core.clock.now_ms(),
        record_id: core.new_id("dpr"),
    };
    let applied = blocking(core, move |s| s.apply_policy(apply))
        .await
        .map_err(store_err)?;
    core.swap(&loaded);
    tracing::info!(from, to, by, "policy applied");
    Ok(
        json!({"changed": true, "from": applied.from, "version": to, "seq": applied.seq, "restart_needed_for": restart}),
    )
}

/// Puts a stored version back in force: the one given, or the one before the current.
pub async fn rollback(core: &Core, to: Option<String>, by: String) -> RpcResult {
    let current = core.active().version.clone();
    let versions = blocking(core, |s| s.policy_versions())
        .await
        .map_err(store_err)?;
    let target = match to {
        Some(v) => {
            let found: Vec<&str> = versions
                .iter()
                .map(|p| p.version.as_str())
                .filter(|p| !v.is_empty() && p.starts_with(v.as_str()))
                .collect();
            match found.as_slice() {
                [one] => (*one).to_string(),
                [] => return Err(RpcError::refused(format!("no stored policy version `{v}`"))),
                _ => {
                    return Err(RpcError::refused(format!(
                        "`{v}` is the start of {} versions; give more of it",
                        found.len()
                    )));
                }
            }
        }
        None => versions
            .iter()
            .find(|p| p.version != current)
            .map(|p| p.version.clone())
            .ok_or_else(|| RpcError::refused("no earlier policy version to roll back to"))?,
    };
    let t = target.clone();
    let source = blocking(core, move |s| s.policy_source(&t))
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::refused(format!("the source of {target} is not stored")))?;
    let stack = core.config.stack.clone();
    let file = core.active().file_name.clone();
    let loaded = tokio::task::spawn_blocking(move || load_source(&stack, &source, &file))
        .await
        .map_err(|e| RpcError::new(rpc::INTERNAL_ERROR, e.to_string()))?
        .map_err(RpcError::refused)?;
    if loaded.version() != target {
        return Err(RpcError::refused(format!(
            "version {target} compiles to {} today (an import changed?); not rolled back",
            loaded.version()
        )));
    }
    if target == current {
        return Ok(json!({"changed": false, "version": target}));
    }
    let (record_id, now) = (core.new_id("dpr"), core.clock.now_ms());
    let (t, who) = (target.clone(), by.clone());
    let applied = blocking(core, move |s| s.activate_policy(&t, record_id, &who, now))
        .await
        .map_err(store_err)?;
    core.swap(&loaded);
    tracing::info!(from = current, to = target, by, "policy rolled back");
    Ok(json!({"changed": true, "from": applied.from, "version": target, "seq": applied.seq}))
}
