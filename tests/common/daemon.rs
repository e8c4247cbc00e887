//! Helpers shared by the daemon end-to-end tests (`tests/daemon_*.rs`): a temporary stack, the
//! real `faramesh` binary run as a daemon in a child process (killed whatever happens to the
//! test), JSON-RPC over the real sockets, raw HTTP over loopback, and the audit log as the
//! CLI exports it.
//!
//! Include with `#[path = "common/daemon.rs"] mod daemon_common;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use daemon::client::{Client, ClientError};
use daemon::server::RunInfo;
use serde_json::{Value, json};

/// How long a daemon may take to become READY, or to stop.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout of test clients: long enough for a loaded two-core machine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_faramesh"))
}

/// `faramesh ARGS…` with `NO_COLOR`, run to completion.
pub fn faramesh(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the faramesh binary runs")
}

/// `faramesh ARGS… --dir STACK`.
pub fn faramesh_in(stack: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let dir = stack.to_str().expect("a UTF-8 temp path");
    all.extend(["--dir", dir]);
    faramesh(&all)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams and the status, for assertion messages.
pub fn shown(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Asserts the command exited 0.
#[track_caller]
pub fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed:\n{}", shown(o));
}

/// A temporary stack holding `policy` as its `governance.fms`.
pub fn stack(policy: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("faramesh-e2e-")
        .tempdir()
        .expect("a temporary directory");
    write_policy(dir.path(), policy);
    dir
}

pub fn write_policy(stack: &Path, policy: &str) {
    // Written beside and renamed, so a concurrent reader never sees half a file.
    let tmp = stack.join(".governance.fms.tmp");
    std::fs::write(&tmp, policy).expect("write the policy");
    std::fs::rename(&tmp, stack.join("governance.fms")).expect("move the policy into place");
}

pub fn data_dir(stack: &Path) -> PathBuf {
    daemon::stack::default_data_dir(stack)
}

/// What the daemon records as the approver when this process resolves an approval on the
/// admin socket: `<user> (uid N)`, as the kernel reports the peer.
pub fn operator_label() -> String {
    let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    daemon::admin::Operator::of_uid(uid).label()
}

/// A daemon (`faramesh dev` or `faramesh daemon`) in a child process, READY. Dropping it kills
/// the child, so a failing test never leaves a daemon behind.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub stack: PathBuf,
    /// The daemon's stdout and stderr.
    pub log: PathBuf,
    pub info: RunInfo,
}

impl Daemon {
    /// `faramesh daemon --dir STACK`.
    pub fn start(stack: &Path) -> Daemon {
        Daemon::spawn(stack, "daemon")
    }

    /// `faramesh dev --dir STACK`.
    pub fn dev(stack: &Path) -> Daemon {
        Daemon::spawn(stack, "dev")
    }

    fn spawn(stack: &Path, command: &str) -> Daemon {
        let log = stack.join(format!("test-{command}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the daemon log");
        let err = out.try_clone().expect("clone the log handle");
        let child = Command::new(bin())
            .arg(command)
            .arg("--dir")
            .arg(stack)
            .env("NO_COLOR", "1")
            .env_remove("FARAMESH_SOCKET")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the daemon");
        let mut guard = Starting(Some(child));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = guard.0.as_mut().expect("the child");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "faramesh {command} exited during start ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Some(info) = RunInfo::read(stack)
                && info.pid == child.id()
            {
                // daemon.json is written a moment before the phase turns READY (a call in
                // between is denied DAEMON_NOT_READY): wait for READY itself.
                let ready = wait_for(START_TIMEOUT, || {
                    Client::connect(&info.admin_socket, CALL_TIMEOUT)
                        .and_then(|mut c| c.call("status", json!({})))
                        .is_ok_and(|s| s["state"] == "READY")
                });
                assert!(ready, "faramesh {command} never reported READY");
                let child = guard.0.take().expect("the child");
                return Daemon {
                    child,
                    stack: stack.to_path_buf(),
                    log,
                    info,
                };
            }
            assert!(
                Instant::now() < deadline,
                "faramesh {command} did not become READY within {START_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of the agent socket.
    pub fn agent(&self) -> Client {
        Client::connect(&self.info.socket, CALL_TIMEOUT).expect("connect to the agent socket")
    }

    /// A client of the admin (operator) socket.
    pub fn admin(&self) -> Client {
        Client::connect(&self.info.admin_socket, CALL_TIMEOUT).expect("connect to the admin socket")
    }

    /// A raw stream to the agent socket, with the test timeouts.
    pub fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.info.socket).expect("connect to the agent socket");
        s.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
        s.set_write_timeout(Some(CALL_TIMEOUT)).expect("timeout");
        s
    }

    /// One `decide` on a fresh agent connection.
    #[track_caller]
    pub fn decide(&self, params: Value) -> Value {
        self.agent()
            .call("decide", params.clone())
            .unwrap_or_else(|e| panic!("decide {params} failed: {e}"))
    }

    /// One admin method; panics on an error.
    #[track_caller]
    pub fn admin_call(&self, method: &str, params: Value) -> Value {
        self.admin()
            .call(method, params.clone())
            .unwrap_or_else(|e| panic!("admin {method} {params} failed: {e}"))
    }

    /// The daemon's status from the admin socket.
    pub fn status(&self) -> Value {
        self.admin_call("status", json!({}))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the child to exit on its own (after a `stop`), up to `STOP_TIMEOUT`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {STOP_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon through the admin socket (`stop {}`) and waits for a clean exit.
    #[track_caller]
    pub fn stop(mut self) {
        self.admin_call("stop", json!({}));
        let status = self.wait();
        assert!(
            status.success(),
            "the daemon exited with {status} after stop:\n{}",
            self.log_text()
        );
    }

    /// SIGKILL (what `Child::kill` sends), then reap.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child not yet READY: killed if the start fails.
struct Starting(Option<Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A daemon this test did not spawn itself (`faramesh apply` starts one in the background):
/// killed by pid on drop if it still runs.
#[derive(Debug)]
pub struct PidGuard(pub u32);

impl PidGuard {
    pub fn alive(&self) -> bool {
        // A zombie has no cmdline; a reaped process has no /proc entry.
        std::fs::read(format!("/proc/{}/cmdline", self.0)).is_ok_and(|c| !c.is_empty())
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.alive() {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

/// `decide` params for `agent` calling `tool` with `args`.
pub fn call(agent: &str, tool: &str, args: Value) -> Value {
    json!({"agent": agent, "tool": tool, "args": args})
}

/// Asserts a decide answer's effect and reason code.
#[track_caller]
pub fn expect(answer: &Value, effect: &str, code: &str) {
    assert!(
        answer["effect"] == effect && answer["reason_code"] == code,
        "expected {effect} {code}, got {answer}"
    );
    assert!(
        answer["dpr_id"]
            .as_str()
            .is_some_and(|d| d.starts_with("dpr_")),
        "every decision names its record: {answer}"
    );
}

/// The JSON-RPC error code of a failed call.
pub fn rpc_code(r: &Result<Value, ClientError>) -> Option<i64> {
    match r {
        Err(ClientError::Rpc { code, .. }) => Some(*code),
        _ => None,
    }
}

/// Writes one raw line (a newline is added) to a stream.
pub fn send(stream: &mut UnixStream, line: &[u8]) {
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    stream.write_all(&bytes).expect("write a request line");
}

/// Reads one answer line as JSON; panics on EOF or a timeout.
#[track_caller]
pub fn answer(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    assert!(
        n > 0,
        "the daemon closed the connection instead of answering"
    );
    assert!(
        line.ends_with('\n'),
        "an answer is one whole line: {line:?}"
    );
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {line}"))
}

/// The stack's audit log as `faramesh audit export --format jsonl` writes it.
#[track_caller]
pub fn export(stack: &Path) -> Vec<Value> {
    let out = faramesh_in(stack, &["audit", "export", "--format", "jsonl"]);
    ok(&out, "faramesh audit export");
    stdout(&out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line ({e}): {l}")))
        .collect()
}

/// `faramesh audit verify --dir STACK` exits 0.
#[track_caller]
pub fn verify(stack: &Path) -> String {
    let out = faramesh_in(stack, &["audit", "verify"]);
    ok(&out, "faramesh audit verify");
    stdout(&out)
}

/// One record as `faramesh audit show ID` prints it.
#[track_caller]
pub fn show(stack: &Path, id: &str) -> Value {
    let out = faramesh_in(stack, &["audit", "show", id]);
    ok(&out, "faramesh audit show");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit show {id} is not JSON ({e}):\n{}", shown(&out)))
}

/// An HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpAnswer {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("HTTP body is not JSON ({e}): {}", self.body))
    }
}

/// One request over a raw loopback connection (`Connection: close`).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> HttpAnswer {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP API");
    s.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = bearer {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send the HTTP request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the HTTP answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    HttpAnswer {
        status,
        headers: head.to_string(),
        body: if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The stack's HTTP operator token.
pub fn operator_token(stack: &Path) -> String {
    std::fs::read_to_string(daemon::stack::operator_token(&data_dir(stack)))
        .expect("the operator token")
        .trim()
        .to_string()
}

/// Waits until `f` holds, up to `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
