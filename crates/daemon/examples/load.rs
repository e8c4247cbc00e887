//! Load driver for the daemon (issue 5's targets): decisions over the agent socket, end to end,
//! every one durable in the audit log before its answer.
//!
//! ```sh
//! cargo run --release -p faramesh-daemon --example load                      # everything
//! cargo run --release -p faramesh-daemon --example load -- latency           # one client
//! cargo run --release -p faramesh-daemon --example load -- throughput 16 64  # these counts
//! cargo run --release -p faramesh-daemon --example load -- fsync
//! LOAD_SECS=5 LOAD_DURABILITY=interval cargo run --release -p faramesh-daemon --example load -- throughput 16
//! ```
//!
//! The daemon runs in this process (its own runtime, as `faramesh daemon` runs it) on a
//! temporary stack under `$TMPDIR`; clients are OS threads with blocking Unix sockets, one
//! persistent connection each, one request in flight per connection, as an SDK does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The allocator of the `faramesh` binary, so the daemon here runs as it does there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POLICY: &str = r#"
runtime {
  durability = "DURABILITY"
}

agent "support-bot" {
  default deny
  rules {
    permit search_docs
    permit stripe/refund if amount < $500 and currency in ["usd", "eur"]
    defer  stripe/refund if amount >= $500
    deny   stripe/payouts
  }
  rate_limit "stripe/refund": 1000000000 per second
  redact stripe/refund args: ["customer.email"]
}
"#;

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"decide","params":{"agent":"support-bot","session":"s-1","tool":"stripe/refund","args":{"amount":80,"currency":"usd","customer":{"email":"ada@example.com","id":"cus_123"},"reason":"duplicate charge"}}}"#;

struct Daemon {
    stack: PathBuf,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn start(durability: &str) -> Daemon {
        let tmp = tempfile::Builder::new()
            .prefix("faramesh-load-")
            .tempdir()
            .unwrap();
        let stack = tmp.path().to_path_buf();
        std::fs::write(
            stack.join("governance.fms"),
            POLICY.replace("DURABILITY", durability),
        )
        .unwrap();
        let opts = daemon::server::Options {
            stack: stack.clone(),
            dev: false,
        };
        let thread = std::thread::spawn(move || daemon::server::run(opts));
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon::server::RunInfo::read(&stack).is_none() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon {
            stack,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn socket(&self) -> PathBuf {
        daemon::stack::default_socket(&self.stack)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let admin = daemon::stack::admin_socket(&self.stack);
        if let Ok(mut c) = daemon::client::Client::connect(&admin, Duration::from_secs(10)) {
            let _ = c.call("stop", serde_json::json!({}));
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: String,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            line: String::new(),
        }
    }

    /// One decision; panics unless it is the expected permit.
    fn decide(&mut self, request: &[u8]) {
        self.writer.write_all(request).unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        assert!(
            self.line.contains("\"effect\":\"permit\""),
            "unexpected answer: {}",
            self.line
        );
    }
}

fn request() -> Vec<u8> {
    let mut r = REQUEST.as_bytes().to_vec();
    r.push(b'\n');
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One client, one request at a time: the round trip an agent sees.
fn latency(durability: &str, n: usize) {
    let d = Daemon::start(durability);
    let mut c = Conn::open(&d.socket());
    let req = request();
    for _ in 0..2_000 {
        c.decide(&req);
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.decide(&req);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "latency  durability={durability:<8} 1 client  n={n}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.9)),
        us(percentile(&times, 0.99)),
        us(percentile(&times, 0.999)),
        us(*times.last().unwrap()),
    );
}

/// `clients` connections, each looping for `secs`: decisions per second.
fn throughput(durability: &str, clients: usize, secs: f64) {
    let d = Daemon::start(durability);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let socket = d.socket();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, counting, socket) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&counting),
                socket.clone(),
            );
            std::thread::spawn(move || {
                let mut c = Conn::open(&socket);
                let req = request();
                while !stop.load(Ordering::Relaxed) {
                    c.decide(&req);
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let cpu_before = cpu_by_role();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = done.load(Ordering::Relaxed);
    let cpu = cpu_by_role().since(&cpu_before);
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let per = |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec() / n.max(1) as f64;
    println!(
        "throughput durability={durability:<8} {clients:>3} clients  {:>8.0} decisions/s  \
         CPU µs/decision: daemon {:.1}  store {:.1}  clients {:.1}",
        n as f64 / took.as_secs_f64(),
        per(cpu.daemon),
        per(cpu.store),
        per(cpu.clients),
    );
}

/// CPU time (clock ticks, user + system) of this process's threads, by role: the daemon's
/// runtime workers, the store's threads, and everything else (the clients).
#[derive(Default)]
struct Cpu {
    daemon: u64,
    store: u64,
    clients: u64,
}

impl Cpu {
    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            daemon: self.daemon.saturating_sub(before.daemon),
            store: self.store.saturating_sub(before.store),
            clients: self.clients.saturating_sub(before.clients),
        }
    }
}

fn cpu_by_role() -> Cpu {
    let mut cpu = Cpu::default();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: fields after the comm's closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
        let t = ticks(11) + ticks(12);
        if comm.starts_with("faramesh-store") {
            cpu.store += t;
        } else if comm.starts_with("faramesh") {
            cpu.daemon += t;
        } else {
            cpu.clients += t;
        }
    }
    cpu
}

fn ticks_per_sec() -> f64 {
    // USER_HZ, which is 100 on every Linux this runs on.
    100.0
}

/// The disk's fsync latency where the store lives: write 4 KiB, fdatasync, 500 times.
fn fsync() {
    let dir = tempfile::Builder::new()
        .prefix("faramesh-fsync-")
        .tempdir()
        .unwrap();
    let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
    let block = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "fsync    4 KiB write + fdatasync  p50 {}  p99 {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let counts: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1, 16, 64]
    } else {
        counts
    };
    let secs = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    if matches!(what, "all" | "fsync") {
        fsync();
    }
    // LOAD_DURABILITY=interval|sync runs one mode only (for profiling).
    let only = std::env::var("LOAD_DURABILITY").ok();
    let modes: Vec<&str> = ["interval", "sync"]
        .into_iter()
        .filter(|m| only.as_deref().is_none_or(|o| o == *m))
        .collect();
    if matches!(what, "all" | "latency") {
        for &durability in &modes {
            let n = if durability == "sync" { 5_000 } else { 50_000 };
            latency(durability, n);
        }
    }
    if matches!(what, "all" | "throughput") {
        for &durability in &modes {
            for &c in &counts {
                throughput(durability, c, secs);
            }
        }
    }
}
