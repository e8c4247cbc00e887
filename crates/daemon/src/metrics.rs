//! Prometheus metrics (`GET /metrics`): decisions by effect and reason code, decision latency,
//! pending approvals.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    effect: &'static str,
    reason_code: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    pending: Gauge<i64, AtomicI64>,
    alerts_dropped: Gauge<i64, AtomicI64>,
}

/// Decision latency buckets, in seconds: 10 µs to 100 ms.
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("faramesh");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by effect and reason code",
            decisions.clone(),
        );
        let latency = Histogram::new(BUCKETS);
        registry.register(
            "decision_latency_seconds",
            "Time from a request's arrival to its answer, the durable record included",
            latency.clone(),
        );
        let pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "approvals_pending",
            "Deferred calls waiting for an operator",
            pending.clone(),
        );
        let alerts_dropped = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "alerts_dropped",
            "Alerts dropped because the delivery queue was full",
            alerts_dropped.clone(),
        );
        Metrics {
            registry,
            decisions,
            latency,
            pending,
            alerts_dropped,
        }
    }

    pub fn decided(&self, effect: &'static str, reason_code: &'static str, took: Duration) {
        self.decisions
            .get_or_create(&DecisionLabels {
                effect,
                reason_code,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn set_pending(&self, n: usize) {
        self.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_alerts_dropped(&self, n: u64) {
        self.alerts_dropped
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
