//! SPEC §5 step 8 and §10: on a permit of a tool bound by a `credential` block, a credential is
//! minted for that call alone. Its value goes to the caller in the answer and nowhere else: the
//! record holds provider, scope, lease and TTL.

use std::fmt;
use std::sync::Arc;

use audit::record;
use broker::{DevVault, Lease, MintRequest, Secrets};
use engine::decision::{CredentialBinding, ReasonCode};
use serde::Serialize;

use crate::core::{CallKey, Outcome};

/// A minted credential as the caller receives it: the lease, whose value is zeroized when
/// the answer has been written.
pub struct IssuedCredential(Lease);

impl IssuedCredential {
    /// What the audit log keeps: everything but the value.
    pub fn record(&self) -> record::Credential {
        record::Credential {
            provider: self.0.provider.clone(),
            scope: self.0.scope.clone(),
            lease_id: self.0.lease_id.clone(),
            ttl_ms: self.0.ttl_ms,
        }
    }
}

impl Serialize for IssuedCredential {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let l = &self.0;
        let mut st = s.serialize_struct("IssuedCredential", 6)?;
        st.serialize_field("value", l.value.expose())?;
        st.serialize_field("provider", &l.provider)?;
        st.serialize_field("scope", &l.scope)?;
        st.serialize_field("lease_id", &l.lease_id)?;
        st.serialize_field("ttl_ms", &l.ttl_ms)?;
        st.serialize_field("expires_at", &audit::time::format_ms(l.expires_at_ms))?;
        st.end()
    }
}

impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("value", &"[redacted]")
            .field("provider", &self.0.provider)
            .field("lease_id", &self.0.lease_id)
            .finish()
    }
}

/// The daemon's credential broker (SPEC §10): the secrets providers of the stack, or the dev
/// vault under `faramesh dev`.
#[derive(Debug, Clone)]
pub struct Broker {
    secrets: Arc<Secrets>,
}

impl Broker {
    pub fn new(secrets: Secrets) -> Broker {
        Broker {
            secrets: Arc::new(secrets),
        }
    }

    pub fn dev_vault(&self) -> Option<&Arc<DevVault>> {
        self.secrets.dev_vault()
    }

    /// Mints the credential of a permitted call, or turns the permit into a deny.
    pub fn mint(
        &self,
        mut outcome: Outcome,
        binding: &CredentialBinding,
        call: &CallKey<'_>,
        now: i64,
    ) -> Outcome {
        let req = MintRequest {
            provider: binding.provider.clone(),
            path: binding.path.clone(),
            scope: call.tool.to_string(),
            agent: call.agent.to_string(),
            tool: call.tool.to_string(),
            call_id: call.dpr_id.to_string(),
            ttl_ms: binding.ttl_ms,
            now_ms: now,
        };
        match self.secrets.mint(&req) {
            Ok(lease) => {
                outcome.credential = Some(IssuedCredential(lease));
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
