//! The JSON-lines audit sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use broker::{AuditSink, BrokerError, JsonlFileSink};
use serde_json::Value;

#[test]
fn one_parseable_line_per_record_in_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/audit.jsonl");
    let sink = JsonlFileSink::open(&path).unwrap();
    for i in 0..3 {
        sink.send(&format!(
            r#"{{"seq":{i},"effect":"permit","reason":"a\nb"}}"#
        ))
        .unwrap();
    }
    // A trailing newline on the record is not doubled.
    sink.send("{\"seq\":3}\n").unwrap();
    sink.sync().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], i);
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(sink.path(), path);

    // Reopening appends, and tightens a file someone loosened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sink = JsonlFileSink::open(&path).unwrap();
    sink.send("{\"seq\":4}").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn records_that_are_not_one_json_line_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = JsonlFileSink::open(&path).unwrap();
    for bad in [
        "{\"a\":1}\n{\"b\":2}",
        "{\n\"a\": 1\n}",
        "not json",
        "{\"a\":",
        "",
    ] {
        assert!(
            matches!(sink.send(bad), Err(BrokerError::Sink(_))),
            "{bad:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

#[test]
fn concurrent_senders_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Arc::new(JsonlFileSink::open(&path).unwrap());
    let pad = "x".repeat(10_000);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let sink = Arc::clone(&sink);
            let pad = pad.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    sink.send(&format!(r#"{{"t":{t},"i":{i},"pad":"{pad}"}}"#))
                        .unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
}

#[test]
fn an_unwritable_place_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = JsonlFileSink::open(file.join("audit.jsonl")).unwrap_err();
    assert!(matches!(err, BrokerError::Io { .. }));
    assert!(err.to_string().contains("creating its directory"), "{err}");
}
