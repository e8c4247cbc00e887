//! The messages, each in its service's own format.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::Alert;

/// Longest reason carried in a message (characters); longer ones are cut with `…`.
const MAX_REASON: usize = 1000;
/// PagerDuty's limit on `payload.summary`.
const MAX_PD_SUMMARY: usize = 1024;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// RFC 3339, UTC, from Unix milliseconds, always with three fractional digits
/// (`2024-06-19T15:22:45.123Z`), the form audit records use.
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    jiff::fmt::temporal::DateTimePrinter::new()
        .precision(Some(3))
        .timestamp_to_string(&t)
}

/// One line saying what happened: `faramesh deny: stripe/payouts by support-bot (RULE_DENY)`.
pub(crate) fn headline(a: &Alert) -> String {
    format!(
        "{}faramesh {}: {} by {} ({})",
        if a.dev { "[dev] " } else { "" },
        a.event,
        a.tool,
        a.agent,
        a.reason_code
    )
}

/// Slack's mrkdwn control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text inside a `code` span: escaped, and without backticks (they would end the span).
fn slack_code(s: &str) -> String {
    format!("`{}`", slack_escape(&s.replace('`', "'")))
}

/// A Slack incoming-webhook message: `text` (the notification fallback) and one `section`
/// block in mrkdwn; `channel` when the target names one.
pub(crate) fn slack(a: &Alert, channel: Option<&str>) -> Value {
    let mut lines = vec![format!(
        "*{}faramesh {}* {} by {}",
        if a.dev { "[dev] " } else { "" },
        slack_escape(&a.event),
        slack_code(&a.tool),
        slack_code(&a.agent)
    )];
    let reason = if a.reason.is_empty() {
        slack_escape(&a.reason_code)
    } else {
        format!(
            "{}: {}",
            slack_escape(&a.reason_code),
            slack_escape(&cut(&a.reason, MAX_REASON))
        )
    };
    lines.push(format!(
        "*Effect:* {}  *Reason:* {reason}",
        slack_escape(&a.effect)
    ));
    if let Some(rule) = &a.rule_ref {
        lines.push(format!("*Rule:* {}", slack_code(rule)));
    }
    lines.push(format!("*Record:* {}", slack_code(&a.dpr_id)));
    if let Some(token) = &a.defer_token {
        lines.push(format!(
            "*Approve:* {}",
            slack_code(&format!("faramesh approvals approve {token}"))
        ));
    }
    let mut body = Map::new();
    if let Some(channel) = channel {
        body.insert("channel".into(), Value::String(channel.to_owned()));
    }
    body.insert("text".into(), Value::String(slack_escape(&headline(a))));
    body.insert(
        "blocks".into(),
        json!([{
            "type": "section",
            "text": { "type": "mrkdwn", "text": lines.join("\n") }
        }]),
    );
    Value::Object(body)
}

/// PagerDuty's severity for an event.
fn severity(event: &str) -> &'static str {
    match event {
        "deny" | "budget_exceeded" | "rate_exceeded" => "error",
        "defer" | "budget_warning" | "rejected" => "warning",
        _ => "info",
    }
}

/// The alert's fields, `null`-free, for PagerDuty's `custom_details`.
fn details(a: &Alert) -> Map<String, Value> {
    let mut d = Map::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.into(), Value::String(v.to_owned()));
    };
    put("event", &a.event);
    put("agent", &a.agent);
    put("tool", &a.tool);
    put("effect", &a.effect);
    put("reason_code", &a.reason_code);
    put("reason", &cut(&a.reason, MAX_REASON));
    if let Some(r) = &a.rule_ref {
        put("rule_ref", r);
    }
    put("dpr_id", &a.dpr_id);
    if let Some(t) = &a.defer_token {
        put("defer_token", t);
    }
    d.insert("dev".into(), Value::Bool(a.dev));
    d
}

/// A PagerDuty Events API v2 `trigger`, deduplicated on the DPR id.
pub(crate) fn pagerduty(a: &Alert, routing_key: &str, service: &str) -> Value {
    let mut custom = details(a);
    if !service.is_empty() {
        custom.insert("service".into(), Value::String(service.to_owned()));
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.dpr_id,
        "client": "faramesh",
        "payload": {
            "summary": cut(&headline(a), MAX_PD_SUMMARY),
            "source": format!("faramesh/{}", a.agent),
            "severity": severity(&a.event),
            "timestamp": rfc3339(a.time_ms),
            "component": a.tool,
            "group": a.agent,
            "class": a.event,
            "custom_details": custom,
        }
    })
}

/// The generic webhook body: every field of the alert but its target, absent ones `null`.
pub(crate) fn webhook(a: &Alert) -> Value {
    json!({
        "type": "faramesh.alert",
        "version": 1,
        "event": a.event,
        "agent": a.agent,
        "tool": a.tool,
        "effect": a.effect,
        "reason_code": a.reason_code,
        "reason": cut(&a.reason, MAX_REASON),
        "rule_ref": a.rule_ref,
        "dpr_id": a.dpr_id,
        "defer_token": a.defer_token,
        "time": rfc3339(a.time_ms),
        "time_ms": a.time_ms,
        "dev": a.dev,
    })
}

/// The name of the signature header of webhook deliveries.
pub const SIGNATURE_HEADER: &str = "X-Faramesh-Signature";

/// The value of [`SIGNATURE_HEADER`] for `body` sent at Unix second `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn webhook_signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body)))
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks a [`SIGNATURE_HEADER`] value as a receiver would: a `v1` signature of `body` under
/// `secret` (compared in constant time) whose `t` is within `tolerance_s` seconds of `now_s`.
/// Several `v1=` entries are accepted (any may match), for secret rotation.
pub fn verify_webhook_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now_s.abs_diff(t) > tolerance_s.unsigned_abs() {
        return false;
    }
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    sigs.iter().any(|s| m.clone().verify_slice(s).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(rfc3339(1_718_810_565_000), "2024-06-19T15:22:45.000Z");
        assert_eq!(rfc3339(1_718_810_565_123), "2024-06-19T15:22:45.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
