//! Notify: alerts (SPEC §3.4 `alert { on = …; notify = … }`) delivered to Slack, PagerDuty or a
//! signed webhook, off the decision path.

mod config;
mod deliver;
mod message;

pub use config::{DeliveryOptions, NotifyConfig, PAGERDUTY_EVENTS_URL};
pub use deliver::{Notifier, NotifyStats};
pub use message::{SIGNATURE_HEADER, verify_webhook_signature, webhook_signature};

/// One alert for one target. It carries no argument values: the recorded arguments may hold
/// personal data, so an alert says only what is listed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `deny`, `defer`, `permit`, `approved`, `rejected`, `budget_warning`, `budget_exceeded`
    /// or `rate_exceeded`.
    pub event: String,
    pub agent: String,
    pub tool: String,
    /// `permit`, `deny` or `defer`.
    pub effect: String,
    pub reason_code: String,
    pub reason: String,
    /// `governance.fms:LINE`.
    pub rule_ref: Option<String>,
    pub dpr_id: String,
    pub defer_token: Option<String>,
    /// When the decision was made, Unix milliseconds.
    pub time_ms: i64,
    /// The `notify` URL: `slack://#channel`, `pagerduty://service`, `webhook://name` or
    /// `http(s)://…`.
    pub target: String,
    /// Raised by `faramesh dev`.
    pub dev: bool,
}
