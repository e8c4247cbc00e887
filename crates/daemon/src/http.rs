//! The HTTP API (SPEC §8), on loopback by default. Decisions take the same path as the agent
//! socket; everything that reads approvals or the log, or changes anything, needs the
//! operator's bearer token (`<data_dir>/keys/operator.token`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use store::Filter;

use crate::approvals::blocking;
use crate::control;
use crate::core::Core;
use crate::rpc::{self, RpcError, RpcResult};

#[derive(Debug, Clone)]
struct Http {
    core: Arc<Core>,
    token: Arc<str>,
}

pub fn router(core: Arc<Core>, operator_token: String) -> Router {
    let state = Http {
        core,
        token: operator_token.into(),
    };
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/report", post(report))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{token}", get(show_approval))
        .route("/v1/approvals/{token}/approve", post(approve))
        .route("/v1/approvals/{token}/reject", post(reject))
        .route("/v1/audit", get(audit))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(rpc::MAX_LINE))
        .with_state(state)
}

fn reply(r: RpcResult) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            let status = match e.code {
                rpc::INVALID_PARAMS | rpc::PARSE_ERROR => StatusCode::BAD_REQUEST,
                rpc::REFUSED => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, axum::Json(json!({"error": e.message}))).into_response()
        }
    }
}

/// `None` when the request carries the operator token; else the 401 to answer.
fn unauthorized(h: &Http, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), h.token.as_bytes()) {
        None
    } else {
        Some((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "this needs the operator token: Authorization: Bearer <token>"})),
        )
            .into_response())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn decide(State(h): State<Http>, body: Bytes) -> Response {
    let req = serde_json::from_slice::<engine::car::ActionRequest>(&body)
        .map_err(|e| format!("invalid decide body: {e}"))
        .map(|mut r| {
            r.adapter.get_or_insert_with(|| "http".into());
            r
        });
    axum::Json(h.core.decide(req).await).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    dpr_id: String,
    outcome: String,
    #[serde(default)]
    cost: Option<rust_decimal::Decimal>,
}

async fn report(State(h): State<Http>, body: Bytes) -> Response {
    let r = serde_json::from_slice::<ReportBody>(&body)
        .map_err(|e| RpcError::params(format!("invalid report body: {e}")))
        .and_then(|b| h.core.report(&b.dpr_id, &b.outcome, b.cost));
    reply(r)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_approvals(
    State(h): State<Http>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(r) = unauthorized(&h, &headers) {
        return r;
    }
    reply(control::approvals(&h.core, q.status.as_deref()).await)
}

async fn show_approval(
    State(h): State<Http>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(&h, &headers) {
        return r;
    }
    reply(control::approval(&h.core, &token).await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// Who is approving, as the operator names themself; recorded as `http:<name>`.
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

async fn approve(h: State<Http>, headers: HeaderMap, token: Path<String>, body: Bytes) -> Response {
    resolve(h, headers, token, body, true).await
}

async fn reject(h: State<Http>, headers: HeaderMap, token: Path<String>, body: Bytes) -> Response {
    resolve(h, headers, token, body, false).await
}

async fn resolve(
    State(h): State<Http>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Bytes,
    approve: bool,
) -> Response {
    if let Some(r) = unauthorized(&h, &headers) {
        return r;
    }
    let b: ResolveBody = if body.is_empty() {
        ResolveBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return reply(Err(RpcError::params(format!("invalid body: {e}")))),
        }
    };
    let name = b.approver.filter(|n| !n.trim().is_empty());
    let approver = format!("http:{}", name.as_deref().unwrap_or("operator"));
    reply(control::resolve(&h.core, &token, approve, approver, b.comment).await)
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    effect: Option<String>,
    agent: Option<String>,
    after_seq: Option<u64>,
    limit: Option<u64>,
}

async fn audit(State(h): State<Http>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Response {
    if let Some(r) = unauthorized(&h, &headers) {
        return r;
    }
    let filter = Filter {
        effect: q.effect,
        agent: q.agent,
        after_seq: q.after_seq,
        limit: Some(q.limit.unwrap_or(100).min(10_000)),
        newest_first: q.after_seq.is_none(),
        ..Filter::default()
    };
    let rows = blocking(&h.core, move |s| s.query(&filter)).await;
    reply(
        rows.map(|rows| {
            Value::Array(
                rows.into_iter()
                    .map(|(seq, hash, body)| {
                        let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        if let Some(o) = v.as_object_mut() {
                            o.insert("hash".into(), json!(hash.to_string()));
                            o.insert("seq".into(), json!(seq));
                        }
                        v
                    })
                    .collect(),
            )
        })
        .map_err(|e| RpcError::new(rpc::INTERNAL_ERROR, e.to_string())),
    )
}

async fn status(State(h): State<Http>) -> Response {
    axum::Json(control::status(&h.core).await).into_response()
}

async fn healthz(State(h): State<Http>) -> Response {
    let ready = h.core.phase() == crate::core::Phase::Ready;
    let healthy = h.core.store.health().healthy;
    let code = if ready && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"state": h.core.phase().as_str(), "store_healthy": healthy})),
    )
        .into_response()
}

async fn metrics(State(h): State<Http>) -> Response {
    let _ = control::status(&h.core).await;
    h.core.metrics.set_alerts_dropped(h.core.notices.dropped());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.core.metrics.encode(),
    )
        .into_response()
}
