//! SPEC §3.8 selectors: `file://` and `http://` sources, the cache and its expiry on a driven
//! clock, unknown keys, unavailable sources (`on_error`), and the values a decision records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Harness, expect, expect_rule, harness_in, line_of, permitted};
use engine::compile::Verdict::{Defer, Deny, Permit};
use engine::decision::ReasonCode as R;
use serde_json::{Value, json};

fn write_json(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

const TABLES: &str = r#"
selector "tables" {
  source   = "file://pii_tables.json"
  key      = table
  cache    = 30s
  on_error = "deny"
}

agent "analyst" {
  default deny
  rules {
    defer  sql/query if tables.contains_pii == true
    permit sql/query if tables.contains_pii == false
    permit sql/explain
  }
}
"#;

fn tables(dir: &Path) -> Harness {
    write_json(
        dir,
        "pii_tables.json",
        &json!({
            "users":   {"contains_pii": true, "owner": "crm"},
            "metrics": {"contains_pii": false}
        }),
    );
    harness_in(TABLES, dir)
}

fn query(h: &Harness, table: &str) -> engine::decision::Decision {
    h.decide(
        "analyst",
        "sql/query",
        json!({"table": table, "statement": "SELECT 1"}),
    )
}

#[test]
fn a_file_selector_answers_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = tables(dir.path());
    let d = query(&h, "users");
    expect_rule(&d, Defer, R::RuleDefer, line_of(TABLES, "defer  sql/query"));
    // The decision records the value it used, for the DPR.
    assert_eq!(
        d.selectors,
        vec![(
            "tables".to_string(),
            json!({"contains_pii": true, "owner": "crm"})
        )]
    );
    let d = query(&h, "metrics");
    expect_rule(
        &d,
        Permit,
        R::RulePermit,
        line_of(TABLES, "permit sql/query"),
    );
    assert_eq!(
        d.selectors,
        vec![("tables".to_string(), json!({"contains_pii": false}))]
    );
    // A decision that reads no selector records none.
    let d = h.decide("analyst", "sql/explain", json!({"table": "users"}));
    permitted(&d);
    assert!(d.selectors.is_empty());
}

#[test]
fn an_unknown_key_leaves_the_fields_missing() {
    let dir = tempfile::tempdir().unwrap();
    let h = tables(dir.path());
    let d = query(&h, "orders");
    expect(&d, Deny, R::DefaultDeny);
    assert!(d.selectors.is_empty(), "{:?}", d.selectors);
    // A missing key argument: nothing to look up, fields missing.
    let d = h.decide("analyst", "sql/query", json!({"statement": "SELECT 1"}));
    expect(&d, Deny, R::DefaultDeny);
    // A known key without the field read: missing too.
    write_json(
        dir.path(),
        "pii_tables.json",
        &json!({"logs": {"owner": "ops"}}),
    );
    expect(&query(&h, "logs"), Deny, R::DefaultDeny);
}

#[test]
fn the_cache_keeps_an_answer_for_its_lifetime_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = tables(dir.path());
    expect(&query(&h, "users"), Defer, R::RuleDefer);
    // The source changes its mind.
    write_json(
        dir.path(),
        "pii_tables.json",
        &json!({"users": {"contains_pii": false}, "metrics": {"contains_pii": true}}),
    );
    // Within `cache = 30s` the cached answer for `users` stands…
    h.advance(29_999);
    expect(&query(&h, "users"), Defer, R::RuleDefer);
    // …but a key not asked before is read fresh.
    expect(&query(&h, "metrics"), Defer, R::RuleDefer);
    // Once 30 s have passed since it was fetched, the new answer is used.
    h.advance(1);
    let d = query(&h, "users");
    permitted(&d);
    assert_eq!(
        d.selectors,
        vec![("tables".to_string(), json!({"contains_pii": false}))]
    );
}

#[test]
fn without_a_cache_every_decision_reads_the_source() {
    let src = r#"
selector "flags" {
  source = "file://flags.json"
  key    = name
}
agent "bot" {
  default deny
  rules {
    permit feature/use if flags.enabled == true
  }
}
"#;
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "flags.json",
        &json!({"beta": {"enabled": true}}),
    );
    let h = harness_in(src, dir.path());
    let call = || h.decide("bot", "feature/use", json!({"name": "beta"}));
    permitted(&call());
    write_json(
        dir.path(),
        "flags.json",
        &json!({"beta": {"enabled": false}}),
    );
    expect(&call(), Deny, R::DefaultDeny);
}

#[test]
fn an_unreadable_source_gives_on_error() {
    let src = r#"
selector "tables" {
  source   = "file://pii_tables.json"
  key      = table
  on_error = "deny"
}
selector "tiers" {
  source   = "file://tiers.json"
  key      = customer
  on_error = "defer"
}
agent "bot" {
  default permit
  rules {
    permit sql/query if tables.contains_pii == false
    permit crm/read  if tiers.tier == "gold"
    deny!  crm/wipe  if tiers.protected == true
    permit other
  }
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let h = harness_in(src, dir.path());
    let sql = || h.decide("bot", "sql/query", json!({"table": "users"}));
    let crm = || h.decide("bot", "crm/read", json!({"customer": "c1"}));
    // Neither file exists.
    let d = sql();
    expect_rule(
        &d,
        Deny,
        R::SelectorUnavailable,
        line_of(src, "permit sql/query"),
    );
    assert!(d.reason.contains("tables"), "{}", d.reason);
    assert!(d.selectors.is_empty());
    let d = crm();
    expect_rule(
        &d,
        Defer,
        R::SelectorUnavailable,
        line_of(src, "permit crm/read"),
    );
    assert!(d.reason.contains("tiers"), "{}", d.reason);
    // `on_error = "defer"` cannot soften a `deny!`.
    expect(
        &h.decide("bot", "crm/wipe", json!({"customer": "c1"})),
        Deny,
        R::SelectorUnavailable,
    );
    // A call that reads no selector is not affected.
    expect(&h.decide("bot", "other", json!({})), Permit, R::RulePermit);
    // A file that is not JSON, or not an object, is unavailable as well.
    std::fs::write(dir.path().join("pii_tables.json"), "{ not json").unwrap();
    expect(&sql(), Deny, R::SelectorUnavailable);
    write_json(dir.path(), "pii_tables.json", &json!(["users"]));
    expect(&sql(), Deny, R::SelectorUnavailable);
    // Failures are not cached: once the source is back, it answers.
    write_json(
        dir.path(),
        "pii_tables.json",
        &json!({"users": {"contains_pii": false}}),
    );
    expect(&sql(), Permit, R::RulePermit);
    write_json(dir.path(), "tiers.json", &json!({"c1": {"tier": "gold"}}));
    expect(&crm(), Permit, R::RulePermit);
}

#[test]
fn relative_file_sources_are_read_from_the_stack_directory() {
    let stack = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    write_json(
        elsewhere.path(),
        "pii_tables.json",
        &json!({"metrics": {"contains_pii": false}}),
    );
    let h = harness_in(TABLES, stack.path());
    expect(&query(&h, "metrics"), Deny, R::SelectorUnavailable);
    write_json(
        stack.path(),
        "pii_tables.json",
        &json!({"metrics": {"contains_pii": false}}),
    );
    permitted(&query(&h, "metrics"));
}

// ---- HTTP ----

/// A tiny HTTP server on 127.0.0.1: answers `GET …?key=K` with the JSON object stored for `K`
/// (404 when there is none, 500 for the key `boom`), counting requests and remembering their
/// targets. It stops by itself when dropped, or after a minute at the latest.
struct Server {
    addr: String,
    requests: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(answers: HashMap<String, Value>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, targets, stop) = (requests.clone(), targets.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &answers, &requests, &targets);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Server {
            addr,
            requests,
            targets,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request. It is counted and its target recorded before the answer goes out, so
/// a test that has its decision sees them.
fn serve(
    mut stream: TcpStream,
    answers: &HashMap<String, Value>,
    requests: &AtomicUsize,
    targets: &Mutex<Vec<String>>,
) -> Option<()> {
    requests.fetch_add(1, Ordering::SeqCst);
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).ok()? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1)?.to_string();
    targets.lock().unwrap().push(target.clone());
    let key = target
        .split_once("?key=")
        .map(|(_, k)| percent_decode(k))
        .unwrap_or_default();
    let (status, body) = match (key.as_str(), answers.get(&key)) {
        ("boom", _) => ("500 Internal Server Error", "{}".to_string()),
        (_, Some(v)) => ("200 OK", v.to_string()),
        (_, None) => ("404 Not Found", "{}".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).ok()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn accounts() -> Server {
    Server::start(HashMap::from([
        (
            "alice@acme.com".to_string(),
            json!({"tier": "gold", "limit": 5000}),
        ),
        (
            "bob@acme.com".to_string(),
            json!({"tier": "free", "limit": 100}),
        ),
    ]))
}

fn account_policy(addr: &str, cache: &str) -> String {
    format!(
        r#"
selector "account" {{
  source   = "http://{addr}/lookup"
  key      = lower(customer.email)
  {cache}
  on_error = "defer"
}}
agent "support" {{
  default deny
  rules {{
    defer  stripe/refund if account.tier in ["free", "trial"]
    permit stripe/refund if amount <= account.limit
  }}
}}
"#
    )
}

fn refund(h: &Harness, email: &str, amount: i64) -> engine::decision::Decision {
    h.decide(
        "support",
        "stripe/refund",
        json!({"customer": {"email": email}, "amount": amount}),
    )
}

#[test]
fn an_http_selector_is_asked_with_the_key_and_cached() {
    let server = accounts();
    let src = account_policy(&server.addr, "cache    = 1m");
    let dir = tempfile::tempdir().unwrap();
    let h = harness_in(&src, dir.path());

    let d = refund(&h, "Alice@ACME.com", 4000);
    expect_rule(
        &d,
        Permit,
        R::RulePermit,
        line_of(&src, "permit stripe/refund"),
    );
    // Two rules read `account`; one request answered both.
    assert_eq!(server.requests(), 1);
    assert_eq!(server.targets(), vec!["/lookup?key=alice%40acme.com"]);
    assert_eq!(
        d.selectors,
        vec![(
            "account".to_string(),
            json!({"tier": "gold", "limit": 5000})
        )]
    );
    // Within the cache lifetime, the same key asks nothing.
    h.advance(59_999);
    expect(&refund(&h, "alice@acme.com", 6000), Deny, R::DefaultDeny);
    assert_eq!(server.requests(), 1);
    // Another key is another request.
    expect(&refund(&h, "bob@acme.com", 10), Defer, R::RuleDefer);
    assert_eq!(server.requests(), 2);
    // After the lifetime, the source is asked again.
    h.advance(1);
    permitted(&refund(&h, "alice@acme.com", 10));
    assert_eq!(server.requests(), 3);
}

#[test]
fn an_http_selector_without_cache_asks_every_time() {
    let server = accounts();
    let src = account_policy(&server.addr, "");
    let dir = tempfile::tempdir().unwrap();
    let h = harness_in(&src, dir.path());
    permitted(&refund(&h, "alice@acme.com", 10));
    permitted(&refund(&h, "alice@acme.com", 10));
    assert_eq!(server.requests(), 2);
}

#[test]
fn http_not_found_is_unknown_and_errors_are_unavailable() {
    let server = accounts();
    let src = account_policy(&server.addr, "cache    = 1m");
    let dir = tempfile::tempdir().unwrap();
    let h = harness_in(&src, dir.path());
    // 404: the source knows nothing of the key; the fields are missing.
    let d = refund(&h, "carol@acme.com", 10);
    expect(&d, Deny, R::DefaultDeny);
    assert!(d.selectors.is_empty());
    // 500: unavailable, and `on_error = "defer"` decides.
    let d = refund(&h, "boom", 10);
    expect(&d, Defer, R::SelectorUnavailable);
    assert!(d.reason.contains("account"), "{}", d.reason);
    assert_eq!(server.requests(), 2);
    // A "not found" is an answer, and is cached like one; a failure is not.
    expect(&refund(&h, "carol@acme.com", 10), Deny, R::DefaultDeny);
    assert_eq!(server.requests(), 2);
    expect(&refund(&h, "boom", 10), Defer, R::SelectorUnavailable);
    assert_eq!(server.requests(), 3);
}

#[test]
fn an_http_source_nobody_answers_is_unavailable() {
    // Bind a port, then free it: nothing listens there any more.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let src = account_policy(&addr, "cache    = 1m");
    let dir = tempfile::tempdir().unwrap();
    let h = harness_in(&src, dir.path());
    let d = refund(&h, "alice@acme.com", 10);
    expect(&d, Defer, R::SelectorUnavailable);
}

/// A source that accepts the connection and never answers is unavailable after the selector's
/// own `timeout`, not after the default.
#[test]
fn a_silent_http_source_times_out_at_the_selectors_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        // Hold one connection open, silently, then stop.
        let conn = listener.accept();
        std::thread::sleep(Duration::from_millis(1500));
        drop(conn);
    });
    let src = format!(
        "selector \"slow\" {{\n  source   = \"http://127.0.0.1:{port}/lookup\"\n  key      = user\n  timeout  = 200ms\n  on_error = \"defer\"\n}}\n\nagent \"bot\" {{\n  default deny\n  rules {{\n    permit read if slow.allowed == true\n  }}\n}}\n"
    );
    let h = common::harness(&src);
    let started = Instant::now();
    let d = h.decide("bot", "read", json!({"user": "alice"}));
    let took = started.elapsed();
    expect(&d, Defer, R::SelectorUnavailable);
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    holder.join().unwrap();
}

#[test]
fn a_selector_number_too_large_to_compare_is_an_eval_error_that_says_so() {
    let src = r#"
selector "limits" {
  source   = "file://limits.json"
  key      = account
}

agent "bot" {
  default deny
  rules {
    permit pay if amount < limits.max
  }
}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("limits.json"),
        r#"{"big": {"max": 1e30}, "small": {"max": 100}}"#,
    )
    .unwrap();
    let h = harness_in(src, dir.path());
    permitted(&h.decide("bot", "pay", json!({"account": "small", "amount": 5})));
    let d = h.decide("bot", "pay", json!({"account": "big", "amount": 5}));
    expect_rule(&d, Deny, R::EvalError, line_of(src, "permit pay"));
    assert!(
        d.reason
            .contains("`selector field max` is a number too large to compare"),
        "{}",
        d.reason
    );
}
