//! Selectors: external facts from `file://` and `http://` sources, cached (SPEC §3.8).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value as Json;

/// How long an HTTP source may take, unless the selector sets `timeout`.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer a source may send.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// When an answer was fetched, and the answer.
type Cached = (i64, Option<Json>);

/// Answers cached per selector and key, with the time they were fetched.
#[derive(Debug, Default)]
pub struct SelectorCache {
    entries: Mutex<HashMap<(usize, String), Cached>>,
}

impl SelectorCache {
    /// The cached answer if younger than `ttl_ms`, else a fresh one from the source.
    pub fn get(
        &self,
        index: usize,
        spec: &crate::compile::SelectorSpec,
        key: &str,
        now_ms: i64,
        base: &Path,
    ) -> Result<Option<Json>, String> {
        let ttl_ms = spec.cache_ms;
        let cache_key = (index, key.to_string());
        if ttl_ms > 0 {
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, answer)) = entries.get(&cache_key)
                && now_ms.saturating_sub(*at) < i64::try_from(ttl_ms).unwrap_or(i64::MAX)
            {
                return Ok(answer.clone());
            }
        }
        let answer = fetch(&spec.source, key, base, spec.timeout)?;
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cache_key, (now_ms, answer.clone()));
        Ok(answer)
    }
}

/// Asks the source about `key`: a JSON object keyed by key (file), or `GET source?key=…`
/// answering one JSON object (HTTP). `Ok(None)` when the source knows nothing of the key.
pub fn fetch(
    source: &str,
    key: &str,
    base: &Path,
    timeout: Duration,
) -> Result<Option<Json>, String> {
    if let Some(path) = source.strip_prefix("file://") {
        let path = resolve(base, path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let all: Json = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let Json::Object(map) = all else {
            return Err(format!(
                "{} must hold a JSON object keyed by key",
                path.display()
            ));
        };
        return Ok(map.get(key).cloned());
    }
    if let Some(rest) = source.strip_prefix("http://") {
        return http_get(rest, key, timeout);
    }
    Err(format!("unsupported selector source `{source}`"))
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn http_get(rest: &str, key: &str, timeout: Duration) -> Result<Option<Json>, String> {
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!("/{path}{sep}key={}", percent_encode(key));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {target} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{authority}: {e}"))?;
    let mut body = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("{authority}: {e}"))?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "{authority} answered more than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{authority}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" => {}
        "404" => return Ok(None),
        other => return Err(format!("{authority} answered HTTP {other}")),
    }
    match serde_json::from_str::<Json>(payload) {
        Ok(v @ Json::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(format!("{authority} must answer a JSON object")),
        Err(e) => Err(format!("{authority} answered invalid JSON: {e}")),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
