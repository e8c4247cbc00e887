//! `report {dpr_id, outcome, cost?}` (SPEC §8): after a permitted call ran, the agent says how
//! it went. The daemon remembers its recent permits so a report names a real call, once.

use std::sync::{Mutex, PoisonError};

use rust_decimal::Decimal;

use crate::rpc::RpcError;

/// Decisions whose permits can be reported: a permit older than the last this many decisions
/// of this daemon can no longer be.
const REMEMBERED: usize = 100_000;

#[derive(Debug, Clone)]
struct Permit {
    /// The decision's counter (the last part of its DPR id).
    n: u64,
    call: PermittedCall,
    reported: Option<String>,
}

/// What a report needs of the call it reports: whose, when and what it reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct PermittedCall {
    pub agent: String,
    pub session: Option<String>,
    pub decided_ms: i64,
    /// What the decision reserved in the agent's budgets.
    pub reserved: Decimal,
}

/// The recent permits in a ring indexed by their decision counter: remembering one is a slot
/// write, with no hashing and no growth once full — it runs on every permit.
#[derive(Debug)]
pub struct Reports {
    /// This daemon run's part of every DPR id: ids of other runs are not ours to accept.
    boot: u32,
    ring: Mutex<Vec<Option<Permit>>>,
}

impl Reports {
    pub fn new(boot: u32) -> Reports {
        Reports {
            boot,
            ring: Mutex::new(Vec::new()),
        }
    }

    /// The counter of one of this run's DPR ids (`dpr_<ms:12><boot:8><n:10>`, hex).
    fn counter(&self, dpr_id: &str) -> Option<u64> {
        let hex = dpr_id.strip_prefix("dpr_").filter(|h| h.len() == 30)?;
        let boot = u32::from_str_radix(hex.get(12..20)?, 16).ok()?;
        (boot == self.boot).then(|| u64::from_str_radix(hex.get(20..)?, 16).ok())?
    }

    /// Remembers a permitted call so it can be reported.
    pub fn permitted(&self, dpr_id: &str, call: PermittedCall) {
        let Some(n) = self.counter(dpr_id) else {
            return;
        };
        let slot = slot_of(n);
        let permit = Permit {
            n,
            call,
            reported: None,
        };
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() <= slot {
            ring.resize(slot + 1, None);
        }
        ring[slot] = Some(permit);
    }

    /// Takes the report of a remembered permit, once: the call it reports.
    pub fn record(
        &self,
        dpr_id: &str,
        outcome: &str,
        cost: Option<Decimal>,
    ) -> Result<PermittedCall, RpcError> {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let n = self.counter(dpr_id);
        let permit = n
            .and_then(|n| ring.get_mut(slot_of(n))?.as_mut().filter(|p| p.n == n))
            .ok_or_else(|| {
                RpcError::refused(format!(
                    "no recent permitted call {dpr_id}: only permits of this daemon can be reported"
                ))
            })?;
        if let Some(earlier) = &permit.reported {
            return Err(RpcError::refused(format!(
                "{dpr_id} was already reported ({earlier})"
            )));
        }
        permit.reported = Some(outcome.to_string());
        tracing::info!(dpr_id, agent = %permit.call.agent, outcome, cost = ?cost, "call reported");
        Ok(permit.call.clone())
    }
}

fn slot_of(n: u64) -> usize {
    // REMEMBERED fits in u64 and the remainder in usize.
    (n % REMEMBERED as u64) as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn bot() -> PermittedCall {
        PermittedCall {
            agent: "bot".into(),
            session: None,
            decided_ms: 0,
            reserved: Decimal::ZERO,
        }
    }

    fn id(boot: u32, n: u64) -> String {
        format!("dpr_{:012x}{boot:08x}{n:010x}", 1_795_000_000_000u64)
    }

    #[test]
    fn a_permit_is_forgotten_once_its_slot_holds_a_later_decision() {
        let r = Reports::new(7);
        r.permitted(&id(7, 3), bot());
        let later = 3 + REMEMBERED as u64;
        r.permitted(&id(7, later), bot());
        assert!(r.record(&id(7, 3), "ok", None).is_err(), "overwritten");
        assert_eq!(r.record(&id(7, later), "ok", None).unwrap(), bot());
        assert!(r.record(&id(7, later), "ok", None).is_err(), "once");
    }

    #[test]
    fn ids_of_other_runs_and_malformed_ids_are_refused() {
        let r = Reports::new(7);
        r.permitted(&id(7, 1), bot());
        assert!(r.record(&id(8, 1), "ok", None).is_err());
        for bad in [
            "dpr_x",
            "",
            "dpr_",
            &id(7, 1)[..33],
            "xyz_0000000000000000000000000000001",
        ] {
            assert!(r.record(bad, "ok", None).is_err(), "{bad}");
        }
        assert!(r.record(&id(7, 1), "error", Some(Decimal::ONE)).is_ok());
    }
}
