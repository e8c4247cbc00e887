//! Alerts delivered to real HTTP servers on loopback: message shapes, signatures, retries,
//! timeouts, the queue bound, dev mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::{
    Alert, BrokerError, DeliveryOptions, Notifier, NotifyConfig, ProviderConfig,
    verify_webhook_signature,
};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

// ---- a scripted loopback HTTP server ----

#[derive(Clone)]
enum Reply {
    Status(u16),
    StatusWith(u16, &'static str, &'static str),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    path: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    /// Answers the n-th request with `script[n]` (the last entry once the script runs out).
    async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let rec = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let rec = Arc::clone(&rec);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let rec = Arc::clone(&rec);
                        let script = Arc::clone(&script);
                        async move {
                            let at = Instant::now();
                            let path = req.uri().path().to_owned();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            let n = {
                                let mut r = rec.lock().unwrap();
                                r.push(Received {
                                    at,
                                    path,
                                    headers,
                                    body,
                                });
                                r.len() - 1
                            };
                            let reply = script[n.min(script.len() - 1)].clone();
                            let mut response = Response::builder();
                            let status = match reply {
                                Reply::Status(s) => s,
                                Reply::StatusWith(s, k, v) => {
                                    response = response.header(k, v);
                                    s
                                }
                                Reply::Hang => {
                                    tokio::time::sleep(Duration::from_secs(60)).await;
                                    200
                                }
                            };
                            Ok::<_, hyper::Error>(
                                response
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

// ---- fixtures ----

fn fast() -> DeliveryOptions {
    DeliveryOptions {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..DeliveryOptions::default()
    }
}

fn alert(event: &str, target: &str) -> Alert {
    Alert {
        event: event.into(),
        agent: "support-bot".into(),
        tool: "stripe/refund".into(),
        effect: "defer".into(),
        reason_code: "RULE_DEFER".into(),
        reason: "refunds of $500 or more need a human".into(),
        rule_ref: Some("governance.fms:5".into()),
        dpr_id: "dpr_01J9Z8K3".into(),
        defer_token: Some("dfr_4f2a9c".into()),
        time_ms: 1_718_810_565_123,
        target: target.into(),
        dev: false,
    }
}

fn config(providers: &[ProviderConfig], delivery: DeliveryOptions) -> NotifyConfig {
    NotifyConfig::from_providers(providers)
        .unwrap()
        .with_delivery(delivery)
}

async fn deliver_one(
    providers: &[ProviderConfig],
    delivery: DeliveryOptions,
    a: Alert,
) -> broker::NotifyStats {
    let notifier = Notifier::start(config(providers, delivery), false);
    assert!(notifier.notify(a));
    notifier.shutdown_within(Duration::from_secs(30)).await
}

// ---- message shapes ----

#[tokio::test]
async fn slack_incoming_webhook_message() {
    let server = Server::start(vec![Reply::Status(200)]).await;
    let slack = ProviderConfig::new("slack", "slack")
        .with("webhook_url", server.url("/services/T000/B000/XXXX"));
    let stats = deliver_one(
        &[slack],
        fast(),
        alert("defer", "slack://#payments-approvals"),
    )
    .await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (1, 0, 0));

    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T000/B000/XXXX");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(
        got[0].json(),
        json!({
            "channel": "#payments-approvals",
            "text": "faramesh defer: stripe/refund by support-bot (RULE_DEFER)",
            "blocks": [{
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*faramesh defer* `stripe/refund` by `support-bot`\n\
                             *Effect:* defer  *Reason:* RULE_DEFER: refunds of $500 or more need a human\n\
                             *Rule:* `governance.fms:5`\n\
                             *Record:* `dpr_01J9Z8K3`\n\
                             *Approve:* `faramesh approvals approve dfr_4f2a9c`"
                }
            }]
        })
    );
}

#[tokio::test]
async fn slack_text_is_escaped_and_channel_optional() {
    let server = Server::start(vec![Reply::Status(200)]).await;
    let slack = ProviderConfig::new("alerts", "slack").with("webhook_url", server.url("/hook"));
    let mut a = alert("deny", "slack://");
    a.reason = "<script> & `x`".into();
    a.rule_ref = None;
    a.defer_token = None;
    a.effect = "deny".into();
    let stats = deliver_one(&[slack], fast(), a).await;
    assert_eq!(stats.sent, 1);
    let body = server.received()[0].json();
    assert!(body.get("channel").is_none(), "{body}");
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        "*faramesh deny* `stripe/refund` by `support-bot`\n\
         *Effect:* deny  *Reason:* RULE_DEFER: &lt;script&gt; &amp; `x`\n\
         *Record:* `dpr_01J9Z8K3`"
    );
}

#[tokio::test]
async fn pagerduty_events_v2_trigger() {
    let server = Server::start(vec![Reply::Status(202)]).await;
    let pd = ProviderConfig::new("pagerduty", "pagerduty")
        .with("routing_key", "R0UT1NGKEY0123456789abcdef012345")
        .with("url", server.url("/v2/enqueue"));
    let mut a = alert("deny", "pagerduty://payments");
    a.effect = "deny".into();
    a.reason_code = "RULE_DENY".into();
    a.defer_token = None;
    let stats = deliver_one(&[pd], fast(), a).await;
    assert_eq!(stats.sent, 1);
    let got = server.received();
    assert_eq!(got[0].path, "/v2/enqueue");
    assert_eq!(
        got[0].json(),
        json!({
            "routing_key": "R0UT1NGKEY0123456789abcdef012345",
            "event_action": "trigger",
            "dedup_key": "dpr_01J9Z8K3",
            "client": "faramesh",
            "payload": {
                "summary": "faramesh deny: stripe/refund by support-bot (RULE_DENY)",
                "source": "faramesh/support-bot",
                "severity": "error",
                "timestamp": "2024-06-19T15:22:45.123Z",
                "component": "stripe/refund",
                "group": "support-bot",
                "class": "deny",
                "custom_details": {
                    "event": "deny",
                    "agent": "support-bot",
                    "tool": "stripe/refund",
                    "effect": "deny",
                    "reason_code": "RULE_DENY",
                    "reason": "refunds of $500 or more need a human",
                    "rule_ref": "governance.fms:5",
                    "dpr_id": "dpr_01J9Z8K3",
                    "service": "payments",
                    "dev": false
                }
            }
        })
    );
}

fn expected_webhook_body() -> Value {
    json!({
        "type": "faramesh.alert",
        "version": 1,
        "event": "defer",
        "agent": "support-bot",
        "tool": "stripe/refund",
        "effect": "defer",
        "reason_code": "RULE_DEFER",
        "reason": "refunds of $500 or more need a human",
        "rule_ref": "governance.fms:5",
        "dpr_id": "dpr_01J9Z8K3",
        "defer_token": "dfr_4f2a9c",
        "time": "2024-06-19T15:22:45.123Z",
        "time_ms": 1_718_810_565_123_i64,
        "dev": false
    })
}

#[tokio::test]
async fn signed_webhook() {
    let server = Server::start(vec![Reply::Status(204)]).await;
    let secret = "whsec_test_0123456789";
    let hook = ProviderConfig::new("ops", "webhook")
        .with("url", server.url("/faramesh"))
        .with("secret", secret);
    let stats = deliver_one(&[hook], fast(), alert("defer", "webhook://ops")).await;
    assert_eq!(stats.sent, 1);
    let got = &server.received()[0];
    assert_eq!(got.json(), expected_webhook_body());

    // Recompute the signature the way a receiver would, from the documented scheme.
    let header = got.headers["x-faramesh-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&got.body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
    let now = jiff::Timestamp::now().as_second();
    assert!((now - t).abs() < 60);

    // The crate's own verifier agrees, and rejects a changed body, a wrong secret, a stale t.
    assert!(verify_webhook_signature(
        secret.as_bytes(),
        header,
        &got.body,
        now,
        300
    ));
    let mut tampered = got.body.clone();
    tampered[10] ^= 1;
    assert!(!verify_webhook_signature(
        secret.as_bytes(),
        header,
        &tampered,
        now,
        300
    ));
    assert!(!verify_webhook_signature(
        b"other", header, &got.body, now, 300
    ));
    assert!(!verify_webhook_signature(
        secret.as_bytes(),
        header,
        &got.body,
        now + 3600,
        300
    ));
}

#[tokio::test]
async fn plain_url_target_gets_the_unsigned_webhook_body() {
    let server = Server::start(vec![Reply::Status(200)]).await;
    let target = server.url("/incoming?team=payments");
    let stats = deliver_one(&[], fast(), alert("defer", &target)).await;
    assert_eq!(stats.sent, 1);
    let got = &server.received()[0];
    assert_eq!(got.path, "/incoming");
    assert!(got.headers.get("x-faramesh-signature").is_none());
    assert_eq!(got.json(), expected_webhook_body());
}

// ---- retries ----

fn hook_to(server: &Server) -> Vec<ProviderConfig> {
    vec![ProviderConfig::new("ops", "webhook").with("url", server.url("/hook"))]
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let server = Server::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(200),
    ])
    .await;
    let stats = deliver_one(&hook_to(&server), fast(), alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (1, 0, 2));
    let got = server.received();
    assert_eq!(got.len(), 3);
    // The same message each time.
    assert!(got.iter().all(|r| r.body == got[0].body));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = Server::start(vec![Reply::Status(400), Reply::Status(200)]).await;
    let stats = deliver_one(&hook_to(&server), fast(), alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 1, 0));
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let server = Server::start(vec![Reply::Status(502)]).await;
    let delivery = DeliveryOptions {
        max_attempts: 4,
        ..fast()
    };
    let stats = deliver_one(&hook_to(&server), delivery, alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 1, 3));
    assert_eq!(server.received().len(), 4);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = Server::start(vec![
        Reply::StatusWith(429, "retry-after", "1"),
        Reply::Status(200),
    ])
    .await;
    let stats = deliver_one(&hook_to(&server), fast(), alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.retries), (1, 1));
    let got = server.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    // The backoff alone would have waited at most 50 ms.
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
}

#[tokio::test]
async fn a_retry_after_past_the_limit_gives_up() {
    let server = Server::start(vec![
        Reply::StatusWith(503, "retry-after", "3600"),
        Reply::Status(200),
    ])
    .await;
    let stats = deliver_one(&hook_to(&server), fast(), alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed), (0, 1));
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_hung_server_times_out_and_counts_failed() {
    let server = Server::start(vec![Reply::Hang]).await;
    let delivery = DeliveryOptions {
        request_timeout: Duration::from_millis(300),
        max_attempts: 2,
        ..fast()
    };
    let started = Instant::now();
    let stats = deliver_one(&hook_to(&server), delivery, alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 1, 1));
    assert_eq!(server.received().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connection_refused_is_retried_then_failed() {
    // A port nobody listens on: bind, note it, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hook = ProviderConfig::new("ops", "webhook").with("url", format!("http://{addr}/hook"));
    let delivery = DeliveryOptions {
        max_attempts: 3,
        ..fast()
    };
    let stats = deliver_one(&[hook], delivery, alert("deny", "webhook://ops")).await;
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 1, 2));
}

// ---- the queue ----

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts() {
    let server = Server::start(vec![Reply::Hang]).await;
    let delivery = DeliveryOptions {
        queue_capacity: 2,
        max_in_flight: 1,
        request_timeout: Duration::from_secs(30),
        ..fast()
    };
    let notifier = Notifier::start(config(&hook_to(&server), delivery), false);
    // Nothing runs between these calls on a current-thread runtime: exactly the queue's
    // capacity is taken.
    let accepted: Vec<bool> = (0..10)
        .map(|_| notifier.notify(alert("deny", "webhook://ops")))
        .collect();
    assert_eq!(accepted.iter().filter(|a| **a).count(), 2);
    let stats = notifier.stats();
    assert_eq!((stats.queued, stats.dropped), (2, 8));

    // notify never waits, even with the queue full and a delivery hung.
    let t = Instant::now();
    for _ in 0..1000 {
        notifier.notify(alert("deny", "webhook://ops"));
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(notifier.stats().dropped, 1008);

    // Shutdown gives up on the hung delivery and the one behind it.
    tokio::task::yield_now().await;
    let stats = notifier.shutdown_within(Duration::from_millis(200)).await;
    assert_eq!(stats.sent, 0);
    assert_eq!(stats.failed + stats.dropped, 1010, "{stats:?}");
}

#[tokio::test]
async fn shutdown_drains_the_queue() {
    let server = Server::start(vec![Reply::Status(200)]).await;
    let notifier = Notifier::start(config(&hook_to(&server), fast()), false);
    for i in 0..20 {
        let mut a = alert("deny", "webhook://ops");
        a.dpr_id = format!("dpr_{i}");
        assert!(notifier.notify(a));
    }
    let stats = notifier.shutdown_within(Duration::from_secs(30)).await;
    assert_eq!((stats.queued, stats.sent, stats.dropped), (20, 20, 0));
    let mut ids: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.json()["dpr_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
}

// ---- dev mode and missing endpoints: the log ----

mod capture {
    //! A minimal tracing subscriber recording events (level, target, fields).
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    #[derive(Debug, Clone)]
    pub struct Logged {
        pub level: Level,
        pub target: String,
        pub fields: String,
    }

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<Logged>>>);

    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut f = Fields(String::new());
            event.record(&mut f);
            self.0.lock().unwrap().push(Logged {
                level: *event.metadata().level(),
                target: event.metadata().target().to_owned(),
                fields: f.0,
            });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dev_mode_writes_alerts_to_the_log_and_sends_nothing() {
    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let server = Server::start(vec![Reply::Status(200)]).await;
    let slack = ProviderConfig::new("slack", "slack").with("webhook_url", server.url("/s"));
    let notifier = Notifier::start(config(&[slack], fast()), true);
    let mut a = alert("defer", "slack://#payments-approvals");
    a.dev = true;
    assert!(notifier.notify(a));
    let stats = notifier.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!((stats.logged, stats.sent), (1, 0));
    assert!(server.received().is_empty());

    let logged = capture.0.lock().unwrap().clone();
    let alert_lines: Vec<_> = logged
        .iter()
        .filter(|l| l.target == "faramesh::alert")
        .collect();
    assert_eq!(alert_lines.len(), 1, "{logged:?}");
    let line = alert_lines[0];
    assert_eq!(line.level, tracing::Level::INFO);
    for part in [
        "[dev] faramesh defer: stripe/refund by support-bot (RULE_DEFER)",
        "dpr_id=dpr_01J9Z8K3",
        "defer_token=\"dfr_4f2a9c\"",
        "notify=slack://#payments-approvals",
        "dev=true",
    ] {
        assert!(line.fields.contains(part), "{part} not in {}", line.fields);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_target_without_endpoint_is_logged_as_a_warning() {
    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let cfg = config(&[], fast());
    assert_eq!(
        cfg.target_warnings([
            "slack://#sec",
            "webhook://nope",
            "slack://#sec",
            "https://x.test/a?k=1"
        ]),
        vec![
            "alerts to `slack://#sec` will only be written to the log: no slack provider is declared",
            "alerts to `webhook://nope` will only be written to the log: no webhook provider named `nope` is declared",
        ]
    );
    let notifier = Notifier::start(cfg, false);
    assert!(notifier.notify(alert("deny", "slack://#sec")));
    let stats = notifier.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!((stats.logged, stats.sent, stats.failed), (1, 0, 0));
    let logged = capture.0.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|l| l.target == "faramesh::alert" && l.level == tracing::Level::WARN),
        "{logged:?}"
    );
}

// ---- configuration ----

fn err(providers: &[ProviderConfig]) -> String {
    match NotifyConfig::from_providers(providers) {
        Err(e @ BrokerError::Config { .. }) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn configuration_errors_name_the_provider_and_key() {
    assert_eq!(
        err(&[ProviderConfig::new("slack", "slack")]),
        "provider `slack`: `webhook_url` is required for a slack provider"
    );
    assert_eq!(
        err(&[ProviderConfig::new("slack", "slack")
            .with("webhook_url", "https://hooks.slack.test/services/x")
            .with("chanel", "#x")]),
        "provider `slack`: `chanel` is not a key of slack providers (they take `webhook_url`, `channel`)"
    );
    assert_eq!(
        err(&[
            ProviderConfig::new("slack", "slack").with("webhook_url", "http://hooks.slack.test/x")
        ]),
        "provider `slack`: `webhook_url` must be an https:// URL (plain http only to a loopback address)"
    );
    assert_eq!(
        err(&[ProviderConfig::new("pd", "pagerduty")]),
        "provider `pd`: `routing_key` is required for a pagerduty provider"
    );
    assert_eq!(
        err(&[ProviderConfig::new("pd", "pagerduty").with("routing_key", "abc def")]),
        "provider `pd`: `routing_key` contains white space"
    );
    assert_eq!(
        err(&[ProviderConfig::new("ops", "webhook").with("url", "ftp://x.test/")]),
        "provider `ops`: `url` has scheme `ftp`; use an https:// URL"
    );
    assert_eq!(
        err(&[ProviderConfig::new("ops", "webhook").with("url", "not a url")]),
        "provider `ops`: `url` is not a URL (relative URL without a base)"
    );
    assert_eq!(
        err(&[ProviderConfig::new("ops", "webhook")
            .with("url", "https://x.test/")
            .with("secret", "")]),
        "provider `ops`: `secret` is empty"
    );
    assert_eq!(
        err(&[ProviderConfig::new("ops", "webhook").with("url", "https://u:p@x.test/")]),
        "provider `ops`: `url` must not carry a user name or password"
    );
    assert_eq!(
        err(&[
            ProviderConfig::new("a", "slack").with("webhook_url", "https://h.test/a"),
            ProviderConfig::new("b", "slack").with("webhook_url", "https://h.test/b"),
        ]),
        "provider `a`: there are several slack providers (`a`, `b`); name the one `slack://` targets use \"slack\""
    );
}

#[test]
fn configuration_accepts_the_documented_blocks() {
    let cfg = NotifyConfig::from_providers(&[
        ProviderConfig::new("slack", "slack")
            .with("type", "slack")
            .with("webhook_url", "https://hooks.slack.test/services/T/B/X"),
        ProviderConfig::new("pagerduty", "pagerduty").with("routing_key", "k"),
        ProviderConfig::new("ops", "webhook")
            .with("url", "https://ops.test/hook")
            .with("secret", "s"),
        ProviderConfig::new("billing", "webhook").with("url", "http://relay.internal/alerts"),
        // Other capabilities are not the notifier's business.
        ProviderConfig::new("vault", "vault").with("address", "https://vault.test"),
    ])
    .unwrap();
    assert!(
        cfg.target_warnings([
            "slack://#a",
            "pagerduty://payments",
            "webhook://ops",
            "webhook://billing"
        ])
        .is_empty()
    );
    // The Debug form shows names, never settings (a webhook URL or routing key is a secret).
    let shown = format!("{cfg:?}");
    assert!(
        shown.contains("\"ops\"") && !shown.contains("hooks.slack.test"),
        "{shown}"
    );
    let p = ProviderConfig::new("ops", "webhook").with("secret", "s3cr3t-value");
    assert!(!format!("{p:?}").contains("s3cr3t-value"));
}

#[test]
fn notifier_outside_a_runtime_drops_instead_of_panicking() {
    let notifier = Notifier::start(NotifyConfig::default(), true);
    assert!(!notifier.notify(alert("deny", "slack://#x")));
    assert_eq!(notifier.stats().dropped, 1);
}
