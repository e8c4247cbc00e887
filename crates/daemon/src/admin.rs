//! The admin socket (owner-only, 0600): operator commands. Who is speaking comes from the
//! kernel (`SO_PEERCRED`), not from anything the client says, and is what approvals and policy
//! changes record.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::control;
use crate::core::Core;
use crate::rpc::{self, RpcError, RpcResult};

/// The operator at the other end of an admin connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub uid: u32,
    pub name: String,
}

impl Operator {
    /// `alice (uid 1000)`: what the audit log names.
    pub fn label(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }

    pub fn of_uid(uid: u32) -> Operator {
        Operator {
            uid,
            name: user_name(uid).unwrap_or_else(|| format!("uid-{uid}")),
        }
    }
}

/// The login name of `uid`, from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenParams {
    token: String,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentParams {
    /// `None`: every agent (the global switch).
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackParams {
    #[serde(default)]
    to: Option<String>,
}

/// Answers one line of the admin socket.
pub async fn handle(core: Arc<Core>, operator: Operator, line: Vec<u8>) -> Option<String> {
    let env = match rpc::envelope(&line) {
        Ok(env) => env,
        Err(answer) => return Some(answer),
    };
    let id = env.id;
    let method = env.method.as_deref().unwrap_or_default();
    let out = dispatch(&core, &operator, method, env.params).await;
    Some(match out {
        Ok(v) => rpc::result_line(id, &v),
        Err(e) => rpc::error_line(id, e.code, &e.message),
    })
}

async fn dispatch(
    core: &Core,
    op: &Operator,
    method: &str,
    params: Option<&serde_json::value::RawValue>,
) -> RpcResult {
    match method {
        "status" => Ok(control::status(core).await),
        "approvals.list" => {
            let p: ListParams = rpc::params(params)?;
            control::approvals(core, p.status.as_deref()).await
        }
        "approvals.show" => {
            let p: TokenParams = rpc::params(params)?;
            control::approval(core, &p.token).await
        }
        "approvals.approve" | "approvals.reject" => {
            let p: TokenParams = rpc::params(params)?;
            let approve = method == "approvals.approve";
            control::resolve(core, &p.token, approve, op.label(), p.comment).await
        }
        "kill" | "unkill" => {
            let p: AgentParams = rpc::params(params)?;
            control::kill(core, p.agent, method == "kill", op.label()).await
        }
        "apply" => control::apply(core, op.label()).await,
        "rollback" => {
            let p: RollbackParams = rpc::params(params)?;
            control::rollback(core, p.to, op.label()).await
        }
        "stop" => {
            tracing::info!(by = %op.label(), "stop requested");
            core.request_stop();
            Ok(json!({"stopping": true}))
        }
        other => Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!("unknown admin method `{other}`"),
        )),
    }
}
