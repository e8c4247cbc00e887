//! SPEC §5 step 8 and §10: on a permit of a tool bound by a `credential` block, a credential is
//! minted for that call alone. Its value goes to the caller in the answer and nowhere else: the
//! record holds provider, scope, lease and TTL.

use std::fmt;
use std::sync::Arc;

use audit::record;
use engine::decision::{CredentialBinding, ReasonCode};
use serde::Serialize;

use crate::core::{CallKey, Outcome};

/// What a secrets provider is asked for.
#[derive(Debug, Clone)]
pub struct MintCall<'a> {
    pub binding: &'a CredentialBinding,
    pub agent: &'a str,
    pub tool: &'a str,
    /// The DPR id of the permitted call: the lease is scoped to it.
    pub dpr_id: &'a str,
    pub now_ms: i64,
}

/// A source of credentials (the secrets capability of a provider).
pub trait Minter: Send + Sync + fmt::Debug {
    fn mint(&self, call: &MintCall<'_>) -> Result<IssuedCredential, String>;
}

/// A minted credential as the caller receives it.
#[derive(Clone, Serialize)]
pub struct IssuedCredential {
    pub value: String,
    pub provider: String,
    pub scope: String,
    pub lease_id: String,
    pub ttl_ms: u64,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

impl IssuedCredential {
    /// What the audit log keeps: everything but the value.
    pub fn record(&self) -> record::Credential {
        record::Credential {
            provider: self.provider.clone(),
            scope: self.scope.clone(),
            lease_id: self.lease_id.clone(),
            ttl_ms: self.ttl_ms,
        }
    }
}

impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("value", &"[redacted]")
            .field("provider", &self.provider)
            .field("scope", &self.scope)
            .field("lease_id", &self.lease_id)
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

/// The daemon's credential broker: the configured minter, or none (every bound permit is then
/// denied `CREDENTIAL_UNAVAILABLE`).
#[derive(Debug, Clone, Default)]
pub struct Broker {
    minter: Option<Arc<dyn Minter>>,
}

impl Broker {
    pub fn new(minter: Option<Arc<dyn Minter>>) -> Broker {
        Broker { minter }
    }

    /// Mints the credential of a permitted call, or turns the permit into a deny.
    pub async fn mint(
        &self,
        mut outcome: Outcome,
        binding: &CredentialBinding,
        call: &CallKey,
        now: i64,
    ) -> Outcome {
        let Some(minter) = &self.minter else {
            return outcome.into_deny(
                ReasonCode::CredentialUnavailable,
                format!(
                    "no secrets provider `{}` is available to mint the credential `{}`",
                    binding.provider, binding.name
                ),
            );
        };
        let req = MintCall {
            binding,
            agent: &call.agent,
            tool: &call.tool,
            dpr_id: &call.dpr_id,
            now_ms: now,
        };
        match minter.mint(&req) {
            Ok(c) => {
                outcome.credential = Some(c);
                outcome
            }
            Err(e) => {
                tracing::warn!(provider = %binding.provider, error = %e, "credential not minted: denied");
                outcome.into_deny(
                    ReasonCode::CredentialUnavailable,
                    format!("the credential `{}` could not be minted: {e}", binding.name),
                )
            }
        }
    }
}
