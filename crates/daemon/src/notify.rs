//! Off the hot path (SPEC §5 step 10): alerts raised by decisions, and the signal that the set
//! of approvals changed (for `approvals watch` and the pending-approvals gauge).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

/// Alerts waiting for delivery beyond this are dropped (and counted): a slow webhook never
/// slows decisions.
const ALERT_QUEUE: usize = 4_096;

/// One alert (SPEC §3.4 `alert`): no argument values, they may carry personal data.
pub use broker::Alert as Notice;

#[derive(Debug, Clone)]
pub struct Notices {
    alerts: mpsc::Sender<Notice>,
    dropped: Arc<AtomicU64>,
    approvals: Arc<watch::Sender<u64>>,
}

impl Notices {
    /// The sender side, and the receiver the alert delivery task drains.
    pub fn new() -> (Notices, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(ALERT_QUEUE);
        let (approvals, _) = watch::channel(0);
        (
            Notices {
                alerts: tx,
                dropped: Arc::new(AtomicU64::new(0)),
                approvals: Arc::new(approvals),
            },
            rx,
        )
    }

    pub fn alert(&self, n: Notice) {
        if self.alerts.try_send(n).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn approvals_changed(&self) {
        self.approvals.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn watch_approvals(&self) -> watch::Receiver<u64> {
        self.approvals.subscribe()
    }
}
