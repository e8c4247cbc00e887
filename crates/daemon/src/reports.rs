//! `report {dpr_id, outcome, cost?}` (SPEC §8): after a permitted call ran, the agent says how
//! it went. The daemon remembers its recent permits so a report names a real call, once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rust_decimal::Decimal;
use serde_json::json;

use crate::rpc::{RpcError, RpcResult};

/// Permits remembered for reports; older ones can no longer be reported.
const REMEMBERED: usize = 100_000;

#[derive(Debug, Clone)]
struct Permit {
    agent: String,
    reported: Option<String>,
}

#[derive(Debug, Default)]
pub struct Reports {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    permits: HashMap<String, Permit>,
    order: VecDeque<String>,
}

impl Reports {
    /// Remembers a permitted call so it can be reported.
    pub fn permitted(&self, dpr_id: &str, agent: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.order.len() >= REMEMBERED
            && let Some(old) = inner.order.pop_front()
        {
            inner.permits.remove(&old);
        }
        inner.order.push_back(dpr_id.to_string());
        inner.permits.insert(
            dpr_id.to_string(),
            Permit {
                agent: agent.to_string(),
                reported: None,
            },
        );
    }

    pub fn record(&self, dpr_id: &str, outcome: &str, cost: Option<Decimal>) -> RpcResult {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let permit = inner.permits.get_mut(dpr_id).ok_or_else(|| {
            RpcError::refused(format!(
                "no recent permitted call {dpr_id}: only permits of this daemon can be reported"
            ))
        })?;
        if let Some(earlier) = &permit.reported {
            return Err(RpcError::refused(format!(
                "{dpr_id} was already reported ({earlier})"
            )));
        }
        if cost.is_some_and(|c| c < Decimal::ZERO) {
            return Err(RpcError::params("cost must not be negative"));
        }
        permit.reported = Some(outcome.to_string());
        tracing::info!(dpr_id, agent = %permit.agent, outcome, cost = ?cost, "call reported");
        Ok(json!({"dpr_id": dpr_id, "outcome": outcome}))
    }
}
