//! `faramesh explain DPR_ID`: a recorded decision walked through the pipeline of SPEC §5, with
//! every rule tried and why it did or did not decide. Reads the store only: no daemon needed.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};
use store::AuditRead;
use store::sqlite::SqliteReader;

use crate::write_stdout;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The record's id (`dpr_…`), as a decision's answer gives it.
    pub id: String,
    /// The stack directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The pipeline steps (SPEC §5) and the reason codes that end a decision at each.
const STEPS: [(&str, &[&str]); 9] = [
    ("kill switch", &["KILL_SWITCH"]),
    ("phase and agent", &["DAEMON_NOT_READY", "UNKNOWN_AGENT"]),
    ("pre-scanners", &["MALFORMED_REQUEST"]),
    ("session state", &[]),
    ("history ring", &[]),
    ("selectors", &["SELECTOR_UNAVAILABLE"]),
    (
        "policy engine",
        &[
            "RULE_PERMIT",
            "RULE_DENY",
            "RULE_DEFER",
            "DEFAULT_PERMIT",
            "DEFAULT_DENY",
            "DEFAULT_DEFER",
            "EVAL_ERROR",
            "RATE_EXCEEDED",
            "BUDGET_EXCEEDED",
            "EGRESS_DENIED",
        ],
    ),
    (
        "decision",
        &[
            "APPROVED",
            "APPROVAL_REJECTED",
            "APPROVAL_EXPIRED",
            "APPROVAL_MISMATCH",
            "APPROVAL_CONSUMED",
            "APPROVAL_UNAVAILABLE",
            "CREDENTIAL_UNAVAILABLE",
        ],
    ),
    ("audit write", &["AUDIT_UNAVAILABLE"]),
];

pub fn run(a: &ExplainArgs) -> ExitCode {
    match explain(a) {
        Ok(out) => {
            write_stdout(&out);
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn explain(a: &ExplainArgs) -> Result<String, String> {
    let data = crate::stack::data_dir(&a.dir);
    let (reader, seq, hash, body) = find(&data, &a.id)?;
    let record: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if record["kind"] != "decision" {
        return Err(format!(
            "{} is a {} record, not a decision",
            a.id, record["kind"]
        ));
    }
    let version = record["policy_version"].as_str().unwrap_or_default();
    let source = reader
        .policy_source(version)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let lines: Vec<&str> = source.lines().collect();
    let rules: Vec<Value> = record["trace"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|step| {
                    let line = step["line"].as_u64().unwrap_or(0);
                    let text = usize::try_from(line)
                        .ok()
                        .and_then(|l| lines.get(l.saturating_sub(1)))
                        .map_or("", |l| l.trim());
                    json!({"line": line, "rule": text, "outcome": step["outcome"]})
                })
                .collect()
        })
        .unwrap_or_default();
    let steps = steps(&record, &rules, seq, &hash.to_string());
    if a.json {
        let doc = json!({"record": record, "hash": hash.to_string(), "seq": seq, "steps": steps, "rules": rules});
        return Ok(format!("{doc:#}\n"));
    }
    Ok(text(&record, seq, &steps, &rules))
}

fn find(
    data: &std::path::Path,
    id: &str,
) -> Result<(SqliteReader, u64, audit::record::Hash, String), String> {
    let chains = SqliteReader::open(data, Some(""))
        .and_then(|r| r.chains())
        .map_err(|e| format!("{}: {e}", data.display()))?;
    for chain in chains {
        let r = SqliteReader::open(data, Some(&chain)).map_err(|e| e.to_string())?;
        if let Some((seq, hash, body)) = r.row_by_id(id).map_err(|e| e.to_string())? {
            return Ok((r, seq, hash, body));
        }
    }
    Err(format!("no record `{id}` in {}", data.display()))
}

/// One entry per pipeline step: what it found, or that the decision ended before it.
fn steps(r: &Value, rules: &[Value], seq: u64, hash: &str) -> Vec<Value> {
    let code = r["reason_code"].as_str().unwrap_or_default();
    // Steps 1–6 may end a decision early; the policy engine, the decision and the audit
    // write happen to every call that gets that far.
    let ended = STEPS
        .iter()
        .position(|(_, codes)| codes.contains(&code))
        .filter(|&i| i < 6)
        .unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (i, (name, _)) in STEPS.iter().enumerate() {
        let result = if i > ended && i < 8 {
            "not reached".to_string()
        } else if i == ended {
            format!("{code}: {}", r["reason"].as_str().unwrap_or(""))
        } else {
            found(i, r, rules, seq, hash)
        };
        out.push(json!({"step": i + 1, "name": name, "result": result}));
    }
    out.push(json!({"step": 11, "name": "answer", "result": answer(r)}));
    out
}

fn found(step: usize, r: &Value, rules: &[Value], seq: u64, hash: &str) -> String {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
    match step {
        0 => "not on".into(),
        1 => format!("READY; agent `{}` is in the policy", s("agent")),
        2 => format!("canonical arguments, digest {}", s("args_digest")),
        3 => r["session"]
            .as_str()
            .map_or("no session".into(), |x| format!("session `{x}`")),
        4 => "the agent's recent calls, for count()".into(),
        5 => match &r["selectors"] {
            Value::Null => "none used".into(),
            v => format!("used {v}"),
        },
        6 => {
            let events = match &r["events"] {
                Value::Null => String::new(),
                v => format!("; events {v}"),
            };
            format!(
                "{} rule(s) tried, then rate limits, budgets and egress on a permit{events}",
                rules.len()
            )
        }
        7 => decision(r),
        _ => format!("record {seq} written, hash {hash}"),
    }
}

fn decision(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(t) = r["defer"]["token"].as_str() {
        parts.push(format!(
            "approval {t} ({})",
            r["defer"]["status"].as_str().unwrap_or("?")
        ));
    }
    if let Some(by) = r["approval"]["approver"].as_str() {
        parts.push(format!(
            "approved by {by} at {}",
            r["approval"]["time"].as_str().unwrap_or("?")
        ));
    }
    if let Some(p) = r["credential"]["provider"].as_str() {
        parts.push(format!(
            "credential from `{p}`, lease {}, ttl {} ms (value never recorded)",
            r["credential"]["lease_id"].as_str().unwrap_or("?"),
            r["credential"]["ttl_ms"]
        ));
    }
    if parts.is_empty() {
        "nothing to settle".into()
    } else {
        parts.join("; ")
    }
}

fn answer(r: &Value) -> String {
    format!(
        "{} {} — {} ({} µs)",
        r["effect"].as_str().unwrap_or("?"),
        r["reason_code"].as_str().unwrap_or("?"),
        r["reason"].as_str().unwrap_or(""),
        r["latency_us"]
    )
}

fn text(r: &Value, seq: u64, steps: &[Value], rules: &[Value]) -> String {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{} (seq {seq}, chain {}, {})\ncall    {} → {}  adapter {}\nargs    {}\npolicy  {} ({}){}\n\n",
        s("id"),
        s("chain"),
        s("time"),
        s("agent"),
        s("tool"),
        s("adapter"),
        r["args"],
        s("policy_version"),
        s("mode"),
        if r["dev"] == true { ", dev" } else { "" },
    );
    for step in steps {
        out.push_str(&format!(
            "{:>2}. {:<16} {}\n",
            step["step"],
            step["name"].as_str().unwrap_or(""),
            step["result"].as_str().unwrap_or("")
        ));
        if step["step"] == 7 && step["result"] != "not reached" {
            for rule in rules {
                out.push_str(&format!(
                    "      line {:<5} {:<18} {}\n",
                    rule["line"],
                    rule["outcome"].as_str().unwrap_or(""),
                    rule["rule"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}
