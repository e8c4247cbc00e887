//! The faramesh credential broker and providers (SPEC §10).
//!
//! - **secrets** — [`Secrets`] maps provider names to [`SecretsProvider`]s and mints a
//!   [`Lease`] for one permitted call; [`DevVault`] is the in-process dev issuer.
//! - **identity** — [`spiffe_id`] and the dev [`IdentityProvider`], [`DevIdentity`].
//! - **audit sink** — [`AuditSink`]; [`JsonlFileSink`] appends JSON lines to a file.
//! - **notify** — [`Notifier`] delivers [`Alert`]s to Slack, PagerDuty and signed webhooks
//!   from a bounded queue, off the decision path.
//!
//! Not supported yet: a real HashiCorp Vault (or any remote secrets store), OIDC and attested
//! SPIFFE identities, KMS providers, Splunk HEC and webhook audit sinks. See `docs/providers.md`.

mod config;
mod error;
mod identity;
mod notify;
mod random;
mod secrets;
mod sink;

pub use config::ProviderConfig;
pub use error::BrokerError;
pub use identity::{DEV_TRUST_DOMAIN, DevIdentity, Identity, IdentityProvider, spiffe_id};
pub use notify::{
    Alert, DeliveryOptions, Notifier, NotifyConfig, NotifyStats, PAGERDUTY_EVENTS_URL,
    SIGNATURE_HEADER, verify_webhook_signature, webhook_signature,
};
pub use secrets::{DevVault, Lease, LeaseInfo, MintRequest, Secret, Secrets, SecretsProvider};
pub use sink::{AuditSink, JsonlFileSink};
