//! Newline-delimited JSON-RPC 2.0 over a Unix socket (SPEC §8): framing, envelopes, errors,
//! and the connection loop both sockets share.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

/// SPEC §8: 1 MiB per line.
pub const MAX_LINE: usize = 1 << 20;
/// How long a connection may sit idle between requests.
const IDLE: Duration = Duration::from_secs(600);
/// Once a request has begun, the rest of its line must arrive within this.
const LINE_DEADLINE: Duration = Duration::from_secs(30);
/// A client that does not read its answers is dropped after this.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Server-defined: the operation was refused (not found, not pending, not allowed, …).
pub const REFUSED: i64 = -32000;

/// A request line, borrowed from the line it was read from.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(default, borrow)]
    pub jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
    /// The upstream daemon's plain messages (`{"type": "poll_defer", …}`).
    #[serde(default, rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
}

/// A method's failure, answered as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    pub fn refused(message: impl Into<String>) -> RpcError {
        RpcError::new(REFUSED, message)
    }
}

pub type RpcResult = Result<serde_json::Value, RpcError>;

/// Params as `T`; absent params read as `{}`.
pub fn params<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Result<T, RpcError> {
    let text = raw.map_or("{}", RawValue::get);
    serde_json::from_str(text).map_err(|e| RpcError::params(format!("invalid params: {e}")))
}

/// `{"jsonrpc":"2.0","id":…,"result":…}` and a newline.
pub fn result_line(id: Option<&RawValue>, result: &impl serde::Serialize) -> String {
    match serde_json::to_string(result) {
        Ok(r) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{r}}}\n",
            id.map_or("null", RawValue::get)
        ),
        Err(e) => error_line(
            id,
            INTERNAL_ERROR,
            &format!("cannot encode the result: {e}"),
        ),
    }
}

pub fn error_line(id: Option<&RawValue>, code: i64, message: &str) -> String {
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".into());
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{code},\"message\":{message}}}}}\n",
        id.map_or("null", RawValue::get)
    )
}

enum Read {
    Line,
    TooLong,
    Eof,
}

/// Reads one line (without its newline) into `buf`, at most `max` bytes; a longer line is
/// consumed and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Read> {
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Read::TooLong,
                (false, true) => Read::Eof,
                (false, false) => Read::Line,
            });
        }
        let (piece, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + piece.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(piece);
            }
        }
        let used = done.unwrap_or(piece.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Read::TooLong } else { Read::Line });
        }
    }
}

/// Serves one connection: each line is handed to `handle`, whose answer (if any) is written
/// back whole, in one write. Malformed and oversized lines get an error and the connection
/// goes on; idle, slow or unreadable clients are dropped.
///
/// When `closing` turns true (the daemon drains), the connection ends at its next wait for a
/// request; a request already being read or answered finishes first.
pub async fn serve<H, F>(stream: UnixStream, handle: Arc<H>, mut closing: watch::Receiver<bool>)
where
    H: Fn(Vec<u8>) -> F + Send + Sync + 'static,
    F: Future<Output = Option<String>> + Send,
{
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let more = tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => false,
            got = tokio::time::timeout(IDLE, r.fill_buf()) => matches!(got, Ok(Ok(b)) if !b.is_empty()),
        };
        if !more {
            return;
        }
        let answer = match tokio::time::timeout(
            LINE_DEADLINE,
            read_line(&mut r, &mut buf, MAX_LINE),
        )
        .await
        {
            Ok(Ok(Read::Line)) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                handle(std::mem::take(&mut buf)).await
            }
            Ok(Ok(Read::TooLong)) => Some(error_line(
                None,
                INVALID_REQUEST,
                &format!("request line longer than {MAX_LINE} bytes"),
            )),
            Ok(Ok(Read::Eof)) | Ok(Err(_)) => return,
            Err(_) => {
                let line = error_line(None, INVALID_REQUEST, "request line not completed in time");
                let _ = tokio::time::timeout(WRITE_DEADLINE, w.write_all(line.as_bytes())).await;
                return;
            }
        };
        if let Some(line) = answer {
            match tokio::time::timeout(WRITE_DEADLINE, w.write_all(line.as_bytes())).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

/// Parses the envelope of a line; the error line when it is not a JSON-RPC request.
pub fn envelope(line: &[u8]) -> Result<Envelope<'_>, String> {
    let text = std::str::from_utf8(line)
        .map_err(|_| error_line(None, PARSE_ERROR, "the request is not UTF-8"))?;
    // One JSON object per line (SPEC §8): serde would read an array positionally.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => error_line(
                None,
                INVALID_REQUEST,
                "a request is one JSON object per line (batches are not supported)",
            ),
            Err(e) => error_line(None, PARSE_ERROR, &format!("the request is not JSON: {e}")),
        });
    }
    let env: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| error_line(None, PARSE_ERROR, &format!("the request is not JSON: {e}")))?;
    if env.kind.is_none() {
        if env.method.is_none() {
            return Err(error_line(
                env.id,
                INVALID_REQUEST,
                "the request has no `method`",
            ));
        }
        if env.jsonrpc.as_deref().is_some_and(|v| v != "2.0") {
            return Err(error_line(
                env.id,
                INVALID_REQUEST,
                "`jsonrpc` must be \"2.0\"",
            ));
        }
    }
    Ok(env)
}
