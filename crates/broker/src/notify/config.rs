//! Notification endpoints, from the policy's provider blocks, and how alert targets resolve to
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::{BrokerError, ProviderConfig, Secret};

/// Where PagerDuty events go unless a provider sets `url`.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How the notifier queues and delivers. The defaults suit a daemon; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Alerts waiting for delivery; past this, new alerts are dropped (and counted).
    pub queue_capacity: usize,
    /// Deliveries in progress at once (each with its retries).
    pub max_in_flight: usize,
    /// Attempts per message, the first included.
    pub max_attempts: u32,
    /// Whole-request timeout of one attempt (connect, send, response head and body).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// The wait before the second attempt; doubled after each further failure, up to
    /// `max_backoff`. Each wait is jittered to between half and all of its value.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` (on 429 or 503) up to this long is waited out; a longer one ends the
    /// delivery as failed.
    pub max_retry_after: Duration,
    /// How long [`Notifier::shutdown`](crate::Notifier::shutdown) waits for the queue to drain.
    pub shutdown_deadline: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            queue_capacity: 1024,
            max_in_flight: 8,
            max_attempts: 5,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

/// A `type = "slack"` provider: an incoming webhook.
pub(crate) struct SlackEndpoint {
    pub(crate) provider: String,
    /// The webhook URL is itself a credential.
    pub(crate) url: Secret,
    /// Used when a target names no channel.
    pub(crate) channel: Option<String>,
}

/// A `type = "pagerduty"` provider: Events API v2.
pub(crate) struct PagerDutyEndpoint {
    pub(crate) provider: String,
    pub(crate) url: String,
    pub(crate) routing_key: Secret,
}

/// A `type = "webhook"` provider: JSON posted to `url`, signed when `secret` is set.
pub(crate) struct WebhookEndpoint {
    pub(crate) provider: String,
    pub(crate) url: String,
    pub(crate) secret: Option<Secret>,
}

/// The notification providers of a policy. Built by [`NotifyConfig::from_providers`];
/// [`NotifyConfig::default`] has none (every alert is written to the log).
#[derive(Default)]
pub struct NotifyConfig {
    slack: BTreeMap<String, Arc<SlackEndpoint>>,
    pagerduty: BTreeMap<String, Arc<PagerDutyEndpoint>>,
    webhooks: BTreeMap<String, Arc<WebhookEndpoint>>,
    /// Queueing, retries and timeouts.
    pub delivery: DeliveryOptions,
}

/// What an alert target resolves to.
pub(crate) enum Route {
    Slack {
        endpoint: Arc<SlackEndpoint>,
        channel: Option<String>,
    },
    PagerDuty {
        endpoint: Arc<PagerDutyEndpoint>,
        service: String,
    },
    Webhook {
        endpoint: Arc<WebhookEndpoint>,
    },
    /// A plain `http(s)://` target: the generic webhook body, unsigned.
    Url {
        url: String,
    },
    /// Nothing to send to: the alert is written to the log. The text says why.
    Log {
        why: String,
    },
}

const SLACK_KEYS: &[&str] = &["webhook_url", "channel"];
const PAGERDUTY_KEYS: &[&str] = &["routing_key", "url"];
const WEBHOOK_KEYS: &[&str] = &["url", "secret"];

fn keys_list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_keys(p: &ProviderConfig, allowed: &[&str]) -> Result<(), BrokerError> {
    for key in p.settings.keys() {
        if key != "type" && !allowed.contains(&key.as_str()) {
            return Err(BrokerError::config(
                &p.name,
                Some(key),
                format!(
                    "is not a key of {} providers (they take {})",
                    p.kind,
                    keys_list(allowed)
                ),
            ));
        }
    }
    Ok(())
}

fn required<'a>(p: &'a ProviderConfig, key: &str) -> Result<&'a str, BrokerError> {
    match p.get(key).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(BrokerError::config(&p.name, Some(key), "is empty")),
        None => Err(BrokerError::config(
            &p.name,
            Some(key),
            format!("is required for a {} provider", p.kind),
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// A URL to post to. `https` always; `http` where `plain_http` allows it, or to a loopback
/// address (a local relay, a test server). The error never repeats the value (it may be a
/// credential, like a Slack webhook URL).
fn endpoint_url(
    p: &ProviderConfig,
    key: &str,
    value: &str,
    plain_http: bool,
) -> Result<Url, BrokerError> {
    let url = Url::parse(value)
        .map_err(|e| BrokerError::config(&p.name, Some(key), format!("is not a URL ({e})")))?;
    if url.host().is_none() {
        return Err(BrokerError::config(&p.name, Some(key), "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BrokerError::config(
            &p.name,
            Some(key),
            "must not carry a user name or password",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if plain_http || is_loopback(&url) => Ok(url),
        "http" => Err(BrokerError::config(
            &p.name,
            Some(key),
            "must be an https:// URL (plain http only to a loopback address)",
        )),
        other => Err(BrokerError::config(
            &p.name,
            Some(key),
            format!("has scheme `{other}`; use an https:// URL"),
        )),
    }
}

/// The provider a bare `slack://` or `pagerduty://` target uses: the one named like its type,
/// or the only one of that type.
fn default_of<'a, T>(map: &'a BTreeMap<String, Arc<T>>, kind: &str) -> Option<&'a Arc<T>> {
    map.get(kind)
        .or_else(|| (map.len() == 1).then(|| map.values().next()).flatten())
}

impl NotifyConfig {
    /// Reads the `slack`, `pagerduty` and `webhook` providers among a policy's provider blocks;
    /// blocks of other types are left to the other capabilities. Errors name the provider and
    /// the key: a missing `webhook_url`, `routing_key` or `url`, an unknown key, a value that is
    /// not an https URL, several Slack (or PagerDuty) providers none of which is named after its
    /// type (so a bare `slack://#channel` would be ambiguous).
    pub fn from_providers(providers: &[ProviderConfig]) -> Result<NotifyConfig, BrokerError> {
        let mut config = NotifyConfig::default();
        for p in providers {
            match p.kind.as_str() {
                "slack" => {
                    check_keys(p, SLACK_KEYS)?;
                    let url = required(p, "webhook_url")?;
                    endpoint_url(p, "webhook_url", url, false)?;
                    let channel = p
                        .get("channel")
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned);
                    config.slack.insert(
                        p.name.clone(),
                        Arc::new(SlackEndpoint {
                            provider: p.name.clone(),
                            url: Secret::new(url),
                            channel,
                        }),
                    );
                }
                "pagerduty" => {
                    check_keys(p, PAGERDUTY_KEYS)?;
                    let routing_key = required(p, "routing_key")?;
                    if routing_key.chars().any(char::is_whitespace) {
                        return Err(BrokerError::config(
                            &p.name,
                            Some("routing_key"),
                            "contains white space",
                        ));
                    }
                    let url = match p.get("url") {
                        Some(u) => endpoint_url(p, "url", u.trim(), false)?.to_string(),
                        None => PAGERDUTY_EVENTS_URL.to_owned(),
                    };
                    config.pagerduty.insert(
                        p.name.clone(),
                        Arc::new(PagerDutyEndpoint {
                            provider: p.name.clone(),
                            url,
                            routing_key: Secret::new(routing_key),
                        }),
                    );
                }
                "webhook" => {
                    check_keys(p, WEBHOOK_KEYS)?;
                    let url = endpoint_url(p, "url", required(p, "url")?, true)?;
                    if url.scheme() == "http" && !is_loopback(&url) {
                        tracing::warn!(
                            target: "faramesh::alert",
                            provider = %p.name,
                            "webhook provider `{}` posts over plain http: alerts travel unencrypted",
                            p.name
                        );
                    }
                    let secret = match p.get("secret") {
                        Some("") => {
                            return Err(BrokerError::config(&p.name, Some("secret"), "is empty"));
                        }
                        Some(s) => Some(Secret::new(s)),
                        None => None,
                    };
                    config.webhooks.insert(
                        p.name.clone(),
                        Arc::new(WebhookEndpoint {
                            provider: p.name.clone(),
                            url: url.to_string(),
                            secret,
                        }),
                    );
                }
                _ => {}
            }
        }
        for (kind, names) in [
            ("slack", config.slack.keys().collect::<Vec<_>>()),
            ("pagerduty", config.pagerduty.keys().collect()),
        ] {
            if names.len() > 1 && !names.iter().any(|n| *n == kind) {
                let list = names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(BrokerError::config(
                    names.first().map_or("", |n| n.as_str()),
                    None,
                    format!(
                        "there are several {kind} providers ({list}); name the one `{kind}://` targets use \"{kind}\""
                    ),
                ));
            }
        }
        Ok(config)
    }

    /// Sets the delivery options (builder style).
    #[must_use]
    pub fn with_delivery(mut self, delivery: DeliveryOptions) -> Self {
        self.delivery = delivery;
        self
    }

    /// Where an alert for `target` would go.
    pub(crate) fn route(&self, target: &str) -> Route {
        let target = target.trim();
        let Some((scheme, rest)) = target.split_once("://") else {
            return Route::Log {
                why: "not a notify URL".into(),
            };
        };
        match scheme.to_ascii_lowercase().as_str() {
            "slack" => match default_of(&self.slack, "slack") {
                Some(endpoint) => Route::Slack {
                    endpoint: Arc::clone(endpoint),
                    channel: Some(rest.trim())
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .or_else(|| endpoint.channel.clone()),
                },
                None => Route::Log {
                    why: "no slack provider is declared".into(),
                },
            },
            "pagerduty" => {
                let service = rest.trim().trim_end_matches('/');
                let endpoint = self
                    .pagerduty
                    .get(service)
                    .or_else(|| default_of(&self.pagerduty, "pagerduty"));
                match endpoint {
                    Some(endpoint) => Route::PagerDuty {
                        endpoint: Arc::clone(endpoint),
                        service: service.to_owned(),
                    },
                    None => Route::Log {
                        why: "no pagerduty provider is declared".into(),
                    },
                }
            }
            "webhook" => {
                let name = rest.trim().trim_end_matches('/');
                match self.webhooks.get(name) {
                    Some(endpoint) => Route::Webhook {
                        endpoint: Arc::clone(endpoint),
                    },
                    None => Route::Log {
                        why: format!("no webhook provider named `{name}` is declared"),
                    },
                }
            }
            "http" | "https" => match Url::parse(target) {
                Ok(url) if url.host().is_some() => Route::Url {
                    url: url.to_string(),
                },
                _ => Route::Log {
                    why: "not a valid URL".into(),
                },
            },
            other => Route::Log {
                why: format!("`{other}://` is not a notify scheme"),
            },
        }
    }

    /// One warning for each target that has no endpoint (its alerts would only be written to
    /// the log). The daemon shows these when it loads a policy outside dev mode.
    pub fn target_warnings<'a>(&self, targets: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        targets
            .into_iter()
            .filter(|t| seen.insert(*t))
            .filter_map(|t| match self.route(t) {
                Route::Log { why } => Some(format!(
                    "alerts to `{}` will only be written to the log: {why}",
                    redact_target(t)
                )),
                _ => None,
            })
            .collect()
    }
}

/// A target fit for a log line: a plain URL loses its path and query (where tokens live).
pub(crate) fn redact_target(target: &str) -> String {
    match Url::parse(target) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            let host = url.host_str().unwrap_or("");
            match url.port() {
                Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
                None => format!("{}://{host}/…", url.scheme()),
            }
        }
        _ => target.to_owned(),
    }
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("slack", &self.slack.keys().collect::<Vec<_>>())
            .field("pagerduty", &self.pagerduty.keys().collect::<Vec<_>>())
            .field("webhooks", &self.webhooks.keys().collect::<Vec<_>>())
            .field("delivery", &self.delivery)
            .finish()
    }
}
