//! Commands that run or talk to the daemon: `daemon`, `dev`, `apply`, `stop`, `status`,
//! `approvals`, `kill`, `unkill`, `rollback`.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use daemon::client::{Client, ClientError};
use daemon::server::RunInfo;
use serde_json::{Value, json};

use crate::write_stdout;

/// How long `apply` waits for a daemon it started to become READY.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the daemon to finish draining.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code when no daemon runs (`status`), as `systemctl status` does.
pub const NOT_RUNNING: u8 = 3;

#[derive(Debug, Clone, clap::Args)]
pub struct StackArg {
    /// The stack directory (holding governance.fms).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

impl StackArg {
    pub fn path(&self) -> PathBuf {
        std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

fn admin(stack: &Path) -> Result<Client, ClientError> {
    Client::connect(&daemon::stack::admin_socket(stack), CALL_TIMEOUT)
}

fn call(stack: &Path, method: &str, params: Value) -> Result<Value, ClientError> {
    admin(stack)?.call(method, params)
}

fn print_json(v: &Value) {
    write_stdout(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// `faramesh daemon`: the daemon in the foreground (what `apply` starts in the background).
pub fn run_daemon(stack: &StackArg, dev: bool) -> ExitCode {
    daemon::logging::init();
    let opts = daemon::server::Options {
        stack: stack.path(),
        dev,
    };
    match daemon::server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `faramesh apply`: check and compile, then hot-swap the running daemon or start one.
pub fn apply(stack: &StackArg) -> ExitCode {
    let dir = stack.path();
    let policy = match daemon::policy::load_policy(&dir) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return fail("the policy was not applied; the running policy (if any) is unchanged");
        }
    };
    match call(&dir, "apply", json!({})) {
        Ok(v) => {
            let version = v["version"].as_str().unwrap_or_default();
            if v["changed"].as_bool() == Some(true) {
                write_stdout(&format!(
                    "applied {} (was {}); the daemon switched without dropping calls\n",
                    short(version),
                    v["from"].as_str().map_or("none".into(), short)
                ));
            } else {
                write_stdout(&format!(
                    "unchanged: {} is already in force\n",
                    short(version)
                ));
            }
            warn_restart_needed(&v);
            ExitCode::SUCCESS
        }
        Err(ClientError::NotRunning(_)) => start(&dir, policy.version()),
        Err(e) => fail(&format!("apply: {e}")),
    }
}

/// Settings the running daemon set up at start (sockets, store, providers) keep their old
/// values until it restarts: the operator must hear that, not assume the swap took them.
fn warn_restart_needed(answer: &serde_json::Value) {
    let keys: Vec<&str> = answer["restart_needed_for"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k.as_str()).collect())
        .unwrap_or_default();
    if !keys.is_empty() {
        eprintln!(
            "note: {} changed; the running daemon keeps the old settings until it restarts \
             (faramesh stop, then faramesh apply)",
            keys.join(", ")
        );
    }
}

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

/// Starts `faramesh daemon` in the background and waits for READY.
fn start(stack: &Path, version: &str) -> ExitCode {
    let log_path = daemon::stack::log_file(stack);
    if let Some(dir) = log_path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return fail(&format!("{}: {e}", dir.display()));
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => return fail(&format!("{}: {e}", log_path.display())),
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot find the faramesh binary: {e}")),
    };
    let stderr = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(&e.to_string()),
    };
    use std::os::unix::process::CommandExt;
    let child = Process::new(exe)
        .arg("daemon")
        .arg("--dir")
        .arg(stack)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a Ctrl-C at the terminal that ran `apply` does not reach it.
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start the daemon: {e}")),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{}", tail(&log_path, 20));
            return fail(&format!("the daemon exited during start ({status})"));
        }
        if let Some(info) = RunInfo::read(stack)
            && info.pid == child.id()
        {
            write_stdout(&format!(
                "started the daemon (pid {}) with policy {}\n  socket  {}\n  http    http://{}\n  log     {}\n",
                info.pid,
                short(version),
                info.socket.display(),
                info.http,
                log_path.display()
            ));
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fail(&format!(
        "the daemon did not become ready within {}s; see {}",
        START_TIMEOUT.as_secs(),
        log_path.display()
    ))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `faramesh stop`.
pub fn stop(stack: &StackArg) -> ExitCode {
    let dir = stack.path();
    let pid = RunInfo::read(&dir).map(|i| i.pid);
    match call(&dir, "stop", json!({})) {
        Ok(_) => {}
        Err(ClientError::NotRunning(_)) => {
            write_stdout("no daemon is running\n");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&format!("stop: {e}")),
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        let gone = pid.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists());
        if gone || RunInfo::read(&dir).is_none() {
            write_stdout("stopped\n");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fail("the daemon did not stop in time")
}

/// `faramesh status`.
pub fn status(stack: &StackArg, json_out: bool) -> ExitCode {
    let dir = stack.path();
    let s = match call(&dir, "status", json!({})) {
        Ok(s) => s,
        Err(ClientError::NotRunning(_)) => {
            if json_out {
                print_json(&json!({"state": "STOPPED"}));
            } else {
                write_stdout("state      STOPPED (no daemon is running for this stack)\n");
            }
            return ExitCode::from(NOT_RUNNING);
        }
        Err(e) => return fail(&format!("status: {e}")),
    };
    if json_out {
        print_json(&s);
        return ExitCode::SUCCESS;
    }
    let info = RunInfo::read(&dir);
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    row(
        "state",
        text(&s["state"]) + if s["dev"] == true { " (dev)" } else { "" },
    );
    row("pid", text(&s["pid"]));
    row("policy version", text(&s["policy_version"]));
    row("policy applied", text(&s["policy_applied"]));
    row("mode", text(&s["mode"]));
    row("uptime", format!("{}s", s["uptime_s"]));
    row("pending approvals", text(&s["pending_approvals"]));
    row("trust level", text(&s["trust_level"]));
    let st = &s["store"];
    row(
        "store",
        format!(
            "{} chain {} ({})",
            text(&st["backend"]),
            text(&st["chain"]),
            if st["healthy"] == true {
                "healthy".to_string()
            } else {
                format!("UNHEALTHY: {}", text(&st["last_error"]))
            }
        ),
    );
    if let Some(i) = info {
        row("socket", i.socket.display().to_string());
        row("admin socket", i.admin_socket.display().to_string());
        row("http", format!("http://{}", i.http));
    }
    write_stdout(&out);
    ExitCode::SUCCESS
}

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending by default).
    List {
        #[command(flatten)]
        stack: StackArg,
        /// pending, approved, rejected, expired, consumed or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one approval.
    Show {
        token: String,
        #[command(flatten)]
        stack: StackArg,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending call: its identical retry is then permitted once.
    Approve(ResolveArgs),
    /// Reject a pending call.
    Reject(ResolveArgs),
    /// Print pending approvals as they arrive and change, until interrupted.
    Watch {
        #[command(flatten)]
        stack: StackArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    token: String,
    #[command(flatten)]
    stack: StackArg,
    /// Why; recorded with the approval.
    #[arg(long)]
    comment: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn approvals(cmd: ApprovalsCommand) -> ExitCode {
    match cmd {
        ApprovalsCommand::List {
            stack,
            status,
            json,
        } => match call(&stack.path(), "approvals.list", json!({"status": status})) {
            Ok(Value::Array(list)) => {
                if json {
                    print_json(&Value::Array(list));
                } else if list.is_empty() {
                    write_stdout(&format!("no {status} approvals\n"));
                } else {
                    write_stdout(&list.iter().map(approval_line).collect::<String>());
                }
                ExitCode::SUCCESS
            }
            Ok(other) => fail(&format!("unexpected answer: {other}")),
            Err(e) => fail(&e.to_string()),
        },
        ApprovalsCommand::Show { token, stack, json } => {
            one(&stack, "approvals.show", json!({"token": token}), json)
        }
        ApprovalsCommand::Approve(a) => resolve(&a, "approvals.approve"),
        ApprovalsCommand::Reject(a) => resolve(&a, "approvals.reject"),
        ApprovalsCommand::Watch { stack, json } => watch(&stack, json),
    }
}

fn resolve(a: &ResolveArgs, method: &str) -> ExitCode {
    let params = json!({"token": a.token, "comment": a.comment});
    one(&a.stack, method, params, a.json)
}

fn approval_line(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    format!(
        "{}  {:<9} {}  {}  {}  {}\n",
        s("token"),
        s("status"),
        s("agent"),
        s("tool"),
        a["args"],
        a["reason"].as_str().unwrap_or("")
    )
}

fn approval_detail(a: &Value) -> String {
    let mut out = String::new();
    for k in [
        "token",
        "status",
        "agent",
        "tool",
        "args",
        "args_digest",
        "rule_ref",
        "reason",
        "created",
        "expires",
        "approver",
        "resolved",
        "comment",
        "consumed",
    ] {
        let v = &a[k];
        if !v.is_null() {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            out.push_str(&format!("{k:<12} {shown}\n"));
        }
    }
    out
}

fn one(stack: &StackArg, method: &str, params: Value, json: bool) -> ExitCode {
    match call(&stack.path(), method, params) {
        Ok(a) => {
            if json {
                print_json(&a);
            } else {
                write_stdout(&approval_detail(&a));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn watch(stack: &StackArg, json: bool) -> ExitCode {
    let dir = stack.path();
    let mut seen = std::collections::HashMap::<String, String>::new();
    loop {
        match call(&dir, "approvals.list", json!({"status": "all"})) {
            Ok(Value::Array(list)) => {
                for a in &list {
                    let token = a["token"].as_str().unwrap_or_default().to_string();
                    let status = a["status"].as_str().unwrap_or_default().to_string();
                    if seen.get(&token) != Some(&status) {
                        if json {
                            write_stdout(&format!("{a}\n"));
                        } else {
                            write_stdout(&approval_line(a));
                        }
                        seen.insert(token, status);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => return fail(&e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `faramesh kill|unkill [AGENT | --all]`.
pub fn kill(stack: &StackArg, agent: Option<String>, all: bool, on: bool) -> ExitCode {
    if agent.is_none() && !all {
        return fail("name an agent, or pass --all for every agent");
    }
    let method = if on { "kill" } else { "unkill" };
    match call(&stack.path(), method, json!({"agent": agent})) {
        Ok(_) => {
            let who = agent.unwrap_or_else(|| "every agent".into());
            if on {
                write_stdout(&format!("kill switch on: {who} is denied every call\n"));
            } else {
                write_stdout(&format!("kill switch off for {who}\n"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// `faramesh rollback [--to VERSION]`.
pub fn rollback(stack: &StackArg, to: Option<String>) -> ExitCode {
    match call(&stack.path(), "rollback", json!({"to": to})) {
        Ok(v) if v["changed"] == true => {
            write_stdout(&format!(
                "rolled back to {} (was {})\n",
                short(v["version"].as_str().unwrap_or_default()),
                v["from"].as_str().map_or("none".into(), short)
            ));
            ExitCode::SUCCESS
        }
        Ok(v) => {
            write_stdout(&format!(
                "unchanged: {} is already in force\n",
                short(v["version"].as_str().unwrap_or_default())
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}
