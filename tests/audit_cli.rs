//! `faramesh audit verify|export|tail|show|proof` on a real store written through the real
//! group-commit writer, and on copies of it tampered with in SQLite directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use audit::note::LocalKey;
use audit::record::{Canonical, Dpr, Stored};
use serde_json::{Value, json};
use store::Store;
use store::sqlite::{Config, SqliteStore};

const RECORDS: u64 = 2_500;

fn faramesh() -> Command {
    Command::cargo_bin("faramesh").unwrap()
}

fn data_dir(stack: &Path) -> PathBuf {
    stack.join(".faramesh/data")
}

fn record(i: u64) -> Dpr {
    let mut d = Dpr::decision(
        format!("dpr_{i:08}"),
        1_795_251_600_000 + i as i64 * 1000,
        "v1".into(),
    );
    let deny = i.is_multiple_of(10);
    let agent = if i.is_multiple_of(2) {
        "support-bot"
    } else {
        "ops-bot"
    };
    d.agent = Some(agent.into());
    d.tool = Some("stripe/refund".into());
    d.effect = Some(if deny { "deny" } else { "permit" }.into());
    d.mode = Some("enforce".into());
    d.reason_code = Some(if deny { "RULE_DENY" } else { "RULE_PERMIT" }.into());
    d.reason = Some("refunds, \"small\" ones\nonly".into());
    d.rule_ref = Some("governance.fms:7".into());
    d.args = Some(Canonical::of(&json!({"amount": i, "currency": "usd"})).unwrap());
    d.args_digest = Some(format!("{i:064x}"));
    d
}

/// A stack whose log holds `RECORDS` decisions (record `i` at seq `i`), queued without waiting
/// so the writer commits them in groups; the store is closed, so a final checkpoint is signed.
fn stack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let key = LocalKey::load_or_create(&data.join("keys/audit.key"), "test-stack").unwrap();
    let store = SqliteStore::open(Config::new(&data, "chain-a"), Box::new(key)).unwrap();
    let tickets: Vec<_> = (1..=RECORDS).map(|i| store.append(record(i))).collect();
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait().unwrap().seq, i as u64 + 1);
    }
    store.close().unwrap();
    dir
}

fn stdout(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn verify(stack: &Path) -> (i32, String, String) {
    stdout(faramesh().args(["audit", "verify", "--dir"]).arg(stack))
}

fn sql(stack: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(data_dir(stack).join("faramesh.db")).unwrap();
    conn.execute_batch(statement).unwrap();
}

fn copy(stack: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(stack.join(".faramesh"))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

fn id_at(stack: &Path, seq: u64) -> String {
    let conn = rusqlite::Connection::open(data_dir(stack).join("faramesh.db")).unwrap();
    conn.query_row("SELECT id FROM dpr WHERE seq = ?1", [seq as i64], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn a_clean_log_verifies_and_tampering_is_named() {
    let s = stack();
    let (code, out, err) = verify(s.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{RECORDS} records (1..={RECORDS}) verified")),
        "{out}"
    );
    assert!(out.contains("3 signed checkpoints"), "{out}");

    // One byte of one body.
    let t = copy(s.path());
    sql(
        t.path(),
        "UPDATE dpr SET body = replace(body, '\"amount\":1234,', '\"amount\":9234,') WHERE seq = 1234 AND body LIKE '%\"amount\":1234,%'",
    );
    let (code, out, _) = verify(t.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record 1234 ({})", id_at(t.path(), 1234))),
        "{out}"
    );
    assert!(out.contains("do not match its hash"), "{out}");

    // A deleted record.
    let t = copy(s.path());
    sql(t.path(), "DELETE FROM dpr WHERE seq = 700");
    let (code, out, _) = verify(t.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("record 700") && out.contains("missing"),
        "{out}"
    );

    // Truncation: the final checkpoint covers every record.
    let t = copy(s.path());
    sql(
        t.path(),
        &format!("DELETE FROM dpr WHERE seq > {}", RECORDS - 40),
    );
    let (code, out, _) = verify(t.path());
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("record {}", RECORDS - 39)) && out.contains("removed"),
        "{out}"
    );

    // A checkpoint re-signed with another key.
    let t = copy(s.path());
    let conn = rusqlite::Connection::open(data_dir(t.path()).join("faramesh.db")).unwrap();
    let note: String = conn
        .query_row("SELECT note FROM checkpoints WHERE size = 1024", [], |r| {
            r.get(0)
        })
        .unwrap();
    let text = note.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = audit::note::sign_note(&text, &LocalKey::generate("test-stack").unwrap()).unwrap();
    conn.execute(
        "UPDATE checkpoints SET note = ?1 WHERE size = 1024",
        [forged],
    )
    .unwrap();
    drop(conn);
    let (code, out, _) = verify(t.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("checkpoint at size 1024") && out.contains("re-signed"),
        "{out}"
    );

    // JSON output names the same record.
    let t = copy(s.path());
    sql(t.path(), "UPDATE dpr SET hash = zeroblob(32) WHERE seq = 5");
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "verify", "--format", "json", "--dir"])
            .arg(t.path()),
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], json!(false));
    assert_eq!(v["chains"][0]["first_bad_record"], json!(5));
    assert_eq!(v["chains"][0]["id"], json!(id_at(t.path(), 5)));
}

#[test]
fn a_time_range_verifies_on_its_own() {
    let s = stack();
    let from = audit::time::format_ms(1_795_251_600_000 + 1000 * 1000);
    let to = audit::time::format_ms(1_795_251_600_000 + 2100 * 1000);
    let (code, out, err) = stdout(
        faramesh()
            .args(["audit", "verify", "--from", &from, "--to", &to, "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1101 records (1000..=2100)"), "{out}");
    assert!(
        out.contains("2 signed checkpoints")
            && out.contains("records 2049..=2100 come after the last signed checkpoint checked"),
        "{out}"
    );
    let (code, _, err) = stdout(
        faramesh()
            .args(["audit", "verify", "--from", "yesterday", "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 2);
    assert!(err.contains("not an RFC 3339 time"), "{err}");
}

#[test]
fn export_writes_every_record_in_both_formats() {
    let s = stack();
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "export", "--format", "jsonl", "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() as u64, RECORDS);
    for (i, line) in lines.iter().enumerate() {
        let stored = Stored::from_json(line).unwrap();
        assert_eq!(stored.dpr.seq, i as u64 + 1);
        assert_eq!(
            stored.dpr.hash(),
            stored.hash,
            "an exported record checks on its own"
        );
    }

    let csv_path = s.path().join("out.csv");
    let (code, _, _) = stdout(
        faramesh()
            .args(["audit", "export", "--format", "csv", "--out"])
            .arg(&csv_path)
            .arg("--dir")
            .arg(s.path()),
    );
    assert_eq!(code, 0);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "seq",
        "id",
        "time",
        "agent",
        "session",
        "tool",
        "effect",
        "reason_code",
        "rule_ref",
        "approver",
        "policy_version",
        "hash",
        "prev_hash",
    ] {
        assert!(
            header.split(',').any(|h| h == col),
            "{col} missing from {header}"
        );
    }
    // The reason holds a comma, quotes and a line break: quoted per RFC 4180.
    assert!(
        csv.contains("\"refunds, \"\"small\"\" ones\nonly\""),
        "{}",
        &csv[..400]
    );
    assert_eq!(
        csv.matches("\ndpr_").count(),
        0,
        "no record starts a line mid-field"
    );
    assert_eq!(csv.matches(",dpr_").count() as u64, RECORDS);
}

#[test]
fn tail_and_show() {
    let s = stack();
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "tail", "-n", "5", "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[4].trim_start().starts_with(&RECORDS.to_string()),
        "oldest first: {out}"
    );

    let (_, out, _) = stdout(
        faramesh()
            .args([
                "audit", "tail", "--effect", "deny", "--format", "json", "-n", "3", "--dir",
            ])
            .arg(s.path()),
    );
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["effect"] == "deny"));

    let id = id_at(s.path(), 42);
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "show", &id, "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["seq"], json!(42));
    assert_eq!(v["args"]["amount"], json!(42));
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    let (code, _, err) = stdout(
        faramesh()
            .args(["audit", "show", "dpr_nope", "--dir"])
            .arg(s.path()),
    );
    assert_eq!(code, 1);
    assert!(err.contains("no record `dpr_nope`"), "{err}");
}

#[test]
fn a_proof_bundle_checks_offline_and_catches_edits() {
    let s = stack();
    let id = id_at(s.path(), 777);
    let bundle = s.path().join("proof.json");
    let (code, _, err) = stdout(
        faramesh()
            .args(["audit", "proof", &id, "--out"])
            .arg(&bundle)
            .arg("--dir")
            .arg(s.path()),
    );
    assert_eq!(code, 0, "{err}");
    let key = data_dir(s.path()).join("keys/audit.key.pub");
    // Offline: from another directory, with the stack's public key only.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, _) = stdout(
        faramesh()
            .current_dir(elsewhere.path())
            .args(["audit", "verify", "--bundle"])
            .arg(&bundle)
            .arg("--key")
            .arg(&key),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("record 777") && out.contains("1024-record tree"),
        "{out}"
    );

    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    v["record"]["args"]["amount"] = json!(7770);
    let edited = elsewhere.path().join("edited.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "verify", "--bundle"])
            .arg(&edited)
            .arg("--key")
            .arg(&key),
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("record 777") && out.contains("changed"),
        "{out}"
    );

    // A bundle re-signed by someone else passes only its own key, never the stack's.
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let other = LocalKey::generate("test-stack").unwrap();
    let text = v["checkpoint"]
        .as_str()
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .to_owned()
        + "\n";
    v["checkpoint"] = json!(audit::note::sign_note(&text, &other).unwrap());
    v["key"] = json!(audit::note::Signer::verifier(&other).to_text());
    std::fs::write(&edited, v.to_string()).unwrap();
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "verify", "--bundle"])
            .arg(&edited)
            .arg("--key")
            .arg(&key),
    );
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = stdout(
        faramesh()
            .args(["audit", "verify", "--bundle"])
            .arg(&edited),
    );
    assert_eq!(code, 0);
    assert!(out.contains("bundle's own key"), "{out}");
}
