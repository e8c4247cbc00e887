//! A blocking JSON-RPC client for the daemon's sockets: what the CLI uses.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// Why a call did not get a result.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens there: the daemon is not running.
    NotRunning(PathBuf),
    Io(String),
    /// The daemon answered with an error.
    Rpc {
        code: i64,
        message: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(p) => {
                write!(f, "no daemon is running ({} is not reachable)", p.display())
            }
            ClientError::Io(m) => f.write_str(m),
            ClientError::Rpc { message, .. } => f.write_str(message),
        }
    }
}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream =
            UnixStream::connect(path).map_err(|_| ClientError::NotRunning(path.to_path_buf()))?;
        let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", path.display()));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", self.path.display()));
        let mut text = line.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(io)?;
        if n == 0 {
            return Err(ClientError::Io(format!(
                "{}: the daemon closed the connection",
                self.path.display()
            )));
        }
        let v: Value = serde_json::from_str(&answer)
            .map_err(|e| ClientError::Io(format!("the daemon's answer is not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(ClientError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
            });
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}
