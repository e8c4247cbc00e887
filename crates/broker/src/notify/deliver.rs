//! The delivery task: a bounded queue, HTTP with retries, counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::Alert;
use super::config::{DeliveryOptions, NotifyConfig, Route, redact_target};
use super::message::{self, SIGNATURE_HEADER};
use crate::random;

/// The notifier's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Alerts accepted into the queue.
    pub queued: u64,
    /// Messages the endpoint accepted (2xx).
    pub sent: u64,
    /// Messages given up on: a 4xx other than 408/429, attempts exhausted, a `Retry-After`
    /// too long, or a shutdown deadline passed mid-delivery.
    pub failed: u64,
    /// Alerts not queued because the queue was full (or the notifier stopping), and alerts
    /// still queued when a shutdown deadline passed.
    pub dropped: u64,
    /// Alerts written to the log instead of sent (dev mode, or a target without endpoint).
    pub logged: u64,
    /// Attempts after the first.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    logged: AtomicU64,
    retries: AtomicU64,
    /// Deliveries taken off the queue (finished or not).
    begun: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NotifyStats {
        NotifyStats {
            queued: self.queued.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            logged: self.logged.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends alerts from a tokio task. [`Notifier::notify`] only queues: it never blocks and never
/// fails the decision; when the queue is full the alert is dropped and counted.
pub struct Notifier {
    tx: mpsc::Sender<Alert>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
    shutdown_deadline: Duration,
}

struct Ctx {
    config: NotifyConfig,
    dev: bool,
    client: Option<reqwest::Client>,
    counters: Arc<Counters>,
}

impl Notifier {
    /// Starts the delivery task on the current tokio runtime. With `dev`, every alert is
    /// written to the log (`tracing`, target `faramesh::alert`) and nothing is sent.
    ///
    /// Called outside a tokio runtime, no task can run: the notifier then only counts what it
    /// is given as dropped, and says so in the log.
    pub fn start(config: NotifyConfig, dev: bool) -> Notifier {
        let options = config.delivery.clone();
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let client = if dev {
            None
        } else {
            match http_client(&options) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(
                        target: "faramesh::alert",
                        "alerts cannot be sent (HTTP client: {e}); they will be written to the log"
                    );
                    None
                }
            }
        };
        let ctx = Arc::new(Ctx {
            config,
            dev,
            client,
            counters: Arc::clone(&counters),
        });
        let worker = match tokio::runtime::Handle::try_current() {
            Ok(handle) => Some(handle.spawn(run(rx, ctx, options.max_in_flight.max(1)))),
            Err(_) => {
                tracing::error!(
                    target: "faramesh::alert",
                    "the notifier was started outside a tokio runtime: alerts will be dropped"
                );
                None
            }
        };
        Notifier {
            tx,
            counters,
            worker,
            shutdown_deadline: options.shutdown_deadline,
        }
    }

    /// Queues an alert; `false` if it was dropped (queue full, or no delivery task).
    pub fn notify(&self, alert: Alert) -> bool {
        if self.worker.is_none() {
            Counters::add(&self.counters.dropped);
            return false;
        }
        match self.tx.try_send(alert) {
            Ok(()) => {
                Counters::add(&self.counters.queued);
                true
            }
            Err(_) => {
                Counters::add(&self.counters.dropped);
                false
            }
        }
    }

    pub fn stats(&self) -> NotifyStats {
        self.counters.snapshot()
    }

    /// Stops taking alerts and waits, up to the configured `shutdown_deadline`, for the queue
    /// to drain and deliveries in flight to finish. Past the deadline, deliveries in flight are
    /// abandoned (counted failed) and queued alerts are counted dropped. Returns the final
    /// counters.
    pub async fn shutdown(self) -> NotifyStats {
        let deadline = self.shutdown_deadline;
        self.shutdown_within(deadline).await
    }

    /// [`Notifier::shutdown`] with an explicit deadline.
    pub async fn shutdown_within(self, deadline: Duration) -> NotifyStats {
        let Notifier {
            tx,
            counters,
            worker,
            ..
        } = self;
        drop(tx);
        if let Some(mut worker) = worker
            && tokio::time::timeout(deadline, &mut worker).await.is_err()
        {
            worker.abort();
            let _ = worker.await;
            let s = counters.snapshot();
            let started = s.sent + s.failed + s.logged;
            // What was queued and never finished: the abandoned in-flight deliveries are
            // failures, the rest never left the queue.
            let unfinished = s.queued.saturating_sub(started);
            let begun = counters.begun.load(Ordering::Relaxed);
            let in_flight = begun.saturating_sub(started).min(unfinished);
            counters.failed.fetch_add(in_flight, Ordering::Relaxed);
            counters
                .dropped
                .fetch_add(unfinished - in_flight, Ordering::Relaxed);
            tracing::warn!(
                target: "faramesh::alert",
                abandoned = unfinished,
                "notifier shutdown deadline passed with alerts undelivered"
            );
        }
        counters.snapshot()
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("stats", &self.stats())
            .field("running", &self.worker.is_some())
            .finish()
    }
}

/// The HTTP client: rustls on `ring`, the system's roots (as reqwest's own rustls setup
/// uses), HTTP/1.1, no redirects (a signed alert goes where it was configured to go, or
/// nowhere), timeouts from the options.
fn http_client(options: &DeliveryOptions) -> Result<reqwest::Client, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(options.request_timeout)
        .connect_timeout(options.connect_timeout)
        .user_agent(concat!("faramesh/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Takes alerts off the queue while a delivery slot is free, so at most `max_in_flight`
/// deliveries run and everything else waits in the bounded queue.
async fn run(mut rx: mpsc::Receiver<Alert>, ctx: Arc<Ctx>, max_in_flight: usize) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(alert) = rx.recv().await else {
            break;
        };
        Counters::add(&ctx.counters.begun);
        while tasks.try_join_next().is_some() {}
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move {
            ctx.deliver(alert).await;
            drop(slot);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Writes an alert to the log, with all its fields.
macro_rules! log_alert {
    ($level:ident, $a:expr, $why:expr) => {{
        let a: &Alert = $a;
        tracing::$level!(
            target: "faramesh::alert",
            event = %a.event,
            agent = %a.agent,
            tool = %a.tool,
            effect = %a.effect,
            reason_code = %a.reason_code,
            reason = %a.reason,
            rule_ref = a.rule_ref.as_deref().unwrap_or(""),
            dpr_id = %a.dpr_id,
            defer_token = a.defer_token.as_deref().unwrap_or(""),
            time = %message::rfc3339(a.time_ms),
            notify = %redact_target(&a.target),
            dev = a.dev,
            why = %$why,
            "{}",
            message::headline(a)
        )
    }};
}

/// One HTTP message, ready to post (and re-post).
struct Outgoing<'a> {
    url: &'a str,
    body: Vec<u8>,
    secret: Option<&'a [u8]>,
    /// For the log: which provider or host; never the URL itself (Slack's is a credential).
    label: String,
}

impl Ctx {
    async fn deliver(&self, alert: Alert) {
        if self.dev {
            log_alert!(info, &alert, "dev mode");
            Counters::add(&self.counters.logged);
            return;
        }
        let route = self.config.route(&alert.target);
        let (url, body, secret, label) = match &route {
            Route::Log { why } => {
                log_alert!(warn, &alert, why);
                Counters::add(&self.counters.logged);
                return;
            }
            Route::Slack { endpoint, channel } => (
                endpoint.url.expose(),
                message::slack(&alert, channel.as_deref()),
                None,
                format!("slack provider `{}`", endpoint.provider),
            ),
            Route::PagerDuty { endpoint, service } => (
                endpoint.url.as_str(),
                message::pagerduty(&alert, endpoint.routing_key.expose(), service),
                None,
                format!("pagerduty provider `{}`", endpoint.provider),
            ),
            Route::Webhook { endpoint } => (
                endpoint.url.as_str(),
                message::webhook(&alert),
                endpoint.secret.as_ref().map(|s| s.expose().as_bytes()),
                format!("webhook provider `{}`", endpoint.provider),
            ),
            Route::Url { url } => (
                url.as_str(),
                message::webhook(&alert),
                None,
                redact_target(url),
            ),
        };
        let Some(client) = &self.client else {
            log_alert!(warn, &alert, "no HTTP client");
            Counters::add(&self.counters.failed);
            return;
        };
        let out = Outgoing {
            url,
            body: body.to_string().into_bytes(),
            secret,
            label,
        };
        match self.post(client, &out).await {
            Ok(attempts) => {
                Counters::add(&self.counters.sent);
                tracing::debug!(
                    target: "faramesh::alert",
                    dpr_id = %alert.dpr_id,
                    attempts,
                    "alert delivered to {}",
                    out.label
                );
            }
            Err(why) => {
                Counters::add(&self.counters.failed);
                tracing::warn!(
                    target: "faramesh::alert",
                    dpr_id = %alert.dpr_id,
                    event = %alert.event,
                    "alert to {} not delivered: {why}",
                    out.label
                );
            }
        }
    }

    /// Posts until the endpoint accepts, a retry would not help, or the attempts run out.
    /// `Ok(attempts)` on a 2xx.
    async fn post(&self, client: &reqwest::Client, out: &Outgoing<'_>) -> Result<u32, String> {
        let options = &self.config.delivery;
        let attempts = options.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut request = client
                .post(out.url)
                .header(CONTENT_TYPE, "application/json")
                .body(out.body.clone());
            if let Some(secret) = out.secret {
                let t = jiff::Timestamp::now().as_second();
                request = request.header(
                    SIGNATURE_HEADER,
                    message::webhook_signature(secret, t, &out.body),
                );
            }
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok(attempt);
                    }
                    last = format!("HTTP {status}");
                    if !retryable(status) {
                        return Err(format!("{last} (not retried)"));
                    }
                    let retry_after = if matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ) {
                        retry_after(response.headers())
                    } else {
                        None
                    };
                    match retry_after {
                        Some(d) if d > options.max_retry_after => {
                            return Err(format!(
                                "{last} with Retry-After {}s, longer than the {}s allowed",
                                d.as_secs(),
                                options.max_retry_after.as_secs()
                            ));
                        }
                        Some(d) => d,
                        None => backoff(options, attempt),
                    }
                }
                Err(e) => {
                    // Without the URL: a Slack webhook URL is a credential.
                    last = e.without_url().to_string();
                    backoff(options, attempt)
                }
            };
            if attempt < attempts {
                Counters::add(&self.counters.retries);
                tokio::time::sleep(wait).await;
            }
        }
        Err(format!("{last} after {attempts} attempts"))
    }
}

/// 5xx, 408 and 429 may pass; any other 4xx (or a 3xx: redirects are not followed) will not.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let ms = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// The wait after failed attempt `attempt` (1-based): `initial × 2^(attempt-1)`, at most
/// `max_backoff`, jittered uniformly into its upper half.
fn backoff(options: &DeliveryOptions, attempt: u32) -> Duration {
    let base = options
        .initial_backoff
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(options.max_backoff);
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let half = ms / 2;
    Duration::from_millis(half + random::jitter_u64() % (ms - half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = DeliveryOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..DeliveryOptions::default()
        };
        for _ in 0..50 {
            let b1 = backoff(&o, 1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = backoff(&o, 3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b10 = backoff(&o, 10);
            assert!(b10 >= Duration::from_millis(500) && b10 <= Duration::from_millis(1000));
            let b40 = backoff(&o, 40);
            assert!(b40 <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        h.insert(RETRY_AFTER, text.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn retryable_statuses() {
        assert!(retryable(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::REQUEST_TIMEOUT));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_FOUND));
        assert!(!retryable(StatusCode::FOUND));
    }
}
