//! Egress restriction on call arguments (SPEC §3.9).
//!
//! `egress { allow = [hosts]; deny = [hosts] }`: patterns are exact hosts or `*.example.com`
//! (subdomains only, not `example.com` itself); `deny` wins over `allow`; with a non-empty
//! `allow` every other host is refused; with an empty `allow` only `deny` applies; with both
//! empty there is no restriction.
//!
//! [`EgressPolicy::check_args`] finds the destinations a call names — string values under the
//! keys `url`, `uri`, `endpoint`, `base_url` and `host` at any depth, inside arrays too — and
//! refuses the first one the policy does not allow. Parsing fails closed: under any
//! restriction, a destination whose host cannot be read unambiguously is refused. That
//! includes URLs that common parsers read differently (a backslash or a second `@` in the
//! authority), percent-encoded, malformed or non-canonical numeric hosts (`2130706433`,
//! `0x7f.1`, `127.1`, `010.0.0.1`), and non-string scalars under a destination key.

use std::net::Ipv6Addr;

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

/// The hosts a policy lets calls reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<HostPattern>,
    deny: Vec<HostPattern>,
}

/// One `allow` or `deny` entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host.
    Exact(String),
    /// Any host ending in `.` + this domain (the domain itself excluded).
    Subdomains(String),
    /// An entry that is not a host or `*.domain` pattern (the checker refuses these); it matches
    /// nothing, but still counts as a restriction.
    Never,
}

impl HostPattern {
    fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        match raw.strip_prefix("*.") {
            Some(domain) => match normalize_host(domain) {
                Some(d) if !d.starts_with('[') => HostPattern::Subdomains(d),
                _ => HostPattern::Never,
            },
            None => normalize_host(raw).map_or(HostPattern::Never, HostPattern::Exact),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty()),
            HostPattern::Never => false,
        }
    }
}

/// What a destination string names.
#[derive(Debug, PartialEq, Eq)]
enum Dest {
    /// A host, normalised.
    Host(String),
    /// A reference relative to some other base (`/v1/charges`): it names no host of its own.
    Relative,
    /// No host can be read from it unambiguously.
    Unparseable,
}

impl EgressPolicy {
    /// The policy with these `allow` and `deny` entries (`*.example.com` or exact hosts; case
    /// and a trailing dot do not matter).
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        EgressPolicy {
            allow: allow.iter().map(|p| HostPattern::parse(p)).collect(),
            deny: deny.iter().map(|p| HostPattern::parse(p)).collect(),
        }
    }

    /// True when the policy restricts nothing (both lists empty).
    pub fn is_unrestricted(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Checks every destination named in `args`: `Ok(())`, or `Err(host)` for the first one
    /// refused (the host as read from it, or the raw value when no host can be read).
    ///
    /// Destination keys are `url`, `uri`, `endpoint`, `base_url` and `host`, matched
    /// ignoring ASCII case, `_` and `-` (so `URL`, `baseUrl` and a `Host` header count).
    /// Under such a key: a string is a destination; an array's elements are each one; an
    /// object is searched like any other; `null` is nothing; a number or boolean is refused
    /// under any restriction. A string starting with a single `/` is a relative reference
    /// with no host of its own and is not a destination.
    pub fn check_args(&self, args: &Value) -> Result<(), String> {
        if self.is_unrestricted() {
            return Ok(());
        }
        self.search(args)
    }

    /// True if the policy lets a call reach `host` (`host` or `host:port`, IPv6 in
    /// brackets; compared lowercase without a trailing dot). Always true when unrestricted;
    /// under a restriction a host that cannot be read is refused.
    pub fn allows_host(&self, host: &str) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        match parse_host_value(host) {
            Dest::Host(h) => self.decide(&h),
            Dest::Relative | Dest::Unparseable => false,
        }
    }

    fn decide(&self, host: &str) -> bool {
        if self.deny.iter().any(|p| p.matches(host)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches(host))
    }

    fn search(&self, v: &Value) -> Result<(), String> {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    match destination_key(key) {
                        Some(kind) => self.destination(kind, child)?,
                        None => self.search(child)?,
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|item| self.search(item)),
            _ => Ok(()),
        }
    }

    fn destination(&self, kind: KeyKind, v: &Value) -> Result<(), String> {
        match v {
            Value::String(s) => {
                let dest = match kind {
                    KeyKind::Url => parse_url(s),
                    KeyKind::Host => parse_host_value(s),
                };
                match dest {
                    Dest::Host(h) if self.decide(&h) => Ok(()),
                    Dest::Host(h) => Err(h),
                    Dest::Relative => Ok(()),
                    Dest::Unparseable => Err(s.clone()),
                }
            }
            Value::Array(items) => items
                .iter()
                .try_for_each(|item| self.destination(kind, item)),
            Value::Object(_) => self.search(v),
            Value::Null => Ok(()),
            Value::Bool(_) | Value::Number(_) => Err(v.to_string()),
        }
    }
}

/// The host a URL-ish value reaches, read the way browsers and WHATWG parsers read it;
/// `None` when it names no host or cannot be read unambiguously. Shared by the `host` clause,
/// `host()` and `domain()`, so no rule can see a different host than egress checks.
pub fn url_host(raw: &str) -> Option<String> {
    match parse_url(raw) {
        Dest::Host(h) => Some(h),
        Dest::Relative | Dest::Unparseable => None,
    }
}

/// The host of a `host` value (`api.example.com`, `api.example.com:443`), normalised.
pub fn host_value(raw: &str) -> Option<String> {
    match parse_host_value(raw) {
        Dest::Host(h) => Some(h),
        Dest::Relative | Dest::Unparseable => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// `url`, `uri`, `endpoint`, `base_url`: a URL, or a bare `host[:port][/path]`.
    Url,
    /// `host`: a host, optionally with `:port`.
    Host,
}

fn destination_key(key: &str) -> Option<KeyKind> {
    if key.len() > 16 {
        return None;
    }
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match folded.as_str() {
        "url" | "uri" | "endpoint" | "baseurl" => Some(KeyKind::Url),
        "host" => Some(KeyKind::Host),
        _ => None,
    }
}

/// The WHATWG "special" schemes that always have a host (all but `file`): browsers and WHATWG
/// parsers read `http:evil.com`, `http:/evil.com` and `http:\\evil.com` as host `evil.com`,
/// so for these any run of slashes after the colon is skipped. Other schemes (`file` included)
/// need `//` before a host.
const SPECIAL_SCHEMES: &[&str] = &["http", "https", "ws", "wss", "ftp"];

/// WHATWG parsers drop leading and trailing C0 controls and spaces, and every tab and newline
/// anywhere; do the same so that `ev\nil.com` is read as the `evil.com` a client would reach.
fn clean(s: &str) -> String {
    s.trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Reads the host of a URL-ish value: `scheme://[userinfo@]host[:port]/…`, `//host/…`, or a
/// bare `host[:port][/…]`.
fn parse_url(raw: &str) -> Dest {
    let s = clean(raw);
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (None, _) => return Dest::Unparseable,
        (Some('/' | '\\'), Some('/' | '\\')) => {
            return parse_authority(s.trim_start_matches(['/', '\\']));
        }
        (Some('/'), _) => return Dest::Relative,
        (Some('\\'), _) => return Dest::Unparseable,
        _ => {}
    }
    match split_scheme(&s) {
        None => parse_authority(&s),
        Some((scheme, rest)) => {
            if is_port_then_path(rest) {
                // `localhost:8080/x` is a bare host and port, not scheme `localhost`.
                parse_authority(&s)
            } else if SPECIAL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                parse_authority(rest.trim_start_matches(['/', '\\']))
            } else if let Some(after) = rest.strip_prefix("//") {
                parse_authority(after)
            } else {
                // `mailto:…`, `data:…`, `urn:…`: no host to check.
                Dest::Unparseable
            }
        }
    }
}

/// `scheme:` per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        Some((scheme, &s[colon + 1..]))
    } else {
        None
    }
}

/// `8080`, `8080/x`, `8080?q`, `8080#f`: what follows `host:` in a bare `host:port/…`.
fn is_port_then_path(rest: &str) -> bool {
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let port = &rest[..end];
    !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())
}

/// Reads the host out of `[userinfo@]host[:port]` followed by an optional `/…`, `?…`, `#…`.
fn parse_authority(s: &str) -> Dest {
    let end = s.find(['/', '?', '#', '\\']).unwrap_or(s.len());
    if s[end..].starts_with('\\') {
        // WHATWG ends a special URL's authority at `\`; other parsers read on. Ambiguous.
        return Dest::Unparseable;
    }
    let authority = &s[..end];
    let host_port = match authority.split_once('@') {
        // Parsers disagree on which `@` ends the userinfo; refuse more than one.
        Some((_, rest)) if rest.contains('@') => return Dest::Unparseable,
        Some((_, rest)) => rest,
        None => authority,
    };
    host_and_port(host_port)
}

/// A `host` value: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address. A value
/// that looks like a URL (`https://…`) or carries a path is read as one.
fn parse_host_value(raw: &str) -> Dest {
    let s = clean(raw);
    if s.contains("://") || s.contains(['/', '\\', '?', '#']) {
        return match parse_url(&s) {
            Dest::Relative => Dest::Unparseable,
            d => d,
        };
    }
    if s.contains('@') {
        return parse_authority(&s);
    }
    host_and_port(&s)
}

fn host_and_port(s: &str) -> Dest {
    let host = if let Some(inner) = s.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Dest::Unparseable;
        };
        let after = &inner[close + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Dest::Unparseable;
        }
        &s[..close + 2]
    } else {
        match s.matches(':').count() {
            0 => s,
            1 => match s.split_once(':') {
                Some((host, port)) if is_port(port) => host,
                _ => return Dest::Unparseable,
            },
            // Several colons: only an unbracketed IPv6 address (as a `host` value may be).
            _ => s,
        }
    };
    normalize_host(host).map_or(Dest::Unparseable, Dest::Host)
}

/// A port: digits, possibly none (`host:` means the default port).
fn is_port(p: &str) -> bool {
    p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())
}

/// The comparable form of a host: lowercase, no trailing dot, Unicode folded with NFKC (so a
/// fullwidth `ｅｖｉｌ.com` is `evil.com`), IPv6 as `[canonical]` (an IPv4-mapped address as
/// its IPv4 form), IPv4 only as canonical dotted decimal. `None` if it is not a host.
fn normalize_host(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let v6 = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .or_else(|| raw.contains(':').then_some(raw));
    if let Some(v6) = v6 {
        let addr: Ipv6Addr = v6.parse().ok()?;
        return Some(match addr.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{addr}]"),
        });
    }

    let folded: String = if raw.is_ascii() {
        raw.to_ascii_lowercase()
    } else {
        raw.nfkc()
            .map(|c| match c {
                // Ideographic and halfwidth full stops are dots to IDNA (UTS 46).
                '\u{3002}' | '\u{FF61}' => '.',
                c => c,
            })
            .collect::<String>()
            .to_lowercase()
    };
    let host = folded.strip_suffix('.').unwrap_or(&folded);
    if host.is_empty()
        || !host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
    {
        return None;
    }
    if looks_numeric(host) && !is_canonical_ipv4(host) {
        // WHATWG reads a host whose last label is a number as IPv4 in any of several
        // spellings (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`); accept only the one.
        return None;
    }
    Some(host.to_owned())
}

/// Whether the last label is a number (decimal, or `0x` hex), which makes a WHATWG parser
/// read the host as an IPv4 address.
fn looks_numeric(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit()))
}

fn is_canonical_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        let s = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        EgressPolicy::new(&s(allow), &s(deny))
    }

    fn corpus() -> EgressPolicy {
        policy(
            &["en.wikipedia.org", "duckduckgo.com", "*.wikimedia.org"],
            &[],
        )
    }

    fn url(u: &str) -> Value {
        json!({ "url": u })
    }

    #[test]
    fn corpus_cases() {
        let p = corpus();
        assert_eq!(
            p.check_args(&url("https://upload.wikimedia.org/a.png")),
            Ok(())
        );
        assert_eq!(
            p.check_args(&url("https://en.wikipedia.org/wiki/Rust")),
            Ok(())
        );
        assert_eq!(p.check_args(&url("https://duckduckgo.com/?q=x")), Ok(()));
        assert_eq!(
            p.check_args(&url("https://evil.example.com/")),
            Err("evil.example.com".into())
        );
        assert_eq!(
            p.check_args(&url("https://wikimedia.org.evil.com/")),
            Err("wikimedia.org.evil.com".into())
        );
        assert_eq!(
            p.check_args(&url("https://en.wikipedia.org@evil.com/")),
            Err("evil.com".into())
        );
    }

    #[test]
    fn unrestricted_allows_everything() {
        let p = EgressPolicy::default();
        assert!(p.is_unrestricted());
        assert!(policy(&[], &[]).is_unrestricted());
        assert_eq!(p.check_args(&url("http://")), Ok(()));
        assert_eq!(p.check_args(&json!({"host": 5})), Ok(()));
        assert!(p.allows_host("anything.example"));
        assert!(p.allows_host(""));
        assert!(!policy(&["a.com"], &[]).is_unrestricted());
        assert!(!policy(&[], &["a.com"]).is_unrestricted());
    }

    #[test]
    fn exact_patterns_match_only_that_host() {
        let p = policy(&["api.stripe.com"], &[]);
        assert!(p.allows_host("api.stripe.com"));
        assert!(!p.allows_host("stripe.com"));
        assert!(!p.allows_host("x.api.stripe.com"));
        assert!(!p.allows_host("api.stripe.com.evil.com"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = policy(&["*.example.com"], &[]);
        assert!(p.allows_host("a.example.com"));
        assert!(p.allows_host("a.b.example.com"));
        assert!(!p.allows_host("example.com"));
        assert!(!p.allows_host("badexample.com"));
        assert!(!p.allows_host("a.example.com.evil.org"));
        assert!(!p.allows_host(".example.com"));
    }

    #[test]
    fn hosts_compare_lowercase_without_trailing_dot() {
        let p = policy(&["API.Stripe.COM.", "*.Example.com"], &[]);
        assert!(p.allows_host("api.stripe.com"));
        assert!(p.allows_host("API.STRIPE.COM."));
        assert!(p.allows_host("A.EXAMPLE.COM"));
        assert_eq!(p.check_args(&url("HTTPS://API.STRIPE.COM./v1")), Ok(()));
        // Only one trailing dot is a root; two is not a host.
        assert!(!p.allows_host("api.stripe.com.."));
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(&["*.example.com"], &["secret.example.com"]);
        assert!(p.allows_host("www.example.com"));
        assert!(!p.allows_host("secret.example.com"));
        assert_eq!(
            p.check_args(&url("https://secret.example.com/x")),
            Err("secret.example.com".into())
        );
        let p = policy(&["a.com"], &["a.com"]);
        assert!(!p.allows_host("a.com"));
    }

    #[test]
    fn non_empty_allow_refuses_every_other_host() {
        let p = policy(&["a.com"], &[]);
        assert!(p.allows_host("a.com"));
        assert!(!p.allows_host("b.com"));
        assert_eq!(p.check_args(&url("https://b.com")), Err("b.com".into()));
    }

    #[test]
    fn deny_only_refuses_just_the_denied() {
        let p = policy(&[], &["evil.com", "*.evil.org"]);
        assert!(p.allows_host("good.com"));
        assert!(!p.allows_host("evil.com"));
        assert!(!p.allows_host("x.evil.org"));
        assert!(p.allows_host("evil.org"));
        assert_eq!(p.check_args(&url("https://good.com/")), Ok(()));
        assert_eq!(
            p.check_args(&url("https://EVIL.com/")),
            Err("evil.com".into())
        );
    }

    #[test]
    fn all_destination_keys_at_any_depth_and_in_arrays() {
        let p = policy(&["ok.com"], &[]);
        for key in ["url", "uri", "endpoint", "base_url"] {
            assert_eq!(
                p.check_args(&json!({ key: "https://ok.com/x" })),
                Ok(()),
                "{key}"
            );
            assert_eq!(
                p.check_args(&json!({ key: "https://bad.com/x" })),
                Err("bad.com".into()),
                "{key}"
            );
        }
        assert_eq!(p.check_args(&json!({"host": "ok.com"})), Ok(()));
        assert_eq!(
            p.check_args(&json!({"host": "bad.com"})),
            Err("bad.com".into())
        );
        let deep =
            json!({"req": {"targets": [{"meta": 1}, {"cfg": {"endpoint": "bad.com:443/v1"}}]}});
        assert_eq!(p.check_args(&deep), Err("bad.com".into()));
        let arr = json!({"url": ["https://ok.com", ["https://bad.com"]]});
        assert_eq!(p.check_args(&arr), Err("bad.com".into()));
        let ok = json!({"a": [{"url": "https://ok.com"}, {"host": "ok.com:8443"}], "b": "https://bad.com"});
        assert_eq!(
            p.check_args(&ok),
            Ok(()),
            "non-destination keys are not checked"
        );
        // An object under a destination key is searched like any other.
        let obj = json!({"host": {"name": "x", "url": "https://bad.com"}});
        assert_eq!(p.check_args(&obj), Err("bad.com".into()));
        assert_eq!(p.check_args(&json!({"url": null})), Ok(()));
    }

    #[test]
    fn key_spelling_variants_count() {
        let p = policy(&["ok.com"], &[]);
        for key in [
            "URL", "Uri", "baseUrl", "base-url", "BASE_URL", "Host", "EndPoint",
        ] {
            assert_eq!(
                p.check_args(&json!({ key: "https://bad.com" })),
                Err("bad.com".into()),
                "{key}"
            );
        }
        assert_eq!(
            p.check_args(&json!({"headers": {"Host": "bad.com"}})),
            Err("bad.com".into())
        );
        assert_eq!(p.check_args(&json!({"urls": "https://bad.com"})), Ok(()));
    }

    #[test]
    fn first_refused_destination_is_reported() {
        let p = policy(&["ok.com"], &[]);
        let args = json!({"url": ["https://ok.com", "https://one.com", "https://two.com"]});
        assert_eq!(p.check_args(&args), Err("one.com".into()));
    }

    #[test]
    fn url_forms() {
        let p = policy(&["ok.com", "[::1]", "10.0.0.1"], &[]);
        let good = [
            "https://ok.com",
            "https://ok.com:8443/a?b#c",
            "https://user:pw@ok.com/x",
            "http://ok.com?x=https://bad.com",
            "http://ok.com#@bad.com",
            "ok.com",
            "ok.com/path",
            "ok.com:8080",
            "ok.com:8080/path",
            "//ok.com/x",
            "wss://ok.com/socket",
            "redis://ok.com:6379/0",
            "postgres://u@ok.com/db",
            "http://[::1]:8080/",
            "http://[0:0::1]/",
            "http://10.0.0.1/",
            "  https://ok.com/  ",
            "/v1/charges",
        ];
        for u in good {
            assert_eq!(p.check_args(&url(u)), Ok(()), "{u}");
        }
        let bad = [
            ("https://bad.com", "bad.com"),
            ("https://ok.com.bad.com", "ok.com.bad.com"),
            ("https://ok.com@bad.com", "bad.com"),
            ("https://ok.com:443@bad.com/", "bad.com"),
            ("bad.com/ok.com", "bad.com"),
            ("bad.com:80", "bad.com"),
            ("//bad.com", "bad.com"),
            ("http:bad.com", "bad.com"),
            ("http:/bad.com", "bad.com"),
            ("http:\\\\bad.com", "bad.com"),
            ("https:///bad.com", "bad.com"),
            ("http://[::2]/", "[::2]"),
            ("https://b\nad.com/", "bad.com"),
        ];
        for (u, host) in bad {
            assert_eq!(p.check_args(&url(u)), Err(host.into()), "{u}");
        }
    }

    #[test]
    fn unparseable_destinations_fail_closed_under_any_restriction() {
        let cases = [
            "",
            "   ",
            "http://",
            "https:///",
            "http://:80/",
            "http://@/",
            "file:///etc/passwd",
            "mailto:someone@ok.com",
            "https://ok.com\\@bad.com/",
            "https://a@ok.com@bad.com/",
            "https://%62ad.com/",
            "https://ok.com:port/",
            "https://ok.com:99999999/",
            "http://[::1/",
            "http://[not-v6]/",
            "https://bad com/",
            "?q=1",
            "\\x",
        ];
        for restricted in [policy(&["ok.com"], &[]), policy(&[], &["bad.com"])] {
            for u in cases {
                assert_eq!(restricted.check_args(&url(u)), Err(u.to_string()), "{u:?}");
            }
            assert_eq!(
                restricted.check_args(&json!({"host": ""})),
                Err(String::new())
            );
            assert_eq!(
                restricted.check_args(&json!({"host": 2130706433})),
                Err("2130706433".into())
            );
            assert_eq!(
                restricted.check_args(&json!({"url": true})),
                Err("true".into())
            );
            assert!(!restricted.allows_host(""));
            assert!(!restricted.allows_host("a b"));
        }
    }

    #[test]
    fn numeric_hosts_must_be_canonical_ipv4() {
        let p = policy(&[], &["127.0.0.1"]);
        assert!(!p.allows_host("127.0.0.1"));
        assert!(p.allows_host("10.1.2.3"));
        for spelling in [
            "2130706433",
            "0x7f.1",
            "127.1",
            "0177.0.0.1",
            "127.0.0.01",
            "0x7f000001",
            "127.0.0.256",
            "1.2.3.4.5",
        ] {
            assert!(!p.allows_host(spelling), "{spelling}");
            assert_eq!(
                p.check_args(&url(&format!("http://{spelling}/"))),
                Err(format!("http://{spelling}/"))
            );
        }
        // A numeric label that is not last is an ordinary host name.
        assert!(p.allows_host("1.example.com"));
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(!p.allows_host("[::ffff:127.0.0.1]"));
        assert_eq!(
            p.check_args(&url("http://[::ffff:7f00:1]/")),
            Err("127.0.0.1".into())
        );
    }

    #[test]
    fn ipv6_hosts() {
        let p = policy(&["::1", "[2001:db8::1]"], &[]);
        assert!(p.allows_host("[::1]"));
        assert!(p.allows_host("[::1]:443"));
        assert!(p.allows_host("::1"));
        assert!(p.allows_host("[2001:DB8:0::1]"));
        assert!(!p.allows_host("[::2]"));
        assert_eq!(p.check_args(&json!({"host": "[::1]:8080"})), Ok(()));
        assert_eq!(p.check_args(&json!({"host": "0:0:0:0:0:0:0:1"})), Ok(()));
        assert_eq!(
            p.check_args(&json!({"host": "[::1]x"})),
            Err("[::1]x".into())
        );
    }

    #[test]
    fn host_values() {
        let p = policy(&["ok.com"], &[]);
        let good = [
            "ok.com",
            "OK.com.",
            "ok.com:443",
            "ok.com:",
            "https://ok.com/x",
            "user@ok.com",
        ];
        for h in good {
            assert_eq!(p.check_args(&json!({ "host": h })), Ok(()), "{h}");
            assert!(p.allows_host(h), "{h}");
        }
        let bad = [
            ("bad.com", "bad.com"),
            ("bad.com:443", "bad.com"),
            ("ok.com@bad.com", "bad.com"),
        ];
        for (h, refused) in bad {
            assert_eq!(
                p.check_args(&json!({ "host": h })),
                Err(refused.into()),
                "{h}"
            );
            assert!(!p.allows_host(h), "{h}");
        }
        // A relative path is no host.
        assert_eq!(
            p.check_args(&json!({"host": "/var/run/x.sock"})),
            Err("/var/run/x.sock".into())
        );
        assert_eq!(
            p.check_args(&json!({"host": "ok.com:x"})),
            Err("ok.com:x".into())
        );
    }

    #[test]
    fn unicode_hosts_are_folded() {
        // Fullwidth letters and an ideographic full stop fold to what IDNA would reach.
        let p = policy(&[], &["evil.com"]);
        assert!(!p.allows_host("ｅｖｉｌ.com"));
        assert!(!p.allows_host("evil\u{3002}com"));
        assert_eq!(
            p.check_args(&url("https://ＥＶＩＬ．ｃｏｍ/")),
            Err("evil.com".into())
        );
        let p = policy(&["bücher.de"], &[]);
        assert!(p.allows_host("BÜCHER.de"));
        assert!(!p.allows_host("bucher.de"));
    }

    #[test]
    fn invalid_patterns_match_nothing_but_still_restrict() {
        let p = policy(&["*", "a b", "*.", ""], &[]);
        assert!(!p.is_unrestricted());
        assert!(!p.allows_host("a.com"));
        let p = policy(&[], &["*"]);
        assert!(p.allows_host("a.com"));
        assert_eq!(p.check_args(&url("http://")), Err("http://".into()));
    }

    #[test]
    fn non_destination_values_are_ignored() {
        let p = policy(&["ok.com"], &[]);
        let args = json!({
            "query": "https://bad.com",
            "note": {"text": "visit bad.com"},
            "n": 5,
            "list": ["https://bad.com"],
        });
        assert_eq!(p.check_args(&args), Ok(()));
        assert_eq!(p.check_args(&json!("https://bad.com")), Ok(()));
        assert_eq!(p.check_args(&Value::Null), Ok(()));
    }
}
