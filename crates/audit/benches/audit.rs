//! The audit log's per-record costs: sealing (body, hash, link, Merkle leaf) and verification.
//!
//! ```sh
//! cargo bench -p faramesh-audit --bench audit
//! ```
//! `seal/decision` is the hash-and-link cost per record (target ≤ 1 µs); `verify/10000` times
//! verifying 10,000 stored records (one core, target ≥ 1,000,000 records/s, i.e. ≤ 10 ms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use audit::chain::Chain;
use audit::merkle::{Frontier, leaf_hash};
use audit::note::{LocalKey, Signer};
use audit::record::{Canonical, Dpr, Hash, hash_body};
use audit::verify::{Row, Verifier};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// A decision record like the daemon writes for the reference scene's refund: 6 arguments,
/// one redacted, a principal, a session.
fn decision(i: u64) -> Dpr {
    let mut d = Dpr::decision(
        format!("dpr_{i:032x}"),
        1_795_251_600_000 + i as i64,
        "9c".repeat(32),
    );
    d.agent = Some("support-bot".into());
    d.session = Some("sess-42".into());
    d.principal =
        Some(Canonical::of(&json!({"sub": "alice@example.com", "roles": ["support"]})).unwrap());
    d.tool = Some("stripe/refund".into());
    d.args = Some(
        Canonical::of(&json!({
            "amount": 80, "currency": "usd", "customer": "cus_9s8d7f6g",
            "card": {"redacted": format!("hmac-sha256:{}", "ab".repeat(32))},
            "reason": "duplicate charge", "reference": "ord_1234567890"
        }))
        .unwrap(),
    );
    d.args_digest = Some("5e".repeat(32));
    d.effect = Some("permit".into());
    d.mode = Some("enforce".into());
    d.reason_code = Some("RULE_PERMIT".into());
    d.reason = Some("refunds under $100 are routine".into());
    d.rule_ref = Some("governance.fms:14".into());
    d.adapter = Some("socket".into());
    d.latency_us = Some(14);
    d
}

fn seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Elements(1));
    let body_len = Chain::new("bench").seal(decision(1)).body.len();
    eprintln!("decision body: {body_len} bytes");
    let mut chain = Chain::new("bench");
    g.bench_function("decision", |b| {
        b.iter_batched(
            || decision(7),
            |d| black_box(chain.seal(d)),
            BatchSize::SmallInput,
        )
    });
    let body = Chain::new("bench").seal(decision(1)).body;
    g.bench_function("hash_only", |b| {
        b.iter(|| black_box(hash_body(black_box(body.as_bytes()))))
    });
    // Hash and link without writing the body: the record hash, the Merkle leaf and the
    // frontier update that `seal` does after serialising.
    let mut tree = Frontier::new();
    g.bench_function("hash_and_link", |b| {
        b.iter(|| {
            let h = hash_body(black_box(body.as_bytes()));
            tree.push(leaf_hash(&h));
            black_box(h)
        })
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    const N: u64 = 10_000;
    let key = LocalKey::generate("bench").unwrap();
    let mut chain = Chain::new("bench");
    let mut rows: Vec<(u64, Hash, String)> = Vec::new();
    let mut notes = Vec::new();
    for i in 1..=N {
        let s = chain.seal(decision(i));
        rows.push((s.dpr.seq, s.hash, s.body));
        if i.is_multiple_of(1024) {
            notes.push(chain.checkpoint(0).sign(&key).unwrap());
        }
    }
    let vk = key.verifier();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(N));
    g.sample_size(30);
    g.bench_function("10000", |b| {
        b.iter(|| {
            let mut v = Verifier::new("bench", std::slice::from_ref(&vk), &notes).unwrap();
            for (seq, hash, body) in &rows {
                v.push(Row {
                    seq: *seq,
                    hash: *hash,
                    body,
                })
                .unwrap();
            }
            black_box(v.finish().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, seal, verify);
criterion_main!(benches);
