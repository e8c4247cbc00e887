//! Load driver for the store's figures (docs/perf-store.md):
//!
//! ```text
//! cargo run --release -p faramesh-store --example store_load -- [--dir DIR] [--runs N]
//!     [--only NAME] [--keep STACK]
//! ```
//!
//! Measures the disk's fsync latency, records/s (and the process's CPU time per record, which
//! other work on a shared machine disturbs less) through group commit with 64 writers
//! (`durability = sync`), the same with one commit and fsync per record (group commit off, as
//! the upstream daemon writes), `durability = interval`, and the `for_each_row` read rate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit::note::{LocalKey, Signer};
use audit::record::{Canonical, Dpr};
use audit::verify::Verifier;
use store::sqlite::{Config, SqliteStore};
use store::{AuditRead, Durability, Store};

const WRITERS: usize = 64;

/// Concurrent writers (`FARAMESH_WRITERS` overrides, for exploring).
fn writers() -> usize {
    std::env::var("FARAMESH_WRITERS").map_or(64, |w| w.parse().unwrap())
}

fn decision(id: String, i: i64) -> Dpr {
    let mut d = Dpr::decision(id, 1_767_258_000_000 + i, "a".repeat(64));
    d.agent = Some("support-bot".into());
    d.session = Some("sess-42".into());
    d.tool = Some("stripe/refund".into());
    d.args = Some(Canonical::from_jcs(
        r#"{"amount":8000,"currency":"usd","customer":"cus_123","reason":"requested_by_customer"}"#,
    ));
    d.args_digest = Some("b".repeat(64));
    d.effect = Some("permit".into());
    d.mode = Some("enforce".into());
    d.reason_code = Some("RULE_PERMIT".into());
    d.rule_ref = Some("governance.fms:12".into());
    d.latency_us = Some(41);
    d
}

fn open(dir: &Path, durability: Durability, max_batch: usize) -> SqliteStore {
    let mut c = Config::new(dir, "bench");
    c.durability = durability;
    c.max_batch = max_batch;
    SqliteStore::open(c, Box::new(LocalKey::generate("bench").unwrap())).unwrap()
}

/// This process's CPU time (user + system, all threads), from `/proc/self/stat` in clock
/// ticks of 10 ms: on a machine shared with other work, CPU per record varies less than
/// records per second.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let ticks: u64 = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A DPR id as the daemon makes them (`dpr_<ms><boot><n>`, hex): ordered by time across all
/// writers, so the id index grows at its end as it does under the daemon.
fn daemon_id(n: u64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("dpr_{ms:012x}{:08x}{n:010x}", 0x5eed_u32)
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_id() -> String {
    daemon_id(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// `per` appends from each of 64 threads, each waiting for its ticket; returns records/s.
fn append_load(dir: &Path, durability: Durability, max_batch: usize, per: usize) -> f64 {
    let store = Arc::new(open(dir, durability, max_batch));
    let cpu = cpu_time();
    let start = Instant::now();
    let threads: Vec<_> = (0..writers())
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..per {
                    let d = decision(next_id(), i as i64);
                    store.append(d).wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    CPU_US.with(|c| {
        c.borrow_mut()
            .push((cpu_time() - cpu).as_secs_f64() * 1e6 / (writers() * per) as f64)
    });
    assert!(store.health().healthy);
    (writers() * per) as f64 / secs
}

thread_local! {
    /// CPU µs per record of each run since the last report.
    static CPU_US: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The median CPU µs per record of the runs since the last call.
fn take_cpu() -> f64 {
    CPU_US.with(|c| {
        let v = std::mem::take(&mut *c.borrow_mut());
        if v.is_empty() { 0.0 } else { median(v) }
    })
}

/// 64 decisions in flight as an async daemon holds them: 2 threads (the cores), each keeping
/// 32 tickets outstanding and waiting on the oldest; returns records/s.
fn append_in_flight(dir: &Path, per_thread: usize) -> f64 {
    let store = Arc::new(open(dir, Durability::Sync, 4_096));
    let cpu = cpu_time();
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut window = std::collections::VecDeque::new();
                for i in 0..per_thread {
                    if window.len() == WRITERS / 2 {
                        let tk: store::Ticket = window.pop_front().unwrap();
                        tk.wait().unwrap();
                    }
                    window.push_back(store.append(decision(next_id(), i as i64)));
                }
                for tk in window {
                    tk.wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rate = (2 * per_thread) as f64 / start.elapsed().as_secs_f64();
    CPU_US.with(|c| {
        c.borrow_mut()
            .push((cpu_time() - cpu).as_secs_f64() * 1e6 / (2 * per_thread) as f64)
    });
    rate
}

/// Write 4 KiB and fsync, `n` times, at successive offsets; (p50, p99).
fn fsync_latency(dir: &Path, n: usize) -> (Duration, Duration) {
    let f = std::fs::File::create(dir.join("fsync.probe")).unwrap();
    let block = [0x5au8; 4096];
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f.write_all_at(&block, (i * 4096) as u64).unwrap();
            f.sync_all().unwrap();
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[n / 2], times[n * 99 / 100])
}

/// Streams every row (touching each body) and then runs the verifier; (rows/s, verified/s).
fn read_rates(dir: &Path, key: &LocalKey) -> (u64, f64, f64) {
    let reader = store::sqlite::SqliteReader::open(dir, Some("bench")).unwrap();
    let (mut rows, mut bytes) = (0u64, 0usize);
    let t = Instant::now();
    reader
        .for_each_row(1, None, &mut |r| {
            rows += 1;
            bytes += r.body.len() + usize::from(r.hash.0[0]);
            ControlFlow::Continue(())
        })
        .unwrap();
    let read = rows as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    let notes = reader.checkpoints().unwrap();
    let t = Instant::now();
    let mut v = Verifier::new("bench", &[key.verifier()], &notes).unwrap();
    reader
        .for_each_row(1, None, &mut |r| {
            v.push(r).unwrap();
            ControlFlow::Continue(())
        })
        .unwrap();
    v.finish().unwrap();
    (rows, read, rows as f64 / t.elapsed().as_secs_f64())
}

/// Fills a store with `n` records quickly (interval mode), signed by `key`.
fn fill(dir: &Path, n: usize, key: LocalKey) {
    let mut c = Config::new(dir, "bench");
    c.durability = Durability::Interval;
    let store = Arc::new(SqliteStore::open(c, Box::new(key)).unwrap());
    let per = n / 8;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let tickets: Vec<_> = (0..per)
                    .map(|i| store.append(decision(format!("f-{t}-{i}"), i as i64)))
                    .collect();
                for tk in tickets {
                    tk.wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.close().unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runs: usize = arg("--runs").map_or(5, |r| r.parse().unwrap());
    let tmp = tempfile::tempdir_in(arg("--dir").unwrap_or_else(|| "/tmp".into())).unwrap();
    let base = tmp.path();
    let mut out = std::io::stdout();
    writeln!(out, "dir {} runs {runs}", base.display()).unwrap();

    let (p50, p99) = fsync_latency(base, 2_000);
    writeln!(out, "fsync 4 KiB: p50 {p50:?} p99 {p99:?}").unwrap();

    let only = arg("--only");
    let mut rate = |name: &str, durability, max_batch, per| {
        if only.as_deref().is_some_and(|o| o != name) {
            return 1.0;
        }
        let all: Vec<f64> = (0..runs)
            .map(|r| {
                append_load(
                    &fresh(base, &format!("{name}-{r}")),
                    durability,
                    max_batch,
                    per,
                )
            })
            .collect();
        let m = median(all.clone());
        let all: Vec<String> = all.iter().map(|x| format!("{x:.0}")).collect();
        writeln!(
            out,
            "{name}: median {m:.0} records/s (runs: {}); CPU {:.1} µs/record",
            all.join(", "),
            take_cpu()
        )
        .unwrap();
        m
    };
    let group = rate("group-sync", Durability::Sync, 4_096, 1_000);
    if only.as_deref().is_none_or(|o| o == "in-flight") {
        let all: Vec<f64> = (0..runs)
            .map(|r| append_in_flight(&fresh(base, &format!("inflight-{r}")), 40_000))
            .collect();
        let m = median(all.clone());
        let all: Vec<String> = all.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "in-flight-sync: median {m:.0} records/s (runs: {}); CPU {:.1} µs/record",
            all.join(", "),
            take_cpu()
        );
    }
    let naive = rate("naive-sync", Durability::Sync, 1, 20);
    let interval = rate("interval", Durability::Interval, 4_096, 2_000);
    writeln!(
        out,
        "group commit speed-up over one fsync per record: {:.1}x; interval/sync: {:.2}x",
        group / naive,
        interval / group
    )
    .unwrap();

    if only.is_some() {
        return;
    }
    // `--keep STACK` leaves the 1,000,000-record store in STACK's data directory and its
    // verifier key in STACK/audit.pub, for timing `faramesh audit verify --dir STACK --key …`.
    let keep = arg("--keep").map(PathBuf::from);
    let dir = match &keep {
        Some(stack) => fresh(&stack.join(".faramesh"), "data"),
        None => fresh(base, "read"),
    };
    let key = LocalKey::generate("bench").unwrap();
    let key_text = key.to_text();
    if let Some(stack) = &keep {
        std::fs::write(stack.join("audit.pub"), key.verifier().to_text()).unwrap();
    }
    fill(&dir, 1_000_000, key);
    let key = LocalKey::from_text(&key_text).unwrap();
    let (mut reads, mut verifies, mut rows) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let (n, read, verify) = read_rates(&dir, &key);
        (rows, reads, verifies) = (
            n,
            [reads, vec![read]].concat(),
            [verifies, vec![verify]].concat(),
        );
    }
    writeln!(
        out,
        "for_each_row over {rows} rows: median {:.0} rows/s; verifier: median {:.0} records/s",
        median(reads),
        median(verifies)
    )
    .unwrap();
    let size = std::fs::metadata(dir.join("faramesh.db")).map_or(0, |m| m.len());
    writeln!(out, "file size for {rows} records: {} MiB", size >> 20).unwrap();
}
