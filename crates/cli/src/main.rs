//! `faramesh`: one binary for the whole product.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod audit;
mod check;
mod decide;
mod demo;
mod explain;
mod fmt;
mod ops;
mod stack;

#[derive(Debug, Parser)]
#[command(
    name = "faramesh",
    version,
    about = "Governance runtime for AI agents: decide every tool call before it runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a stack's policy: syntax, keys, types, regexes, imports, unreachable rules.
    ///
    /// Exit codes: 0 valid, 1 errors, 2 an import could not be resolved, 3 warnings with --strict.
    Check {
        /// A stack directory (holding governance.fms) or a policy file (.fms, .fms.yaml, .fms.json).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Treat warnings as failures (exit 3).
        #[arg(long)]
        strict: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print a policy in the canonical layout, or convert it between FPL, YAML and JSON.
    ///
    /// Exit codes: 0 done (or already formatted with --check), 1 errors or not formatted.
    Fmt {
        /// A stack directory or a policy file.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Do not print; exit 1 if the file is not already in canonical form.
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite the file in place (with --to, replace it with the converted file).
        #[arg(long)]
        write: bool,
        /// Output form; the input's own form when omitted.
        #[arg(long, value_enum)]
        to: Option<Form>,
    },
    /// Run policy test fixtures (`*.fmtest.json`, SPEC §3.13) against a fresh engine each.
    ///
    /// Prints every failing case with what was expected and what happened, then
    /// `N passed, M failed`. Exit codes: 0 all passed, 1 a case failed.
    Test {
        /// Fixture files, or directories holding them (and their `tests/` directories).
        paths: Vec<PathBuf>,
    },
    /// Decide one call from the command line (no daemon) and print the decision as JSON.
    Decide(decide::DecideArgs),
    /// Read and verify the audit log: verify, export, tail, show, proof.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Check and compile the stack's policy, then hot-swap it into the running daemon, or
    /// start the daemon in the background. A policy that does not check changes nothing.
    Apply {
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// Run the daemon in the foreground with the in-process dev stubs (secrets, identity, an
    /// ephemeral signing key, a JSONL audit sink). Records are tagged dev.
    Dev {
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// Stop the running daemon: calls in flight finish, the log is checkpointed.
    Stop {
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// The daemon's state, policy version, uptime, pending approvals, trust level and store.
    ///
    /// Exit codes: 0 running, 3 not running.
    Status {
        #[command(flatten)]
        stack: ops::StackArg,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List, show, approve, reject or watch deferred calls (operator only).
    #[command(subcommand)]
    Approvals(ops::ApprovalsCommand),
    /// Turn an agent's kill switch on: every call it makes is denied.
    Kill {
        agent: Option<String>,
        /// Every agent.
        #[arg(long, conflicts_with = "agent")]
        all: bool,
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// Turn an agent's kill switch off.
    Unkill {
        agent: Option<String>,
        #[arg(long, conflicts_with = "agent")]
        all: bool,
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// Put an earlier policy version back in force (the one before the current by default).
    Rollback {
        /// A version (or a prefix of one) from the policy history.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        stack: ops::StackArg,
    },
    /// Walk a recorded decision through the pipeline: every step and every rule tried.
    Explain(explain::ExplainArgs),
    /// Run the reference scene end to end in a temporary stack, narrating each step.
    Demo(demo::DemoArgs),
    /// The daemon itself, in the foreground (what `apply` starts in the background).
    #[command(hide = true)]
    Daemon {
        #[command(flatten)]
        stack: ops::StackArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Form {
    Fpl,
    Yaml,
    Json,
}

/// mimalloc rather than glibc's malloc: the decision path allocates many small, short-lived
/// buffers across threads, where glibc's arenas and fastbin consolidation cost the daemon
/// about a tenth of its CPU per decision (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            path,
            strict,
            format,
        } => check::run(&path, strict, format),
        Command::Fmt {
            path,
            check,
            write,
            to,
        } => fmt::run(&path, check, write, to),
        Command::Test { paths } => decide::run_test(&paths),
        Command::Decide(args) => decide::run_decide(args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Apply { stack } => ops::apply(&stack),
        Command::Dev { stack } => ops::run_daemon(&stack, true),
        Command::Daemon { stack } => ops::run_daemon(&stack, false),
        Command::Stop { stack } => ops::stop(&stack),
        Command::Status { stack, format } => ops::status(&stack, format == OutputFormat::Json),
        Command::Approvals(cmd) => ops::approvals(cmd),
        Command::Kill { agent, all, stack } => ops::kill(&stack, agent, all, true),
        Command::Unkill { agent, all, stack } => ops::kill(&stack, agent, all, false),
        Command::Rollback { to, stack } => ops::rollback(&stack, to),
        Command::Demo(args) => demo::run(&args),
        Command::Explain(args) => explain::run(&args),
    }
}

/// Colour only for a terminal, and never under `NO_COLOR`.
fn use_color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How a path is shown: relative as the user typed it.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Writes to stdout; a closed pipe (`faramesh check | head`) is not an error worth a panic.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
