//! Tail latency of single decisions: for each policy size, warms up, then times every one of
//! many individual decisions with `std::time::Instant` and prints p50/p90/p99/p99.9, the
//! maximum and the mean, for struct input (`Engine::decide` on a borrowed `ActionRequest`) and
//! JSON text input (`Engine::decide_json`, the daemon's path).
//!
//! ```sh
//! cargo run --release -p faramesh-engine --example latency -- [N...] [--iters=K] [--system-clock] [--input=struct|json]
//! ```
//!
//! `--input` times one input only (for profilers such as callgrind).
//!
//! The default sizes are 100, 1,000, 10,000 and 100,000 rules and the default count 200,000
//! decisions per size and input. A timed region is one decision: from the request (struct
//! input) or its text (JSON input) to the returned `Decision`. Cloning the request is outside
//! it, and so is freeing the `Decision` (the recorded arguments, the trace, …) and the request,
//! which happens after the answer is sent; that is timed separately and shown as `drop p50`. The cost
//! of reading the clock twice is printed first: it is included in every sample. The policy and
//! the call are those of `benches/decide.rs` (`benches/common/mod.rs`). Criterion gives
//! medians; this gives tails.

// A measurement tool fails loudly on a broken setup.
#![allow(clippy::expect_used)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use engine::clock::{Clock, ManualClock, SystemClock};
use engine::compile::{CompiledPolicy, Verdict};

/// 2026-11-21T09:00:00Z.
const NOW_MS: i64 = 1_795_251_600_000;

struct Stats {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    let at = |q: f64| {
        let i = ((ns.len() as f64) * q).ceil() as usize;
        ns[i.clamp(1, ns.len()) - 1]
    };
    Stats {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: ns[ns.len() - 1],
        mean: ns.iter().sum::<u64>() as f64 / ns.len() as f64,
    }
}

fn print(n: usize, input: &str, s: &Stats, drop: &Stats) {
    let us = |v: u64| v as f64 / 1000.0;
    println!(
        "{n:>7} {input:<6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>10.2}",
        us(s.p50),
        us(s.p90),
        us(s.p99),
        us(s.p999),
        us(s.max),
        s.mean / 1000.0,
        us(drop.p50),
    );
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn main() {
    let mut sizes = Vec::new();
    let mut iters = 200_000usize;
    let mut system_clock = false;
    let (mut structs, mut jsons) = (true, true);
    for arg in std::env::args().skip(1) {
        if let Some(k) = arg.strip_prefix("--iters=") {
            iters = k.parse().expect("--iters=K takes a whole number");
        } else if let Some(input) = arg.strip_prefix("--input=") {
            structs = input == "struct";
            jsons = input == "json";
            assert!(structs || jsons, "--input= takes struct or json");
        } else if arg == "--system-clock" {
            system_clock = true;
        } else {
            sizes.push(
                arg.replace(['_', ','], "")
                    .parse::<usize>()
                    .expect("sizes are whole numbers of rules"),
            );
        }
    }
    if sizes.is_empty() {
        sizes = vec![100, 1_000, 10_000, 100_000];
    }
    let warmup = (iters / 10).max(1_000);

    let mut empty = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        empty.push(nanos(black_box(t)));
    }
    let timer = stats(empty);
    println!(
        "clock: {}; {iters} decisions per row after {warmup} warm-up decisions",
        if system_clock {
            "SystemClock"
        } else {
            "ManualClock"
        }
    );
    println!(
        "timer overhead (two Instant reads, included below): p50 {} ns, p99 {} ns",
        timer.p50, timer.p99
    );
    println!(
        "{:>7} {:<6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}",
        "rules", "input", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs", "drop p50"
    );
    for &n in &sizes {
        let policy = Arc::new(common::compiled(n));
        let clock = || -> Arc<dyn Clock> {
            if system_clock {
                Arc::new(SystemClock)
            } else {
                Arc::new(ManualClock::new(NOW_MS))
            }
        };

        if structs {
            time_struct(n, policy.clone(), clock(), iters, warmup);
        }
        if jsons {
            time_json(n, policy.clone(), clock(), iters, warmup);
        }
    }
}

fn time_struct(
    n: usize,
    policy: Arc<CompiledPolicy>,
    clock: Arc<dyn Clock>,
    iters: usize,
    warmup: usize,
) {
    let engine = common::engine(policy, clock);
    let req = common::request(n);
    let first = engine.decide(&req);
    assert_eq!(first.effect, Verdict::Permit, "{first:?}");
    for _ in 0..warmup {
        let r = req.clone();
        drop(black_box(engine.decide(&r)));
    }
    let mut samples = Vec::with_capacity(iters);
    let mut drops = Vec::with_capacity(iters);
    for _ in 0..iters {
        let r = req.clone();
        let t = Instant::now();
        let d = black_box(engine.decide(black_box(&r)));
        samples.push(nanos(t));
        let t = Instant::now();
        drop(d);
        drop(r);
        drops.push(nanos(t));
    }
    print(n, "struct", &stats(samples), &stats(drops));
}

fn time_json(
    n: usize,
    policy: Arc<CompiledPolicy>,
    clock: Arc<dyn Clock>,
    iters: usize,
    warmup: usize,
) {
    let engine = common::engine(policy, clock);
    let text = common::request_json(n);
    assert_eq!(engine.decide_json(&text).effect, Verdict::Permit);
    for _ in 0..warmup {
        drop(black_box(engine.decide_json(black_box(&text))));
    }
    let mut samples = Vec::with_capacity(iters);
    let mut drops = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let d = black_box(engine.decide_json(black_box(&text)));
        samples.push(nanos(t));
        let t = Instant::now();
        drop(d);
        drops.push(nanos(t));
    }
    print(n, "json", &stats(samples), &stats(drops));
}
