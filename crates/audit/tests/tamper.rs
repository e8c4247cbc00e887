//! Tampering with a sealed log in every way we can think of: verification must fail, and name
//! the first bad record (or, where only a signed tree head can tell, the checkpoint and the
//! range it covers), for every case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use audit::chain::Chain;
use audit::note::{LocalKey, Signer};
use audit::record::{Canonical, Dpr, Hash, hash_body};
use audit::verify::{Failure, Location, Row, Summary, Verifier};
use serde_json::{Value, json};

const RECORDS: u64 = 240;
const EVERY: u64 = 32;
const CHAIN: &str = "chain-tamper";

/// splitmix64: a seeded generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A stored row: the store's seq column, the hash column and the body.
#[derive(Clone, Debug, PartialEq)]
struct StoredRow {
    seq: u64,
    hash: Hash,
    body: String,
}

#[derive(Clone)]
struct Log {
    rows: Vec<StoredRow>,
    notes: Vec<String>,
}

fn record(i: u64, rng: &mut Rng) -> Dpr {
    let mut d = Dpr::decision(
        format!("dpr_{i:032x}"),
        1_795_251_600_000 + i as i64 * 7,
        "v1".into(),
    );
    d.agent = Some(["support", "ops", "billing"][(i % 3) as usize].into());
    d.tool = Some(format!("stripe/op{}", rng.below(5)));
    d.effect = Some(["permit", "deny", "defer"][rng.below(3) as usize].into());
    d.mode = Some("enforce".into());
    d.reason_code = Some("RULE_PERMIT".into());
    d.reason = Some(format!("rule {i} says \"so\""));
    d.rule_ref = Some(format!("governance.fms:{}", 3 + i % 9));
    d.args_digest = Some(format!("{:064x}", rng.next()));
    d.args = Some(
        Canonical::of(&json!({
            "amount": rng.below(10_000),
            "customer": {"id": format!("cus_{}", rng.below(99)), "tags": ["a", {"deep": i}]},
            "note": "line\nbreak",
        }))
        .unwrap(),
    );
    if i.is_multiple_of(5) {
        d.session = Some(format!("s{}", i % 7));
    }
    d.latency_us = Some(rng.below(90));
    d
}

fn build(key: &LocalKey, rng: &mut Rng) -> Log {
    let mut chain = Chain::new(CHAIN);
    let mut log = Log {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for i in 1..=RECORDS {
        let s = chain.seal(record(i, rng));
        log.rows.push(StoredRow {
            seq: s.dpr.seq,
            hash: s.hash,
            body: s.body,
        });
        if i.is_multiple_of(EVERY) {
            log.notes.push(
                chain
                    .checkpoint(1_795_251_600_000 + i as i64)
                    .sign(key)
                    .unwrap(),
            );
        }
    }
    log
}

fn verify(log: &Log, key: &LocalKey) -> Result<Summary, Failure> {
    let mut v = Verifier::new(CHAIN, &[key.verifier()], &log.notes)?;
    for r in &log.rows {
        v.push(Row {
            seq: r.seq,
            hash: r.hash,
            body: &r.body,
        })?;
    }
    v.finish()
}

/// Changes one leaf value, anywhere in the body, keeping it a valid record body.
fn mutate_body(body: &str, rng: &mut Rng) -> String {
    mutate(body, rng, false)
}

/// [`mutate_body`] outside `seq` and `prev_hash`, which an attacker who reseals rewrites anyway.
fn mutate_content(body: &str, rng: &mut Rng) -> String {
    mutate(body, rng, true)
}

fn mutate(body: &str, rng: &mut Rng, content_only: bool) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    let mut leaves = Vec::new();
    collect(&v, String::new(), &mut leaves);
    if content_only {
        leaves.retain(|p| p != "/seq" && p != "/prev_hash");
    }
    let path = &leaves[rng.below(leaves.len() as u64) as usize];
    let slot = v.pointer_mut(path).unwrap();
    *slot = match slot.take() {
        Value::String(s) => Value::String(format!("{s}x")),
        Value::Number(n) => json!(n.as_u64().unwrap_or(0) + 1 + rng.below(3)),
        Value::Bool(b) => Value::Bool(!b),
        _ => json!("changed"),
    };
    serde_json_canonicalizer::to_string(&v).unwrap()
}

fn collect(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| collect(c, format!("{path}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| collect(c, format!("{path}/{i}"), out)),
        _ => out.push(path),
    }
}

fn seq_of(body: &str) -> u64 {
    serde_json::from_str::<Value>(body).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// Re-seals rows from index `from` on, as an attacker without the signing key would: bodies
/// relinked and rehashed, seq columns renumbered.
fn reseal_from(log: &mut Log, from: usize) {
    let mut prev = if from == 0 {
        Hash::genesis(CHAIN)
    } else {
        log.rows[from - 1].hash
    };
    for (i, row) in log.rows.iter_mut().enumerate().skip(from) {
        let mut v: Value = serde_json::from_str(&row.body).unwrap();
        v["seq"] = json!(i as u64 + 1);
        v["prev_hash"] = json!(prev.to_hex());
        row.body = serde_json_canonicalizer::to_string(&v).unwrap();
        row.hash = hash_body(row.body.as_bytes());
        row.seq = i as u64 + 1;
        prev = row.hash;
    }
}

/// The record a failure names; checkpoint failures name their covered range's first record.
fn named(f: &Failure) -> (u64, u64) {
    match f.at {
        Location::Record(s) => (s, s),
        Location::Checkpoint(size) => (size.saturating_sub(EVERY) + 1, size),
    }
}

#[derive(Debug, Clone, Copy)]
enum Attack {
    EditField,
    EditFieldAndRehash,
    EditHashColumn,
    Delete,
    DeleteAndReseal,
    Swap,
    Insert,
    Truncate,
    ResignWithOtherKey,
    RewriteSuffixKeepCheckpoints,
    RewriteEverythingWithOtherKey,
}

const ATTACKS: [Attack; 11] = [
    Attack::EditField,
    Attack::EditFieldAndRehash,
    Attack::EditHashColumn,
    Attack::Delete,
    Attack::DeleteAndReseal,
    Attack::Swap,
    Attack::Insert,
    Attack::Truncate,
    Attack::ResignWithOtherKey,
    Attack::RewriteSuffixKeepCheckpoints,
    Attack::RewriteEverythingWithOtherKey,
];

/// Applies `attack` and returns the range in which the first bad record lies (one record
/// wherever the evidence allows).
fn apply(attack: Attack, log: &mut Log, rng: &mut Rng, other: &LocalKey) -> (u64, u64) {
    let n = log.rows.len() as u64;
    let k = rng.below(n) as usize; // index of the victim
    let seq = k as u64 + 1;
    match attack {
        Attack::EditField => {
            log.rows[k].body = mutate_body(&log.rows[k].body, rng);
            (seq, seq)
        }
        Attack::EditFieldAndRehash => {
            let body = mutate_body(&log.rows[k].body, rng);
            log.rows[k].hash = hash_body(body.as_bytes());
            log.rows[k].body = body;
            if seq_of(&log.rows[k].body) != seq {
                (seq, seq) // the seq itself was the field
            } else if seq == n {
                (seq - 1, seq) // the last link: either end may be the changed one
            } else {
                (seq, seq)
            }
        }
        Attack::EditHashColumn => {
            log.rows[k].hash.0[rng.below(32) as usize] ^= 1 << rng.below(8);
            (seq, seq)
        }
        Attack::Delete => {
            if seq == n {
                // Deleting the last record is a truncation; covered below.
                log.rows.remove(k - 1);
                return (seq - 1, seq - 1);
            }
            log.rows.remove(k);
            (seq, seq)
        }
        Attack::DeleteAndReseal => {
            // Records after the last checkpoint are protected by the chain alone: an attacker
            // who reseals them is caught only by the next checkpoint, so the victim is taken
            // among the records a checkpoint covers.
            let k = k.min(((n / EVERY) * EVERY) as usize - 1);
            log.rows.remove(k);
            reseal_from(log, k);
            let seq = k as u64 + 1;
            // The chain is whole again; the first signed tree head at or after the gap fails.
            let cp = seq.div_ceil(EVERY) * EVERY;
            (cp - EVERY + 1, cp)
        }
        Attack::Swap => {
            let j = if k + 1 < log.rows.len() { k + 1 } else { k - 1 };
            let (a, b) = (k.min(j), k.max(j));
            let (ra, rb) = (log.rows[a].clone(), log.rows[b].clone());
            log.rows[a] = StoredRow { seq: ra.seq, ..rb };
            log.rows[b] = StoredRow { seq: rb.seq, ..ra };
            (a as u64 + 1, a as u64 + 1)
        }
        Attack::Insert => {
            // A well-formed record linked after its predecessor, later seq columns shifted.
            let mut forged_chain = Chain::resume(CHAIN, log.rows[..k].iter().map(|r| r.hash));
            let s = forged_chain.seal(record(999, rng));
            log.rows.insert(
                k,
                StoredRow {
                    seq: s.dpr.seq,
                    hash: s.hash,
                    body: s.body,
                },
            );
            for r in log.rows.iter_mut().skip(k + 1) {
                r.seq += 1;
            }
            (seq, seq)
        }
        Attack::Truncate => {
            let last_cp = (n / EVERY) * EVERY;
            let keep = rng.below(last_cp) as usize;
            log.rows.truncate(keep);
            (keep as u64 + 1, keep as u64 + 1)
        }
        Attack::ResignWithOtherKey => {
            let i = rng.below(log.notes.len() as u64) as usize;
            let text = log.notes[i].split("\n\n").next().unwrap().to_owned() + "\n";
            log.notes[i] = audit::note::sign_note(&text, other).unwrap();
            let size = (i as u64 + 1) * EVERY;
            // Signature failures are found before any record is read.
            (size - EVERY + 1, size)
        }
        Attack::RewriteSuffixKeepCheckpoints => {
            let k = k.min(((n / EVERY) * EVERY) as usize - 1);
            log.rows[k].body = mutate_content(&log.rows[k].body, rng);
            reseal_from(log, k);
            let seq = k as u64 + 1;
            let cp = seq.div_ceil(EVERY) * EVERY;
            (cp - EVERY + 1, cp)
        }
        Attack::RewriteEverythingWithOtherKey => {
            log.rows[k].body = mutate_content(&log.rows[k].body, rng);
            reseal_from(log, k);
            let mut tree = audit::merkle::Frontier::new();
            log.notes.clear();
            for r in &log.rows {
                tree.push(audit::merkle::leaf_hash(&r.hash));
                if tree.size().is_multiple_of(EVERY) {
                    let cp = audit::note::Checkpoint {
                        origin: audit::note::Checkpoint::origin_of(CHAIN),
                        size: tree.size(),
                        root: tree.root(),
                        time_ms: 0,
                    };
                    log.notes.push(cp.sign(other).unwrap());
                }
            }
            (1, EVERY)
        }
    }
}

#[test]
fn every_tampering_is_detected_and_located() {
    let seed = std::env::var("TAMPER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let cases: u64 = std::env::var("TAMPER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3300);
    let mut rng = Rng(seed);
    let key = LocalKey::generate("stack-key").unwrap();
    let other = LocalKey::generate("stack-key").unwrap();
    let log = build(&key, &mut rng);
    let clean = verify(&log, &key).unwrap();
    assert_eq!(clean.records, RECORDS);
    assert_eq!(clean.checkpoints, RECORDS / EVERY);
    for case in 0..cases {
        let attack = ATTACKS[(case % ATTACKS.len() as u64) as usize];
        let mut bad = log.clone();
        let (lo, hi) = apply(attack, &mut bad, &mut rng, &other);
        let failure = verify(&bad, &key).err().unwrap_or_else(|| {
            panic!("case {case} ({attack:?}, seed {seed}): tampering not detected")
        });
        let (at_lo, at_hi) = named(&failure);
        assert!(
            lo <= at_lo && at_hi <= hi.max(at_lo),
            "case {case} ({attack:?}, seed {seed}): expected the first bad record in {lo}..={hi}, got: {failure}"
        );
    }
}

#[test]
fn verification_of_a_range_resumes_from_its_predecessors() {
    let mut rng = Rng(7);
    let key = LocalKey::generate("stack-key").unwrap();
    let log = build(&key, &mut rng);
    let start = 100usize;
    let mut tree = audit::merkle::Frontier::new();
    for r in &log.rows[..start] {
        tree.push(audit::merkle::leaf_hash(&r.hash));
    }
    let mut v = Verifier::resume(
        CHAIN,
        &[key.verifier()],
        &log.notes,
        log.rows[start - 1].hash,
        tree,
    )
    .unwrap();
    for r in &log.rows[start..] {
        v.push(Row {
            seq: r.seq,
            hash: r.hash,
            body: &r.body,
        })
        .unwrap();
    }
    let s = v.finish().unwrap();
    assert_eq!(
        (s.first, s.last, s.records),
        (Some(101), Some(RECORDS), RECORDS - 100)
    );
    assert_eq!(s.checkpoints, RECORDS / EVERY - 100 / EVERY);
}

/// A stack that `faramesh dev` has written to holds checkpoints signed by several keys (each
/// dev run signs with its own): all of them must be trusted to verify it, and any one missing
/// names the first checkpoint it signed.
#[test]
fn checkpoints_signed_by_several_trusted_keys() {
    let mut rng = Rng(0x5eed_0003);
    let first = LocalKey::generate("faramesh-dev").unwrap();
    let second = LocalKey::generate("faramesh-dev").unwrap();
    let mut log = build(&first, &mut rng);
    // The second half of the checkpoints is signed by a later run's key.
    let half = log.notes.len() / 2;
    let resigned: Vec<String> = log.notes[half..]
        .iter()
        .map(|n| {
            let body = n.split("\n\n").next().unwrap();
            let cp = audit::note::Checkpoint::parse(body).unwrap();
            cp.sign(&second).unwrap()
        })
        .collect();
    log.notes.truncate(half);
    log.notes.extend(resigned);
    let both = [first.verifier(), second.verifier()];
    let mut v = Verifier::new(CHAIN, &both, &log.notes).unwrap();
    for r in &log.rows {
        v.push(Row {
            seq: r.seq,
            hash: r.hash,
            body: &r.body,
        })
        .unwrap();
    }
    assert_eq!(v.finish().unwrap().records, RECORDS);

    let Err(failure) = Verifier::new(CHAIN, &[first.verifier()], &log.notes) else {
        panic!("a checkpoint by an untrusted key must be refused");
    };
    assert_eq!(named(&failure).1, (half as u64 + 1) * EVERY, "{failure}");
    assert!(failure.to_string().contains("not signed"), "{failure}");
}
