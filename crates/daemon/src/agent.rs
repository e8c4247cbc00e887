//! The agent socket's methods (SPEC §8): `decide`, `govern`, `report`, `approval.status`,
//! `status`. Nothing here can approve, reject, kill or apply: those are the operator's, on the
//! admin socket.

use std::sync::Arc;

use engine::car::ActionRequest;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::approvals::blocking;
use crate::core::{Answer, Core};
use crate::rpc::{self, RpcError, RpcResult};

/// Answers one line of the agent socket.
pub async fn handle(core: Arc<Core>, line: Vec<u8>) -> Option<String> {
    let env = match rpc::envelope(&line) {
        Ok(env) => env,
        Err(answer) => return Some(answer),
    };
    if let Some(kind) = &env.kind {
        return Some(plain(&core, kind, &line).await);
    }
    let id = env.id;
    let method = env.method.as_deref().unwrap_or_default();
    let out = match method {
        // The hot path: the answer is written straight into the line, no JSON tree between.
        "decide" => Ok(Reply::Answer(Box::new(
            core.decide(decide_request(env.params, "sdk")).await,
        ))),
        "govern" => Ok(Reply::Json(govern(&core, env.params).await)),
        "report" => report(&core, env.params).map(Reply::Json),
        "approval.status" => approval_status(&core, env.params).await.map(Reply::Json),
        "status" => Ok(Reply::Json(crate::control::status(&core).await)),
        other => Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!(
                "unknown method `{other}`: the agent socket answers decide, govern, report, approval.status and status"
            ),
        )),
    };
    Some(match out {
        Ok(v) => rpc::result_line(id, &v),
        Err(e) => rpc::error_line(id, e.code, &e.message),
    })
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Reply {
    Answer(Box<Answer>),
    Json(serde_json::Value),
}

/// The call of a `decide`, or why it cannot be read (which the decision path turns into a
/// recorded `MALFORMED_REQUEST` deny).
pub fn decide_request(
    params: Option<&RawValue>,
    adapter: &'static str,
) -> Result<ActionRequest, String> {
    let Some(raw) = params else {
        return Err("decide needs params {agent, tool, args}".into());
    };
    let mut req: ActionRequest =
        serde_json::from_str(raw.get()).map_err(|e| format!("invalid decide params: {e}"))?;
    if req.adapter.is_none() {
        req.adapter = Some(adapter.to_string());
    }
    Ok(req)
}

/// Upstream `govern` params (faramesh-sdk): the tool id arrives split as `tool` and
/// `operation`, sometimes also as `tool_id`.
#[derive(Debug, Deserialize)]
struct GovernParams {
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    tool_id: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default, deserialize_with = "engine::car::strict_value")]
    args: serde_json::Value,
    #[serde(default)]
    defer_token: Option<String>,
}

/// SPEC §8: `stripe` + `refund` is `stripe/refund`. Published SDKs also send `tool_id` equal to
/// the tool part alone, so `tool_id` wins only when it says more than `tool`. `invoke` is the
/// SDK's name for "no operation" (SPEC §9: no `/invoke` suffix).
fn govern_tool(p: &GovernParams) -> String {
    let tool = p.tool.as_deref().unwrap_or_default();
    if let Some(id) = p
        .tool_id
        .as_deref()
        .filter(|id| !id.is_empty() && *id != tool)
    {
        return id.to_string();
    }
    match p.operation.as_deref() {
        None | Some("") | Some("invoke") => tool.to_string(),
        Some(op) => format!("{tool}/{op}"),
    }
}

async fn govern(core: &Core, params: Option<&RawValue>) -> serde_json::Value {
    let req = rpc::params::<GovernParams>(params)
        .map_err(|e| e.message)
        .map(|p| ActionRequest {
            tool: govern_tool(&p),
            agent: p.agent_id,
            session: p.session_id,
            args: p.args,
            call_id: p.call_id,
            adapter: Some("sdk".into()),
            defer_token: p.defer_token,
            principal: None,
        });
    govern_answer(&core.decide(req).await)
}

/// The upstream response shape: upper-case effect, `structured_denial` on deny and defer.
fn govern_answer(a: &Answer) -> serde_json::Value {
    let mut out = json!({
        "effect": a.effect.to_ascii_uppercase(),
        "reason_code": a.reason_code,
        "reason": a.reason,
        "rule_ref": a.rule_ref,
        "dpr_id": a.dpr_id,
        "call_id": a.dpr_id,
        "latency_ms": a.latency_us / 1000,
        "latency_us": a.latency_us,
    });
    if let Some(t) = &a.defer_token {
        out["defer_token"] = json!(t);
    }
    if let Some(c) = &a.credential {
        out["credential"] = serde_json::to_value(c).unwrap_or_default();
    }
    if let Some(ms) = a.retry_after_ms {
        out["retry_after_ms"] = json!(ms);
    }
    if a.effect != "permit" {
        let resolution = match (&a.defer_token, a.retry_after_ms) {
            (Some(t), _) => json!({"type": "pending_approval", "approval_id": t}),
            (None, Some(ms)) => {
                json!({"type": "retry_after", "retry_after_seconds": ms.div_ceil(1000)})
            }
            (None, None) => serde_json::Value::Null,
        };
        let mut denial = json!({
            "code": a.reason_code,
            "human_message": a.reason,
            "rule_ref": a.rule_ref,
        });
        if !resolution.is_null() {
            denial["resolution"] = resolution;
        }
        out["structured_denial"] = denial;
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    dpr_id: String,
    outcome: String,
    #[serde(default)]
    cost: Option<rust_decimal::Decimal>,
}

fn report(core: &Core, params: Option<&RawValue>) -> RpcResult {
    let p: ReportParams = rpc::params(params)?;
    core.report(&p.dpr_id, &p.outcome, p.cost)
}

#[derive(Debug, Deserialize)]
struct TokenParams {
    defer_token: String,
}

async fn approval_status(core: &Core, params: Option<&RawValue>) -> RpcResult {
    let p: TokenParams = rpc::params(params)?;
    let now = core.clock.now_ms();
    let token = p.defer_token.clone();
    let found = blocking(core, move |s| s.approval(&token, now))
        .await
        .map_err(|e| RpcError::new(rpc::INTERNAL_ERROR, e.to_string()))?;
    let a = found.ok_or_else(|| RpcError::refused(format!("no approval {}", p.defer_token)))?;
    Ok(json!({
        "defer_token": a.token,
        "status": a.status.as_str(),
        "agent": a.agent,
        "tool": a.tool,
        "expires": audit::time::format_ms(a.expires_ms),
    }))
}

/// The upstream daemon's plain (non-JSON-RPC) messages the published SDK sends.
async fn plain(core: &Core, kind: &str, line: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Poll {
        #[serde(default)]
        defer_token: String,
    }
    if kind != "poll_defer" {
        return format!("{}\n", json!({"error": format!("unknown type: {kind}")}));
    }
    let Ok(p) = serde_json::from_slice::<Poll>(line) else {
        return format!("{}\n", json!({"error": "invalid poll_defer"}));
    };
    let now = core.clock.now_ms();
    let token = p.defer_token.clone();
    let status = match blocking(core, move |s| s.approval(&token, now)).await {
        Ok(Some(a)) => match a.status {
            store::ApprovalStatus::Pending => "pending",
            store::ApprovalStatus::Approved => "approved",
            store::ApprovalStatus::Rejected | store::ApprovalStatus::Consumed => "denied",
            store::ApprovalStatus::Expired => "expired",
        },
        Ok(None) => "denied",
        Err(e) => return format!("{}\n", json!({"error": e.to_string()})),
    };
    format!(
        "{}\n",
        json!({"defer_token": p.defer_token, "status": status})
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(tool: Option<&str>, op: Option<&str>, id: Option<&str>) -> GovernParams {
        GovernParams {
            agent_id: "a".into(),
            session_id: None,
            call_id: None,
            tool_id: id.map(str::to_string),
            tool: tool.map(str::to_string),
            operation: op.map(str::to_string),
            args: serde_json::Value::Null,
            defer_token: None,
        }
    }

    #[test]
    fn govern_rebuilds_the_tool_id() {
        // faramesh-sdk 0.3.3 sends tool_id equal to the tool part.
        assert_eq!(
            govern_tool(&params(Some("stripe"), Some("refund"), Some("stripe"))),
            "stripe/refund"
        );
        assert_eq!(
            govern_tool(&params(Some("stripe"), Some("refund"), None)),
            "stripe/refund"
        );
        assert_eq!(govern_tool(&params(Some("a/b"), Some("c"), None)), "a/b/c");
        assert_eq!(
            govern_tool(&params(Some("search_docs"), Some("invoke"), None)),
            "search_docs"
        );
        assert_eq!(
            govern_tool(&params(
                Some("stripe"),
                Some("refund"),
                Some("stripe/refund")
            )),
            "stripe/refund"
        );
    }
}
