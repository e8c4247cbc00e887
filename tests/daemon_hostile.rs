//! Hostile and careless clients on the agent socket (SPEC §8): malformed lines, non-UTF-8,
//! arrays, oversized lines, unknown methods, bad decide params, slow, silent and greedy
//! clients, and a thousand connections at once. The daemon answers what it can, keeps every
//! connection it can, records every decision, and keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon_common;

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemon_common::*;
use serde_json::{Value, json};

const AGENT: &str = "bot";
/// SPEC §8: 1 MiB per line.
const MAX_LINE: usize = 1 << 20;

const POLICY: &str = r#"runtime {
  durability = "interval"
}

agent "bot" {
  default deny
  rules {
    permit search_docs
    deny   shell/exec reason "no shells"
  }
}
"#;

fn decide_line(id: Value, tool: &str, args: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "decide", "params": call(AGENT, tool, args)})
        .to_string()
        .into_bytes()
}

/// A raw connection and a reader of its answers.
fn connect(d: &Daemon) -> (UnixStream, BufReader<UnixStream>) {
    let w = d.raw();
    let r = BufReader::new(w.try_clone().unwrap());
    (w, r)
}

#[track_caller]
fn expect_error(v: &Value, code: i64, id: &Value, what: &str) {
    assert_eq!(v["jsonrpc"], "2.0", "{what}: {v}");
    assert!(
        v.get("result").is_none(),
        "{what} must not get a result: {v}"
    );
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert_eq!(&v["id"], id, "{what}: {v}");
}

/// A normal decide on a fresh connection, and `faramesh status` says READY.
#[track_caller]
fn still_serving(d: &Daemon) {
    let a = d.decide(call(AGENT, "search_docs", json!({"q": "still there?"})));
    expect(&a, "permit", "RULE_PERMIT");
    let out = faramesh_in(&d.stack, &["status"]);
    ok(&out, "faramesh status");
    assert!(stdout(&out).contains("READY"), "{}", shown(&out));
}

#[test]
fn malformed_lines_get_errors_and_the_connection_goes_on() {
    let dir = stack(POLICY);
    let mut d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    let null = Value::Null;
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"status\",\"params\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>, i64, Value)> = vec![
        ("not JSON", b"{bad".to_vec(), -32700, null.clone()),
        ("truncated JSON", br#"{"jsonrpc":"2.0","id":1,"#.to_vec(), -32700, null.clone()),
        ("non-UTF-8 bytes", b"\xff\xfe\xfd\x00\x80".to_vec(), -32700, null.clone()),
        (
            "non-UTF-8 inside a valid request",
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"sta\xfftus\"}".to_vec(),
            -32700,
            null.clone(),
        ),
        (
            "a batch (JSON array of requests)",
            br#"[{"jsonrpc":"2.0","id":3,"method":"status"}]"#.to_vec(),
            -32600,
            null.clone(),
        ),
        ("an array of numbers", b"[1,2]".to_vec(), -32600, null.clone()),
        ("an empty array", b"[]".to_vec(), -32600, null.clone()),
        ("a string", br#""status""#.to_vec(), -32600, null.clone()),
        ("null", b"null".to_vec(), -32600, null.clone()),
        ("a number", b"42".to_vec(), -32600, null.clone()),
        ("an empty object", b"{}".to_vec(), -32600, null.clone()),
        (
            "no method",
            br#"{"jsonrpc":"2.0","id":5}"#.to_vec(),
            -32600,
            json!(5),
        ),
        (
            "jsonrpc 1.0",
            br#"{"jsonrpc":"1.0","id":6,"method":"status"}"#.to_vec(),
            -32600,
            json!(6),
        ),
        (
            "a method that is not a string",
            br#"{"jsonrpc":"2.0","id":7,"method":5}"#.to_vec(),
            -32700,
            null.clone(),
        ),
        (
            "an unknown method",
            br#"{"jsonrpc":"2.0","id":8,"method":"frobnicate"}"#.to_vec(),
            -32601,
            json!(8),
        ),
        (
            "an empty method",
            br#"{"jsonrpc":"2.0","id":"e","method":""}"#.to_vec(),
            -32601,
            json!("e"),
        ),
        (
            "a method in the wrong case",
            br#"{"jsonrpc":"2.0","id":9,"method":"DECIDE","params":{}}"#.to_vec(),
            -32601,
            json!(9),
        ),
        (
            "a tool id as the method",
            br#"{"jsonrpc":"2.0","id":10,"method":"shell/exec"}"#.to_vec(),
            -32601,
            json!(10),
        ),
        (
            "approval.status of an unknown token",
            br#"{"jsonrpc":"2.0","id":11,"method":"approval.status","params":{"defer_token":"dfr_nope"}}"#.to_vec(),
            -32000,
            json!(11),
        ),
        (
            "approval.status without a token",
            br#"{"jsonrpc":"2.0","id":12,"method":"approval.status","params":{}}"#.to_vec(),
            -32602,
            json!(12),
        ),
        (
            "report with a bad outcome",
            br#"{"jsonrpc":"2.0","id":13,"method":"report","params":{"dpr_id":"dpr_x","outcome":"maybe"}}"#.to_vec(),
            -32602,
            json!(13),
        ),
        (
            "report of a call never permitted",
            br#"{"jsonrpc":"2.0","id":14,"method":"report","params":{"dpr_id":"dpr_x","outcome":"ok"}}"#.to_vec(),
            -32000,
            json!(14),
        ),
    ];
    for (what, line, code, id) in &cases {
        send(&mut w, line);
        // Blank lines between requests are skipped without an answer.
        send(&mut w, b"   \t");
        let v = answer(&mut r);
        expect_error(&v, *code, id, what);
    }
    // Absurd nesting in params the method ignores: answered one way or the other, and the
    // daemon does not overflow its stack.
    send(&mut w, deep.as_bytes());
    let v = answer(&mut r);
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert!(v["id"] == 99 || v["id"].is_null(), "{v}");
    // The id comes back as given, and the same connection is served normally.
    send(
        &mut w,
        br#"{"jsonrpc":"2.0","id":"last","method":"status"}"#,
    );
    let v = answer(&mut r);
    assert_eq!(v["id"], "last", "{v}");
    assert_eq!(v["result"]["state"], "READY", "{v}");
    send(&mut w, &decide_line(json!(77), "shell/exec", json!({})));
    let v = answer(&mut r);
    assert_eq!(v["id"], 77, "{v}");
    expect(&v["result"], "deny", "RULE_DENY");
    // A request cut off by the client's EOF is dropped, not half-answered.
    w.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"sta"#)
        .unwrap();
    w.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(
        rest.is_empty() || rest.contains("\"error\""),
        "a partial line at EOF gets no result: {rest}"
    );
    assert!(d.running(), "the daemon survived:\n{}", d.log_text());
    still_serving(&d);
    d.stop();
}

#[test]
fn decide_with_bad_params_is_a_recorded_malformed_deny() {
    let dir = stack(POLICY);
    let d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let big = "x".repeat(300 * 1024);
    let params: Vec<(&str, String)> = vec![
        ("no params", String::new()),
        ("null params", r#","params":null"#.into()),
        ("empty params", r#","params":{}"#.into()),
        ("array params", r#","params":[]"#.into()),
        ("string params", r#","params":"decide""#.into()),
        (
            "agent missing",
            r#","params":{"tool":"search_docs","args":{}}"#.into(),
        ),
        (
            "tool missing",
            r#","params":{"agent":"bot","args":{}}"#.into(),
        ),
        (
            "agent not a string",
            r#","params":{"agent":5,"tool":"search_docs","args":{}}"#.into(),
        ),
        (
            "tool not a string",
            r#","params":{"agent":"bot","tool":["search_docs"],"args":{}}"#.into(),
        ),
        (
            "args a string",
            r#","params":{"agent":"bot","tool":"search_docs","args":"q"}"#.into(),
        ),
        (
            "args an array",
            r#","params":{"agent":"bot","tool":"search_docs","args":[1]}"#.into(),
        ),
        (
            "empty tool",
            r#","params":{"agent":"bot","tool":"","args":{}}"#.into(),
        ),
        (
            "NUL in args",
            r#","params":{"agent":"bot","tool":"search_docs","args":{"q":"a\u0000b"}}"#.into(),
        ),
        (
            "NUL in the tool",
            r#","params":{"agent":"bot","tool":"search_docs\u0000","args":{}}"#.into(),
        ),
        (
            "a tool id of 10 000 bytes",
            format!(
                r#","params":{{"agent":"bot","tool":"{}","args":{{}}}}"#,
                "t".repeat(10_000)
            ),
        ),
        (
            "args nested 100 deep",
            format!(
                r#","params":{{"agent":"bot","tool":"search_docs","args":{{"a":{}}}}}"#,
                deep(100)
            ),
        ),
        (
            "args nested 100 000 deep",
            format!(
                r#","params":{{"agent":"bot","tool":"search_docs","args":{{"a":{}}}}}"#,
                deep(100_000)
            ),
        ),
        (
            "a key twice in args",
            r#","params":{"agent":"bot","tool":"search_docs","args":{"q":"a","q":"b"}}"#.into(),
        ),
        (
            "a key twice in nested args",
            r#","params":{"agent":"bot","tool":"search_docs","args":{"o":{"k":1,"k":2}}}"#.into(),
        ),
        (
            "a key twice in the principal",
            r#","params":{"agent":"bot","tool":"search_docs","args":{},"principal":{"role":"a","role":"b"}}"#.into(),
        ),
        (
            "a field twice",
            r#","params":{"agent":"bot","tool":"shell/exec","tool":"search_docs","args":{}}"#.into(),
        ),
        (
            "args over 256 KiB",
            format!(r#","params":{{"agent":"bot","tool":"search_docs","args":{{"q":"{big}"}}}}"#),
        ),
    ];
    let mut ids = Vec::new();
    for (i, (what, p)) in params.iter().enumerate() {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"decide"{p}}}"#);
        send(&mut w, line.as_bytes());
        let v = answer(&mut r);
        assert_eq!(v["id"], i, "{what}: {v}");
        let res = &v["result"];
        assert!(res.is_object(), "{what}: a decision, not an RPC error: {v}");
        expect(res, "deny", "MALFORMED_REQUEST");
        assert!(res.get("credential").is_none(), "{what}: {v}");
        ids.push((*what, res["dpr_id"].as_str().unwrap().to_string()));
    }
    // The upstream `govern` shape says the same thing in its own words.
    send(
        &mut w,
        br#"{"jsonrpc":"2.0","id":"g","method":"govern","params":"refund"}"#,
    );
    let g = answer(&mut r);
    assert_eq!(g["result"]["effect"], "DENY", "{g}");
    assert_eq!(g["result"]["reason_code"], "MALFORMED_REQUEST", "{g}");
    assert_eq!(
        g["result"]["structured_denial"]["code"], "MALFORMED_REQUEST",
        "{g}"
    );
    ids.push((
        "govern",
        g["result"]["dpr_id"].as_str().unwrap().to_string(),
    ));
    send(
        &mut w,
        br#"{"jsonrpc":"2.0","id":"g2","method":"govern","params":{"agent_id":"bot","tool":"search_docs","args":{"q":"a","q":"b"}}}"#,
    );
    let g2 = answer(&mut r);
    assert_eq!(g2["result"]["reason_code"], "MALFORMED_REQUEST", "{g2}");
    assert!(
        g2["result"]["reason"]
            .as_str()
            .unwrap()
            .contains("duplicate"),
        "{g2}"
    );
    ids.push((
        "govern, a key twice",
        g2["result"]["dpr_id"].as_str().unwrap().to_string(),
    ));
    drop((w, r));
    still_serving(&d);
    d.stop();

    // Every one of them is a record of the log: a deny, MALFORMED_REQUEST.
    verify(dir.path());
    let records = export(dir.path());
    for (what, id) in &ids {
        let rec = records
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{what}: {id} is not in the log"));
        assert_eq!(rec["effect"], "deny", "{what}: {rec}");
        assert_eq!(rec["reason_code"], "MALFORMED_REQUEST", "{what}: {rec}");
    }
}

#[test]
fn an_oversized_line_is_refused_and_the_connection_goes_on() {
    let dir = stack(POLICY);
    let mut d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    let null = Value::Null;

    // A decide padded to exactly MAX_LINE + 1 bytes: refused whole.
    let pad_line = |total: usize, id: u32| {
        let head = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"decide","params":{{"agent":"bot","tool":"search_docs","args":{{"pad":""#
        );
        let tail = r#""}}}"#;
        let mut line = head.into_bytes();
        line.resize(total - tail.len(), b'x');
        line.extend_from_slice(tail.as_bytes());
        assert_eq!(line.len(), total);
        line
    };
    send(&mut w, &pad_line(MAX_LINE + 1, 1));
    expect_error(&answer(&mut r), -32600, &null, "a line of 1 MiB + 1 byte");
    send(
        &mut w,
        &decide_line(json!(2), "search_docs", json!({"q": "after"})),
    );
    let v = answer(&mut r);
    assert_eq!(
        v["id"], 2,
        "the request after the oversized line is answered: {v}"
    );
    expect(&v["result"], "permit", "RULE_PERMIT");

    // Exactly MAX_LINE is within the limit: it is read and decided (its args are too big for
    // the engine, which is a recorded deny, not a framing error).
    send(&mut w, &pad_line(MAX_LINE, 3));
    let v = answer(&mut r);
    assert_eq!(v["id"], 3, "{v}");
    expect(&v["result"], "deny", "MALFORMED_REQUEST");

    // 8 MiB of garbage without a newline until the end; then a valid request.
    let mut junk = vec![b'{'; 8 * MAX_LINE];
    junk[17] = 0xff;
    send(&mut w, &junk);
    expect_error(&answer(&mut r), -32600, &null, "an 8 MiB line");
    send(&mut w, &decide_line(json!(4), "shell/exec", json!({})));
    let v = answer(&mut r);
    assert_eq!(v["id"], 4, "{v}");
    expect(&v["result"], "deny", "RULE_DENY");
    drop((w, r));

    // An oversized line that never ends: the client gives up and goes away.
    let mut w2 = d.raw();
    w2.write_all(&vec![b'a'; 2 * MAX_LINE]).unwrap();
    drop(w2);
    assert!(d.running(), "{}", d.log_text());
    still_serving(&d);
    d.stop();
}

#[test]
fn slow_silent_and_greedy_clients_do_not_hold_up_others() {
    let dir = stack(POLICY);
    let mut d = Daemon::start(dir.path());

    // A: half a request, then nothing (for now).
    let line = decide_line(json!("slow"), "search_docs", json!({"q": "slowly"}));
    let (half, rest) = line.split_at(line.len() / 2);
    let (mut slow, mut slow_r) = connect(&d);
    slow.write_all(half).unwrap();
    // B: connects and says nothing.
    let silent = d.raw();
    // C: writes requests as fast as it can, never reads an answer, then hangs up.
    let greedy = {
        let mut c = d.raw();
        c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        std::thread::spawn(move || {
            let mut sent = 0usize;
            for i in 0..50_000 {
                let mut l = decide_line(json!(i), "search_docs", json!({"i": i}));
                l.push(b'\n');
                if c.write_all(&l).is_err() {
                    break;
                }
                sent += 1;
            }
            drop(c);
            sent
        })
    };

    // D: meanwhile, an ordinary agent is served promptly, on one connection and on fresh ones.
    let mut agent = d.agent();
    let mut slowest = Duration::ZERO;
    for i in 0..100u32 {
        let started = Instant::now();
        let v = if i.is_multiple_of(10) {
            d.decide(call(AGENT, "shell/exec", json!({"i": i})))
        } else {
            agent
                .call("decide", call(AGENT, "search_docs", json!({"i": i})))
                .unwrap()
        };
        slowest = slowest.max(started.elapsed());
        assert!(v["effect"] == "permit" || v["effect"] == "deny", "{v}");
    }
    assert!(
        slowest < Duration::from_secs(3),
        "a decision took {slowest:?} while other clients misbehaved"
    );
    let sent = greedy.join().unwrap();
    assert!(sent > 0, "the greedy client wrote something");

    // A finishes its line within the deadline: answered, on its own connection.
    std::thread::sleep(Duration::from_millis(200));
    slow.write_all(rest).unwrap();
    slow.write_all(b"\n").unwrap();
    let v = answer(&mut slow_r);
    assert_eq!(v["id"], "slow", "{v}");
    expect(&v["result"], "permit", "RULE_PERMIT");
    drop((silent, slow, slow_r, agent));

    assert!(d.running(), "{}", d.log_text());
    still_serving(&d);
    eprintln!("the greedy client wrote {sent} requests before it blocked and hung up");
    d.stop();
    verify(dir.path());
}

#[test]
fn a_thousand_concurrent_connections() {
    const N: usize = 1_000;
    let dir = stack(POLICY);
    let mut d = Daemon::start(dir.path());
    let started = Instant::now();
    let mut conns: Vec<UnixStream> = (0..N).map(|_| d.raw()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let tool = if i.is_multiple_of(2) {
            "search_docs"
        } else {
            "shell/exec"
        };
        send(c, &decide_line(json!(i), tool, json!({"conn": i})));
    }
    // The operator is still served with every agent connection open and busy.
    let out = faramesh_in(dir.path(), &["status", "--format", "json"]);
    ok(&out, "faramesh status with 1,000 agent connections open");
    let mut ids = HashSet::new();
    for (i, c) in conns.iter().enumerate() {
        let mut r = BufReader::new(c.try_clone().unwrap());
        let v = answer(&mut r);
        assert_eq!(v["id"], i, "{v}");
        let res = &v["result"];
        if i.is_multiple_of(2) {
            expect(res, "permit", "RULE_PERMIT");
        } else {
            expect(res, "deny", "RULE_DENY");
        }
        assert!(
            ids.insert(res["dpr_id"].as_str().unwrap().to_string()),
            "{v}"
        );
    }
    eprintln!(
        "{N} connections opened and answered in {:?}",
        started.elapsed()
    );
    // All still open: a second round on every one of them.
    for (i, c) in conns.iter_mut().enumerate() {
        send(c, &decide_line(json!(N + i), "search_docs", json!({})));
    }
    for (i, c) in conns.iter().enumerate() {
        let v = answer(&mut BufReader::new(c.try_clone().unwrap()));
        assert_eq!(v["id"], N + i, "{v}");
        expect(&v["result"], "permit", "RULE_PERMIT");
    }
    drop(conns);
    assert!(d.running(), "{}", d.log_text());
    still_serving(&d);
    d.stop();
    let records = export(dir.path());
    let logged: HashSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert!(ids.iter().all(|id| logged.contains(id.as_str())));
}

/// SPEC §8 / rpc.rs: a started line must be finished within 30 s; then the daemon answers an
/// error and closes. It waits the real 30 s, in parallel with the other tests of this file.
#[test]
fn a_stalled_line_is_cut_off_after_30_seconds() {
    let dir = stack(POLICY);
    let d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    w.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    w.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"sta"#)
        .unwrap();
    let started = Instant::now();
    let v = answer(&mut r);
    let waited = started.elapsed();
    expect_error(&v, -32600, &Value::Null, "a line not completed in time");
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(35)).contains(&waited),
        "cut off after {waited:?}"
    );
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "then the connection is closed"
    );
    still_serving(&d);
    d.stop();
}

/// Daemon bug (reported): a JSON array is deserialised positionally into the request
/// envelope, so `["2.0", 7, "status"]` is answered as if it were
/// `{"jsonrpc":"2.0","id":7,"method":"status"}`. SPEC §8 says one JSON *object* per line.
#[test]
fn a_positional_array_is_not_a_request() {
    let dir = stack(POLICY);
    let d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    send(&mut w, br#"["2.0",7,"status"]"#);
    let v = answer(&mut r);
    assert!(v.get("result").is_none(), "an array is not a request: {v}");
    send(
        &mut w,
        br#"["2.0",8,"decide",{"agent":"bot","tool":"search_docs","args":{}}]"#,
    );
    let v = answer(&mut r);
    assert!(v.get("result").is_none(), "an array is not a request: {v}");
    drop((w, r));
    d.stop();
}

/// Daemon bug (reported): an idle agent connection that is still open at `stop` keeps the
/// daemon alive for the whole 6 s alert-drain timeout (crates/daemon/src/server.rs), and the
/// notifier's shutdown is then never awaited.
#[test]
fn stop_is_prompt_with_an_idle_agent_connection_open() {
    let dir = stack(POLICY);
    let mut d = Daemon::start(dir.path());
    let (mut w, mut r) = connect(&d);
    send(&mut w, &decide_line(json!(1), "search_docs", json!({})));
    answer(&mut r);
    let started = Instant::now();
    d.admin_call("stop", json!({}));
    assert!(d.wait().success());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert!(d.log_text().contains("alerts drained"), "{}", d.log_text());
}

#[test]
fn a_tool_id_in_another_spelling_is_decided_and_recorded_as_its_nfkc_form() {
    let dir = stack(POLICY);
    let d = Daemon::start(dir.path());
    // Fullwidth letters: NFKC makes them `search_docs` (SPEC §4), which the policy permits.
    let fullwidth = "ｓｅａｒｃｈ_ｄｏｃｓ";
    let res = d.decide(call(AGENT, fullwidth, json!({"q": "x"})));
    expect(&res, "permit", "RULE_PERMIT");
    let id = res["dpr_id"].as_str().unwrap().to_string();
    d.stop();

    // The log names the tool the policy decided on, not the spelling the caller sent.
    verify(dir.path());
    let records = export(dir.path());
    let rec = records.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(rec["tool"], "search_docs", "{rec}");
}
