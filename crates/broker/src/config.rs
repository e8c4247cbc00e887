//! Provider blocks as the daemon hands them over.

use std::collections::BTreeMap;
use std::fmt;

/// One `provider "NAME" { type = "…"; key = value … }` block of the policy, with every
/// `env("…")` already resolved by the daemon. Values may be secrets (a webhook signing secret,
/// a PagerDuty routing key, a Slack webhook URL): [`Debug`](fmt::Debug) prints the keys only.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The block's name: `provider "slack" {…}` → `slack`.
    pub name: String,
    /// Its `type`.
    pub kind: String,
    /// Every other key, as text. A `type` key here is ignored.
    pub settings: BTreeMap<String, String>,
}

impl ProviderConfig {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        ProviderConfig {
            name: name.into(),
            kind: kind.into(),
            settings: BTreeMap::new(),
        }
    }

    /// Adds a setting (builder style).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}
