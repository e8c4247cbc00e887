//! The one error type of the broker.

/// What can go wrong in the broker. Every message names the provider (and key) concerned, so an
/// operator can fix the policy from the message alone; none ever contains a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A `credential` block names a provider that is not declared (or not a secrets provider).
    /// The daemon denies the call `CREDENTIAL_UNAVAILABLE`.
    #[error("provider `{0}` is not declared as a secrets provider")]
    UnknownProvider(String),

    /// The provider's type exists in FPL but this build cannot talk to it yet.
    #[error("provider `{provider}`: type `{kind}` is not supported yet{hint}")]
    Unsupported {
        provider: String,
        kind: String,
        /// Either empty or a sentence beginning with `; `.
        hint: String,
    },

    /// A provider block is missing a key, has an unknown one, or a value that cannot work.
    #[error("provider `{provider}`: {}{message}", key.as_ref().map(|k| format!("`{k}` ")).unwrap_or_default())]
    Config {
        provider: String,
        key: Option<String>,
        message: String,
    },

    /// A request the provider refuses as made (empty agent, zero TTL, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The operating system's random number generator failed.
    #[error("no randomness available: {0}")]
    Random(String),

    /// A file the broker writes (audit sink) could not be opened or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A record handed to an audit sink is not one line of JSON.
    #[error("audit sink: {0}")]
    Sink(String),
}

impl BrokerError {
    pub(crate) fn config(provider: &str, key: Option<&str>, message: impl Into<String>) -> Self {
        BrokerError::Config {
            provider: provider.to_owned(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(crate) fn random(e: getrandom::Error) -> Self {
        BrokerError::Random(e.to_string())
    }
}
