//! `faramesh demo`: the reference scene of SPEC §1, end to end, in a temporary stack. The
//! daemon runs as `faramesh dev` in a child process; this process plays the agent (over the
//! agent socket) and the operator (over the admin socket), then verifies the audit log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use daemon::client::Client;
use daemon::server::RunInfo;
use serde_json::{Value, json};

use crate::write_stdout;

/// The scene's stack: `examples/support-stack`.
const POLICY: &str = include_str!("../../../examples/support-stack/governance.fms");
const AGENT: &str = "support-bot";
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the stack here (created if needed) instead of a temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Stops the dev daemon however the demo ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Scene {
    agent: Client,
    admin: Client,
    step: usize,
}

pub fn run(args: &DemoArgs) -> ExitCode {
    let tmp;
    let stack = match &args.dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new().prefix("faramesh-demo-").tempdir() {
            Ok(t) => {
                tmp = t;
                tmp.path().to_path_buf()
            }
            Err(e) => return fail(&format!("cannot make a temporary stack: {e}")),
        },
    };
    match scene(&stack) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("demo failed: {msg}");
    ExitCode::FAILURE
}

fn scene(stack: &Path) -> Result<(), String> {
    std::fs::create_dir_all(stack).map_err(|e| e.to_string())?;
    std::fs::write(stack.join("governance.fms"), POLICY).map_err(|e| e.to_string())?;
    say(&format!(
        "The reference scene, in a temporary stack: {}\n\
         Policy: examples/support-stack/governance.fms — refunds under $500 run, larger ones wait\n\
         for a human, a permitted refund gets a 30-second Stripe key.\n",
        stack.display()
    ));
    let daemon = start(stack)?;
    let info = RunInfo::read(stack).ok_or("the daemon wrote no run file")?;
    say(&format!(
        "Started `faramesh dev` (pid {}): agent socket {}, in-process dev vault and signing key.\n",
        info.pid,
        info.socket.display()
    ));
    let mut s = Scene {
        agent: Client::connect(&info.socket, TIMEOUT).map_err(|e| e.to_string())?,
        admin: Client::connect(&info.admin_socket, TIMEOUT).map_err(|e| e.to_string())?,
        step: 0,
    };
    let small = s.refund(80, None)?;
    s.expect(&small, "permit", "RULE_PERMIT")?;
    let cred = &small["credential"];
    s.narrate(&format!(
        "The model refunds $80. Permitted by {}; the broker minted a {}-second credential \
         ({}…, lease {}) for this call alone. It is in the answer, never in the log.",
        small["rule_ref"].as_str().unwrap_or("?"),
        cred["ttl_ms"].as_u64().unwrap_or(0) / 1000,
        cred["value"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(10)
            .collect::<String>(),
        cred["lease_id"].as_str().unwrap_or("?"),
    ));
    let big = s.refund(8000, None)?;
    s.expect(&big, "defer", "RULE_DEFER")?;
    let token = big["defer_token"]
        .as_str()
        .ok_or("no defer token")?
        .to_string();
    s.narrate(&format!(
        "The model refunds $8000. Deferred: \"{}\". The refund does not run; the agent holds \
         token {token}, and an alert goes to slack://#payments-approvals (dev: the daemon's log).",
        big["reason"].as_str().unwrap_or("")
    ));
    let approved = s
        .admin
        .call(
            "approvals.approve",
            json!({"token": token, "comment": "checked with the customer"}),
        )
        .map_err(|e| e.to_string())?;
    let approver = approved["approver"].as_str().unwrap_or("?").to_string();
    s.narrate(&format!(
        "An operator approves it on the admin socket (faramesh approvals approve {token}): \
         approver {approver}. The agent's own socket has no method that could."
    ));
    let retry = s.refund(8000, Some(&token))?;
    s.expect(&retry, "permit", "APPROVED")?;
    let again = s.refund(8000, Some(&token))?;
    s.expect(&again, "deny", "APPROVAL_CONSUMED")?;
    s.narrate(&format!(
        "The agent retries with the token: permitted once ({}), with a fresh 30-second key. \
         A second retry is denied: {}.",
        retry["reason"].as_str().unwrap_or(""),
        again["reason_code"].as_str().unwrap_or("")
    ));
    let record_id = retry["dpr_id"].as_str().unwrap_or_default().to_string();
    stop(stack, daemon)?;
    verify(stack, &record_id, &approver, &mut s)?;
    say(
        "\nThe scene ran end to end. Try it by hand: faramesh dev --dir STACK, then\nfaramesh approvals list --dir STACK, faramesh audit tail --dir STACK.\n",
    );
    Ok(())
}

impl Scene {
    fn refund(&mut self, amount: u64, token: Option<&str>) -> Result<Value, String> {
        let mut params = json!({
            "agent": AGENT,
            "session": "demo",
            "tool": "stripe/refund",
            "args": {"amount": amount, "customer": {"email": "ada@example.com"}},
        });
        if let Some(t) = token {
            params["defer_token"] = json!(t);
        }
        self.agent.call("decide", params).map_err(|e| e.to_string())
    }

    fn expect(&self, answer: &Value, effect: &str, code: &str) -> Result<(), String> {
        if answer["effect"] == effect && answer["reason_code"] == code {
            Ok(())
        } else {
            Err(format!(
                "step {}: expected {effect} {code}, got {answer}",
                self.step + 1
            ))
        }
    }

    fn narrate(&mut self, text: &str) {
        self.step += 1;
        say(&format!("{}. {text}\n", self.step));
    }
}

fn say(text: &str) {
    write_stdout(text);
}

fn start(stack: &Path) -> Result<Daemon, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(stack.join("dev.log")).map_err(|e| e.to_string())?;
    let child = Process::new(exe)
        .arg("dev")
        .arg("--dir")
        .arg(stack)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start faramesh dev: {e}"))?;
    let mut daemon = Daemon(child);
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            let log = std::fs::read_to_string(stack.join("dev.log")).unwrap_or_default();
            return Err(format!("faramesh dev exited ({status}):\n{log}"));
        }
        if RunInfo::read(stack).is_some_and(|i| i.pid == daemon.0.id()) {
            return Ok(daemon);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("faramesh dev did not become ready in time".into())
}

fn stop(stack: &Path, mut daemon: Daemon) -> Result<(), String> {
    let admin = daemon::stack::admin_socket(stack);
    let mut c = Client::connect(&admin, TIMEOUT).map_err(|e| e.to_string())?;
    c.call("stop", json!({})).map_err(|e| e.to_string())?;
    let status = daemon.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("faramesh dev exited with {status}"));
    }
    Ok(())
}

/// Checks the log offline, as an auditor would, and shows the record that names the operator.
fn verify(stack: &Path, id: &str, approver: &str, s: &mut Scene) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Process::new(&exe)
        .args(["audit", "verify", "--dir"])
        .arg(stack)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "audit verify failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let shown = Process::new(&exe)
        .args(["audit", "show", id, "--dir"])
        .arg(stack)
        .output()
        .map_err(|e| e.to_string())?;
    let record: Value =
        serde_json::from_slice(&shown.stdout).map_err(|e| format!("audit show {id}: {e}"))?;
    let named = record["approval"]["approver"].as_str().unwrap_or_default();
    if named != approver {
        return Err(format!(
            "the record of {id} names `{named}`, not `{approver}`"
        ));
    }
    s.narrate(&format!(
        "The daemon stopped and signed its last checkpoint. `faramesh audit verify`: {}\
         Record {id} names the approver: {named}; its arguments hold the customer's e-mail \
         only as {}.",
        String::from_utf8_lossy(&out.stdout),
        record["args"]["customer"]["email"]
    ));
    Ok(())
}
