//! Decision latency: one typical permitted call against generated policies of 100 to 100,000
//! rules in one agent (argument conditions, a `matches`, a redaction and a rate limit that is
//! evaluated on every call; see `benches/common/mod.rs`).
//!
//! ```sh
//! cargo bench -p faramesh-engine --bench decide
//! ```
//!
//! - `decide/{N}`: `Engine::decide` on a borrowed `ActionRequest` (the request is cloned, and
//!   it and the `Decision` dropped, outside the timed region), with a `ManualClock`: no clock
//!   syscall.
//! - `decide_json/{N}`: the daemon's path, `Engine::decide_json` on the request's JSON text (the
//!   `Decision` dropped outside the timed region).
//! - `decide_system_clock/{N}`: as `decide`, with the `SystemClock`.
//!
//! Criterion reports medians; `examples/latency.rs` reports the tail percentiles.

// A benchmark fails loudly on a broken setup.
#![allow(clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use engine::clock::{ManualClock, SystemClock};
use engine::compile::Verdict;
use engine::decision::ReasonCode;

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// Inputs are prepared, and outputs dropped, 64 at a time outside the timed region: a batch
/// small enough that its requests stay in cache, as a request the daemon has just parsed is.
/// (With criterion's `SmallInput`, a batch is a tenth of a sample's iterations, megabytes of
/// requests, and every decision pays cache misses: about 0.1 µs more.)
const BATCH: BatchSize = BatchSize::NumIterations(64);

/// 2026-11-21T09:00:00Z: a weekday morning.
const NOW_MS: i64 = 1_795_251_600_000;

fn bench(c: &mut Criterion) {
    let mut decide = c.benchmark_group("decide");
    decide.warm_up_time(Duration::from_secs(1));
    decide.measurement_time(Duration::from_secs(3));
    let policies: Vec<_> = SIZES
        .iter()
        .map(|&n| (n, Arc::new(common::compiled(n))))
        .collect();
    for (n, policy) in &policies {
        let engine = common::engine(policy.clone(), Arc::new(ManualClock::new(NOW_MS)));
        let req = common::request(*n);
        let d = engine.decide(&req);
        assert_eq!(d.effect, Verdict::Permit, "{d:?}");
        assert_eq!(d.reason_code, ReasonCode::RulePermit);
        assert_eq!(d.redacted.len(), 2);
        decide.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter_batched_ref(|| req.clone(), |r| black_box(engine.decide(r)), BATCH);
        });
    }
    decide.finish();

    let mut json = c.benchmark_group("decide_json");
    json.warm_up_time(Duration::from_secs(1));
    json.measurement_time(Duration::from_secs(3));
    for (n, policy) in &policies {
        let engine = common::engine(policy.clone(), Arc::new(ManualClock::new(NOW_MS)));
        let text = common::request_json(*n);
        let d = engine.decide_json(&text);
        assert_eq!(d.effect, Verdict::Permit, "{d:?}");
        json.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter_batched(
                || text.as_str(),
                |text| black_box(engine.decide_json(black_box(text))),
                BATCH,
            );
        });
    }
    json.finish();

    let mut system = c.benchmark_group("decide_system_clock");
    system.warm_up_time(Duration::from_secs(1));
    system.measurement_time(Duration::from_secs(3));
    for (n, policy) in policies.iter().filter(|(n, _)| *n == 100 || *n == 10_000) {
        let engine = common::engine(policy.clone(), Arc::new(SystemClock));
        let req = common::request(*n);
        system.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter_batched_ref(|| req.clone(), |r| black_box(engine.decide(r)), BATCH);
        });
    }
    system.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
