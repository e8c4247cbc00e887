//! Identity: SPIFFE-style ids for agents. The dev provider (`faramesh dev`) issues
//! `spiffe://dev.local/agent/<id>` without any attestation; OIDC and real SPIFFE workload
//! attestation are not supported yet.

use std::fmt;

use crate::BrokerError;

/// The trust domain of dev identities.
pub const DEV_TRUST_DOMAIN: &str = "dev.local";

/// The dev SPIFFE id of an agent: `spiffe://dev.local/agent/<id>`. The id becomes one path
/// segment: every byte outside the SPIFFE path characters (`A-Z a-z 0-9 . - _`) is
/// percent-encoded (upper-case hex, UTF-8 bytes), `/` included, and so are the dots of an id
/// that is `.` or `..` (not allowed as a segment).
pub fn spiffe_id(agent: &str) -> String {
    format!("spiffe://{DEV_TRUST_DOMAIN}/agent/{}", path_segment(agent))
}

fn path_segment(s: &str) -> String {
    let dots_only = !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !dots_only);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Who an agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    /// `spiffe://<trust domain>/agent/<id>`.
    pub spiffe_id: String,
    /// Issued by a dev stub (no attestation behind it).
    pub dev: bool,
}

/// The **identity** capability of SPEC §10.
pub trait IdentityProvider: Send + Sync + fmt::Debug {
    fn identify(&self, agent: &str) -> Result<Identity, BrokerError>;
}

/// Dev identities: any agent id is who it says it is, under `spiffe://dev.local`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevIdentity;

impl IdentityProvider for DevIdentity {
    fn identify(&self, agent: &str) -> Result<Identity, BrokerError> {
        if agent.is_empty() {
            return Err(BrokerError::InvalidRequest("an agent id is empty".into()));
        }
        Ok(Identity {
            agent: agent.to_owned(),
            spiffe_id: spiffe_id(agent),
            dev: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_pass_through() {
        assert_eq!(
            spiffe_id("support-bot"),
            "spiffe://dev.local/agent/support-bot"
        );
        assert_eq!(spiffe_id("a.b_C-9"), "spiffe://dev.local/agent/a.b_C-9");
    }

    #[test]
    fn everything_else_is_percent_encoded() {
        assert_eq!(spiffe_id("a/b c"), "spiffe://dev.local/agent/a%2Fb%20c");
        assert_eq!(spiffe_id("é"), "spiffe://dev.local/agent/%C3%A9");
        assert_eq!(spiffe_id("%"), "spiffe://dev.local/agent/%25");
        assert_eq!(spiffe_id(".."), "spiffe://dev.local/agent/%2E%2E");
        assert_eq!(spiffe_id("."), "spiffe://dev.local/agent/%2E");
        assert_eq!(spiffe_id("..."), "spiffe://dev.local/agent/...");
    }

    #[test]
    fn dev_identity() {
        let id = DevIdentity
            .identify("payments-bot")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(id.spiffe_id, "spiffe://dev.local/agent/payments-bot");
        assert!(id.dev);
        assert!(DevIdentity.identify("").is_err());
    }
}
