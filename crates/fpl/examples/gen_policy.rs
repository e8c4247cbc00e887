//! Prints the benchmark's generated policy: `gen_policy [RULES]` (default 10,000).
//!
//! ```sh
//! cargo run --release -p faramesh-fpl --example gen_policy -- 10000 > governance.fms
//! ```
//!
//! The generator is the one `benches/check.rs` measures, so `scripts/bench-check` times
//! `faramesh check` on exactly the policy the benchmark parses and checks.

use std::io::Write as _;
use std::process::ExitCode;

// Only `generate_policy` is used here; the rest of the bench file is its criterion harness.
#[allow(dead_code)]
#[path = "../benches/check.rs"]
mod bench;

fn main() -> ExitCode {
    let rules = match std::env::args().nth(1) {
        None => 10_000,
        Some(arg) => match arg.replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: gen_policy [RULES]  (a whole number > 0, default 10000)");
                return ExitCode::from(2);
            }
        },
    };
    let text = bench::generate_policy(rules);
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_policy: cannot write the policy: {e}");
            ExitCode::FAILURE
        }
    }
}
