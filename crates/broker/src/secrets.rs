//! Secrets: minting a credential for one permitted call.
//!
//! [`Secrets`] maps a provider name (the `provider` of a `credential` block) to a
//! [`SecretsProvider`]. In dev mode every name resolves to the in-process [`DevVault`], which
//! also plays the issuing service: [`DevVault::validate`] tells whether a credential it minted
//! is live, and for which call. A real HashiCorp Vault provider is not supported yet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{BrokerError, ProviderConfig, random};

/// A credential value. Zeroized when dropped; `Debug` and `Display` print `[redacted]`; not
/// `Serialize`, not `Clone`. [`Secret::expose`] is the only way to read it.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The value itself: for the answer to the caller, and nothing else.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the daemon asks for on a permit of a tool bound by a `credential` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// The `provider` of the credential block.
    pub provider: String,
    /// Its `path`, if any (`secret/stripe`).
    pub path: Option<String>,
    /// What the credential is good for, e.g. the tool id.
    pub scope: String,
    pub agent: String,
    pub tool: String,
    /// The DPR id of the permitted call: a lease belongs to one call.
    pub call_id: String,
    /// Time to live, from the block's `ttl` (30 s by default).
    pub ttl_ms: u64,
    /// Now, in Unix milliseconds (the daemon's clock, so tests can move it).
    pub now_ms: i64,
}

/// A minted credential. The DPR records `provider`, `scope`, `lease_id` and `ttl_ms`; `value`
/// goes to the caller only.
#[derive(Debug)]
pub struct Lease {
    pub value: Secret,
    pub provider: String,
    pub scope: String,
    pub lease_id: String,
    pub ttl_ms: u64,
    pub expires_at_ms: i64,
}

/// What the dev vault knows about a live credential it minted (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub provider: String,
    pub scope: String,
    pub lease_id: String,
    pub agent: String,
    pub tool: String,
    pub call_id: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A source of credentials (the **secrets** capability of SPEC §10).
pub trait SecretsProvider: Send + Sync + fmt::Debug {
    /// Mints (or fetches) a credential scoped to the request's call, living `ttl_ms`.
    fn mint(&self, req: &MintRequest) -> Result<Lease, BrokerError>;
}

fn check_request(req: &MintRequest) -> Result<(), BrokerError> {
    if req.ttl_ms == 0 {
        return Err(BrokerError::InvalidRequest(format!(
            "credential from provider `{}`: ttl must be more than 0",
            req.provider
        )));
    }
    if i64::try_from(req.ttl_ms).is_err() {
        return Err(BrokerError::InvalidRequest(format!(
            "credential from provider `{}`: ttl {} ms is too long",
            req.provider, req.ttl_ms
        )));
    }
    if req.scope.is_empty() || req.call_id.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "a credential needs a scope and a call id".into(),
        ));
    }
    Ok(())
}

/// The in-process dev vault (`faramesh dev`): mints random credentials, keeps what it needs to
/// validate them in memory, bounded, and forgets them once expired.
///
/// Credentials carry 32 base62 characters (≈ 190 bits) from the operating system's generator,
/// after a prefix: `rk_dev_` (Stripe style) when the provider name or path mentions `stripe`,
/// `fm_dev_` otherwise. The vault keeps a SHA-256 digest of each value, never the value.
pub struct DevVault {
    leases: Mutex<HashMap<[u8; 32], LeaseInfo>>,
    max_leases: usize,
}

/// Characters of randomness in a dev credential: 32 × log2(62) ≈ 190 bits.
const DEV_SECRET_CHARS: usize = 32;

impl DevVault {
    /// How many live leases a vault keeps by default.
    pub const DEFAULT_MAX_LEASES: usize = 65_536;

    pub fn new() -> Self {
        Self::with_max_leases(Self::DEFAULT_MAX_LEASES)
    }

    /// A vault keeping at most `max_leases` leases: past that, expired ones are dropped first,
    /// then the ones closest to expiry.
    pub fn with_max_leases(max_leases: usize) -> Self {
        DevVault {
            leases: Mutex::new(HashMap::new()),
            max_leases: max_leases.max(1),
        }
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<[u8; 32], LeaseInfo>> {
        // A panic elsewhere while holding the lock leaves the map consistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease behind `value` if the vault minted it and it is live at `now_ms`.
    pub fn validate(&self, value: &str, now_ms: i64) -> Option<LeaseInfo> {
        let key = digest(value);
        let mut leases = self.leases();
        match leases.get(&key) {
            Some(info) if now_ms < info.expires_at_ms => Some(info.clone()),
            Some(_) => {
                leases.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a lease before its expiry; `false` if there was none by that id.
    pub fn revoke(&self, lease_id: &str) -> bool {
        let mut leases = self.leases();
        let before = leases.len();
        leases.retain(|_, l| l.lease_id != lease_id);
        leases.len() != before
    }

    /// Leases live at `now_ms`.
    pub fn live_leases(&self, now_ms: i64) -> usize {
        self.leases()
            .values()
            .filter(|l| now_ms < l.expires_at_ms)
            .count()
    }
}

impl Default for DevVault {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DevVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevVault")
            .field("leases", &self.leases().len())
            .field("max_leases", &self.max_leases)
            .finish()
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

fn mentions_stripe(req: &MintRequest) -> bool {
    let has = |s: &str| s.to_ascii_lowercase().contains("stripe");
    has(&req.provider) || req.path.as_deref().is_some_and(has)
}

impl SecretsProvider for DevVault {
    fn mint(&self, req: &MintRequest) -> Result<Lease, BrokerError> {
        check_request(req)?;
        let prefix = if mentions_stripe(req) {
            "rk_dev_"
        } else {
            "fm_dev_"
        };
        let body = Zeroizing::new(random::base62(DEV_SECRET_CHARS)?);
        let value = Secret::new(format!("{prefix}{}", body.as_str()));
        let lease_id = format!("lease_{}", random::hex_id(16)?);
        let ttl = i64::try_from(req.ttl_ms).unwrap_or(i64::MAX);
        let expires_at_ms = req.now_ms.saturating_add(ttl);
        let info = LeaseInfo {
            provider: req.provider.clone(),
            scope: req.scope.clone(),
            lease_id: lease_id.clone(),
            agent: req.agent.clone(),
            tool: req.tool.clone(),
            call_id: req.call_id.clone(),
            issued_at_ms: req.now_ms,
            expires_at_ms,
        };
        {
            let mut leases = self.leases();
            if leases.len() >= self.max_leases {
                leases.retain(|_, l| req.now_ms < l.expires_at_ms);
            }
            while leases.len() >= self.max_leases {
                let Some(oldest) = leases
                    .iter()
                    .min_by_key(|(_, l)| l.expires_at_ms)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                leases.remove(&oldest);
            }
            leases.insert(digest(value.expose()), info);
        }
        Ok(Lease {
            value,
            provider: req.provider.clone(),
            scope: req.scope.clone(),
            lease_id,
            ttl_ms: req.ttl_ms,
            expires_at_ms,
        })
    }
}

/// Provider types that are secrets providers.
const SECRETS_KINDS: &[&str] = &["vault"];

/// The secrets providers of a policy, by name.
pub struct Secrets {
    providers: BTreeMap<String, Box<dyn SecretsProvider>>,
    dev: Option<Arc<DevVault>>,
}

impl Secrets {
    /// No providers: every mint fails with [`BrokerError::UnknownProvider`].
    pub fn new() -> Self {
        Secrets {
            providers: BTreeMap::new(),
            dev: None,
        }
    }

    /// Dev mode: every provider name, declared or not, resolves to `vault`.
    pub fn dev(vault: Arc<DevVault>) -> Self {
        Secrets {
            providers: BTreeMap::new(),
            dev: Some(vault),
        }
    }

    /// The secrets providers among a policy's provider blocks (other types — notify, identity,
    /// audit sinks — are skipped). With `dev`, this is [`Secrets::dev`] whatever is declared.
    /// Without it, a `type = "vault"` provider is an error: a real Vault client is not
    /// supported yet.
    pub fn from_providers(
        providers: &[ProviderConfig],
        dev: Option<Arc<DevVault>>,
    ) -> Result<Self, BrokerError> {
        if let Some(vault) = dev {
            return Ok(Secrets::dev(vault));
        }
        for p in providers {
            if SECRETS_KINDS.contains(&p.kind.as_str()) {
                return Err(BrokerError::Unsupported {
                    provider: p.name.clone(),
                    kind: p.kind.clone(),
                    hint: "; `faramesh dev` stands in for it with the in-process dev vault".into(),
                });
            }
        }
        Ok(Secrets::new())
    }

    /// Registers (or replaces) the provider behind `name`.
    pub fn insert(&mut self, name: impl Into<String>, provider: Box<dyn SecretsProvider>) {
        self.providers.insert(name.into(), provider);
    }

    /// Whether a mint for `name` would reach a provider.
    pub fn contains(&self, name: &str) -> bool {
        self.dev.is_some() || self.providers.contains_key(name)
    }

    /// The dev vault, in dev mode.
    pub fn dev_vault(&self) -> Option<&Arc<DevVault>> {
        self.dev.as_ref()
    }

    /// Mints through the provider `req.provider` names.
    pub fn mint(&self, req: &MintRequest) -> Result<Lease, BrokerError> {
        if let Some(vault) = &self.dev {
            return vault.mint(req);
        }
        match self.providers.get(&req.provider) {
            Some(p) => p.mint(req),
            None => Err(BrokerError::UnknownProvider(req.provider.clone())),
        }
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("providers", &self.providers)
            .field("dev", &self.dev)
            .finish()
    }
}
