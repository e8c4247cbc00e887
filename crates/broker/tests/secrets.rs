//! The dev vault and the secrets registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use broker::{
    BrokerError, DevVault, MintRequest, ProviderConfig, Secret, Secrets, SecretsProvider,
};

const NOW: i64 = 1_718_810_565_000;

fn request(provider: &str, path: Option<&str>, call: &str) -> MintRequest {
    MintRequest {
        provider: provider.into(),
        path: path.map(str::to_owned),
        scope: "stripe/refund".into(),
        agent: "support-bot".into(),
        tool: "stripe/refund".into(),
        call_id: call.into(),
        ttl_ms: 30_000,
        now_ms: NOW,
    }
}

#[test]
fn every_mint_is_a_fresh_random_credential() {
    let vault = DevVault::new();
    let mut seen = HashSet::new();
    for i in 0..500 {
        let lease = vault
            .mint(&request(
                "vault",
                Some("secret/stripe"),
                &format!("dpr_{i}"),
            ))
            .unwrap();
        let value = lease.value.expose();
        let body = value.strip_prefix("rk_dev_").expect(value);
        // 32 characters of 62: 32 × log2(62) ≈ 190 bits ≥ 128.
        assert_eq!(body.len(), 32);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(seen.insert(value.to_owned()), "a credential repeated");
        assert!(lease.lease_id.starts_with("lease_") && lease.lease_id.len() == 6 + 32);
    }
    // Over 500 × 32 characters every one of the 62 appears: no narrowed alphabet.
    let chars: HashSet<char> = seen
        .iter()
        .flat_map(|v| v[7..].chars().collect::<Vec<_>>())
        .collect();
    assert_eq!(chars.len(), 62);
}

#[test]
fn stripe_style_only_for_stripe() {
    let vault = DevVault::new();
    let by_path = vault
        .mint(&request("vault", Some("secret/Stripe/live"), "a"))
        .unwrap();
    assert!(by_path.value.expose().starts_with("rk_dev_"));
    let by_name = vault.mint(&request("stripe", None, "b")).unwrap();
    assert!(by_name.value.expose().starts_with("rk_dev_"));
    let other = vault
        .mint(&request("vault", Some("secret/github"), "c"))
        .unwrap();
    assert!(other.value.expose().starts_with("fm_dev_"));
    assert_eq!(other.value.expose().len(), 7 + 32);
}

#[test]
fn a_lease_never_shows_its_value() {
    let vault = DevVault::new();
    let lease = vault
        .mint(&request("vault", Some("secret/stripe"), "dpr_1"))
        .unwrap();
    let value = lease.value.expose().to_owned();
    for shown in [
        format!("{lease:?}"),
        format!("{lease:#?}"),
        format!("{:?}", lease.value),
        format!("{}", lease.value),
        format!("{vault:?}"),
    ] {
        assert!(!shown.contains(&value), "{shown}");
        assert!(!shown.contains(&value[7..]), "{shown}");
    }
    assert!(format!("{lease:?}").contains("[redacted]"));
    assert_eq!(Secret::new("x").to_string(), "[redacted]");
}

#[test]
fn validate_until_expiry() {
    let vault = DevVault::new();
    let lease = vault
        .mint(&request("vault", Some("secret/stripe"), "dpr_1"))
        .unwrap();
    assert_eq!(lease.ttl_ms, 30_000);
    assert_eq!(lease.expires_at_ms, NOW + 30_000);
    assert_eq!(lease.provider, "vault");
    assert_eq!(lease.scope, "stripe/refund");

    let info = vault.validate(lease.value.expose(), NOW + 29_999).unwrap();
    assert_eq!(info.lease_id, lease.lease_id);
    assert_eq!(info.scope, "stripe/refund");
    assert_eq!(info.call_id, "dpr_1");
    assert_eq!(info.agent, "support-bot");
    assert_eq!(info.expires_at_ms, NOW + 30_000);
    assert_eq!(vault.live_leases(NOW), 1);

    assert!(vault.validate(lease.value.expose(), NOW + 30_000).is_none());
    assert!(vault.validate(lease.value.expose(), NOW + 31_000).is_none());
    assert_eq!(vault.live_leases(NOW + 30_000), 0);
    assert!(
        vault
            .validate("rk_dev_notminted0000000000000000000", NOW)
            .is_none()
    );
    assert!(vault.validate("", NOW).is_none());
}

#[test]
fn a_lease_belongs_to_its_call() {
    let vault = DevVault::new();
    let mut other = request("vault", Some("secret/github"), "dpr_2");
    other.scope = "github/merge".into();
    other.tool = "github/merge".into();
    let a = vault
        .mint(&request("vault", Some("secret/stripe"), "dpr_1"))
        .unwrap();
    let b = vault.mint(&other).unwrap();
    let ia = vault.validate(a.value.expose(), NOW).unwrap();
    let ib = vault.validate(b.value.expose(), NOW).unwrap();
    assert_eq!(
        (ia.scope.as_str(), ia.call_id.as_str()),
        ("stripe/refund", "dpr_1")
    );
    assert_eq!(
        (ib.scope.as_str(), ib.call_id.as_str()),
        ("github/merge", "dpr_2")
    );
    assert_ne!(a.lease_id, b.lease_id);

    // A second permit of the same tool gets its own credential; revoking one leaves the other.
    let again = vault
        .mint(&request("vault", Some("secret/stripe"), "dpr_3"))
        .unwrap();
    assert_ne!(again.value.expose(), a.value.expose());
    assert!(vault.revoke(&a.lease_id));
    assert!(!vault.revoke(&a.lease_id));
    assert!(vault.validate(a.value.expose(), NOW).is_none());
    assert!(vault.validate(again.value.expose(), NOW).is_some());
}

#[test]
fn the_vault_is_bounded() {
    let vault = DevVault::with_max_leases(3);
    let mut short = request("vault", None, "short");
    short.ttl_ms = 1_000;
    let s = vault.mint(&short).unwrap();
    let leases: Vec<_> = (0..3)
        .map(|i| {
            vault
                .mint(&request("vault", None, &format!("c{i}")))
                .unwrap()
        })
        .collect();
    // The earliest-expiring lease made room.
    assert!(vault.validate(s.value.expose(), NOW).is_none());
    assert!(
        leases
            .iter()
            .all(|l| vault.validate(l.value.expose(), NOW).is_some())
    );
    // Expired leases go first once the vault is full.
    let mut later = request("vault", None, "later");
    later.now_ms = NOW + 60_000;
    let l = vault.mint(&later).unwrap();
    assert!(vault.validate(l.value.expose(), NOW + 60_001).is_some());
    assert_eq!(vault.live_leases(NOW + 60_001), 1);
}

#[test]
fn bad_requests_are_refused() {
    let vault = DevVault::new();
    let mut r = request("vault", None, "dpr_1");
    r.ttl_ms = 0;
    assert!(matches!(
        vault.mint(&r),
        Err(BrokerError::InvalidRequest(_))
    ));
    let mut r = request("vault", None, "");
    r.call_id.clear();
    assert!(matches!(
        vault.mint(&r),
        Err(BrokerError::InvalidRequest(_))
    ));
}

#[test]
fn registry_in_production() {
    let secrets = Secrets::from_providers(&[], None).unwrap();
    match secrets.mint(&request("vault", None, "dpr_1")) {
        Err(BrokerError::UnknownProvider(p)) => assert_eq!(p, "vault"),
        other => panic!("{other:?}"),
    }
    assert!(!secrets.contains("vault"));

    // A real Vault is not supported yet: said at configuration, not at the first permit.
    let err = Secrets::from_providers(
        &[ProviderConfig::new("vault", "vault").with("address", "https://vault.test")],
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider `vault`: type `vault` is not supported yet; `faramesh dev` stands in for it with the in-process dev vault"
    );

    // Notify providers are not secrets providers.
    let secrets = Secrets::from_providers(
        &[ProviderConfig::new("slack", "slack").with("webhook_url", "https://h.test/x")],
        None,
    )
    .unwrap();
    assert!(secrets.mint(&request("slack", None, "dpr_1")).is_err());

    // A provider registered by hand is used by name.
    let mut secrets = Secrets::new();
    secrets.insert("vault", Box::new(DevVault::new()));
    assert!(secrets.contains("vault"));
    assert!(secrets.mint(&request("vault", None, "dpr_1")).is_ok());
    assert!(secrets.mint(&request("other", None, "dpr_1")).is_err());
}

#[test]
fn registry_in_dev_mode_resolves_every_name_to_the_dev_vault() {
    let vault = Arc::new(DevVault::new());
    let secrets = Secrets::from_providers(
        &[ProviderConfig::new("vault", "vault")],
        Some(Arc::clone(&vault)),
    )
    .unwrap();
    for name in ["vault", "stripe", "never-declared"] {
        assert!(secrets.contains(name));
        let lease = secrets
            .mint(&request(name, Some("secret/x"), "dpr_1"))
            .unwrap();
        assert_eq!(lease.provider, name);
        assert!(vault.validate(lease.value.expose(), NOW).is_some());
    }
    assert!(Arc::ptr_eq(secrets.dev_vault().unwrap(), &vault));
}

#[test]
fn the_vault_is_shared_across_threads() {
    let vault = Arc::new(DevVault::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let vault = Arc::clone(&vault);
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        let lease = vault
                            .mint(&request("vault", None, &format!("t{t}-{i}")))
                            .unwrap();
                        vault.validate(lease.value.expose(), NOW).unwrap().call_id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let n: usize = handles.into_iter().map(|h| h.join().unwrap().len()).sum();
    assert_eq!(n, 400);
    assert_eq!(vault.live_leases(NOW), 400);
}

#[test]
fn the_daemon_can_share_everything_across_tasks() {
    fn shared<T: Send + Sync>() {}
    shared::<Secrets>();
    shared::<DevVault>();
    shared::<broker::Notifier>();
    shared::<broker::NotifyConfig>();
    shared::<broker::JsonlFileSink>();
    shared::<Box<dyn broker::AuditSink>>();
    shared::<Box<dyn broker::IdentityProvider>>();
    fn sendable<T: Send>() {}
    sendable::<broker::Lease>();
    sendable::<BrokerError>();
}
